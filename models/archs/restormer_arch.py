"""Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image
Restoration", CVPR 2022).

A port of github.com/swz30/Restormer (``basicsr/models/archs/restormer_arch.py``; the upstream
code and weights are under its non-commercial "Academic Public License"): same constructor
keywords (``inp_channels``, ``out_channels``, ``dim``, ``num_blocks``, ``num_refinement_blocks``,
``heads``, ``ffn_expansion_factor``, ``bias``, ``LayerNorm_type``, ``dual_pixel_task``) and
parameter names, except that the LayerNorm wrapper level is gone
(official ``norm1.body.weight`` → ``norm1.weight``); ``load_official_state_dict`` maps it.

The official network needs H and W divisible by 8; the official test scripts reflect-pad the
input (right/bottom) and crop the output, which ``forward`` does here.

Official configurations by name: ``Restormer_config.official("denoising")`` or
``network: {type: Restormer, preset: denoising}`` (see ``RESTORMER_PRESETS``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import BiasFreeLayerNorm2d, LayerNorm2d, OfficialCheckpointMixin, check_choice, pad_to_multiple
from utils.errors import ConfigError
from utils.registry import unknown_name_message

# Options files of the official repository (the "default" is the constructor's defaults).
RESTORMER_PRESETS: dict[str, dict] = {
    "default": dict(),
    "motion-deblurring": dict(),  # Motion_Deblurring/Options/Deblurring_Restormer.yml
    "deraining": dict(),  # Deraining/Options/Deraining_Restormer.yml
    "defocus-single": dict(),  # Defocus_Deblurring/Options/DefocusDeblur_Single_8bit_Restormer.yml
    "defocus-dual-pixel": dict(inp_channels=6, dual_pixel_task=True),  # DefocusDeblur_DualPixel_16bit_Restormer.yml
    "denoising": dict(LayerNorm_type="BiasFree"),  # Denoising/Options/GaussianColorDenoising_Restormer.yml
    "denoising-gray": dict(inp_channels=1, out_channels=1, LayerNorm_type="BiasFree"),  # GaussianGrayDenoising
    "real-denoising": dict(LayerNorm_type="BiasFree"),  # Denoising/Options/RealDenoising_Restormer.yml
}
_DEFAULTS = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
                 heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
                 dual_pixel_task=False)


class Restormer_config(RestorationConfig):
    """Restormer hyper-parameters (official names; ``None`` = the preset's value or the official default).

    Args:
        inp_channels, out_channels: image channels (6 in for the dual-pixel task).
        dim: channels at level 1 (doubled per level; the decoder's level 1 and refinement use 2·dim).
        num_blocks: transformer blocks at levels 1-4 (level 4 is the latent).
        num_refinement_blocks: blocks after the decoder.
        heads: attention heads at levels 1-4.
        ffn_expansion_factor: gated-FFN hidden width is ``int(dim * factor)``.
        bias: biases in the convolutions.
        LayerNorm_type: ``WithBias`` or ``BiasFree`` (denoising models).
        dual_pixel_task: dual-pixel defocus deblurring (skip conv instead of the image residual).
        preset: an official configuration by name (``RESTORMER_PRESETS``).
    """

    model_type = "restorelab_restormer"

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
        **kwargs,
    ):
        if preset is not None and preset not in RESTORMER_PRESETS:
            raise ConfigError(unknown_name_message("Restormer preset", preset, list(RESTORMER_PRESETS)))
        base = {**_DEFAULTS, **(RESTORMER_PRESETS[preset] if preset else {})}
        given = dict(inp_channels=inp_channels, out_channels=out_channels, dim=dim, num_blocks=num_blocks,
                     num_refinement_blocks=num_refinement_blocks, heads=heads,
                     ffn_expansion_factor=ffn_expansion_factor, bias=bias, LayerNorm_type=LayerNorm_type,
                     dual_pixel_task=dual_pixel_task)
        r = {k: (v if v is not None else base[k]) for k, v in given.items()}
        self.inp_channels = int(r["inp_channels"])
        self.out_channels = int(r["out_channels"])
        self.dim = int(r["dim"])
        self.num_blocks = [int(n) for n in r["num_blocks"]]
        self.num_refinement_blocks = int(r["num_refinement_blocks"])
        self.heads = [int(n) for n in r["heads"]]
        self.ffn_expansion_factor = float(r["ffn_expansion_factor"])
        self.bias = bool(r["bias"])
        self.LayerNorm_type = r["LayerNorm_type"]
        self.dual_pixel_task = bool(r["dual_pixel_task"])
        self.preset = preset
        check_choice("Restormer LayerNorm_type", self.LayerNorm_type, ("WithBias", "BiasFree"))
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ConfigError(f"Restormer num_blocks and heads need 4 entries, got {self.num_blocks} and {self.heads}")
        for level, h in enumerate(self.heads):
            if (self.dim * 2 ** min(level, 3)) % h or (level == 0 and (2 * self.dim) % h):
                raise ConfigError(f"Restormer heads[{level}]={h} does not divide the channels of level {level + 1}")
        if not self.dual_pixel_task and self.inp_channels != self.out_channels:
            raise ConfigError("Restormer adds the input to the output: inp_channels must equal out_channels "
                              "(unless dual_pixel_task)")
        super().__init__(**kwargs)

    @property
    def in_channels(self) -> int:
        return self.inp_channels

    @classmethod
    def official(cls, name: str, **overrides) -> "Restormer_config":
        """An official configuration by name, e.g. ``official("default")``."""
        return cls(preset=name, **overrides)

    @classmethod
    def tiny(cls) -> "Restormer_config":
        return cls(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4])


def _layer_norm(dim: int, kind: str) -> nn.Module:
    # Restormer LayerNorm over channels: eps 1e-5, population variance.
    return BiasFreeLayerNorm2d(dim, eps=1e-5) if kind == "BiasFree" else LayerNorm2d(dim, eps=1e-5)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, per head,
    with L2-normalised queries/keys and a learned temperature."""

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layer_norm_type: str):
        super().__init__()
        self.norm1 = _layer_norm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = _layer_norm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int, embed_dim: int, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Restormer_arch(OfficialCheckpointMixin, RestorationModel):
    config_class = Restormer_config

    @property
    def io(self) -> ArchIO:
        # Transposed (channel) attention over the whole image: global context.
        return ArchIO(kind="image", scale=1, inputs={"lq": "image"}, receptive_radius=None)

    def __init__(self, config: Restormer_config):
        super().__init__(config)
        c = config
        dim, heads = c.dim, c.heads

        def stage(channels: int, num: int, num_heads: int) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(channels, num_heads, c.ffn_expansion_factor, c.bias, c.LayerNorm_type)
                                   for _ in range(num)])

        self.patch_embed = OverlapPatchEmbed(c.inp_channels, dim)
        self.encoder_level1 = stage(dim, c.num_blocks[0], heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(dim * 2, c.num_blocks[1], heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(dim * 4, c.num_blocks[2], heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(dim * 8, c.num_blocks[3], heads[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=c.bias)
        self.decoder_level3 = stage(dim * 4, c.num_blocks[2], heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=c.bias)
        self.decoder_level2 = stage(dim * 2, c.num_blocks[1], heads[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = stage(dim * 2, c.num_blocks[0], heads[0])
        self.refinement = stage(dim * 2, c.num_refinement_blocks, heads[0])
        if c.dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=c.bias)
        self.output = nn.Conv2d(dim * 2, c.out_channels, 3, padding=1, bias=c.bias)
        self.post_init()

    @staticmethod
    def map_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official ``*.norm{1,2}.body.{weight,bias}`` → ``*.norm{1,2}.{weight,bias}``."""
        return {re.sub(r"\.(norm[12])\.body\.", r".\1.", k): v for k, v in state_dict.items()}

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        inp = pad_to_multiple(lq, 8, mode="reflect")
        enc1_in = self.patch_embed(inp)
        enc1 = self.encoder_level1(enc1_in)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.config.dual_pixel_task:
            out = self.output(dec1 + self.skip_conv(enc1_in))
        else:
            out = self.output(dec1) + inp
        return out[:, :, :h, :w]
