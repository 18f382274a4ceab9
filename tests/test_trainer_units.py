"""Trainer building blocks: schedules, EMA, data order, scoring helpers (no training loop)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from models.base_model import build_scheduler, lr_factor
from utils.config import SchedulerConfig, TrainConfig
from utils.ema import EMA


def train_cfg(**scheduler) -> TrainConfig:
    return TrainConfig(max_steps=110, lr=1e-3, scheduler=SchedulerConfig(**scheduler))


# -- learning-rate schedules ----------------------------------------------------------------


def test_lr_factor_closed_forms():
    cos = train_cfg(type="cosine", warmup_steps=10, min_lr=1e-4)  # m = 0.1, T = 100
    assert [lr_factor(s, cos) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])  # (s + 1) / 10
    assert lr_factor(9, cos) == pytest.approx(1.0)
    assert lr_factor(10, cos) == pytest.approx(1.0)                     # cos(0)
    assert lr_factor(60, cos) == pytest.approx(0.1 + 0.9 * 0.5)         # cos(pi/2) = 0
    assert lr_factor(35, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, cos) == pytest.approx(0.1)                    # the end: min_lr
    lin = train_cfg(type="linear")
    assert lr_factor(0, lin) == 1.0 and lr_factor(55, lin) == pytest.approx(0.5) and lr_factor(110, lin) == 0.0
    assert lr_factor(77, train_cfg(type="constant")) == 1.0
    ms = train_cfg(type="multistep", milestones=(20, 50), gamma=0.1)
    assert [lr_factor(s, ms) for s in (0, 19, 20, 49, 50, 100)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_scheduler_follows_lr_factor_and_saves_only_numbers(tmp_path):
    cfg = train_cfg(type="cosine", warmup_steps=3, min_lr=0.0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([cfg.lr * lr_factor(s, cfg) for s in range(6)])
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # what a resume does: no pickled objects
    fresh = build_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr), cfg)
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == sched.get_last_lr()


# -- EMA ----------------------------------------------------------------------------------


def test_ema_matches_the_recurrence_and_restores():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.9)
    expected = {n: p.detach().clone().double() for n, p in net.named_parameters()}
    g = torch.Generator().manual_seed(0)
    for t in range(1, 8):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        d = min(0.9, (1 + t) / (10 + t))  # warm-up decay
        for n, p in net.named_parameters():
            expected[n] = d * expected[n] + (1 - d) * p.detach().double()
        ema.update(net)
    for n, value in ema.shadow.items():
        torch.testing.assert_close(value.double(), expected[n], atol=1e-6, rtol=0)
    live = {n: p.detach().clone() for n, p in net.named_parameters()}
    with ema.applied_to(net):
        for n, p in net.named_parameters():
            assert torch.equal(p, ema.shadow[n])
    for n, p in net.named_parameters():
        assert torch.equal(p, live[n])
    other = EMA(torch.nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 7 and other.decay == 0.9
    assert all(torch.equal(other.shadow[n], ema.shadow[n]) for n in ema.shadow)


# -- data order ---------------------------------------------------------------------------


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __getitem__(self, i):
        return {"index": torch.tensor(i), "key": f"s{i}"}


def take(stream, k):
    it = iter(stream)
    return [next(it)["index"].tolist() for _ in range(k)]


def test_train_stream_is_process_count_invariant_and_resumable():
    from trainer import TrainStream

    data = Indexed(23)  # 23 // 6 = 3 global batches per epoch; 5 samples dropped each epoch
    single = take(TrainStream(data, 6, 0, 1, seed=4), 7)
    rank0 = take(TrainStream(data, 3, 0, 2, seed=4), 7)
    rank1 = take(TrainStream(data, 3, 1, 2, seed=4), 7)
    assert [a + b for a, b in zip(rank0, rank1)] == single          # 2 x 3 = the same samples as 1 x 6
    epoch0 = [i for b in single[:3] for i in b]
    assert len(set(epoch0)) == 18                                   # no repeats within an epoch
    assert sorted(single[3]) != sorted(single[0])                   # a new permutation each epoch
    assert take(TrainStream(data, 6, 0, 1, seed=4, start=4), 3) == single[4:7]  # resume = skip
    assert take(TrainStream(data, 6, 0, 1, seed=5), 3) != single[:3]
    data.epochs.clear()
    take(TrainStream(data, 6, 0, 1, seed=4, start=4), 3)
    assert data.epochs == [1, 2]                                    # set_epoch before each epoch


def test_shards_cover_every_image_once():
    from utils.evaluation import shard_indices

    for n in (1, 5, 8):
        shards = [shard_indices(n, r, 3) for r in range(3)]
        assert sorted(i for s in shards for i in s) == list(range(n))


# -- scoring helpers ------------------------------------------------------------------------


def test_quantize_matches_saved_png_levels():
    from utils.image_io import quantize

    levels = torch.arange(256, dtype=torch.float64)
    x = torch.cat([torch.rand(1000, dtype=torch.float64) * 1.4 - 0.2,
                   (levels + 0.5) / 255.0, levels / 255.0]).float()   # including exact half levels
    ours = quantize(x)
    expected = np.round(np.clip(x.numpy().astype(np.float64), 0, 1) * 255).astype(np.float32) / 255.0
    assert np.array_equal(ours.numpy(), expected)


def test_output_names():
    from utils.evaluation import output_name

    assert output_name("scene/0001") == "scene/0001.png"
    assert output_name("img.jpg") == "img.png"
    assert output_name("a.b.c") == "a.b.c.png"          # not an image suffix: kept
    assert output_name("../../etc/x") == "etc/x.png"    # never outside the results folder
    assert output_name("/abs/y.PNG") == "abs/y.png"


def test_metrics_files_shape(tmp_path):
    import csv
    import json

    from utils.evaluation import write_metrics_files

    per_image = {"a.png": {"psnr": 30.0, "ssim": 0.9}, "b/c.png": {"psnr": float("inf"), "ssim": 1.0}}
    mean = write_metrics_files(tmp_path, per_image, ("psnr", "ssim"), 0, False, {"split": "datasets.val"})
    assert mean == {"psnr": math.inf, "ssim": pytest.approx(0.95)}
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert {"convention", "mean", "per_image"} <= set(data)
    assert data["per_image"]["b/c.png"]["psnr"] == "inf" and data["inf_counts"] == {"psnr": 1}  # JSON has no inf
    assert data["convention"]["round_to_uint8"] is True and data["convention"]["split"] == "datasets.val"
    rows = list(csv.reader((tmp_path / "metrics.csv").open()))
    assert rows[0] == ["image", "psnr", "ssim"] and rows[1] == ["a.png", "30.0", "0.9"] and rows[2][1] == "inf"
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_dataset_options_fill_seed_and_psf_keys_only_when_unset():
    from trainer import dataset_options

    keywords = ["root", "seed", "psf_keys"]
    assert dataset_options({"type": "X"}, keywords, 7, ("gt", "lq")) == {"type": "X", "seed": 7}
    assert dataset_options({"type": "X", "seed": 1}, keywords, 7, ("gt", "lq", "basis_psfs", "basis_coef")) == {
        "type": "X", "seed": 1, "psf_keys": ["basis_psfs", "basis_coef"]}
    assert dataset_options({"type": "X", "psf_keys": ["psf"]}, keywords, 7, ("gt", "lq", "basis_coef"))["psf_keys"] == ["psf"]
    assert dataset_options({"type": "X"}, ["root"], 7, ("gt", "lq", "psf")) == {"type": "X"}  # not taken: not passed
