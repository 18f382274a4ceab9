"""PSF bases (psf/basis.py): exactness at K = N, energy, K selection, atomic write."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psf.basis import add_basis, choose_n_basis, energy_curve, psf_basis, reconstruct
from psf.field import load_psf_field, save_psf_field
from psf.svpsf import PSFSimulator
from utils.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def field():
    return PSFSimulator("gaussian", grid_shape=(4, 5), psf_size=15, sensor_res=(120, 160),
                        lateral_color_px=[0.7, 0.0, -0.7]).simulate()


def random_psfs(n=12, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(3, 1, n, k, k, generator=g, dtype=torch.float64) ** 4
    return p / p.sum(dim=(-2, -1), keepdim=True)


@pytest.mark.parametrize("method", ["pca", "svd"])
def test_full_rank_reproduces_nodes(field, method):
    basis = psf_basis(field.psfs, n_basis=field.n_nodes, method=method)
    # stored as float32 like the file
    rec = reconstruct(basis.basis_psfs.float().double(), basis.basis_coef.float().double())
    assert float((rec - field.psfs.double()).abs().max()) <= 1e-5
    assert float(basis.explained_energy.min()) == pytest.approx(1.0, abs=1e-12)
    rand = random_psfs()
    basis = psf_basis(rand, n_basis=12, method=method)
    assert float((reconstruct(basis.basis_psfs, basis.basis_coef) - rand).abs().max()) < 1e-12


@pytest.mark.parametrize("method", ["pca", "svd"])
def test_energy_curve_is_the_reconstruction_error(method):
    """E(K) = 1 - ||X - X_K||^2 / ||X||^2 measured by brute force for every K; non-decreasing."""
    psfs = random_psfs()
    curve = energy_curve(psfs, method)
    assert torch.all(curve[..., 1:] >= curve[..., :-1] - 1e-15)
    total = psfs.square().sum(dim=(2, 3, 4))
    for k in range(1, 13):
        b = psf_basis(psfs, n_basis=k, method=method)
        err = (reconstruct(b.basis_psfs, b.basis_coef) - psfs).square().sum(dim=(2, 3, 4))
        torch.testing.assert_close(curve[..., k - 1], 1 - err / total, atol=1e-12, rtol=0)


def test_svd_is_optimal_and_pca_conserves_energy():
    psfs = random_psfs()
    for k in range(1, 12):
        pca = psf_basis(psfs, n_basis=k, method="pca")
        svd = psf_basis(psfs, n_basis=k, method="svd")
        assert torch.all(svd.explained_energy >= pca.explained_energy - 1e-12)  # Eckart-Young
        sums = reconstruct(pca.basis_psfs, pca.basis_coef).sum(dim=(-2, -1))
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)
        assert torch.allclose(pca.basis_coef[:, :, 0], torch.ones(3, 1, 12, dtype=torch.float64))


def test_energy_picks_smallest_k(field):
    curve = energy_curve(field.psfs, "pca")
    for target in (0.99, 0.999, 0.9999):
        k = choose_n_basis(curve, target)
        assert torch.all(curve[..., k - 1] >= target)
        assert k == 1 or bool(torch.any(curve[..., k - 2] < target))
        assert psf_basis(field.psfs, energy=target).n_basis == k
    assert choose_n_basis(torch.tensor([[[0.5, 0.9, 1.0]], [[0.8, 0.95, 1.0]]]), 0.9) == 2  # all channels


def test_bad_requests(field):
    with pytest.raises(ConfigError, match="n_basis K=21 is larger than the number of node PSFs N=20"):
        psf_basis(field.psfs, n_basis=21)
    with pytest.raises(ConfigError, match="exactly one"):
        psf_basis(field.psfs)
    with pytest.raises(ConfigError, match="exactly one"):
        psf_basis(field.psfs, n_basis=3, energy=0.9)
    with pytest.raises(ConfigError, match="energy must be in"):
        psf_basis(field.psfs, energy=1.5)
    with pytest.raises(ConfigError, match="unknown basis method 'pcaa'; did you mean 'pca'"):
        psf_basis(field.psfs, n_basis=2, method="pcaa")


def test_deterministic_signs():
    """Singular vectors are unique up to sign when the singular values are distinct (random PSFs;
    a symmetric field has degenerate pairs): the sign rule makes the basis independent of node order."""
    psfs = random_psfs()
    a = psf_basis(psfs, n_basis=6, method="svd")
    b = psf_basis(psfs.flip(2), n_basis=6, method="svd")
    torch.testing.assert_close(a.basis_psfs, b.basis_psfs, atol=1e-10, rtol=0)
    flat = a.basis_psfs.flatten(3)
    assert torch.all(flat.gather(-1, flat.abs().argmax(-1, keepdim=True)) > 0)


def test_add_basis_file_round_trip(tmp_path, field):
    save_psf_field(field, tmp_path)
    new, curve, path = add_basis(tmp_path, n_basis=field.n_nodes)
    loaded = load_psf_field(path)
    assert loaded.n_basis == 20 and loaded.attrs["basis_method"] == "pca" and loaded.psf_type == "gaussian"
    assert loaded.attrs["explained_energy"] == pytest.approx([1.0, 1.0, 1.0])
    # coefficient n belongs to node n: no offset between nodes and coefficients
    rec = reconstruct(loaded.basis_psfs.double(), loaded.basis_coef.double())
    assert float((rec - loaded.psfs.double()).abs().max()) <= 1e-5
    for name in ("psf_grid.png", "basis_psfs.png", "basis_coef.png", "explained_energy.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert not list(tmp_path.glob(".staging-*")) and not list(tmp_path.glob(".psfs.*"))
    # re-running replaces the basis
    add_basis(tmp_path, n_basis=3, method="svd", figures=False)
    assert load_psf_field(tmp_path).n_basis == 3


def test_add_basis_failure_leaves_file_untouched(tmp_path, field, monkeypatch):
    path = save_psf_field(field, tmp_path)
    before = path.read_bytes()
    import psf.basis

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(psf.basis, "save_psf_field", boom)
    with pytest.raises(OSError):
        add_basis(tmp_path, n_basis=4)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["psfs.h5"]
    with pytest.raises(ConfigError, match="K=21 is larger"):
        add_basis(tmp_path, n_basis=21)
    assert path.read_bytes() == before
    with pytest.raises(DataError, match="PSF file not found"):
        add_basis(tmp_path / "nowhere", n_basis=2)


def test_basis_values_are_float32_in_file(tmp_path, field):
    save_psf_field(field, tmp_path)
    add_basis(tmp_path, energy=0.999, figures=False)
    import h5py

    with h5py.File(tmp_path / "psfs.h5") as f:
        assert f["basis_psfs"].dtype == np.float32 and f["basis_coef"].dtype == np.float32
        assert f["psfs"].dtype == np.float32
        assert f.attrs["n_basis"] == f["basis_psfs"].shape[2]
