"""Simulated fields through the renderer (utils/sv_renderer.py): the PSF centre, orientation and
channel order survive end to end, and the ``pca`` basis keeps a flat field flat at any K."""
from __future__ import annotations

import torch

from psf.basis import field_with_basis
from psf.svpsf import PSFSimulator
from utils.sv_renderer import render


def test_impulse_at_node_renders_its_psf():
    """A point source on a node spreads that node's PSF with [k//2, k//2] on the source pixel,
    in the stored orientation and per channel (coma and distortion make the PSFs asymmetric)."""
    sim = PSFSimulator("seidel", grid_shape=(3, 3), psf_size=15, sensor_res=(61, 81), pixel_pitch_um=1.0,
                       f_number=4.0, seidel={"W131": 0.8, "W311": 1.0, "W222": 0.4})
    field = sim.simulate()
    k = 15
    for row, col in [(0, 0), (1, 2), (2, 1)]:
        x, y = (int(v) for v in field.positions[row * 3 + col])
        img = torch.zeros(1, 3, 61, 81, dtype=torch.float64)
        img[0, :, y, x] = 1.0
        out = render(img, field, boundary="zero", method="full")[0]
        pad = torch.nn.functional.pad(out, (k, k, k, k))  # windows of corner nodes reach outside
        window = pad[:, y + k - k // 2:y + k + k // 2 + 1, x + k - k // 2:x + k + k // 2 + 1]
        psf = field.node_psfs(row, col)[:, 0].double()
        # the part of the PSF that falls inside the image is reproduced exactly
        inside = pad[:, k:-k, k:-k].sum() > 0
        assert inside
        visible = torch.zeros_like(pad)
        visible[:, k:-k, k:-k] = 1
        mask = visible[:, y + k - k // 2:y + k + k // 2 + 1, x + k - k // 2:x + k + k // 2 + 1]
        torch.testing.assert_close(window, psf * mask, atol=1e-6, rtol=0)


def test_pca_basis_conserves_flux_at_any_k():
    """Every truncated pca reconstruction sums to 1, at nodes and (bilinear coefficients) at every
    pixel, like the exact PSFs: a rendered image keeps its total flux for any K. The svd basis
    does not guarantee it."""
    field = PSFSimulator("gaussian", grid_shape=(4, 4), psf_size=15, sensor_res=(48, 64),
                         sigma_corner_radial_px=3.0, lateral_color_px=[0.8, 0.0, -0.8]).simulate()
    img = torch.zeros(1, 3, 48, 64, dtype=torch.float64)
    img[..., 10:38, 10:54] = torch.rand(1, 3, 28, 44, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flux = img.sum(dim=(-2, -1))
    exact = render(img, field, boundary="zero", method="full").sum(dim=(-2, -1))
    torch.testing.assert_close(exact, flux, atol=1e-4, rtol=0)  # float32 node PSFs
    for k in (1, 3, 6):
        pca, _ = field_with_basis(field, n_basis=k, method="pca")
        out = render(img, pca, boundary="zero", method="basis").sum(dim=(-2, -1))
        torch.testing.assert_close(out, flux, atol=1e-4, rtol=0)
    svd, _ = field_with_basis(field, n_basis=3, method="svd")
    out = render(img, svd, boundary="zero", method="basis").sum(dim=(-2, -1))
    assert float((out - flux).abs().max()) > 1e-3
