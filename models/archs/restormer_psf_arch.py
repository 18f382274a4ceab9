"""RestormerPSF: Restormer conditioned on the spatially varying PSF field of the sample (semi-blind).

The backbone is Restormer (``models/archs/restormer_arch.py``: same blocks, same parameter
names); the conditioning is NAFNetPSF's (``models/archs/nafnet_psf_arch.py``): per-pixel
features of the local PSF ``Σ_k a_k(p) B_k`` from ``LocalPSFEncoder``, applied by zero-initialised
``SpatialFiLM`` before every encoder level, the latent, every decoder level and the refinement
(the untrained network is exactly Restormer; ``load_official_state_dict`` starts it from an
official checkpoint). Basis-independent and unchanged by zero basis elements.

Batch keys: ``lq``, ``basis_psfs`` [B, C_out, C_in, K, k, k], ``basis_coef`` [B, C_out, C_in, K, H, W].
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from models.archs.arch_util import PSF_INPUTS, ArchIO
from models.archs.layers import pad_to_multiple
from models.archs.psf_util import (LocalPSFEncoder, SpatialFiLM, check_basis_inputs, example_psf_inputs,
                                   load_official_backbone, pad_conditioning)
from models.archs.restormer_arch import Restormer_arch, Restormer_config

CONDITIONING_MODULES = ("psf_encoder", "films")
_FILM_POINTS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent", "decoder_level3", "decoder_level2",
                "decoder_level1", "refinement")


class RestormerPSF_config(Restormer_config):
    """Restormer keywords (``docs/models.md``) plus ``cond_dim``, ``psf_size``, ``psf_in_channels``
    (as in NAFNetPSF)."""

    model_type = "restorelab_restormer_psf"

    def __init__(
        self,
        inp_channels: int | None = None,
        out_channels: int | None = None,
        dim: int | None = None,
        num_blocks: Sequence[int] | None = None,
        num_refinement_blocks: int | None = None,
        heads: Sequence[int] | None = None,
        ffn_expansion_factor: float | None = None,
        bias: bool | None = None,
        LayerNorm_type: str | None = None,  # noqa: N803 (official keyword)
        dual_pixel_task: bool | None = None,
        preset: str | None = None,
        cond_dim: int = 32,
        psf_size: int = 33,
        psf_in_channels: int = 1,
        **kwargs,
    ):
        self.cond_dim = int(cond_dim)
        self.psf_size = int(psf_size)
        self.psf_in_channels = int(psf_in_channels)
        super().__init__(inp_channels=inp_channels, out_channels=out_channels, dim=dim, num_blocks=num_blocks,
                         num_refinement_blocks=num_refinement_blocks, heads=heads,
                         ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type,
                         dual_pixel_task=dual_pixel_task, preset=preset, **kwargs)
        if self.dual_pixel_task:
            from utils.errors import ConfigError

            raise ConfigError("RestormerPSF: dual_pixel_task is not supported (the input must be the blurred image)")

    @classmethod
    def tiny(cls) -> "RestormerPSF_config":
        return cls(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4], cond_dim=8, psf_size=7)


class RestormerPSF_arch(Restormer_arch):
    """Restormer + local-PSF conditioning (see the module docstring)."""

    config_class = RestormerPSF_config
    input_keys = ("lq", "basis_psfs", "basis_coef")

    def __init__(self, config: RestormerPSF_config):
        super().__init__(config)
        c, d = config, config.dim
        self.psf_encoder = LocalPSFEncoder(c.cond_dim, c.psf_size, c.inp_channels, c.psf_in_channels)
        channels = (d, 2 * d, 4 * d, 8 * d, 4 * d, 2 * d, 2 * d, 2 * d)
        self.films = nn.ModuleDict({name: SpatialFiLM(c.cond_dim, ch) for name, ch in zip(_FILM_POINTS, channels)})
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # Restormer's attention is global: no bounded receptive field.
        return ArchIO(kind="image", scale=1, inputs=PSF_INPUTS, receptive_radius=None)

    def load_official_state_dict(self, state_dict: Mapping, param_key: str | None = None) -> None:
        """Official Restormer weights into the backbone (``psf_util.load_official_backbone``)."""
        load_official_backbone(self, state_dict, param_key, CONDITIONING_MODULES,
                               "official Restormer checkpoint (backbone of RestormerPSF)")

    def forward(self, lq: torch.Tensor, basis_psfs: torch.Tensor | None = None,
                basis_coef: torch.Tensor | None = None) -> torch.Tensor:
        check_basis_inputs(lq, basis_psfs, basis_coef, "RestormerPSF")
        h, w = lq.shape[-2:]
        inp = pad_to_multiple(lq, 8, mode="reflect")
        cond = pad_conditioning(self.psf_encoder(basis_psfs, basis_coef.to(lq.dtype)).to(lq.dtype), 8)
        f = self.films
        enc1_in = self.patch_embed(inp)
        enc1 = self.encoder_level1(f["encoder_level1"](enc1_in, cond))
        enc2 = self.encoder_level2(f["encoder_level2"](self.down1_2(enc1), cond))
        enc3 = self.encoder_level3(f["encoder_level3"](self.down2_3(enc2), cond))
        latent = self.latent(f["latent"](self.down3_4(enc3), cond))
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        dec3 = self.decoder_level3(f["decoder_level3"](dec3, cond))
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
        dec2 = self.decoder_level2(f["decoder_level2"](dec2, cond))
        dec1 = self.decoder_level1(f["decoder_level1"](torch.cat([self.up2_1(dec2), enc1], 1), cond))
        dec1 = self.refinement(f["refinement"](dec1, cond))
        return (self.output(dec1) + inp)[:, :, :h, :w]

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return example_psf_inputs(batch_size, size, self.config.inp_channels, psf_size=min(7, self.config.psf_size),
                                  generator=generator)
