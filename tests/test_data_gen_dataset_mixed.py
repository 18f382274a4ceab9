"""Step 3 with several PSF fields (``--psf_data_path A B C``): every field shipped, samples
assigned in equal shares per split, each lq the exact re-render of its gt with its own field,
and HFDataset yielding per-sample PSF keys padded to common sizes."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from psf.field import load_psf_field, save_psf_field
from utils.errors import ConfigError, DataError
from utils.noise import NoiseModel
from psf.basis import psf_basis
from psf.example_fields import elliptical_gaussian_field
from utils.sv_renderer import SVRenderer, simulate_capture

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("generate_dataset_synthetic", ROOT / "data_gen" / "3.generate_dataset_synthetic.py")
step3 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step3)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    a = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=11, sensor_res=(40, 48), sigma_radial=2.5)
    b = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=9, sensor_res=(40, 48), sigma_center=1.5, coma_shift=0.0)
    basis = psf_basis(b.psfs, n_basis=2, method="pca")  # a basis of K=2 in one field, full rank (K=9) in the other
    save_psf_field(a, root / "lens_a")
    save_psf_field(b.with_basis(basis.basis_psfs.float(), basis.basis_coef.float()), root / "lens_b" / "b.h5")
    images = root / "images"
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "coins", "clock"):
        img = getattr(skimage.data, name)()
        cv2.imwrite(str(images / f"{name}.png"), img[::4, ::4, ::-1] if img.ndim == 3 else img[::4, ::4])
    out = root / "ds"
    argv = ["--psf_data_path", str(root / "lens_a"), str(root / "lens_b" / "b.h5"), "--images", str(images),
            "--out", str(out), "--seed", "2", "--splits", "train=0.5,validation=0.5", "--noise", "gaussian",
            "--sigma", "0.01", "--workers", "1"]
    assert step3.main(argv) == 0
    return root, out, argv


def test_fields_are_shipped_and_assigned_in_equal_shares(mixed):
    import datasets

    root, out, _ = mixed
    assert sorted(p.name for p in (out / "psfs").iterdir()) == ["00-lens_a.h5", "01-b.h5"]
    assert (out / "psfs" / "00-lens_a.h5").read_bytes() == (root / "lens_a" / "psfs.h5").read_bytes()
    assert (out / "psfs" / "01-b.h5").read_bytes() == (root / "lens_b" / "b.h5").read_bytes()
    manifest = json.loads((out / "generation.json").read_text())
    assert manifest["psf_files"] == ["psfs/00-lens_a.h5", "psfs/01-b.h5"] and len(manifest["psf_sha256"]) == 2
    card = (out / "README.md").read_text()
    assert "00-lens_a.h5" in card and "01-b.h5" in card and "equal share" in card
    fields = {rel: load_psf_field(out / rel) for rel in manifest["psf_files"]}
    renderers = {rel: SVRenderer(f, f.sensor_res, "reflect", "full", dtype=torch.float64) for rel, f in fields.items()}
    ds = datasets.load_dataset(str(out), cache_dir=str(root / "cache"))
    for split in ds:
        counts = Counter(ds[split]["psf_file"])
        assert sorted(counts) == manifest["psf_files"] and max(counts.values()) - min(counts.values()) <= 1
        for sample in ds[split]:
            gt = torch.from_numpy(np.array(sample["gt"])).permute(2, 0, 1)[None].double() / 255
            noise = NoiseModel(sample["noise"], sample["sigma"], sample["photons"], sample["read_noise"])
            lq = simulate_capture(gt, renderers[sample["psf_file"]], noise,
                                  torch.Generator().manual_seed(sample["noise_seed"]), bits=8)
            assert np.array_equal(np.round(lq[0].permute(1, 2, 0).numpy() * 255), np.array(sample["lq"]))


def test_hf_dataset_gives_each_sample_its_own_field(mixed):
    from dataset import create_dataset

    _, out, _ = mixed
    val = create_dataset({"type": "HFDataset", "path": str(out), "split": "validation", "phase": "val",
                          "psf_keys": ["basis_psfs", "basis_coef"]})
    samples = [val[i] for i in range(len(val))]
    shapes = {(tuple(s["basis_psfs"].shape), tuple(s["basis_coef"].shape)) for s in samples}
    assert shapes == {((3, 1, 9, 11, 11), (3, 1, 9, 40, 48))}  # K and k padded to the largest field's
    used = {int((s["basis_psfs"].flatten(3).abs().sum(-1) > 0).sum(-1).max()) for s in samples}
    assert used == {2, 9}  # the PCA field's two elements (then zeros), the other's nine nodes


def test_same_arguments_resume_other_order_is_refused(mixed):
    root, out, argv = mixed
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    assert step3.main(argv) == 0
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before
    swapped = list(argv)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(DataError, match="arguments differ"):
        step3.main(swapped)


def test_fields_must_share_the_sensor(mixed, tmp_path):
    root, _, _ = mixed
    save_psf_field(elliptical_gaussian_field(grid_shape=(2, 2), psf_size=9, sensor_res=(40, 40)), tmp_path / "other")
    with pytest.raises(ConfigError, match="share the sensor resolution"):
        step3.main(["--psf_data_path", str(root / "lens_a"), str(tmp_path / "other"), "--images", "builtin",
                    "--out", str(tmp_path / "ds")])
    assert not (tmp_path / "ds").exists()
