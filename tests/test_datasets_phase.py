"""The trainer sets each dataset's ``phase`` from its split: a ``datasets.val`` without ``phase``
is evaluated on the full images, unflipped, identically every epoch."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from utils.errors import ConfigError


def write_folder(root, sizes=((20, 28), (17, 23))):
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate(sizes):
        gt = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        for side, arr in (("gt", gt), ("lq", 255 - gt)):
            (root / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / side / f"im{i}.png")
        images.append(torch.from_numpy(gt.transpose(2, 0, 1).astype(np.float32) / 255))
    return images


def trainer_dataset(tmp_path, data, split: str, val: str, test: str | None = None):
    """``Trainer._dataset(split)`` for a small experiment YAML (the trainer's own code path)."""
    from trainer import Trainer
    from utils.config import load_config

    config = tmp_path / "exp.yml"
    config.write_text(textwrap.dedent(f"""
        name: phase
        seed: 3
        network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
        datasets:
          train: {{type: PairedFolderDataset, root: {data}, crop_size: 8}}
          val: {val}
          test: {test or val}
        path: {{root: {tmp_path / 'runs'}}}
        train: {{max_steps: 2, batch_size: 2}}
        report_to: []
    """))
    cfg = load_config(config)
    stub = SimpleNamespace(cfg=cfg, model=SimpleNamespace(batch_keys=lambda: ("gt", "lq")))
    return Trainer._dataset(stub, split)


def test_val_without_phase_is_evaluated_deterministically(tmp_path):
    images = write_folder(tmp_path / "data")
    val = trainer_dataset(tmp_path, tmp_path / "data", "val",
                          f"{{type: PairedFolderDataset, root: {tmp_path / 'data'}, use_flip: true, use_rot: true}}")
    epochs = []
    for epoch in (0, 1):
        val.set_epoch(epoch)
        epochs.append([val[i] for i in range(len(val))])
    for first, second, gt in zip(*epochs, images):
        assert torch.equal(first["gt"], gt)  # the whole image, not flipped or cropped
        assert torch.equal(second["gt"], gt) and torch.equal(second["lq"], first["lq"])
    assert val.phase == "val"
    # With crop_size: the centre crop, as the docs promise for evaluation.
    val = trainer_dataset(tmp_path, tmp_path / "data", "val",
                          f"{{type: PairedFolderDataset, root: {tmp_path / 'data'}, crop_size: 8}}")
    assert torch.equal(val[0]["gt"], images[0][:, 6:14, 10:18])  # (20-8)//2, (28-8)//2


def test_train_split_is_random_and_contradictions_are_config_errors(tmp_path):
    write_folder(tmp_path / "data")
    val_opts = f"{{type: PairedFolderDataset, root: {tmp_path / 'data'}}}"
    train = trainer_dataset(tmp_path, tmp_path / "data", "train", val_opts)
    assert train.phase == "train" and train.random
    with pytest.raises(ConfigError, match=r"datasets.val.phase is 'train' but the dataset is the 'val' split"):
        trainer_dataset(tmp_path, tmp_path / "data", "val",
                        f"{{type: PairedFolderDataset, root: {tmp_path / 'data'}, phase: train}}")
    # val and test are the same fixed evaluation: `test: ${datasets.val}` with phase: val works.
    val_phase = f"{{type: PairedFolderDataset, root: {tmp_path / 'data'}, phase: val}}"
    assert trainer_dataset(tmp_path, tmp_path / "data", "test", val_phase).phase == "test"
    assert trainer_dataset(tmp_path, tmp_path / "data", "val", val_phase).phase == "val"


def test_dataset_options_phase_rules():
    from trainer import dataset_options

    keywords = ["root", "phase", "seed", "psf_keys"]
    assert dataset_options({"root": "x"}, keywords, 4, ("gt", "lq"), split="val") == {"root": "x", "phase": "val", "seed": 4}
    assert dataset_options({"root": "x"}, ["root"], 4, ("gt", "lq", "psf"), split="val") == {"root": "x"}
    assert dataset_options({"root": "x", "phase": "test"}, keywords, 4, ("gt", "psf"), split="val") == \
        {"root": "x", "phase": "val", "seed": 4, "psf_keys": ["psf"]}
    with pytest.raises(ConfigError, match=r"datasets.train.phase is 'val' but the dataset is the 'train' split"):
        dataset_options({"phase": "val"}, keywords, 0, (), split="train")
