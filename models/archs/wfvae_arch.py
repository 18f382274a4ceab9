"""WF-VAE, image variant: a KL autoencoder whose encoder and decoder carry Haar wavelet sub-bands
through dedicated "energy-flow" paths (Li et al., "WF-VAE: Enhancing Video VAE by Wavelet-Driven
Energy Flow for Latent Video Diffusion Model", CVPR 2025; image code: the ``WFVAE2ImageModel`` of
the ryusaksun/WF-VAE-Image fork @3cd0b6f, Apache-2.0). Re-implemented from the paper and the
official module's behaviour; weights and outputs match the official ones (tests/test_wfvae.py).

Architecture (official keyword names, ``WFVAE_config``):

* Encoder: x ∈ [−1, 1] → Haar (12 channels at H/2) → 3×3 conv → per level: (n−1) ResBlocks,
  stride-2 conv (padded right/bottom), and the energy flow: Haar of the previous level's
  low-pass band → 3×3 conv to ``energy_flow_size`` channels, concatenated, ResBlock to the next
  width. Mid: ResBlock, single-head full-map attention, ResBlock; LayerNorm, SiLU, conv to
  2·``latent_dim`` moments (mean, log-variance clamped to [−30, 20]).
* Decoder: conv, mid; per level: ResBlock to C + flow, the last ``flow`` channels → ResBlock →
  conv to 12 coefficients with the previous level's reconstruction added to their low-pass band,
  whose inverse Haar is handed on; the main path: (n−2) ResBlocks, nearest ×2 + conv, ResBlock to
  the next width. LayerNorm, conv to 12 channels, low-pass += the last flow, inverse Haar.
* The norm is a per-pixel LayerNorm over channels (no image statistics), so without attention
  the network is local and tiles exactly; the mid attention makes it global (tiling then hides
  seams only).

API:

* ``encode(x)`` (x in [−1, 1], H and W multiples of 8) → ``.latent_dist`` (``.mean``, ``.logvar``,
  ``.std``, ``.sample(generator)``, ``.mode()``, ``.kl()``) and ``.extra_output`` (the encoder's
  energy-flow coefficients, shallow to deep; None when tiled); ``decode(z)`` → ``.sample`` in
  [−1, 1] (not clamped) and ``.extra_output`` (decoder coefficients, deep to shallow);
  ``return_dict=False`` gives tuples, as diffusers' ``AutoencoderKL``.
* ``forward(lq)``: the lab's image contract: [0, 1] in, the reconstruction from the posterior
  mean in [0, 1] out, any size (reflect-padded to a multiple of 8 and cropped back).
* Tiling: ``enable_tiling(tile_size, overlap, blend)`` makes ``encode``/``decode`` (and so
  ``forward``) run by tiles through ``utils.tiling`` (tiles on the latent grid, raised-cosine
  blending); ``disable_tiling()``.
* Latent statistics: ``scale``/``shift`` (per channel) with the convention
  z_dm = (z − shift)·scale; ``encode(x, normalize=True)`` returns the distribution of z_dm;
  ``normalize_latents``/``denormalize_latents``. The official defaults (0.18215, 0) are Stable
  Diffusion's, not fitted: ``scripts/compute_latent_stats.py`` fits them on data.
* Official checkpoints: ``load_official_state_dict`` reads the training ``.ckpt`` layouts (EMA
  weights by default, ``module.`` prefixes, decoder-only EMA files completed from
  ``gen_model``, raw state dicts) strictly; ``from_official_checkpoint(path)`` takes a file or a
  folder (the newest ``checkpoint-<step>.ckpt`` by step number, or diffusers' ``config.json`` +
  ``diffusion_pytorch_model.safetensors``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import (
    ArchIO,
    RestorationConfig,
    RestorationModel,
    from_sample_range,
    to_sample_range,
)
from models.archs.haar import HaarWaveletTransform2D, InverseHaarWaveletTransform2D
from models.archs.layers import load_strict, read_checkpoint
from models.archs.toy_arch import DiagonalGaussian
from utils.errors import ConfigError, DataError

SD_SCALE = 0.18215
LAYERNORM_EPS = 1e-6


# -- outputs (diffusers-style) ------------------------------------------------------------------------
@dataclass
class WFVAEEncoderOutput:
    latent_dist: DiagonalGaussian
    extra_output: list[torch.Tensor] | None = None

    def __getitem__(self, i):
        return (self.latent_dist, self.extra_output)[i]


@dataclass
class WFVAEDecoderOutput:
    sample: torch.Tensor
    extra_output: list[torch.Tensor] | None = None

    def __getitem__(self, i):
        return (self.sample, self.extra_output)[i]


# -- building blocks ----------------------------------------------------------------------------------
class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel (the official wrapper: parameters under ``.norm``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=LAYERNORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResnetBlock(nn.Module):
    """norm → SiLU → conv3 → norm → SiLU → dropout → conv3, plus the input (1×1 conv if widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = ChannelLayerNorm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = ChannelLayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (1×1 convs q, k, v, proj_out), residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)
        k = self.k(h).reshape(b, c, hh * ww)
        v = self.v(h).reshape(b, c, hh * ww)
        attn = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)       # b × query × key
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero pad one pixel right and bottom, 3×3 conv with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2, 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(types: Sequence[str], channels: int, dropout: float) -> nn.Sequential:
    layers = []
    for t in types:
        if t == "ResnetBlock2D":
            layers.append(ResnetBlock(channels, channels, dropout))
        elif t == "AttnBlock2D":
            layers.append(AttnBlock(channels))
        else:
            raise ConfigError(f"WFVAE: mid_layers_type entries must be ResnetBlock2D or AttnBlock2D, got {t!r}")
    return nn.Sequential(*layers)


class WFDownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, flow: int, num_res_blocks: int, dropout: float):
        super().__init__()
        self.wavelet_transform = HaarWaveletTransform2D()
        self.in_flow_conv = nn.Conv2d(12, flow, 3, padding=1)
        self.res_block = nn.Sequential(*[ResnetBlock(in_channels, in_channels, dropout) for _ in range(num_res_blocks - 1)])
        self.down = Downsample(in_channels)
        self.out_res_block = ResnetBlock(in_channels + flow, out_channels, dropout)

    def forward(self, x, w):
        x = self.down(self.res_block(x))
        coeffs = self.wavelet_transform(w[:, :3])
        return self.out_res_block(torch.cat([x, self.in_flow_conv(coeffs)], dim=1)), coeffs


class WFUpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, flow: int, num_res_blocks: int, dropout: float):
        super().__init__()
        self.flow = flow
        self.branch_conv = ResnetBlock(in_channels, in_channels + flow, dropout)
        self.out_flow_conv = nn.Sequential(ResnetBlock(flow, flow, dropout), nn.Conv2d(flow, 12, 3, padding=1))
        self.inverse_wavelet_transform = InverseHaarWaveletTransform2D()
        self.res_block = nn.Sequential(*[ResnetBlock(in_channels, in_channels, dropout) for _ in range(num_res_blocks - 2)])
        self.up = Upsample(in_channels)
        self.out_res_block = ResnetBlock(in_channels, out_channels, dropout)

    def forward(self, x, w=None):
        x = self.branch_conv(x)
        coeffs = self.out_flow_conv(x[:, -self.flow:])
        if w is not None:
            coeffs = torch.cat([coeffs[:, :3] + w, coeffs[:, 3:]], dim=1)
        w = self.inverse_wavelet_transform(coeffs)
        x = self.out_res_block(self.up(self.res_block(x[:, :-self.flow])))
        return x, w, coeffs


class WFEncoder(nn.Module):
    def __init__(self, c: WFVAE_config):
        super().__init__()
        ch = list(c.base_channels)
        self.wavelet_transform_in = HaarWaveletTransform2D()
        self.conv_in = nn.Conv2d(12, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            WFDownBlock(ch[i], ch[i + 1], c.encoder_energy_flow_size, c.encoder_num_resblocks, c.dropout)
            for i in range(len(c.layer_res_type)))
        self.mid = _mid(c.mid_layers_type, ch[-1], c.dropout)
        self.norm_out = ChannelLayerNorm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], 2 * c.latent_dim, 3, padding=1)

    def forward(self, x):
        coeffs = self.wavelet_transform_in(x)
        h = self.conv_in(coeffs)
        inter = []
        for block in self.down_blocks:
            h, coeffs = block(h, coeffs)
            inter.append(coeffs)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        return h, inter


class WFDecoder(nn.Module):
    def __init__(self, c: WFVAE_config):
        super().__init__()
        ch = list(c.decoder_base_channels or c.base_channels)
        n = len(c.layer_res_type)
        self.conv_in = nn.Conv2d(c.latent_dim, ch[-1], 3, padding=1)
        self.mid = _mid(c.mid_layers_type, ch[-1], c.dropout)
        self.up_blocks = nn.ModuleList(
            WFUpBlock(ch[n - i], ch[n - i - 1], c.decoder_energy_flow_size, c.decoder_num_resblocks, c.dropout)
            for i in range(n))
        self.norm_out = ChannelLayerNorm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], 12, 3, padding=1)
        self.inverse_wavelet_transform_out = InverseHaarWaveletTransform2D()

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        inter, w = [], None
        for block in self.up_blocks:
            h, w, coeffs = block(h, w)
            inter.append(coeffs)
        h = self.conv_out(self.norm_out(h))
        h = torch.cat([h[:, :3] + w, h[:, 3:]], dim=1)
        return self.inverse_wavelet_transform_out(h), inter


# -- config and network -------------------------------------------------------------------------------
class WFVAE_config(RestorationConfig):
    """WF-VAE (image) hyper-parameters, the official ``WFVAE2ImageModel`` keywords.

    Args:
        latent_dim: latent channels (the published 1024 configuration: 8).
        base_channels: encoder widths per level, one more entry than ``layer_res_type``.
        decoder_base_channels: decoder widths (None: ``base_channels``).
        layer_res_type: one ``"ResnetBlock2D"`` per down/up level (the spatial downsampling is
            2 (Haar) × 2^len).
        encoder_num_resblocks / decoder_num_resblocks: ResBlocks per level (decoder >= 2).
        encoder_energy_flow_size / decoder_energy_flow_size: channels of the wavelet paths.
        dropout: inside ResBlocks.
        norm_type: ``"layernorm"`` (the only one the image model uses).
        mid_layers_type: ``ResnetBlock2D`` / ``AttnBlock2D`` sequence of the middle (no
            ``AttnBlock2D``: a local network that tiles exactly).
        scale, shift: per-channel latent statistics, z_dm = (z − shift)·scale (None: the
            official defaults 0.18215 and 0, Stable Diffusion's, not fitted).
    """

    model_type = "restorelab_wfvae"

    def __init__(
        self,
        latent_dim: int = 4,
        base_channels: list[int] = (128, 256, 512),
        decoder_base_channels: list[int] | None = None,
        layer_res_type: list[str] = ("ResnetBlock2D", "ResnetBlock2D"),
        encoder_num_resblocks: int = 2,
        encoder_energy_flow_size: int = 128,
        decoder_num_resblocks: int = 3,
        decoder_energy_flow_size: int = 128,
        dropout: float = 0.0,
        norm_type: str = "layernorm",
        mid_layers_type: list[str] = ("ResnetBlock2D", "AttnBlock2D", "ResnetBlock2D"),
        scale: list[float] | None = None,
        shift: list[float] | None = None,
        **kwargs,
    ):
        self.latent_dim = int(latent_dim)
        self.base_channels = [int(v) for v in base_channels]
        self.decoder_base_channels = None if decoder_base_channels is None else [int(v) for v in decoder_base_channels]
        self.layer_res_type = list(layer_res_type)
        self.encoder_num_resblocks = int(encoder_num_resblocks)
        self.encoder_energy_flow_size = int(encoder_energy_flow_size)
        self.decoder_num_resblocks = int(decoder_num_resblocks)
        self.decoder_energy_flow_size = int(decoder_energy_flow_size)
        self.dropout = float(dropout)
        self.norm_type = norm_type
        self.mid_layers_type = list(mid_layers_type)
        self.scale = [SD_SCALE] * self.latent_dim if scale is None else [float(v) for v in scale]
        self.shift = [0.0] * self.latent_dim if shift is None else [float(v) for v in shift]
        self._validate()
        super().__init__(**kwargs)

    def _validate(self):
        if self.latent_dim < 1:
            raise ConfigError("WFVAE: latent_dim must be >= 1")
        if any(t != "ResnetBlock2D" for t in self.layer_res_type) or not self.layer_res_type:
            raise ConfigError("WFVAE: layer_res_type must be a non-empty list of 'ResnetBlock2D'")
        for name in ("base_channels", "decoder_base_channels"):
            ch = getattr(self, name)
            if ch is not None and (len(ch) != len(self.layer_res_type) + 1 or min(ch) < 1):
                raise ConfigError(f"WFVAE: {name} needs {len(self.layer_res_type) + 1} positive widths, got {ch}")
        if self.encoder_num_resblocks < 1 or self.decoder_num_resblocks < 2:
            raise ConfigError("WFVAE: encoder_num_resblocks must be >= 1 and decoder_num_resblocks >= 2")
        if self.norm_type != "layernorm":
            raise ConfigError(f"WFVAE: norm_type must be 'layernorm' (the image model's), got {self.norm_type!r}")
        if len(self.scale) != self.latent_dim or len(self.shift) != self.latent_dim:
            raise ConfigError(f"WFVAE: scale and shift need {self.latent_dim} values (one per latent channel)")
        if any(s == 0 for s in self.scale):
            raise ConfigError("WFVAE: a latent scale of 0 cannot be inverted")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.layer_res_type) + 1)

    @classmethod
    def tiny(cls) -> WFVAE_config:
        return cls(latent_dim=4, base_channels=[8, 16, 16], encoder_energy_flow_size=8, decoder_energy_flow_size=8,
                   encoder_num_resblocks=1, decoder_num_resblocks=2)

    @classmethod
    def official_1024(cls, **overrides) -> WFVAE_config:
        """``examples/wfvae2-image-1024.json``: f8, 8 latent channels, 44,110,516 parameters."""
        kw = {"latent_dim": 8, "base_channels": [128, 256, 512], "decoder_base_channels": [128, 256, 512],
                  "encoder_num_resblocks": 2, "encoder_energy_flow_size": 128, "decoder_num_resblocks": 2,
                  "decoder_energy_flow_size": 128}
        kw.update(overrides)
        return cls(**kw)


def receptive_radius(config: WFVAE_config) -> int | None:
    """A bound on how far (input pixels) a reconstructed pixel looks, summed over every 3×3 conv,
    stride-2 conv and ×2 step at its resolution (an upper bound of the longest path; checked by
    gradient footprints in tests/test_wfvae.py). None when the middle has attention."""
    if any(t == "AttnBlock2D" for t in config.mid_layers_type):
        return None
    n = len(config.layer_res_type)
    f = config.factor
    r = 2  # the 2×2 Haar blocks at input and output
    s = 2
    r += s  # encoder conv_in
    for _ in range(n):
        r += 2 * s * (config.encoder_num_resblocks - 1) + 2 * s  # res blocks, stride-2 conv
        s *= 2
        r += 2 * s + s + s  # out_res_block, flow conv, the flow's Haar block
    r += 2 * f * len(config.mid_layers_type) + f  # mid, conv_out
    r += f + 2 * f * len(config.mid_layers_type)  # decoder conv_in, mid
    s = f
    for _ in range(n):
        r += 2 * s + 2 * s + s + 2 * s * (config.decoder_num_resblocks - 2)  # branch, flow res + conv, res
        r += s + s // 2  # ×2 nearest + conv, the flow's inverse Haar
        s //= 2
        r += 2 * s  # out_res_block
    r += s  # conv_out
    return int(r)


class WFVAE_arch(RestorationModel):
    config_class = WFVAE_config
    main_input_name = "lq"

    def __init__(self, config: WFVAE_config):
        super().__init__(config)
        self.encoder = WFEncoder(config)
        self.decoder = WFDecoder(config)
        self.use_tiling = False
        self.tile_size, self.tile_overlap, self.tile_blend = 512, 64, None
        self.post_init()

    # -- description ------------------------------------------------------------------------------
    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="autoencoder", scale=self.config.factor, inputs={"lq": "image"}, output="image",
                      receptive_radius=receptive_radius(self.config), sample_range=(-1.0, 1.0))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_dim

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output convolution weight (where the adaptive GAN weight is measured)."""
        return self.decoder.conv_out.weight

    # -- tiling -------------------------------------------------------------------------------------
    def enable_tiling(self, tile_size: int = 512, overlap: int = 64, blend: int | None = None) -> None:
        """Encode and decode by tiles of ``tile_size`` pixels (``tile_size / 8`` latent cells)
        overlapping by ``overlap`` pixels, cross-faded over ``blend`` (default overlap / 2);
        everything is rounded up to multiples of the downsampling factor."""
        f = self.config.factor
        if tile_size < f or overlap < 0 or 2 * overlap > tile_size:
            raise ConfigError(f"WFVAE tiling: need tile_size >= {f} and 0 <= overlap <= tile_size / 2")
        self.use_tiling = True
        self.tile_size, self.tile_overlap, self.tile_blend = int(tile_size), int(overlap), blend

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def _tiles_needed(self, h: int, w: int) -> bool:
        return self.use_tiling and (h > self.tile_size or w > self.tile_size)

    # -- diffusers-style API ------------------------------------------------------------------------
    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, list | None]:
        f = self.config.factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"WFVAE.encode: the image ({x.shape[-2]}x{x.shape[-1]}) must be a multiple of {f} "
                             "(forward() pads any size)")
        if self._tiles_needed(*x.shape[-2:]):
            from utils.tiling import tiled_encode

            moments = tiled_encode(lambda t: self.encoder(t)[0], x, self.tile_size, self.tile_overlap, f,
                                   blend=self.tile_blend)
            return moments, None
        return self.encoder(x)

    def encode(self, x: torch.Tensor, return_dict: bool = True, normalize: bool = False):
        """Posterior of ``x`` (B×3×H×W in [−1, 1]); ``normalize``: of z_dm = (z − shift)·scale."""
        moments, coeffs = self._moments(x)
        if normalize:
            mean, logvar = moments.chunk(2, dim=1)
            scale, shift = self._stats(moments)
            moments = torch.cat([(mean - shift) * scale, logvar + 2 * torch.log(scale.abs())], dim=1)
        out = WFVAEEncoderOutput(DiagonalGaussian(moments), coeffs)
        return out if return_dict else (out.latent_dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, normalized: bool = False):
        """Image (B×3×8h×8w in [−1, 1], not clamped) from a latent (``normalized``: a z_dm)."""
        if normalized:
            z = self.denormalize_latents(z)
        if self._tiles_needed(*(v * self.config.factor for v in z.shape[-2:])):
            from utils.tiling import tiled_decode

            f = self.config.factor
            cells = -(-self.tile_size // f)
            ov = -(-self.tile_overlap // f)
            bl = None if self.tile_blend is None else -(-self.tile_blend // f)
            out = WFVAEDecoderOutput(tiled_decode(lambda t: self.decoder(t)[0], z, cells, ov, f, blend=bl), None)
        else:
            out = WFVAEDecoderOutput(*self.decoder(z))
        return out if return_dict else (out.sample,)

    def _stats(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {"dtype": ref.dtype, "device": ref.device}
        return (torch.tensor(self.config.scale, **kw).view(1, -1, 1, 1),
                torch.tensor(self.config.shift, **kw).view(1, -1, 1, 1))

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self._stats(z)
        return (z - shift) * scale

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self._stats(z)
        return z / scale + shift

    # -- the lab's contract -------------------------------------------------------------------------
    def forward(self, lq: torch.Tensor, sample_posterior: bool | torch.Generator = False, return_dict: bool = False):
        """Reconstruction, [0, 1] → [0, 1], any size (reflect-padded to a multiple of 8, cropped).

        ``sample_posterior``: decode a posterior sample (True, or a ``torch.Generator`` for its
        noise) instead of the mean. ``return_dict``: a ``VAEForwardOutput`` (what training
        needs: the decoding in [−1, 1], the posterior, the coefficients of both energy flows)."""
        return vae_forward(self, lq, sample_posterior, return_dict)

    # -- official checkpoints -----------------------------------------------------------------------
    def load_official_state_dict(self, checkpoint: Mapping, use_ema: bool = True) -> None:
        """Load official WF-VAE weights strictly: a training ``.ckpt`` dict or a plain state dict.

        Precedence as the official ``init_from_ckpt``: a non-empty ``ema_state_dict`` (with its
        ``module.`` prefix removed) unless ``use_ema=False``; else ``state_dict.gen_model``; else
        ``state_dict``; else the mapping itself. Differences, both deliberate: entries the EMA
        lacks (the Haar buffers, or the encoder of a decoder-only EMA file) are taken from
        ``gen_model`` (the official loader leaves them at their random initialisation), and
        loading is strict (the official one ignores missing and unexpected keys)."""
        ckpt = dict(checkpoint)
        gen = None
        if isinstance(ckpt.get("state_dict"), Mapping):
            sd = ckpt["state_dict"]
            gen = dict(sd["gen_model"]) if isinstance(sd.get("gen_model"), Mapping) else dict(sd)
        ema = ckpt.get("ema_state_dict")
        if use_ema and isinstance(ema, Mapping) and len(ema) > 0:
            state = dict(gen or {})
            state.update({_strip_module(k): v for k, v in ema.items()})
        elif gen is not None:
            state = gen
        elif "ema_state_dict" in ckpt or "state_dict" in ckpt:
            raise DataError("WF-VAE checkpoint holds neither usable EMA weights nor state_dict.gen_model")
        else:
            state = {_strip_module(k): v for k, v in ckpt.items()}
        own = self.state_dict()
        for k in own:  # the Haar kernels are constants: fill them where a file (EMA) lacks them
            if k.endswith((".aa", ".ad", ".da", ".dd")) and k not in state:
                state[k] = own[k]
        load_strict(self, state, "official WFVAE checkpoint")

    @classmethod
    def from_official_checkpoint(cls, path, use_ema: bool = True, **official_kwargs) -> WFVAE_arch:
        """Build from the official keywords and load ``path``: a ``.ckpt``/``.pt``/``.safetensors``
        file, or a folder holding ``checkpoint-<step>.ckpt`` files (the highest step is taken; the
        official loader takes the lexicographically last, so step 9000 beats 10000) or diffusers'
        ``diffusion_pytorch_model.safetensors``; a ``config.json`` there supplies the keywords
        (``official_kwargs`` override it). Returns the network in eval mode."""
        path = Path(path)
        if path.is_dir():
            config_file = path / "config.json"
            if config_file.is_file():
                import json

                kw = {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
                kw.update(official_kwargs)
                official_kwargs = kw
            file = newest_checkpoint(path)
        else:
            file = path
        net = cls(cls.config_class(**official_kwargs))
        net.load_official_state_dict(read_checkpoint(file), use_ema=use_ema)
        return net.eval()

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": torch.rand(batch_size, 3, size, size, generator=generator)}


@dataclass
class VAEForwardOutput:
    """``forward(..., return_dict=True)`` of the lab's autoencoders: ``sample`` (the decoding, in
    ``io.sample_range``, same size as the input), ``latent_dist``, ``latent`` (what was decoded)
    and, for WF-VAE, the energy-flow coefficients of the encoder and the decoder."""

    sample: torch.Tensor
    latent_dist: DiagonalGaussian
    latent: torch.Tensor
    encoder_coeffs: list[torch.Tensor] | None = None
    decoder_coeffs: list[torch.Tensor] | None = None


def vae_forward(net, lq: torch.Tensor, sample_posterior=False, return_dict: bool = False):
    """The lab's autoencoder forward over ``net.encode``/``net.decode`` (shared by the VAE archs)."""
    io = net.io
    f = io.scale
    h, w = lq.shape[-2:]
    pad = (0, (-w) % f, 0, (-h) % f)
    x = lq
    if any(pad):
        x = F.pad(lq, pad, mode="reflect" if pad[1] < w and pad[3] < h else "replicate")
    enc = net.encode(to_sample_range(x, io))
    dist = enc.latent_dist
    if sample_posterior is False or sample_posterior is None:
        z = dist.mean
    else:
        z = dist.sample(generator=sample_posterior if isinstance(sample_posterior, torch.Generator) else None)
    dec = net.decode(z)
    if not return_dict:
        return from_sample_range(dec.sample, io)[..., :h, :w]
    return VAEForwardOutput(dec.sample[..., :h, :w], dist, z, getattr(enc, "extra_output", None),
                            getattr(dec, "extra_output", None))


def _strip_module(key: str) -> str:
    return key.removeprefix("module.")


_STEP = re.compile(r"checkpoint-(\d+)\.ckpt$")


def newest_checkpoint(folder: str | Path) -> Path:
    """The ``checkpoint-<step>.ckpt`` with the highest step in ``folder`` (numeric order), else a
    single other ``*.ckpt``, else ``diffusion_pytorch_model.safetensors``."""
    folder = Path(folder)
    ckpts = sorted(folder.glob("*.ckpt"))
    stepped = [(int(m.group(1)), p) for p in ckpts if (m := _STEP.search(p.name))]
    if stepped:
        return max(stepped)[1]
    if len(ckpts) == 1:
        return ckpts[0]
    if len(ckpts) > 1:
        raise DataError(f"{folder}: several .ckpt files without a step number ({', '.join(p.name for p in ckpts)}); "
                        "pass the file")
    st = folder / "diffusion_pytorch_model.safetensors"
    if st.is_file():
        return st
    raise DataError(f"{folder}: no checkpoint-<step>.ckpt and no diffusion_pytorch_model.safetensors")
