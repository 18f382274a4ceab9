"""Step 2 on depth-aware PSF files: one basis per depth plane, K shared by the planes (K = N exact,
explained energy = the measured reconstruction error, --energy meets E in every plane), the
layered renderer's basis method equal to the full one at K = N; single-plane files unchanged."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from psf.basis import field_with_basis, psf_basis
from psf.depth import load_depth_psf_field, save_depth_psf_field
from psf.field import load_psf_field, save_psf_field
from psf.svpsf import PSFSimulator

ROOT = Path(__file__).resolve().parent.parent
STEP2 = str(ROOT / "data_gen" / "2.generate_basis_psfs.py")
DEPTHS = [1.0, 2.0, 6.0]


@pytest.fixture(scope="module")
def stack():
    return PSFSimulator("seidel", grid_shape=(3, 3), psf_size=11, sensor_res=(24, 32), pixel_pitch_um=4.0,
                        f_number=4.0, focal_length_mm=25.0, focus_distance_m=2.0, object_distance_m=DEPTHS,
                        seidel={"W131": 1.0, "W222": 0.5}).simulate()


def step2(path, *args):
    proc = subprocess.run([sys.executable, STEP2, "--psf_data_path", str(path), "--no_figures", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def reconstruct(basis, coef):  # written out: sum over K of coef[..., K, n] * basis[..., K, :, :]
    return (coef[..., :, :, None, None] * basis[..., :, None, :, :]).sum(dim=-4)


def test_k_equal_n_reproduces_every_plane(stack, tmp_path):
    save_depth_psf_field(stack, tmp_path / "psfs.h5")
    out = step2(tmp_path, "--n_basis", "9")
    assert "K=9 of N=9" in out and "one basis per depth plane (3 planes)" in out
    with h5py.File(tmp_path / "psfs.h5") as f:
        assert f["basis_psfs"].shape == (3, 1, 3, 9, 11, 11) and f["basis_coef"].shape == (3, 1, 3, 9, 9)
        assert f["psfs"].shape == (3, 1, 3, 9, 11, 11) and list(f["depths_m"][()]) == DEPTHS
    new = load_depth_psf_field(tmp_path)
    assert new.n_basis == 9 and new.attrs["basis_method"] == "pca"
    rec = reconstruct(new.basis_psfs.double(), new.basis_coef.double())
    torch.testing.assert_close(rec, stack.psfs.double(), atol=2e-6, rtol=0)
    torch.testing.assert_close(new.psfs, stack.psfs)  # the PSFs themselves untouched
    plane = new.plane(1)
    assert plane.has_basis and plane.n_basis == 9 and plane.attrs["object_distance_m"] == 2.0
    assert new.at_depth(1.5).basis_psfs is None  # an interpolated plane carries no basis

    from utils.layered_renderer import LayeredRenderer

    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for depth in (1.0, 1.4, 6.0):
        full = LayeredRenderer(new, (24, 32), "reflect", "full", dtype=torch.float64).blur_at_depth(x, depth)
        basis = LayeredRenderer(new, (24, 32), "reflect", "basis", dtype=torch.float64).blur_at_depth(x, depth)
        torch.testing.assert_close(basis, full, atol=1e-5, rtol=0)


def test_energy_target_met_in_every_plane(stack, tmp_path):
    save_depth_psf_field(stack, tmp_path / "psfs.h5")
    step2(tmp_path, "--energy", "0.98", "--method", "svd")
    new = load_depth_psf_field(tmp_path)
    k = new.n_basis
    assert 1 <= k < 9 and new.attrs["basis_method"] == "svd"

    def measured(psfs, rec):  # E = 1 - ||X - X_K||² / ||X||², from the tensors
        return 1 - ((psfs - rec) ** 2).sum(dim=(-3, -2, -1)) / (psfs ** 2).sum(dim=(-3, -2, -1))

    for d in range(3):
        psfs = stack.psfs[:, :, d].double()
        e = measured(psfs, reconstruct(new.basis_psfs[:, :, d].double(), new.basis_coef[:, :, d].double()))
        assert (e >= 0.98 - 1e-5).all()
        torch.testing.assert_close(e.reshape(-1), torch.tensor(new.attrs["explained_energy"][d], dtype=torch.float64),
                                   atol=1e-5, rtol=0)
    # one element fewer misses the target in at least one channel of one plane
    worst = min(float(measured(stack.psfs[:, :, d].double(), reconstruct(b.basis_psfs, b.basis_coef)).min())
                for d in range(3) for b in [psf_basis(stack.psfs[:, :, d], n_basis=k - 1, method="svd")]) if k > 1 else 0
    assert worst < 0.98


def test_single_plane_files_unchanged(tmp_path):
    field = PSFSimulator("gaussian", grid_shape=(3, 3), psf_size=9, sensor_res=(24, 32), sigma_px=1.0,
                         sigma_corner_radial_px=2.0, sigma_corner_tangential_px=1.0).simulate()
    save_psf_field(field, tmp_path / "psfs.h5")
    out = step2(tmp_path, "--n_basis", "4")
    assert "K=4 of N=9 basis PSFs (pca), explained energy R=" in out
    new = load_psf_field(tmp_path)
    expected, _ = field_with_basis(field, n_basis=4)
    assert new.basis_psfs.shape == (3, 1, 4, 9, 9)
    torch.testing.assert_close(new.basis_psfs, expected.basis_psfs)
    torch.testing.assert_close(new.basis_coef, expected.basis_coef)
    with h5py.File(tmp_path / "psfs.h5") as f:
        assert "depths_m" not in f and f["psfs"].ndim == 5
