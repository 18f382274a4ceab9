"""NAFNetPSF: NAFNet conditioned on the spatially varying PSF field of the sample (semi-blind).

The backbone is NAFNet (``models/archs/nafnet_arch.py``: same blocks, same parameter names).
The conditioning is the local PSF at every pixel, ``P(p) = Σ_k a_k(p) B_k``, read from the
batch's ``basis_psfs`` and ``basis_coef``:

* ``LocalPSFEncoder`` (``models/archs/psf_util.py``) turns it into ``cond_dim`` features per pixel:
  learned linear probes of P(p), computed from the basis (one inner product per basis element,
  a K-term blend per pixel), then a per-pixel MLP. Linear in the field, so the features do not
  depend on the basis chosen to describe it (nodal, PCA...), and zero basis elements (K padded
  when a dataset mixes fields) change nothing.
* ``SpatialFiLM`` modulates the features entering every encoder level, the middle blocks and
  every decoder level: ``x ⊙ (1 + γ) + β`` with γ, β from the conditioning pooled to that
  level's resolution (SFT, Wang et al., CVPR 2018). Zero-initialised: the untrained network is
  exactly NAFNet with the same weights, so ``load_official_state_dict`` starts it from an
  official NAFNet checkpoint (the conditioning then learns the lens).

One network thus serves many lenses: train it on a dataset that mixes PSF fields
(``data_gen/3.generate_dataset_synthetic.py --psf_data_path A B C``).

Batch keys: ``lq``, ``basis_psfs`` [B, C_out, C_in, K, k, k], ``basis_coef`` [B, C_out, C_in, K, H, W].
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from models.archs.arch_util import PSF_INPUTS, ArchIO
from models.archs.layers import pad_to_multiple
from models.archs.nafnet_arch import NAFNet_arch, NAFNet_config
from models.archs.psf_util import (LocalPSFEncoder, SpatialFiLM, check_basis_inputs, example_psf_inputs,
                                   load_official_backbone, pad_conditioning)

CONDITIONING_MODULES = ("psf_encoder", "film_encoders", "film_middle", "film_decoders")


class NAFNetPSF_config(NAFNet_config):
    """NAFNet keywords (``docs/models.md``) plus the conditioning:

    Args:
        cond_dim: PSF features per pixel (probe kernels).
        psf_size: size of the probe kernels; the data's PSFs may be smaller (zero-padded), not larger.
        psf_in_channels: 1 for per-channel fields, C for cross-talk fields.
    """

    model_type = "restorelab_nafnet_psf"

    def __init__(
        self,
        img_channel: int = 3,
        width: int | None = None,
        middle_blk_num: int | None = None,
        enc_blk_nums: Sequence[int] | None = None,
        dec_blk_nums: Sequence[int] | None = None,
        dw_expand: int = 2,
        ffn_expand: int = 2,
        drop_out_rate: float = 0.0,
        tlc: bool | None = None,
        train_size: Sequence[int] | None = None,
        base_size: Sequence[int] | None = None,
        fast_imp: bool = False,
        preset: str | None = None,
        cond_dim: int = 32,
        psf_size: int = 33,
        psf_in_channels: int = 1,
        **kwargs,
    ):
        self.cond_dim = int(cond_dim)
        self.psf_size = int(psf_size)
        self.psf_in_channels = int(psf_in_channels)
        super().__init__(img_channel=img_channel, width=width, middle_blk_num=middle_blk_num,
                         enc_blk_nums=enc_blk_nums, dec_blk_nums=dec_blk_nums, dw_expand=dw_expand,
                         ffn_expand=ffn_expand, drop_out_rate=drop_out_rate, tlc=tlc, train_size=train_size,
                         base_size=base_size, fast_imp=fast_imp, preset=preset, **kwargs)

    @classmethod
    def tiny(cls) -> "NAFNetPSF_config":
        return cls(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], cond_dim=8, psf_size=7)


class NAFNetPSF_arch(NAFNet_arch):
    """NAFNet + local-PSF conditioning (see the module docstring)."""

    config_class = NAFNetPSF_config
    input_keys = ("lq", "basis_psfs", "basis_coef")

    def __init__(self, config: NAFNetPSF_config):
        super().__init__(config)
        c = config
        self.psf_encoder = LocalPSFEncoder(c.cond_dim, c.psf_size, c.img_channel, c.psf_in_channels)
        widths = [c.width * 2 ** level for level in range(len(c.enc_blk_nums))]
        self.film_encoders = nn.ModuleList(SpatialFiLM(c.cond_dim, w) for w in widths)
        self.film_middle = SpatialFiLM(c.cond_dim, c.width * 2 ** len(c.enc_blk_nums))
        self.film_decoders = nn.ModuleList(SpatialFiLM(c.cond_dim, w) for w in reversed(widths))
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # NAFNet's global channel attention: no bounded receptive field.
        return ArchIO(kind="image", scale=1, inputs=PSF_INPUTS, receptive_radius=None)

    def load_official_state_dict(self, state_dict: Mapping, param_key: str | None = None) -> None:
        """Official NAFNet weights into the backbone (``psf_util.load_official_backbone``)."""
        load_official_backbone(self, state_dict, param_key, CONDITIONING_MODULES,
                               "official NAFNet checkpoint (backbone of NAFNetPSF)")

    def forward(self, lq: torch.Tensor, basis_psfs: torch.Tensor | None = None,
                basis_coef: torch.Tensor | None = None) -> torch.Tensor:
        check_basis_inputs(lq, basis_psfs, basis_coef, "NAFNetPSF")
        h, w = lq.shape[-2:]
        inp = pad_to_multiple(lq, self.padder_size, mode="constant")
        cond = pad_conditioning(self.psf_encoder(basis_psfs, basis_coef.to(lq.dtype)).to(lq.dtype), self.padder_size)
        x = self.intro(inp)
        skips = []
        for encoder, down, film in zip(self.encoders, self.downs, self.film_encoders):
            x = encoder(film(x, cond))
            skips.append(x)
            x = down(x)
        x = self.middle_blks(self.film_middle(x, cond))
        for decoder, up, skip, film in zip(self.decoders, self.ups, reversed(skips), self.film_decoders):
            x = decoder(film(up(x) + skip, cond))
        x = self.ending(x) + inp
        return x[:, :, :h, :w]

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return example_psf_inputs(batch_size, size, self.config.img_channel, psf_size=min(7, self.config.psf_size),
                                  generator=generator)
