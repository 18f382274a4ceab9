"""Wiener baseline: inverts known blurs, beats the blurred input, region-wise beats a single PSF."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from scipy import ndimage

from models.archs import define_network
from models.archs.wiener_arch import region_weights, wiener_deconvolve
from psf.field import PSFField, default_H_img
from utils.noise import gaussian_noise
from psf.basis import psf_basis
from psf.example_fields import elliptical_gaussian_field
from utils.sv_renderer import coef_maps, render


def psnr(a, b, border=0):
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return 10 * math.log10(1 / (a.double() - b.double()).square().mean().item())


def astronaut(size=128) -> torch.Tensor:
    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255


def invariant_field(psf: torch.Tensor, size) -> PSFField:
    """The same PSF [C_out, C_in, k, k] at the 4 nodes of a 2×2 grid."""
    return PSFField(psfs=psf[:, :, None].expand(*psf.shape[:2], 4, *psf.shape[2:]).float(), grid_shape=(2, 2),
                    sensor_res=size, H_img=default_H_img((2, 2), size), H_obj=np.eye(3), normalized=psf.shape[1] == 1)


def wiener(mode="center", nsr=1e-2, **kw):
    return define_network({"type": "Wiener", "mode": mode, "nsr": nsr, **kw}).double().eval()


def test_inverts_a_noiseless_blur_everywhere():
    """Symmetric PSF + reflective boundary: the symmetric extension makes Wiener exact, borders included."""
    x = astronaut(64)
    yy, xx = np.mgrid[-4:5, -4:5]
    g = np.exp(-(xx ** 2 + yy ** 2) / (2 * 0.9 ** 2))
    g /= g.sum()
    y = torch.from_numpy(np.stack([ndimage.convolve(x[0, c].numpy(), g, mode="reflect") for c in range(3)]))[None]
    psf = torch.from_numpy(g).expand(1, 3, 1, 9, 9)
    out = wiener(nsr=1e-9)(y, psf=psf)
    assert psnr(out, x) > 60
    assert psnr(y, x) < 30


def test_psf_orientation_matches_the_renderer():
    """Blur with the renderer's scatter convention, deconvolve with the same PSF: the image comes back."""
    x = astronaut(64)
    psf = torch.zeros(3, 1, 7, 7, dtype=torch.float64)
    psf[:, 0, 3 + 2, 3 - 1] = 0.7  # 2 down, 1 left
    psf[:, 0, 3, 3] = 0.3
    y = render(x, invariant_field(psf, (64, 64)), boundary="zero")
    out = wiener(nsr=1e-9)(y, psf=psf[None])
    assert psnr(out, x, border=8) > 40
    assert psnr(wiener(nsr=1e-9)(y, psf=psf.flip(-1, -2)[None]), x, border=8) < 25  # the mirrored PSF does not


def test_true_psf_beats_the_blurred_input():
    x = astronaut(128)
    field = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=15, sensor_res=(128, 128), sigma_center=2.0,
                                      sigma_radial=2.0, sigma_tangential=2.0, coma_shift=0.0)
    psf = field.psfs[:, :, 0].double()
    y = gaussian_noise(render(x, invariant_field(psf, (128, 128))), 0.005, torch.Generator().manual_seed(0))
    out = wiener(nsr=3e-3)(y, psf=psf[None])
    gain = psnr(out, x) - psnr(y, x)
    print(f"Wiener with the true PSF: {psnr(y, x):.2f} dB -> {psnr(out, x):.2f} dB")
    assert gain > 2.0


def test_cross_talk_wiener_undoes_channel_mixing():
    x = astronaut(64)
    yy, xx = np.mgrid[-3:4, -3:4]
    g = torch.from_numpy(np.exp(-(xx ** 2 + yy ** 2) / 2.0))
    g = g / g.sum()
    mix = torch.tensor([[0.7, 0.2, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]], dtype=torch.float64)
    psf = mix[:, :, None, None] * g  # [3, 3, 7, 7]
    y = torch.from_numpy(np.stack([sum(ndimage.convolve(x[0, i].numpy(), psf[o, i].numpy(), mode="reflect")
                                       for i in range(3)) for o in range(3)]))[None]
    out = wiener(nsr=1e-9)(y, psf=psf[None])
    assert psnr(out, x) > 60
    # Ignoring the cross-talk (diagonal PSFs only) cannot undo it.
    diagonal = torch.stack([psf[c, c] for c in range(3)])[:, None] / torch.diagonal(mix)[:, None, None, None]
    assert psnr(wiener(nsr=1e-9)(y, psf=diagonal[None]), x) < 30


@pytest.fixture(scope="module")
def varying_case():
    x = astronaut(128)
    field = elliptical_gaussian_field(grid_shape=(5, 5), psf_size=21, sensor_res=(128, 128), sigma_center=0.8,
                                      sigma_radial=4.0, sigma_tangential=1.2, coma_shift=2.0)
    y = gaussian_noise(render(x, field), 0.003, torch.Generator().manual_seed(1))
    return x, y, field


def test_region_wise_oracle_beats_the_centre_psf(varying_case):
    x, y, field = varying_case
    centre = field.psfs[:, :, 12].double()[None]
    basis = {"basis_psfs": field.psfs.double()[None], "basis_coef": coef_maps(field, 128, 128, dtype=torch.float64)[None]}
    scores = {
        "blurred": psnr(y, x),
        "center": psnr(wiener("center", 3e-3)(y, psf=centre), x),
        "components": psnr(wiener("components", 3e-3)(y, **basis), x),
        "regions": psnr(wiener("regions", 3e-3, regions=(5, 5))(y, **basis), x),
    }
    print({k: round(v, 2) for k, v in scores.items()})
    assert scores["components"] > scores["center"] + 1.0
    assert scores["regions"] > scores["center"] + 1.0
    assert scores["center"] > scores["blurred"]


def test_regions_rebuild_psfs_from_any_basis(varying_case):
    """A truncated SVD basis (components are not PSFs): 'regions' still works, 'components' would not."""
    x, y, field = varying_case
    k = 10
    basis = psf_basis(field.psfs, n_basis=k, method="svd")
    svd = {"basis_psfs": basis.basis_psfs[None],
           "basis_coef": coef_maps(field.with_basis(basis.basis_psfs.float(), basis.basis_coef.float()),
                                   128, 128, dtype=torch.float64)[None]}
    full = {"basis_psfs": field.psfs.double()[None], "basis_coef": coef_maps(field, 128, 128, dtype=torch.float64)[None]}
    net = wiener("regions", 3e-3, regions=(5, 5))
    centre = psnr(wiener("center", 3e-3)(y, psf=field.psfs[:, :, 12].double()[None]), x)
    from_svd, from_full = psnr(net(y, **svd), x), psnr(net(y, **full), x)
    print(f"regions from K={k} SVD basis {from_svd:.2f} dB, from the full-rank field {from_full:.2f} dB, centre PSF {centre:.2f} dB")
    assert centre + 0.5 < from_svd <= from_full + 0.1  # truncation costs a little, never gains
    assert psnr(wiener("components", 3e-3)(y, **svd), x) < psnr(y, x)


def test_regions_on_the_node_grid_equal_nodewise_components():
    # 65 px and 3 nodes: nodes at pixels 0, 32, 64, so region centres are the nodes exactly.
    field = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=9, sensor_res=(65, 65), sigma_radial=2.0)
    y = render(astronaut(65), field)
    basis = {"basis_psfs": field.psfs.double()[None], "basis_coef": coef_maps(field, 65, 65, dtype=torch.float64)[None]}
    net = wiener("components", 1e-2)
    a = net(y, **basis)
    b = wiener("regions", 1e-2, regions=(3, 3))(y, **basis)
    assert torch.allclose(a, b, atol=1e-10)
    # ... and both are the explicit node-wise blend.
    weights = region_weights(65, 65, (3, 3), dtype=torch.float64)
    manual = sum(weights[n] * wiener_deconvolve(y, field.psfs[:, :, n].double()[None], net.nsr) for n in range(9))
    assert torch.allclose(a, manual, atol=1e-10)


def test_learnable_nsr_trains():
    x = astronaut(64)
    field = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=9, sensor_res=(64, 64), sigma_center=1.5,
                                      sigma_radial=1.5, sigma_tangential=1.5, coma_shift=0.0)
    psf = field.psfs[:, :, 0].double()
    y = gaussian_noise(render(x, invariant_field(psf, (64, 64))), 0.02, torch.Generator().manual_seed(2))
    net = wiener(nsr=1e-6, learnable_nsr=True).train()
    assert net.log_nsr.requires_grad and not wiener().log_nsr.requires_grad
    opt = torch.optim.Adam(net.parameters(), lr=0.3)
    first = None
    for _ in range(30):
        loss = (net(y, psf=psf[None]) - x).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first  # far too small an NSR amplifies noise; learning fixes it
    assert net.nsr.min().item() > 3e-5  # moved up by more than an order of magnitude


def test_input_keys_example_inputs_and_errors():
    for mode, keys in (("center", ("lq", "psf")), ("components", ("lq", "basis_psfs", "basis_coef")),
                       ("regions", ("lq", "basis_psfs", "basis_coef"))):
        net = wiener(mode)
        assert net.input_keys == keys
        inputs = net.example_inputs(batch_size=2, size=24, generator=torch.Generator().manual_seed(0))
        assert set(inputs) == set(keys)
        if mode == "center":
            assert torch.allclose(inputs["psf"].sum((-2, -1)), torch.ones(2, 3, 1))
        else:
            assert inputs["basis_coef"].shape == (2, 3, 1, 4, 24, 24)
            assert torch.allclose(inputs["basis_coef"].sum(3), torch.ones(2, 3, 1, 24, 24))
    with pytest.raises(ValueError, match="needs the batch key 'psf'"):
        wiener()(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    from utils.errors import ConfigError
    with pytest.raises(ConfigError, match="mode must be one of"):
        define_network({"type": "Wiener", "mode": "global"})


def circulant_conv_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """Dense [n², n²] matrix of the circular scatter of a centred k×k kernel on an n×n grid."""
    k = kernel.shape[-1]
    mat = torch.zeros(n * n, n * n, dtype=torch.float64)
    for sy in range(n):
        for sx in range(n):
            for ky in range(k):
                for kx in range(k):
                    ty, tx = (sy + ky - k // 2) % n, (sx + kx - k // 2) % n
                    mat[ty * n + tx, sy * n + sx] += kernel[ky, kx]
    return mat


@pytest.mark.parametrize("regularizer", ["identity", "laplacian"])
def test_regularized_wiener_equals_dense_least_squares(regularizer):
    """argmin ||H x - y||² + nsr ||R x||² solved with dense matrices on the 2H×2W mirror extension."""
    from models.archs.wiener_arch import LAPLACIAN, symmetric_extension

    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 1, 6, 6, generator=g, dtype=torch.float64)
    psf = torch.rand(5, 5, generator=g, dtype=torch.float64)
    psf /= psf.sum()
    nsr = 0.05
    n = 12
    h_mat = circulant_conv_matrix(psf, n)
    r_mat = torch.eye(n * n, dtype=torch.float64) if regularizer == "identity" else \
        circulant_conv_matrix(torch.tensor(LAPLACIAN, dtype=torch.float64), n)
    y_ext = symmetric_extension(y).reshape(-1)
    x = torch.linalg.solve(h_mat.T @ h_mat + nsr * r_mat.T @ r_mat, h_mat.T @ y_ext).reshape(n, n)[:6, :6]
    out = wiener_deconvolve(y, psf[None, None, None], torch.tensor([nsr], dtype=torch.float64), regularizer)
    assert torch.allclose(out[0, 0], x, atol=1e-10)


def test_laplacian_regularizer_keeps_the_mean_identity_darkens():
    """A flat grey: the CLS filter returns it unchanged, the flat-NSR Wiener scales it by 1/(1+nsr)."""
    y = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    psf = torch.full((1, 3, 1, 5, 5), 1 / 25, dtype=torch.float64)
    lap = wiener(nsr=0.5, regularizer="laplacian")(y, psf=psf)
    flat = wiener(nsr=0.5)(y, psf=psf)
    assert torch.allclose(lap, y, atol=1e-12)
    assert torch.allclose(flat, y / 1.5, atol=1e-12)
    with pytest.raises(Exception, match="regularizer must be one of identity, laplacian"):
        wiener(regularizer="tikhonov")
