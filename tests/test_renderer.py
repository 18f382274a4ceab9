"""Spatially varying renderer: exactness vs independent references, geometry, boundaries, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from psf.basis import psf_basis
from psf.example_fields import elliptical_gaussian_field
from psf.field import PSFField, default_H_img, save_psf_field
from utils.sv_renderer import (
    SVRenderer,
    coef_maps,
    interpolated_psf,
    node_weight_maps,
    node_weights,
    render,
    render_brute_force,
)


def random_field(c_out=3, c_in=1, grid=(3, 4), k=7, sensor=(40, 50), seed=0) -> PSFField:
    """Random positive (hence asymmetric) PSFs, different at every node."""
    g = torch.Generator().manual_seed(seed)
    psfs = torch.rand(c_out, c_in, grid[0] * grid[1], k, k, generator=g) ** 3
    psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
    return PSFField(psfs=psfs, grid_shape=grid, sensor_res=sensor, H_img=default_H_img(grid, sensor),
                    H_obj=np.eye(3), normalized=c_in == 1, channel_order="RGB"[:c_out])


def svd_basis(field: PSFField, k: int | None = None) -> PSFField:
    """Step 2's truncated-SVD basis (psf.basis): psfs ≈ Σ_K coef · basis."""
    basis = psf_basis(field.psfs, n_basis=k or field.n_nodes, method="svd")
    return field.with_basis(basis.basis_psfs.float(), basis.basis_coef.float())


def psnr(a, b, peak=1.0):
    mse = (a.double() - b.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


# -- node weights against closed forms --------------------------------------------------------
def test_node_weights_closed_form():
    f = random_field(grid=(3, 4), sensor=(41, 61))  # nodes at x = 0, 20, 40, 60 and y = 0, 20, 40
    maps = node_weight_maps(f, 41, 61, dtype=torch.float64)
    assert torch.allclose(maps.sum(0), torch.ones(41, 61, dtype=torch.float64))
    for n, (x, y) in enumerate(f.positions.round().astype(int)):
        assert maps[n, y, x] == 1.0  # at a node: that node only
    # (x=30, y=10): halfway between columns 1 and 2 and rows 0 and 1 -> 1/4 each.
    assert torch.allclose(maps[[1, 2, 5, 6], 10, 30], torch.full((4,), 0.25, dtype=torch.float64))
    # (x=25, y=20): row 1 exactly, 1/4 of the way from column 1 to 2.
    assert torch.allclose(maps[[5, 6], 20, 25], torch.tensor([0.75, 0.25], dtype=torch.float64))
    # Beyond the hull (image larger than the sensor): the nearest node.
    big = node_weight_maps(f, 60, 90, dtype=torch.float64)
    assert big[11, 59, 89] == 1.0 and big[3, 0, 89] == 1.0 and big[8, 59, 0] == 1.0
    # Fixed tiles: nearest node, weight one.
    idx, w = node_weights(f, 41, 61, nearest=True)
    assert torch.all(w[0] == 1) and idx[0, 9, 31].item() == 2 and idx[0, 9, 29].item() == 1


def test_origin_and_large_images_follow_the_homography():
    f = svd_basis(random_field(sensor=(40, 50)))
    full = coef_maps(f, 40, 50)
    crop = coef_maps(f, 16, 20, origin=(12, 25))
    assert torch.allclose(crop, full[..., 12:28, 25:45], atol=1e-6)
    big = coef_maps(f, 60, 80)  # beyond the sensor: clamped to the edge nodes' coefficients
    assert torch.allclose(big[..., :40, :50], full, atol=1e-6)
    assert torch.allclose(big[..., 50, 70], full[..., 39, 49], atol=1e-6)
    # A crop rendered at its origin equals the full-sensor render of the image zero outside it.
    x = torch.zeros(1, 3, 40, 50, dtype=torch.float64)
    x[..., 12:28, 25:45] = torch.rand(1, 3, 16, 20, dtype=torch.float64)
    ref = render(x, f, boundary="zero", method="full")[..., 12:28, 25:45]
    out = render(x[..., 12:28, 25:45], f, boundary="zero", method="full", origin=(12, 25))
    assert torch.allclose(out, ref, atol=1e-12)


# -- the brute force against a naive per-pixel loop -----------------------------------------------
def naive_scatter(x: np.ndarray, psfs: np.ndarray, grid, sensor) -> np.ndarray:
    """Zero boundary, C_in = 1: loop over pixels, bilinear PSF from the node spacing, scatter."""
    gh, gw = grid
    h, w = sensor
    k = psfs.shape[-1]
    r = k // 2
    out = np.zeros_like(x)
    for y in range(h):
        for xx in range(w):
            col, row = xx * (gw - 1) / (w - 1), y * (gh - 1) / (h - 1)
            c0, r0 = min(int(col), gw - 2), min(int(row), gh - 2)
            fc, fr = col - c0, row - r0
            p = ((1 - fr) * (1 - fc) * psfs[:, r0 * gw + c0] + (1 - fr) * fc * psfs[:, r0 * gw + c0 + 1]
                 + fr * (1 - fc) * psfs[:, (r0 + 1) * gw + c0] + fr * fc * psfs[:, (r0 + 1) * gw + c0 + 1])
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= xx + dx < w:
                        out[:, y + dy, xx + dx] += p[:, r + dy, r + dx] * x[:, y, xx]
    return out


def test_brute_force_equals_naive_per_pixel_loop():
    f = random_field(grid=(2, 3), k=5, sensor=(11, 13))
    x = torch.rand(1, 3, 11, 13, dtype=torch.float64)
    ref = naive_scatter(x[0].numpy(), f.psfs[:, 0].double().numpy(), f.grid_shape, f.sensor_res)
    out = render_brute_force(x, f, boundary="zero")
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-14)


# -- exactness -----------------------------------------------------------------------------------
@pytest.mark.parametrize("boundary", ["reflect", "zero"])
def test_full_rank_matches_brute_force(boundary):
    f = random_field(grid=(3, 4), k=9, sensor=(48, 57))
    x = torch.rand(2, 3, 48, 57)
    ref = render_brute_force(x.double(), f, boundary)
    results = {
        "full": render(x, f, boundary, method="full"),
        "basis K=N (one-hot)": render(x, f.with_basis(f.psfs.clone(), torch.eye(12).expand(3, 1, 12, 12).clone()), boundary),
        "basis K=N (svd)": render(x, svd_basis(f), boundary),
    }
    for name, out in results.items():
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert psnr(out, ref) >= 80, f"{name}: {psnr(out, ref):.1f} dB"
    # Float64 is exact to rounding.
    assert torch.allclose(render(x.double(), f, boundary, method="full"), ref, atol=1e-13)
    # A truncated basis is an approximation, and must show it.
    assert psnr(render(x, svd_basis(f, 3), boundary), ref) < 60


def test_cross_talk_matches_brute_force():
    f = random_field(c_in=3, grid=(2, 3), k=7, sensor=(30, 41))
    x = torch.rand(1, 3, 30, 41, dtype=torch.float64)
    ref = render_brute_force(x, f, "reflect")
    # Independent check of the channel mixing: sum of per-(o, i) single-channel renders.
    manual = torch.zeros_like(ref)
    for o in range(3):
        for i in range(3):
            single = PSFField(psfs=f.psfs[o:o + 1, i:i + 1], grid_shape=f.grid_shape, sensor_res=f.sensor_res,
                              H_img=f.H_img, H_obj=f.H_obj, channel_order="Y", normalized=False)
            manual[:, o] += render_brute_force(x[:, i:i + 1], single, "reflect")[:, 0]
    assert torch.allclose(ref, manual, atol=1e-13)
    for out in (render(x, f, method="full"), render(x, svd_basis(f))):
        assert psnr(out, ref) >= 80


def test_single_channel_field_blurs_every_channel():
    f = random_field(c_out=1, grid=(2, 2), sensor=(20, 20))
    f.channel_order = "Y"
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    out = render(x, f)
    for c in range(3):
        assert torch.allclose(out[:, c:c + 1], render(x[:, c:c + 1], f), atol=1e-13)
    assert torch.allclose(out, render_brute_force(x, f), atol=1e-13)


# -- geometry --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "basis", "tiles", "brute_force"])
def test_impulse_lands_its_psf_in_place(method):
    """A point source at p spreads psf[k//2+dy, k//2+dx] to p + (dy, dx) (DESIGN.md)."""
    k, grid, sensor = 9, (3, 3), (33, 41)  # nodes at x = 0, 20, 40 and y = 0, 16, 32
    psfs = torch.zeros(3, 1, 9, k, k)
    for n in range(9):
        psfs[0, 0, n, 4 + 3, 4 - 1] = 0.6  # red: 3 down, 1 left
        psfs[0, 0, n, 4, 4 + 2] = 0.4  # red: 2 right
        psfs[1, 0, n, 4 - 2, 4] = 1.0  # green: 2 up
        psfs[2, 0, n, 4, 4] = 1.0  # blue: in place
    f = PSFField(psfs=psfs, grid_shape=grid, sensor_res=sensor, H_img=default_H_img(grid, sensor), H_obj=np.eye(3))
    if method == "basis":
        f = svd_basis(f)
    x = torch.zeros(1, 3, *sensor, dtype=torch.float64)
    x[0, :, 16, 20] = 1.0  # exactly on the centre node
    out = render(x, f, boundary="zero", method=method)[0]
    expect = torch.zeros_like(out)
    expect[0, 19, 19], expect[0, 16, 22], expect[1, 14, 20], expect[2, 16, 20] = 0.6, 0.4, 1.0, 1.0
    assert torch.allclose(out, expect, atol=1e-6)


def test_impulse_between_nodes_gets_the_interpolated_psf():
    f = random_field(grid=(3, 4), k=7, sensor=(41, 61))
    x = torch.zeros(1, 3, 41, 61, dtype=torch.float64)
    x[0, :, 27, 33] = 1.0
    for method in ("full", "brute_force"):
        out = render(x, f, boundary="zero", method=method)[0, :, 24:31, 30:37]
        assert torch.allclose(out, interpolated_psf(f, 33, 27)[:, 0].double(), atol=1e-6)
    # The bilinear mix: x = 33 is column 1.65 (0.35 of column 1), y = 27 is row 1.35 (0.65 of row 1).
    p = f.psfs[:, 0].double()
    mix = 0.65 * 0.35 * p[:, 5] + 0.65 * 0.65 * p[:, 6] + 0.35 * 0.35 * p[:, 9] + 0.35 * 0.65 * p[:, 10]
    assert torch.allclose(interpolated_psf(f, 33, 27)[:, 0].double(), mix, atol=1e-6)


# -- boundaries: linear, never circular ----------------------------------------------------------
def test_no_wraparound():
    f = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=15, sensor_res=(40, 48), sigma_radial=3.0)
    x = torch.zeros(1, 3, 40, 48)
    x[..., :, :2] = 1.0  # bright left edge
    x[..., :2, :] = 1.0  # and top edge
    for method in ("full", "basis", "tiles"):
        g = svd_basis(f) if method == "basis" else f
        for boundary in ("zero", "reflect"):
            out = render(x, g, boundary, method=method)
            assert out[..., 20:, 20:].abs().max() < 1e-6, (method, boundary)  # far side stays black
    # The same blur done circularly does leak: the check above can fail.
    kernel = torch.zeros(40, 48)
    kernel[:15, :15] = f.psfs[1, 0, 4]
    kernel = torch.roll(kernel, (-7, -7), (0, 1))
    circular = torch.fft.irfft2(torch.fft.rfft2(x[0, 1]) * torch.fft.rfft2(kernel), s=(40, 48))
    assert circular[20:, 20:].abs().max() > 1e-2


@pytest.mark.parametrize("boundary,mode", [("reflect", "mirror"), ("zero", "constant")])
def test_invariant_field_equals_scipy_convolution(boundary, mode):
    """One PSF everywhere: must equal scipy.ndimage.convolve (third-party linear convolution)."""
    g = torch.Generator().manual_seed(3)
    psf = torch.rand(3, 1, 1, 11, 11, generator=g, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    f = PSFField(psfs=psf.expand(3, 1, 4, 11, 11).float(), grid_shape=(2, 2), sensor_res=(23, 30),
                 H_img=default_H_img((2, 2), (23, 30)), H_obj=np.eye(3))
    x = torch.rand(1, 3, 23, 30, dtype=torch.float64, generator=g)
    ref = np.stack([ndimage.convolve(x[0, c].numpy(), f.psfs[c, 0, 0].double().numpy(), mode=mode) for c in range(3)])
    for method in ("full", "tiles", "brute_force"):
        np.testing.assert_allclose(render(x, f, boundary, method=method)[0].numpy(), ref, atol=1e-7)


def test_small_image_with_large_psf_reflects():
    # Reflection wider than the image (r = 12 > 9 pixels) still works: mirror repeatedly.
    f = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=25, sensor_res=(9, 10))
    x = torch.rand(1, 3, 9, 10, dtype=torch.float64)
    ref = np.stack([ndimage.convolve(x[0, c].numpy(), f.psfs[c, 0, 0].double().numpy(), mode="mirror") for c in range(3)])
    out = render(x, PSFField(psfs=f.psfs[:, :, :1].expand(3, 1, 4, 25, 25), grid_shape=(2, 2), sensor_res=(9, 10),
                             H_img=f.H_img, H_obj=f.H_obj))
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-7)
    assert torch.allclose(render(x, f), render_brute_force(x, f), atol=1e-12)


# -- basis and coefficient maps ------------------------------------------------------------------
def test_coef_maps_reconstruct_the_interpolated_psf():
    f = svd_basis(random_field(grid=(3, 4), sensor=(41, 61)))
    maps = coef_maps(f, 41, 61, dtype=torch.float64)
    assert maps.shape == (3, 1, 12, 41, 61)
    for x, y in ((0, 0), (33, 27), (60, 40), (7, 19)):
        psf = torch.einsum("oik,oikyx->oiyx", maps[..., y, x], f.basis_psfs.double())
        assert torch.allclose(psf, interpolated_psf(f, x, y).double(), atol=1e-5)
    full_rank = coef_maps(random_field(grid=(3, 4), sensor=(41, 61)), 41, 61)
    assert full_rank.shape == (3, 1, 12, 41, 61) and torch.allclose(full_rank.sum(2), torch.ones(3, 1, 41, 61))
    assert coef_maps(f, 41, 61, n_basis=4).shape == (3, 1, 4, 41, 61)


def test_tiles_is_piecewise_constant():
    f = random_field(grid=(3, 4), sensor=(41, 61))
    x = torch.zeros(1, 3, 41, 61, dtype=torch.float64)
    x[0, :, 9, 31] = 1.0  # column 1.55 and row 0.45: nearest node (row 0, column 2)
    out = render(x, f, "zero", method="tiles")[0, :, 6:13, 28:35]
    assert torch.allclose(out, f.psfs[:, 0, 2].double(), atol=1e-6)


# -- autograd, dtype, device, io -------------------------------------------------------------------
@pytest.mark.parametrize("method,strategy", [("full", "auto"), ("basis", "dense"), ("basis", "nodes"), ("tiles", "auto")])
def test_gradcheck(method, strategy):
    f = random_field(grid=(2, 2), k=3, sensor=(6, 7))
    if method == "basis":
        f = svd_basis(f, 3)
    renderer = SVRenderer(f, (6, 7), method=method, dtype=torch.float64, basis_strategy=strategy)
    x = torch.rand(1, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(renderer, (x,))


def test_render_from_path_and_dtypes(tmp_path):
    f = random_field(grid=(2, 3), sensor=(20, 30))
    path = save_psf_field(f, tmp_path)
    x = torch.rand(1, 3, 20, 30)
    assert torch.equal(render(x, path), render(x, f))
    assert torch.equal(render(x, tmp_path), render(x, f))
    assert render(x.double(), f).dtype == torch.float64


def test_bad_inputs():
    f = random_field(grid=(2, 3), sensor=(20, 30))
    with pytest.raises(ValueError, match="per-channel PSFs need 3 image channels"):
        render(torch.rand(1, 2, 20, 30), f)
    with pytest.raises(ValueError, match="boundary must be one of"):
        render(torch.rand(1, 3, 20, 30), f, boundary="circular")
    with pytest.raises(ValueError, match="method='basis' needs a field with basis"):
        render(torch.rand(1, 3, 20, 30), f, method="basis")
    with pytest.raises(ValueError, match="prepared for 20x30"):
        SVRenderer(f, (20, 30))(torch.rand(1, 3, 21, 30))
    with pytest.raises(ValueError, match="n_basis=7 but the field has 6"):
        render(torch.rand(1, 3, 20, 30), svd_basis(f), n_basis=7)


def test_elliptical_field_is_normalised_and_asymmetric_off_axis():
    f = elliptical_gaussian_field(grid_shape=(5, 5), psf_size=21, sensor_res=(64, 64))
    f.validate()
    centre, corner = f.psfs[1, 0, 12], f.psfs[1, 0, 24]
    assert torch.allclose(centre, centre.flip(-1).flip(-2), atol=1e-7)  # on axis: point-symmetric
    assert (corner - corner.flip(-1).flip(-2)).abs().max() > 1e-3  # off axis: coma
    # Elongated radially (along the diagonal at the corner): second moments.
    yy, xx = torch.meshgrid(torch.arange(-10, 11.0), torch.arange(-10, 11.0), indexing="ij")
    diag = ((xx + yy) / math.sqrt(2)).square().mul(corner).sum()
    anti = ((xx - yy) / math.sqrt(2)).square().mul(corner).sum()
    assert diag > 2 * anti


def test_bench_render_writes_the_documented_json(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_render.py"
    spec = importlib.util.spec_from_file_location("bench_render", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--size", "40", "--grid", "3", "--psf_size", "7", "--n_basis", "2", "9", "--repeats", "1",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["brute_force_s"] > 0
    by_name = {(m["name"], m["K"]): m for m in result["methods"]}
    assert {("basis", 2), ("basis", 9), ("full", 9), ("tiles", 9)} <= set(by_name)
    for (name, k), m in by_name.items():  # the K-FFT evaluation is listed whenever auto chose the node supports
        assert name != "basis_dense" or by_name[("basis", k)]["strategy"] == "nodes"
        assert name != "basis" or m["strategy"] == "dense" or ("basis_dense", k) in by_name
    for m in result["methods"]:
        assert m["seconds"] > 0 and m["speedup"] == pytest.approx(result["brute_force_s"] / m["seconds"])
    exact = [by_name[("basis", 9)]["psnr_vs_exact"], by_name[("full", 9)]["psnr_vs_exact"]]
    assert all(p is None or p > 80 for p in exact)  # K = N is exact (None: bit-identical)
    assert by_name[("basis", 2)]["psnr_vs_exact"] < 80 and by_name[("tiles", 9)]["psnr_vs_exact"] < 80


@pytest.mark.parametrize("c_in", [1, 3])
def test_basis_strategies_are_the_same_sum(c_in):
    """Σ_k B_k ∗ (a_k ⊙ x) on K dense FFTs == on node supports with the reconstructed node PSFs."""
    f = random_field(c_in=c_in, grid=(3, 4), k=7, sensor=(30, 41))
    x = torch.rand(2, 3, 30, 41, dtype=torch.float64)
    for k in (2, 12):
        g = svd_basis(f, k)
        dense = SVRenderer(g, (30, 41), dtype=torch.float64, basis_strategy="dense")
        nodes = SVRenderer(g, (30, 41), dtype=torch.float64, basis_strategy="nodes")
        assert (dense.strategy, nodes.strategy) == ("dense", "nodes")
        assert torch.allclose(dense(x), nodes(x), atol=1e-12)
    assert torch.allclose(nodes(x), render_brute_force(x, f), atol=1e-6)  # K = N: exact
    # auto: dense for a small K, node supports for a large one (less FFT work).
    big = random_field(grid=(9, 9), k=33, sensor=(512, 512))
    assert SVRenderer(svd_basis(big, 2), (512, 512)).strategy == "dense"
    assert SVRenderer(svd_basis(big, 40), (512, 512)).strategy == "nodes"

