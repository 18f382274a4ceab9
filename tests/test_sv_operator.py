"""The batch blur operator H x = Σ_k B_k ∗ (a_k ⊙ x) and its adjoint (utils.sv_renderer.BasisBlur).

References it is checked against: ``render()`` on the same field (whose ``full`` method is
itself checked against a brute-force per-pixel scatter in test_renderer.py), and the explicit
matrix of H built column by column (adjoint = transpose, spectral norm by SVD).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psf.field import PSFField, default_H_img
from psf.basis import psf_basis
from utils.sv_renderer import BasisBlur, coef_maps, render, sv_blur, sv_blur_adjoint


def random_field(c_out=3, c_in=1, grid=(3, 3), k=7, sensor=(20, 23), seed=0) -> PSFField:
    g = torch.Generator().manual_seed(seed)
    psfs = torch.rand(c_out, c_in, grid[0] * grid[1], k, k, generator=g, dtype=torch.float64) ** 3
    psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
    return PSFField(psfs=psfs, grid_shape=grid, sensor_res=sensor, H_img=default_H_img(grid, sensor),
                    H_obj=np.eye(3), normalized=c_in == 1, channel_order="RGB"[:c_out])


def batch_keys(field: PSFField, h: int, w: int, origin=(0, 0)):
    """What a dataset yields (one sample, batched): the basis PSFs and per-pixel coefficient maps."""
    basis = field.basis_psfs if field.has_basis else field.psfs
    return basis.double()[None], coef_maps(field, h, w, origin=origin, dtype=torch.float64)[None]


def with_pca(field: PSFField, k: int) -> PSFField:
    b = psf_basis(field.psfs, n_basis=k, method="pca")
    return field.with_basis(b.basis_psfs, b.basis_coef)


@pytest.mark.parametrize("boundary", ["reflect", "zero"])
@pytest.mark.parametrize("kind", ["full_rank", "pca", "cross_talk"])
def test_equals_the_renderer(kind, boundary):
    field = {"full_rank": random_field(), "pca": with_pca(random_field(seed=1), 4),
             "cross_talk": random_field(c_in=3, seed=2)}[kind]
    x = torch.rand(2, 3, 20, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    method = "basis" if field.has_basis else "full"
    ref = render(x, field, boundary=boundary, method=method)
    out = sv_blur(x, *batch_keys(field, 20, 23), boundary=boundary)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12, rtol=0), (out - ref).abs().max()


def test_per_sample_fields_and_crops():
    """Two samples with different fields (and a crop at an offset) in one batch: each equals its own render."""
    f1, f2 = random_field(seed=3), with_pca(random_field(seed=4), 5)
    x = torch.rand(2, 3, 12, 15, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b1, a1 = batch_keys(f1, 12, 15, origin=(4, 6))
    b2, a2 = batch_keys(f2, 12, 15)
    k = max(b1.shape[3], b2.shape[3])  # pad K with zero elements, as a dataset mixing fields does
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, k - t.shape[3]))  # noqa: E731
    out = sv_blur(x, torch.cat([pad(b1), pad(b2)]), torch.cat([pad(a1), pad(a2)]))
    assert torch.allclose(out[:1], render(x[:1], f1, origin=(4, 6)), atol=1e-12, rtol=0)
    assert torch.allclose(out[1:], render(x[1:], f2, method="basis"), atol=1e-12, rtol=0)
    # A single-channel field blurs every channel alike; B = 1 broadcasts over the batch.
    mono = random_field(c_out=1, seed=5)
    out = sv_blur(x, *batch_keys(mono, 12, 15))
    assert torch.allclose(out, render(x, mono), atol=1e-12, rtol=0)


def dense_matrix(fn, shape):
    """The matrix of a linear map on tensors of ``shape`` (columns = images of unit vectors)."""
    n = int(np.prod(shape))
    cols = [fn(torch.eye(n, dtype=torch.float64)[j].reshape(shape)).reshape(-1) for j in range(n)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("boundary", ["reflect", "zero"])
@pytest.mark.parametrize("c_in,size", [(1, (5, 6)), (3, (4, 5)), (1, (3, 2))])  # (3, 2): PSF radius > image
def test_adjoint_is_the_transpose(boundary, c_in, size):
    field = with_pca(random_field(c_in=c_in, k=7 if size != (3, 2) else 9, seed=6), 4)
    op = BasisBlur(*batch_keys(field, *size), boundary=boundary)
    shape = (1, 3, *size)
    h = dense_matrix(op.blur, shape)
    ht = dense_matrix(op.adjoint, shape)
    assert torch.allclose(ht, h.T, atol=1e-13, rtol=0)
    # <Hx, y> = <x, Hᵀy> on random images (batch of 2)
    g = torch.Generator().manual_seed(7)
    x, y = (torch.randn(2, *shape[1:], generator=g, dtype=torch.float64) for _ in range(2))
    lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)
    # The convenience function is the same operator.
    assert torch.equal(sv_blur_adjoint(y, *batch_keys(field, *size), boundary=boundary), op.adjoint(y))


def test_norm_bound_is_an_upper_bound():
    # Non-negative PSFs and weights: the bound is a useful step size (within 1.25 of the norm); a zero
    # boundary on a 6x7 image drops much of a 7x7 PSF outside it (looser); signed PCA elements: loosest.
    cases = ((random_field(seed=8), "reflect", 1.25), (random_field(c_in=3, seed=10), "reflect", 1.25),
             (random_field(seed=11), "zero", 2.0), (with_pca(random_field(c_in=3, seed=9), 3), "zero", None))
    for field, boundary, tight in cases:
        op = BasisBlur(*batch_keys(field, 6, 7), boundary=boundary)
        true_norm = torch.linalg.matrix_norm(dense_matrix(op.blur, (1, 3, 6, 7)), ord=2).item()
        bound = op.norm_bound().item()
        print(f"{boundary}: ||H|| = {true_norm:.4f}, bound {bound:.4f}")
        assert true_norm <= bound * (1 + 1e-12)
        if tight:
            assert bound < tight * true_norm


def test_shape_errors():
    b, a = batch_keys(random_field(), 10, 12)
    op = BasisBlur(b, a)
    with pytest.raises(ValueError, match="basis_coef size"):
        op(torch.rand(1, 3, 10, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="need 3"):
        op(torch.rand(1, 2, 10, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="odd size"):
        BasisBlur(b[..., :6, :6], a)
