"""Analytic PSF fields for tests, benchmarks and examples (no lens simulation, no file)."""
from __future__ import annotations

import math

import numpy as np
import torch

from psf.field import PSFField, default_H_img


def elliptical_gaussian_field(grid_shape=(9, 9), psf_size: int = 33, sensor_res=(512, 512),
                              sigma_center: float = 0.8, sigma_radial: float = 3.5, sigma_tangential: float = 1.6,
                              coma_shift: float = 2.0, channel_scale=(1.15, 1.0, 0.85), channel_order: str = "RGB",
                              cross_talk: float = 0.0) -> PSFField:
    """Field-varying elliptical Gaussian PSFs (a smooth analytic stand-in for a lens).

    At normalised field height h (0 at the centre, 1 at the sensor corner) the PSF is a
    Gaussian elongated along the radial direction, σ_r = σ_c + (σ_radial−σ_c)·h², σ_t =
    σ_c + (σ_tangential−σ_c)·h², whose centre is shifted outwards by ``coma_shift·h³`` pixels
    (coma-like, so off-axis PSFs are not point-symmetric). Channel c scales the widths by
    ``channel_scale[c]`` (lateral colour). ``cross_talk`` > 0 gives C_in = C_out PSFs where a
    fraction of each input channel leaks into the others (colour filter cross-talk).
    """
    gh, gw = grid_shape
    hs, ws = sensor_res
    H = default_H_img(grid_shape, sensor_res)
    pos = np.stack(np.meshgrid(np.arange(gw), np.arange(gh), indexing="xy"), -1).reshape(-1, 2)  # (col, row)
    xy = (H[:2, :2] @ pos.T + H[:2, 2:]).T
    centre = np.array([(ws - 1) / 2, (hs - 1) / 2])
    rel = (xy - centre) / max(np.hypot(*centre), 1e-12)  # corner at |rel| = 1
    c = psf_size // 2
    yy, xx = np.mgrid[-c:c + 1, -c:c + 1].astype(np.float64)
    psfs = np.zeros((len(channel_scale), len(xy), psf_size, psf_size))
    for n, (u, v) in enumerate(rel):
        hgt = min(1.0, float(np.hypot(u, v)))
        theta = math.atan2(v, u)
        cos, sin = math.cos(theta), math.sin(theta)
        shift = coma_shift * hgt ** 3
        radial = (xx - shift * cos) * cos + (yy - shift * sin) * sin
        tangential = -(xx - shift * cos) * sin + (yy - shift * sin) * cos
        for ch, scale in enumerate(channel_scale):
            sr = scale * (sigma_center + (sigma_radial - sigma_center) * hgt ** 2)
            st = scale * (sigma_center + (sigma_tangential - sigma_center) * hgt ** 2)
            g = np.exp(-0.5 * ((radial / sr) ** 2 + (tangential / st) ** 2))
            psfs[ch, n] = g / g.sum()
    psfs = torch.from_numpy(psfs).float()
    n_ch = len(channel_scale)
    if cross_talk > 0:
        mix = torch.full((n_ch, n_ch), cross_talk / max(1, n_ch - 1))
        mix.fill_diagonal_(1 - cross_talk)
        psfs = mix[:, :, None, None, None] * psfs[:, None]  # out_c = Σ_i mix[c, i] psf_c ∗ x_i
    else:
        psfs = psfs[:, None]
    return PSFField(psfs=psfs.contiguous(), grid_shape=(gh, gw), sensor_res=(hs, ws), H_img=H,
                    H_obj=np.eye(3), psf_type="elliptical_gaussian", channel_order=channel_order[:n_ch],
                    normalized=cross_talk == 0,
                    attrs={"sigma_center": sigma_center, "sigma_radial": sigma_radial,
                           "sigma_tangential": sigma_tangential, "coma_shift": coma_shift})
