"""Non-blind spatially varying restorers: Richardson–Lucy and FISTA-TV (models/archs/).

Independent references: a direct Richardson–Lucy written with scipy.signal.fftconvolve, a
Chambolle–Pock primal-dual solver in numpy on the explicit matrix of H (another algorithm, exact
TV), and the renderer for the forward model.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from scipy.signal import fftconvolve

from models.archs import define_network
from models.archs.fista_tv_arch import fista_tv, fista_tv_objective, tv_divergence, tv_gradient
from psf.field import PSFField, default_H_img
from utils.noise import gaussian_noise, linear_to_srgb, srgb_to_linear
from psf.example_fields import elliptical_gaussian_field
from utils.sv_renderer import BasisBlur, coef_maps, render


def psnr(a, b, border=0):
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return 10 * math.log10(1 / (a.double() - b.double()).square().mean().item())


def astronaut(size=64) -> torch.Tensor:
    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255


def keys(field: PSFField, h: int, w: int):
    basis = field.basis_psfs if field.has_basis else field.psfs
    return {"basis_psfs": basis.double()[None], "basis_coef": coef_maps(field, h, w, dtype=torch.float64)[None]}


def invariant_field(psf: torch.Tensor, size) -> PSFField:
    """The same PSF [C, 1, k, k] at the 4 nodes of a 2×2 grid: a spatially invariant blur."""
    return PSFField(psfs=psf[:, :, None].expand(*psf.shape[:2], 4, *psf.shape[2:]).double(), grid_shape=(2, 2),
                    sensor_res=size, H_img=default_H_img((2, 2), size), H_obj=np.eye(3), normalized=True)


@pytest.fixture(scope="module")
def varying_case():
    """A strongly varying field (elongated, coma-like PSFs towards the corners), mild noise."""
    x = astronaut(64)
    field = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=15, sensor_res=(64, 64), sigma_center=0.8,
                                      sigma_radial=2.5, sigma_tangential=1.2, coma_shift=1.0)
    y = gaussian_noise(render(x, field), 0.005, torch.Generator().manual_seed(0))
    return x, y, field


# -- Richardson–Lucy --------------------------------------------------------------------------------
def test_rl_with_an_invariant_psf_equals_a_direct_implementation():
    g = torch.Generator().manual_seed(0)
    psf = torch.rand(3, 1, 9, 9, generator=g, dtype=torch.float64) ** 2
    psf = psf / psf.sum((-2, -1), keepdim=True)
    x = astronaut(40)
    y = render(x, invariant_field(psf, (40, 40)), boundary="zero").clamp(min=0)
    offset = 2e-3
    net = define_network({"type": "RichardsonLucy", "iterations": 15, "boundary": "zero", "offset": offset}).double()
    out = net(y, **keys(invariant_field(psf, (40, 40)), 40, 40))
    # Direct RL per channel: H = 'same' convolution (scatter form), Hᵀ = correlation, normalised by Hᵀ1.
    ref = []
    for c in range(3):
        k = psf[c, 0].numpy()
        yc = y[0, c].numpy()
        blur = lambda v: fftconvolve(v, k, mode="same")  # noqa: E731
        adjoint = lambda v: fftconvolve(v, k[::-1, ::-1], mode="same")  # noqa: E731
        norm = adjoint(np.ones_like(yc))
        xc = np.maximum(yc, 1e-6)
        for _ in range(15):
            xc = xc * adjoint((yc + offset) / np.maximum(blur(xc) + offset, 1e-6)) / norm
        ref.append(xc)
    ref = torch.from_numpy(np.stack(ref))[None]
    assert torch.allclose(out, ref, atol=1e-9, rtol=1e-9), (out - ref).abs().max()
    assert psnr(out, x, border=5) > psnr(y, x, border=5) + 1.0


def test_rl_with_the_true_sv_psfs_beats_the_blurred_input(varying_case):
    x, y, field = varying_case
    out = define_network({"type": "RichardsonLucy", "iterations": 20}).double()(y, **keys(field, 64, 64))
    print(f"RL: blurred {psnr(y, x):.2f} dB -> {psnr(out, x):.2f} dB")
    assert psnr(out, x) > psnr(y, x) + 1.5
    assert out.min() >= 0  # multiplicative updates keep the estimate non-negative


def test_linear_light_option_matches_data_blurred_in_linear_light():
    """Blur in linear light (as step 3 does by default): RL must decode sRGB first to invert it."""
    x = astronaut(48)
    field = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=9, sensor_res=(48, 48), sigma_center=1.3,
                                      sigma_radial=1.3, sigma_tangential=1.3, coma_shift=0.0)
    y = linear_to_srgb(render(srgb_to_linear(x), field))
    scores = {}
    for linear in (False, True):
        net = define_network({"type": "RichardsonLucy", "iterations": 40, "linear_light": linear}).double()
        scores[linear] = psnr(net(y, **keys(field, 48, 48)), x, border=4)
    print(f"RL on linear-light blur: sRGB model {scores[False]:.2f} dB, linear-light model {scores[True]:.2f} dB")
    assert scores[True] > scores[False] + 1.0


def test_rl_basis_and_full_rank_agree(varying_case):
    """The same field given by a full-rank PCA basis: same operator, same RL result."""
    from psf.basis import psf_basis

    x, y, field = varying_case
    b = psf_basis(field.psfs, n_basis=field.n_nodes, method="pca")
    pca = field.with_basis(b.basis_psfs, b.basis_coef)
    net = define_network({"type": "RichardsonLucy", "iterations": 5}).double()
    assert torch.allclose(net(y, **keys(field, 64, 64)), net(y, **keys(pca, 64, 64)), atol=1e-10)


# -- FISTA-TV -----------------------------------------------------------------------------------------
def test_tv_divergence_is_the_adjoint_of_the_gradient():
    g = torch.Generator().manual_seed(3)
    x, p, q = (torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) for _ in range(3))
    p[..., -1, :] = 0
    q[..., :, -1] = 0
    gp, gq = tv_gradient(x)
    assert torch.allclose((gp * p + gq * q).sum(), (x * tv_divergence(p, q)).sum(), atol=1e-12)


def chambolle_pock(h_mat: np.ndarray, y: np.ndarray, lam: float, shape, iterations: int) -> np.ndarray:
    """min_x ½|Hx − y|² + lam·TV(x), x ∈ [0, 1], by the primal-dual algorithm of Chambolle & Pock
    (JMIV 40, 2011, Algorithm 1) on the explicit matrix: an independent solver of the same problem."""
    h, w = shape

    def grad(v):
        v = v.reshape(h, w)
        gy, gx = np.zeros_like(v), np.zeros_like(v)
        gy[:-1], gx[:, :-1] = v[1:] - v[:-1], v[:, 1:] - v[:, :-1]
        return gy, gx

    def grad_t(gy, gx):
        out = np.zeros_like(gy)
        out[1:] += gy[:-1]
        out[:-1] -= gy[:-1]
        out[:, 1:] += gx[:, :-1]
        out[:, :-1] -= gx[:, :-1]
        return out.reshape(-1)

    tau = sigma = 0.99 / math.sqrt(np.linalg.norm(h_mat, 2) ** 2 + 8)
    x = np.clip(y, 0, 1)
    xb, u = x.copy(), np.zeros_like(y)
    py, px = np.zeros(shape), np.zeros(shape)
    for _ in range(iterations):
        u = (u + sigma * (h_mat @ xb - y)) / (1 + sigma)
        gy, gx = grad(xb)
        py, px = py + sigma * gy, px + sigma * gx
        scale = np.maximum(1, np.sqrt(py ** 2 + px ** 2) / lam)
        py, px = py / scale, px / scale
        x_new = np.clip(x - tau * (h_mat.T @ u + grad_t(py, px)), 0, 1)
        xb, x = 2 * x_new - x, x_new
    return x


def test_fista_tv_converges_to_an_independent_solver():
    g = torch.Generator().manual_seed(0)
    shape = (10, 12)
    psfs = torch.rand(1, 1, 4, 5, 5, generator=g, dtype=torch.float64) ** 2
    psfs = psfs / psfs.sum((-2, -1), keepdim=True)  # four different PSFs: spatially varying
    field = PSFField(psfs=psfs, grid_shape=(2, 2), sensor_res=shape, H_img=default_H_img((2, 2), shape),
                     H_obj=np.eye(3), normalized=True, channel_order="L")
    op = BasisBlur(**keys(field, *shape))
    x_true = torch.zeros(1, 1, *shape, dtype=torch.float64)
    x_true[..., 2:7, 3:9] = 0.8
    x_true[..., 5:9, 6:11] += 0.3
    y = op(x_true) + 0.02 * torch.randn(x_true.shape, generator=g, dtype=torch.float64)
    lam = 0.02
    n = x_true.numel()
    h_mat = torch.stack([op(torch.eye(n, dtype=torch.float64)[j].reshape(x_true.shape)).reshape(-1)
                         for j in range(n)], 1).numpy()
    x_ref = torch.from_numpy(chambolle_pock(h_mat, y.reshape(-1).numpy(), lam, shape, 60000)).reshape(x_true.shape)
    trace = []
    x = fista_tv(y, op, lam, iterations=300, tv_iterations=20, trace=trace)
    f, f_ref = fista_tv_objective(x, y, op, lam).item(), fista_tv_objective(x_ref, y, op, lam).item()
    trace = torch.stack(trace).squeeze(1)
    rises = ((trace[1:] - trace[:-1]) / trace[:-1]).clamp(min=0)
    print(f"FISTA-TV objective {f:.10f}, Chambolle-Pock {f_ref:.10f}; max |x - x_ref| "
          f"{(x - x_ref).abs().max().item():.2e}; largest relative rise of the objective {rises.max().item():.1e}")
    assert abs(f - f_ref) < 1e-6 * f_ref
    assert (x - x_ref).abs().max() < 1e-4
    # Monotone-ish: FISTA is not a descent method, but its rises are tiny and the trend is down.
    assert rises.max() < 1e-3
    assert trace[-1] < trace[0] < fista_tv_objective(y.clamp(0, 1), y, op, lam).item()


def test_fista_tv_with_the_true_sv_psfs_beats_the_blurred_input(varying_case):
    x, y, field = varying_case
    net = define_network({"type": "FISTATV", "iterations": 30, "tv_weight": 2e-3}).double()
    out = net(y, **keys(field, 64, 64))
    print(f"FISTA-TV: blurred {psnr(y, x):.2f} dB -> {psnr(out, x):.2f} dB")
    assert psnr(out, x) > psnr(y, x) + 1.5
    assert 0 <= out.min() and out.max() <= 1  # the box constraint


def test_learnable_tv_weight_gets_a_gradient(varying_case):
    x, y, field = varying_case
    net = define_network({"type": "FISTATV", "iterations": 3, "tv_iterations": 3, "learnable_tv_weight": True})
    loss = (net(y.float()[..., :32, :32], **{k: v.float()[..., :32, :32] if k == "basis_coef" else v.float()
                                            for k, v in keys(field, 64, 64).items()}) - x.float()[..., :32, :32]).square().mean()
    loss.backward()
    assert net.log_tv_weight.grad is not None and net.log_tv_weight.grad.abs().sum() > 0
