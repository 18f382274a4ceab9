"""Richardson–Lucy deconvolution with the sample's spatially varying PSFs (a non-blind baseline).

The maximum-likelihood EM iteration for Poisson data (Richardson, JOSA 62(1), 1972; Lucy,
AJ 79(6), 1974; Shepp & Vardi, IEEE TMI 1(2), 1982 for the general operator)::

    x ← x ⊙ Hᵀ( (y + c) / (H x + c) ) / Hᵀ1

with the spatially varying blur ``H x = Σ_k B_k ∗ (a_k ⊙ x)`` of the batch's basis PSFs and
coefficient maps (``utils.sv_renderer.BasisBlur``: per basis element with coefficient-weighted
blending, exact for a full-rank field) and its adjoint. ``Hᵀ1`` is 1 for normalised PSFs away
from the borders; it is computed, not assumed. ``c`` (``offset``, default 0 = plain RL) is the
read-noise correction of Snyder, Hammoud & White (JOSA A 10(5), 1993, eq. 15): for
Poisson–Gaussian data with ``photons`` electrons at white and read noise σ electrons,
c = σ²/photons in [0, 1] units; it also damps the iteration where the image is dark.

Noise is amplified as the iteration goes on; the iteration count is the regulariser
(``iterations``). ``linear_light: true`` deconvolves ``srgb_to_linear(lq)`` (the physical model
of data blurred in linear light, step 3's default) and re-encodes the result.

Batch keys: ``lq``, ``basis_psfs`` [B, C_out, C_in, K, k, k], ``basis_coef`` [B, C_out, C_in, K, H, W].
"""
from __future__ import annotations

import torch

from models.archs.arch_util import PSF_INPUTS, ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class RichardsonLucy_config(RestorationConfig):
    """Args:
        iterations: RL iterations (the regularisation: fewer = smoother, less noise).
        offset: read-noise correction c in [0, 1] units (Snyder et al. 1993); 0 = plain RL.
        learnable_offset: train ``offset`` (per channel) by backpropagation through the iterations.
        boundary: image border model of the blur, ``reflect`` or ``zero`` (as the renderer's).
        linear_light: deconvolve in linear light (data rendered in linear light).
        eps: floor of the denominators (H x + c and Hᵀ1).
        in_channels: image channels.
    """

    model_type = "restorelab_richardson_lucy"

    def __init__(self, iterations: int = 30, offset: float = 0.0, learnable_offset: bool = False,
                 boundary: str = "reflect", linear_light: bool = False, eps: float = 1e-6, in_channels: int = 3,
                 **kwargs):
        if int(iterations) < 0:
            raise ConfigError(f"network RichardsonLucy: iterations must be >= 0, got {iterations}")
        if offset < 0 or eps <= 0:
            raise ConfigError(f"network RichardsonLucy: offset must be >= 0 and eps > 0, got {offset}, {eps}")
        if boundary not in ("reflect", "zero"):
            raise ConfigError(f"network RichardsonLucy: boundary must be reflect or zero, got {boundary!r}")
        self.iterations = int(iterations)
        self.offset = float(offset)
        self.learnable_offset = bool(learnable_offset)
        self.boundary = boundary
        self.linear_light = bool(linear_light)
        self.eps = float(eps)
        self.in_channels = int(in_channels)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "RichardsonLucy_config":
        return cls(iterations=3, offset=1e-3, learnable_offset=True)


def richardson_lucy(y: torch.Tensor, op, iterations: int, offset=0.0, eps: float = 1e-6,
                    x0: torch.Tensor | None = None) -> torch.Tensor:
    """``iterations`` RL steps for ``y ≈ op(x)`` (``op``: a ``BasisBlur`` or anything with
    ``__call__``/``adjoint``). ``y`` is clamped to >= 0; the start is ``x0`` or ``y``."""
    y = y.clamp(min=0)
    x = (y if x0 is None else x0).clamp(min=eps)
    norm = op.adjoint(torch.ones_like(y)).clamp(min=eps)  # Hᵀ1
    for _ in range(iterations):
        ratio = (y + offset) / (op(x) + offset).clamp(min=eps)
        x = x * op.adjoint(ratio) / norm
    return x


class RichardsonLucy_arch(RestorationModel):
    """Richardson–Lucy with the batch's spatially varying PSFs (see the module docstring)."""

    config_class = RichardsonLucy_config
    input_keys = ("lq", "basis_psfs", "basis_coef")

    def __init__(self, config: RichardsonLucy_config):
        super().__init__(config)
        self.offset = torch.nn.Parameter(torch.full((config.in_channels,), config.offset),
                                         requires_grad=config.learnable_offset)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # Bounded (iterations × 2 × the PSF radius) but the PSF size is the data's, not the config's; the
        # reflect boundary of the blur operator sits at the tile edge: no static radius.
        return ArchIO(kind="image", scale=1, inputs=PSF_INPUTS, receptive_radius=None)

    def forward(self, lq: torch.Tensor, basis_psfs: torch.Tensor | None = None, basis_coef: torch.Tensor | None = None,
                **_) -> torch.Tensor:
        from models.archs.psf_util import check_basis_inputs, decode_srgb, encode_srgb
        from utils.sv_renderer import BasisBlur

        c = self.config
        check_basis_inputs(lq, basis_psfs, basis_coef, "RichardsonLucy")
        op = BasisBlur(basis_psfs, basis_coef.to(lq.dtype), c.boundary)
        offset = self.offset.clamp(min=0).to(lq.dtype).view(1, -1, 1, 1)
        x = richardson_lucy(decode_srgb(lq, c.linear_light), op, c.iterations, offset, c.eps)
        return encode_srgb(x, c.linear_light)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        from models.archs.psf_util import example_psf_inputs

        return example_psf_inputs(batch_size, size, self.config.in_channels, generator=generator)
