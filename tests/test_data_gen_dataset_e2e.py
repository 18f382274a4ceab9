"""Steps 1 -> 2 -> 3 end to end on the built-in images, read back by datasets and by HFDataset."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psf.field import load_psf_field
from utils.noise import NoiseModel
from utils.sv_renderer import SVRenderer, simulate_capture

ROOT = Path(__file__).resolve().parent.parent


def step(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "data_gen" / script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_steps_1_2_3_on_builtin_images(tmp_path):
    import datasets

    psf_dir, out = tmp_path / "psf", tmp_path / "dataset"
    step("1.generate_psfs_synthetic.py", "--psf_type", "seidel", "--save_dir", str(psf_dir), "--grid", "3", "3",
         "--psf_size", "15", "--sensor_res", "48", "64", "--seidel", "W040=1", "W131=1.5", "W222=1", "--no_previews")
    step("2.generate_basis_psfs.py", "--psf_data_path", str(psf_dir), "--n_basis", "4", "--no_figures")
    step("3.generate_dataset_synthetic.py", "--psf_data_path", str(psf_dir), "--images", "builtin", "--out", str(out),
         "--seed", "1", "--method", "basis", "--noise", "poisson_gaussian", "--photons", "200", "2000",
         "--read_noise", "2", "--workers", "2")
    # The shipped PSF file is the one steps 1-2 wrote, byte for byte, basis included.
    assert (out / "psfs" / "psfs.h5").read_bytes() == (psf_dir / "psfs.h5").read_bytes()
    field = load_psf_field(out / "psfs" / "psfs.h5")
    assert field.psf_type == "seidel" and field.n_basis == 4

    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert len(ds["train"]) + len(ds["validation"]) == 19 and len(ds["validation"]) == 2
    renderer = SVRenderer(field, field.sensor_res, "reflect", "basis", dtype=torch.float64)
    for sample in ds["validation"]:
        gt = torch.from_numpy(np.array(sample["gt"])).permute(2, 0, 1)[None].double() / 255
        noise = NoiseModel(sample["noise"], sample["sigma"], sample["photons"], sample["read_noise"])
        lq = simulate_capture(gt, renderer, noise, torch.Generator().manual_seed(sample["noise_seed"]), bits=8)
        assert np.array_equal(np.round(lq[0].permute(1, 2, 0).numpy() * 255), np.array(sample["lq"]))

    # The training side reads it too.
    from dataset import create_dataset

    val = create_dataset({"type": "HFDataset", "path": str(out), "split": "validation", "phase": "val"})
    item = val[0]
    assert item["gt"].shape == (3, 48, 64) and item["lq"].shape == (3, 48, 64) and isinstance(item["key"], str)
