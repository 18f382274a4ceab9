"""HFDataset on a folder written by steps 1 -> 2 -> 3: its PSF keys re-create the stored lq."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataset import create_dataset
from tests.test_datasets_psf import scatter

ROOT = Path(__file__).resolve().parent.parent


def step(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "data_gen" / script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def step3_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("step3")
    psf_dir, out = tmp / "psf", tmp / "dataset"
    step("1.generate_psfs_synthetic.py", "--psf_type", "gaussian", "--save_dir", str(psf_dir), "--grid", "3", "3",
         "--psf_size", "11", "--sensor_res", "40", "48", "--no_previews")
    step("2.generate_basis_psfs.py", "--psf_data_path", str(psf_dir), "--n_basis", "4", "--no_figures")
    # sRGB-space blur without noise: lq = quantise(Σ_K B_K ∗ (a_K ⊙ gt)) exactly.
    step("3.generate_dataset_synthetic.py", "--psf_data_path", str(psf_dir), "--images", "builtin", "--out", str(out),
         "--seed", "2", "--method", "basis", "--noise", "none", "--render_space", "srgb", "--workers", "1",
         "--split_names", "validation=camera,coffee")
    return out, tmp / "cache"


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["val", "train"])
def test_step3_psf_keys_recreate_lq(step3_folder, phase):
    out, cache = step3_folder
    split = "validation" if phase == "val" else "train"
    ds = create_dataset({"type": "HFDataset", "path": str(out), "split": split, "phase": phase, "crop_size": 24,
                         "cache_dir": str(cache), "psf_keys": ["psf", "basis_psfs", "basis_coef"], "seed": 3})
    assert ds.psf_file_key == "psf_file" and list(ds.psf_attacher.fields) == ["psfs.h5"]
    r = 11 // 2
    for i in range(min(len(ds), 8)):
        s = ds[i]
        assert s["basis_psfs"].shape == (3, 1, 4, 11, 11) and s["basis_coef"].shape == (3, 1, 4, 24, 24)
        maps = torch.einsum("oikhw,oikyx->oyxhw", s["basis_coef"].double(), s["basis_psfs"].double())
        recon = scatter(s["gt"], maps)[:, r:-r, r:-r].clamp(0, 1)  # quantisation clips
        # Stored lq is 8-bit: within half a level (plus float noise) of the re-created blur.
        err = (recon - s["lq"].double()[:, r:-r, r:-r]).abs().max().item()
        assert err <= 0.5 / 255 + 1e-4, (s["key"], err)
