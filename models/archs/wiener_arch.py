"""Classical Wiener deconvolution as a network (a baseline, optionally with a learnable NSR).

Per spatial frequency the Wiener–Helstrom filter (Helstrom, JOSA 57(3), 1967, eq. 9) is
``X = H* Y / (|H|² + NSR)``; with cross-talk PSFs (C_in = C_out) it becomes the
multichannel form ``X = (Hᴴ H + diag(NSR))⁻¹ Hᴴ Y`` solved per frequency.

Modes (``Wiener_config.mode``) and the batch keys they read:

* ``center``: one PSF per image, ``psf`` [B, C_out, C_in, k, k] (e.g. the centre PSF).
* ``components``: ``basis_psfs`` [B, C_out, C_in, K, k, k] and per-pixel ``basis_coef``
  [B, C_out, C_in, K, H, W]: deconvolve with every basis PSF and blend the K results with
  the coefficient maps (the multi-Wiener stage of MultiWienerNet, Yanny et al., Optica 9(1),
  2022). Meant for *nodal* bases, whose components are PSFs and whose coefficients are
  blending weights: with the full-rank field (node PSFs + bilinear node weights) this is
  exactly "deconvolve with every node PSF, blend with the bilinear node weights".
* ``regions``: same keys, any basis (also PCA/SVD bases whose components are not PSFs):
  the local PSF ``Σ_k a_k(c_r) B_k`` is rebuilt at the centres c_r of a ``regions`` grid
  spanning the image corner to corner, each is used for one deconvolution, and the results
  are blended with bilinear weights between the centres (Nagy & O'Leary, SIAM J. Sci.
  Comput. 19(4), 1998, piecewise-interpolated restoration).

Borders: the image is extended symmetrically to 2H×2W before the FFT (half-sample mirror),
so the periodic image the FFT sees has no jumps and no circular ringing enters from the
edges (Ng, Chan & Tang, SIAM J. Sci. Comput. 21(3), 1999: reflective boundary conditions).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.archs.arch_util import RestorationConfig, RestorationModel
from utils.errors import ConfigError

WIENER_MODES = ("center", "components", "regions")


class Wiener_config(RestorationConfig):
    model_type = "restorelab-wiener"

    def __init__(self, mode: str = "center", nsr: float = 1e-2, learnable_nsr: bool = False, in_channels: int = 3,
                 regions: list[int] | tuple[int, int] = (3, 3), **kwargs):
        if mode not in WIENER_MODES:
            raise ConfigError(f"network Wiener: mode must be one of {', '.join(WIENER_MODES)}, got {mode!r}")
        if not nsr > 0:
            raise ConfigError(f"network Wiener: nsr must be > 0, got {nsr}")
        self.mode = mode
        self.nsr = float(nsr)
        self.learnable_nsr = bool(learnable_nsr)
        self.in_channels = int(in_channels)
        self.regions = [int(r) for r in regions]
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "Wiener_config":
        return cls(mode="regions", nsr=1e-2, learnable_nsr=True, regions=(2, 2))


# -- functional core -------------------------------------------------------------------------
def symmetric_extension(x: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [..., 2H, 2W] mirror image (a b c | c b a), periodic without jumps."""
    x = torch.cat([x, x.flip(-2)], dim=-2)
    return torch.cat([x, x.flip(-1)], dim=-1)


def psf_to_otf(psf: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of a centred PSF [..., k, k] (centre at k//2) zero-padded to ``shape`` with its centre at the origin."""
    k = psf.shape[-1]
    if k > shape[0] or k > shape[1]:
        raise ValueError(f"PSF of size {k} does not fit the {shape[0]}x{shape[1]} extended image")
    padded = F.pad(psf, (0, shape[1] - k, 0, shape[0] - k))
    return torch.fft.rfft2(torch.roll(padded, (-(k // 2), -(k // 2)), dims=(-2, -1)))


def wiener_deconvolve(y: torch.Tensor, psf: torch.Tensor, nsr: torch.Tensor) -> torch.Tensor:
    """Deconvolve ``y`` [B, C, H, W] by ``psf`` [B, C_out, C_in, k, k] (C_in = 1: per channel;
    C_in = C: cross-talk) with noise-to-signal ratio ``nsr`` [C] (or a scalar)."""
    b, c, h, w = y.shape
    ext = (2 * h, 2 * w)
    spec = torch.fft.rfft2(symmetric_extension(y))  # [B, C, 2H, W+1]
    otf = psf_to_otf(psf.to(y.dtype), ext)  # [B, C_out, C_in, 2H, W+1]
    nsr = torch.as_tensor(nsr, dtype=y.dtype, device=y.device).reshape(-1)
    if psf.shape[2] == 1:
        hf = otf[:, :, 0]
        x = hf.conj() * spec / (hf.abs().square() + nsr.expand(c)[None, :, None, None])
    else:
        hm = otf.permute(0, 3, 4, 1, 2)  # [B, F1, F2, C_out, C_in]
        hh = hm.conj().transpose(-1, -2)
        gram = hh @ hm + torch.diag_embed(nsr.expand(psf.shape[2]).to(hm.dtype))
        rhs = hh @ spec.permute(0, 2, 3, 1).unsqueeze(-1)
        x = torch.linalg.solve(gram, rhs).squeeze(-1).permute(0, 3, 1, 2)
    return torch.fft.irfft2(x, s=ext)[..., :h, :w]


def region_weights(height: int, width: int, regions: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Bilinear blending weights [R_h·R_w, H, W] of region centres spanning the image corner to corner."""

    def hat(n, r):
        if r == 1:
            return torch.ones(1, n, device=device, dtype=dtype)
        t = torch.arange(n, device=device, dtype=torch.float64) * (r - 1) / max(n - 1, 1)
        return (1 - (t[None] - torch.arange(r, device=device)[:, None]).abs()).clamp(min=0).to(dtype)

    wy, wx = hat(height, regions[0]), hat(width, regions[1])
    return (wy[:, None, :, None] * wx[None, :, None, :]).reshape(-1, height, width)


def region_centres(height: int, width: int, regions: tuple[int, int]) -> list[tuple[int, int]]:
    """Pixel (row, col) of each region centre, row-major (nearest pixel)."""
    def pos(n, r):
        return [round((n - 1) / 2)] if r == 1 else [round(i * (n - 1) / (r - 1)) for i in range(r)]

    return [(y, x) for y in pos(height, regions[0]) for x in pos(width, regions[1])]


# -- the network ----------------------------------------------------------------------------------
class Wiener_arch(RestorationModel):
    """Wiener deconvolution; see the module docstring for modes and batch keys."""

    config_class = Wiener_config

    def __init__(self, config: Wiener_config):
        super().__init__(config)
        self.input_keys = ("lq", "psf") if config.mode == "center" else ("lq", "basis_psfs", "basis_coef")
        log_nsr = torch.full((config.in_channels,), math.log(config.nsr))
        self.log_nsr = torch.nn.Parameter(log_nsr, requires_grad=config.learnable_nsr)
        self.post_init()

    @property
    def nsr(self) -> torch.Tensor:
        return self.log_nsr.exp()

    def forward(self, lq: torch.Tensor, psf: torch.Tensor | None = None, basis_psfs: torch.Tensor | None = None,
                basis_coef: torch.Tensor | None = None, **_) -> torch.Tensor:
        mode = self.config.mode
        if mode == "center":
            if psf is None:
                raise ValueError("Wiener (mode=center) needs the batch key 'psf' [B, C_out, C_in, k, k]")
            return wiener_deconvolve(lq, psf, self.nsr)
        if basis_psfs is None or basis_coef is None:
            raise ValueError(f"Wiener (mode={mode}) needs the batch keys 'basis_psfs' and 'basis_coef'")
        if tuple(basis_coef.shape[-2:]) != tuple(lq.shape[-2:]):
            raise ValueError(f"basis_coef maps are {tuple(basis_coef.shape[-2:])}, lq is {tuple(lq.shape[-2:])}")
        if mode == "components":
            return self._components(lq, basis_psfs, basis_coef)
        return self._regions(lq, basis_psfs, basis_coef)

    def _components(self, lq, basis_psfs, basis_coef):
        # Blend per output channel; with cross-talk the (o, i) maps of a nodal basis coincide, average them.
        weights = basis_coef.mean(dim=2)  # [B, C_out, K, H, W]
        out = 0
        for k in range(basis_psfs.shape[3]):
            out = out + weights[:, :, k] * wiener_deconvolve(lq, basis_psfs[:, :, :, k], self.nsr)
        return out

    def _regions(self, lq, basis_psfs, basis_coef):
        h, w = lq.shape[-2:]
        regions = tuple(self.config.regions)
        blend = region_weights(h, w, regions, lq.device, lq.dtype)
        out = 0
        for r, (y, x) in enumerate(region_centres(h, w, regions)):
            local_psf = torch.einsum("boik,boikyx->boiyx", basis_coef[..., y, x], basis_psfs.to(basis_coef.dtype))
            out = out + blend[r] * wiener_deconvolve(lq, local_psf, self.nsr)
        return out

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        """Random ``lq`` and a valid field: elliptical Gaussian PSFs on a 2×2 node grid over the image."""
        from utils.sv_renderer import coef_maps, elliptical_gaussian_field

        c = self.config.in_channels
        lq = torch.rand(batch_size, c, size, size, generator=generator)
        field = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=7, sensor_res=(size, size), sigma_center=0.7,
                                          sigma_radial=1.6, sigma_tangential=1.0, coma_shift=0.5,
                                          channel_scale=torch.linspace(1.1, 0.9, c).tolist(),
                                          channel_order="RGB" if c == 3 else "C" * c)
        if self.config.mode == "center":
            centre = field.psfs[:, :, 0]  # any node: a valid normalised PSF
            return {"lq": lq, "psf": centre.expand(batch_size, *centre.shape).clone()}
        maps = coef_maps(field, size, size)  # full rank: node PSFs + bilinear weights
        return {"lq": lq, "basis_psfs": field.psfs.expand(batch_size, *field.psfs.shape).clone(),
                "basis_coef": maps.expand(batch_size, *maps.shape).clone()}
