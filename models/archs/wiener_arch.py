"""Classical Wiener deconvolution as a network (a baseline, optionally with a learnable NSR).

Per spatial frequency the Wiener–Helstrom filter (Helstrom, JOSA 57(3), 1967, eq. 9) is
``X = H* Y / (|H|² + NSR)``; with cross-talk PSFs (C_in = C_out) it becomes the
multichannel form ``X = (Hᴴ H + diag(NSR))⁻¹ Hᴴ Y`` solved per frequency.

``regularizer`` chooses what the NSR multiplies:

* ``identity`` (default): the textbook Wiener filter with a flat (white) signal spectrum,
  ``|H|² + NSR``. Its gain at zero frequency is ``1 / (1 + NSR)``: a large NSR darkens.
* ``laplacian``: the constrained least-squares filter (Hunt, IEEE Trans. Comput. C-22(9), 1973;
  Gonzalez & Woods, *Digital Image Processing*, 3rd ed., §5.9), ``|H|² + NSR·|L|²`` with L the
  OTF of the 5-point Laplacian scaled to max |L| = 1: the Wiener filter of a signal whose power
  falls as |f|⁻⁴, close to natural images. It keeps the mean (L(0) = 0) and damps only the
  high frequencies where noise dominates: the stronger classical baseline.

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

``linear_light: true`` deconvolves ``srgb_to_linear(lq)`` and returns the sRGB encoding of the
result: the right model for data blurred in linear light (step 3's default ``--render_space
linear``); with ``false`` the sRGB values are deconvolved as they are.

Borders: the image is extended symmetrically to 2H×2W before the FFT (half-sample mirror),
so the periodic image the FFT sees has no jumps and no circular ringing enters from the
edges (Ng, Chan & Tang, SIAM J. Sci. Comput. 21(3), 1999: reflective boundary conditions).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.archs.arch_util import PSF_INPUTS, ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError

WIENER_MODES = ("center", "components", "regions")
WIENER_REGULARIZERS = ("identity", "laplacian")


def check_regularizer(regularizer: str, network: str) -> str:
    """``regularizer`` if it is one of WIENER_REGULARIZERS, else one ConfigError naming ``network``."""
    if regularizer not in WIENER_REGULARIZERS:
        raise ConfigError(f"network {network}: regularizer must be one of {', '.join(WIENER_REGULARIZERS)}, "
                          f"got {regularizer!r}")
    return regularizer


class Wiener_config(RestorationConfig):
    model_type = "restorelab_wiener"

    def __init__(self, mode: str = "center", nsr: float = 1e-2, learnable_nsr: bool = False, in_channels: int = 3,
                 regions: list[int] | tuple[int, int] = (3, 3), linear_light: bool = False,
                 regularizer: str = "identity", **kwargs):
        if mode not in WIENER_MODES:
            raise ConfigError(f"network Wiener: mode must be one of {', '.join(WIENER_MODES)}, got {mode!r}")
        if not nsr > 0:
            raise ConfigError(f"network Wiener: nsr must be > 0, got {nsr}")
        self.regularizer = check_regularizer(regularizer, "Wiener")
        self.mode = mode
        self.nsr = float(nsr)
        self.learnable_nsr = bool(learnable_nsr)
        self.in_channels = int(in_channels)
        self.regions = [int(r) for r in regions]
        self.linear_light = bool(linear_light)
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


LAPLACIAN = ((0.0, -0.125, 0.0), (-0.125, 0.5, -0.125), (0.0, -0.125, 0.0))  # 5-point, max |OTF| = 1


def regularizer_spectrum(kind: str, shape: tuple[int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """|R(f)|² on the rfft2 grid of ``shape``: 1 everywhere (``identity``) or the Laplacian's (``laplacian``)."""
    if kind == "identity":
        return torch.ones(shape[0], shape[1] // 2 + 1, dtype=dtype, device=device)
    if kind == "laplacian":
        return psf_to_otf(torch.tensor(LAPLACIAN, dtype=dtype, device=device), shape).abs().square()
    raise ValueError(f"unknown Wiener regularizer {kind!r} (choose from {', '.join(WIENER_REGULARIZERS)})")


def wiener_deconvolve(y: torch.Tensor, psf: torch.Tensor, nsr: torch.Tensor, regularizer: str = "identity") -> torch.Tensor:
    """Deconvolve ``y`` [B, C, H, W] by ``psf`` [B, C_out, C_in, k, k] (C_in = 1: per channel;
    C_in = C: cross-talk) with noise-to-signal ratio ``nsr`` [C] (or a scalar) times the
    ``regularizer`` spectrum (module docstring)."""
    b, c, h, w = y.shape
    ext = (2 * h, 2 * w)
    spec = torch.fft.rfft2(symmetric_extension(y))  # [B, C, 2H, W+1]
    otf = psf_to_otf(psf.to(y.dtype), ext)  # [B, C_out, C_in, 2H, W+1]
    nsr = torch.as_tensor(nsr, dtype=y.dtype, device=y.device).reshape(-1)
    reg = regularizer_spectrum(regularizer, ext, y.dtype, y.device)  # [2H, W+1]
    if psf.shape[2] == 1:
        hf = otf[:, :, 0]
        x = hf.conj() * spec / (hf.abs().square() + nsr.expand(c)[None, :, None, None] * reg)
    else:
        hm = otf.permute(0, 3, 4, 1, 2)  # [B, F1, F2, C_out, C_in]
        hh = hm.conj().transpose(-1, -2)
        gram = hh @ hm + torch.diag_embed(nsr.expand(psf.shape[2]).to(hm.dtype) * reg[..., None])
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


def wiener_components(lq: torch.Tensor, basis_psfs: torch.Tensor, basis_coef: torch.Tensor, nsr,
                      regularizer: str = "identity") -> torch.Tensor:
    """Deconvolve with every basis PSF and blend the K results with the coefficient maps
    (MultiWienerNet's multi-Wiener stage; right for nodal bases, see the module doc)."""
    # Blend per output channel; with cross-talk the (o, i) maps of a nodal basis coincide, average them.
    weights = basis_coef.mean(dim=2)  # [B, C_out, K, H, W]
    out = 0
    for k in range(basis_psfs.shape[3]):
        if not weights[:, :, k].any() and not basis_psfs[:, :, :, k].any():
            continue  # a zero element (K padded for a dataset mixing fields) adds nothing
        out = out + weights[:, :, k] * wiener_deconvolve(lq, basis_psfs[:, :, :, k], nsr, regularizer)
    return out


def wiener_regions(lq: torch.Tensor, basis_psfs: torch.Tensor, basis_coef: torch.Tensor, nsr,
                   regions: tuple[int, int], regularizer: str = "identity") -> torch.Tensor:
    """Rebuild the local PSF Σ_k a_k(c_r) B_k at each region centre c_r, deconvolve with each,
    blend with bilinear weights between the centres (any basis)."""
    h, w = lq.shape[-2:]
    blend = region_weights(h, w, tuple(regions), lq.device, lq.dtype)
    out = 0
    for r, (y, x) in enumerate(region_centres(h, w, tuple(regions))):
        local_psf = torch.einsum("boik,boikyx->boiyx", basis_coef[..., y, x], basis_psfs.to(basis_coef.dtype))
        out = out + blend[r] * wiener_deconvolve(lq, local_psf, nsr, regularizer)
    return out


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
    def io(self) -> ArchIO:
        # FFT deconvolution over the whole (symmetrically extended) image: global.
        inputs = {"lq": "image", "psf": "kernel"} if self.config.mode == "center" else PSF_INPUTS
        return ArchIO(kind="image", scale=1, inputs=inputs, receptive_radius=None)

    @property
    def nsr(self) -> torch.Tensor:
        return self.log_nsr.exp()

    def forward(self, lq: torch.Tensor, psf: torch.Tensor | None = None, basis_psfs: torch.Tensor | None = None,
                basis_coef: torch.Tensor | None = None, **_) -> torch.Tensor:
        from models.archs.psf_util import check_basis_inputs, decode_srgb, encode_srgb

        mode, linear, reg = self.config.mode, self.config.linear_light, self.config.regularizer
        if mode == "center":
            if psf is None:
                raise ValueError("Wiener (mode=center) needs the batch key 'psf' [B, C_out, C_in, k, k]")
            return encode_srgb(wiener_deconvolve(decode_srgb(lq, linear), psf, self.nsr, reg), linear)
        check_basis_inputs(lq, basis_psfs, basis_coef, f"Wiener (mode={mode})")
        y = decode_srgb(lq, linear)
        if mode == "components":
            x = wiener_components(y, basis_psfs, basis_coef, self.nsr, reg)
        else:
            x = wiener_regions(y, basis_psfs, basis_coef, self.nsr, tuple(self.config.regions), reg)
        return encode_srgb(x, linear)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        """Random ``lq`` and a valid field: elliptical Gaussian PSFs on a 2×2 node grid over the image."""
        from models.archs.psf_util import example_psf_inputs

        return example_psf_inputs(batch_size, size, self.config.in_channels, generator=generator, keys=self.input_keys)
