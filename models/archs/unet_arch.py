"""UNet (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015) as a restoration baseline: configurable depth and width, "same" convolutions,
skip connections by concatenation and, by default, a global residual (the network predicts
``restored - lq``).

The input is reflect-padded (right/bottom) to a multiple of ``2 ** depth`` and the output
cropped back, so any image size works.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import LayerNorm2d, check_choice, pad_to_multiple
from utils.errors import ConfigError

NORMS = ("none", "batch", "group", "layer")
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "gelu": nn.GELU, "silu": nn.SiLU}
DOWNSAMPLES = ("maxpool", "conv")
UPSAMPLES = ("transpose", "bilinear", "pixelshuffle")


class UNet_config(RestorationConfig):
    """UNet hyper-parameters.

    Args:
        in_channels, out_channels: image channels in and out.
        width: channels at full resolution; level ``l`` has ``width * 2**l`` (capped by ``max_width``).
        depth: number of 2× down-samplings (levels = depth + 1).
        blocks_per_level: 3×3 conv + norm + activation units per level and side.
        max_width: cap on the channels of any level (None = no cap).
        norm: ``none``, ``batch``, ``group`` (GroupNorm, up to 8 groups) or ``layer`` (over channels).
        activation: ``relu``, ``leaky_relu`` (slope 0.2), ``gelu`` or ``silu``.
        downsample: ``maxpool`` (2×2 max pooling, as the original) or ``conv`` (2×2 stride-2 conv).
        upsample: ``transpose`` (2×2 stride-2 transposed conv), ``bilinear`` (+1×1 conv) or
            ``pixelshuffle`` (1×1 conv + PixelShuffle).
        residual: add the input to the output (needs ``in_channels == out_channels``).
    """

    model_type = "restorelab_unet"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 32,
        depth: int = 4,
        blocks_per_level: int = 2,
        max_width: int | None = None,
        norm: str = "none",
        activation: str = "relu",
        downsample: str = "maxpool",
        upsample: str = "transpose",
        residual: bool = True,
        **kwargs,
    ):
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.depth = int(depth)
        self.blocks_per_level = int(blocks_per_level)
        self.max_width = None if max_width is None else int(max_width)
        self.norm = norm
        self.activation = activation
        self.downsample = downsample
        self.upsample = upsample
        self.residual = bool(residual)
        check_choice("UNet norm", norm, NORMS)
        check_choice("UNet activation", activation, tuple(ACTIVATIONS))
        check_choice("UNet downsample", downsample, DOWNSAMPLES)
        check_choice("UNet upsample", upsample, UPSAMPLES)
        if min(self.in_channels, self.out_channels, self.width, self.blocks_per_level) < 1 or self.depth < 0:
            raise ConfigError("UNet channels, width and blocks_per_level must be positive and depth >= 0")
        if self.residual and self.in_channels != self.out_channels:
            raise ConfigError(f"UNet residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}")
        super().__init__(**kwargs)

    def level_channels(self) -> list[int]:
        chans = [self.width * 2**lvl for lvl in range(self.depth + 1)]
        return [min(ch, self.max_width) for ch in chans] if self.max_width else chans

    @classmethod
    def tiny(cls) -> "UNet_config":
        return cls(width=8, depth=2, blocks_per_level=1)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "layer":
        return LayerNorm2d(channels, eps=1e-6)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """``n`` × (3×3 conv → norm → activation)."""

    def __init__(self, c_in: int, c_out: int, n: int, norm: str, activation: str):
        layers = []
        for i in range(n):
            layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=norm == "none"),
                       _norm(norm, c_out), ACTIVATIONS[activation]()]
        super().__init__(*layers)


class UNet_arch(RestorationModel):
    config_class = UNet_config

    def __init__(self, config: UNet_config):
        super().__init__(config)
        c = config
        chans = c.level_channels()
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        prev = c.in_channels
        for lvl in range(c.depth):
            self.encoders.append(ConvBlock(prev, chans[lvl], c.blocks_per_level, c.norm, c.activation))
            self.downs.append(nn.MaxPool2d(2) if c.downsample == "maxpool"
                              else nn.Conv2d(chans[lvl], chans[lvl], 2, stride=2))
            prev = chans[lvl]
        self.bottleneck = ConvBlock(prev, chans[c.depth], c.blocks_per_level, c.norm, c.activation)
        for lvl in reversed(range(c.depth)):
            self.ups.append(self._up(chans[lvl + 1], chans[lvl], c.upsample))
            self.decoders.append(ConvBlock(2 * chans[lvl], chans[lvl], c.blocks_per_level, c.norm, c.activation))
        self.head = nn.Conv2d(chans[0], c.out_channels, 1)
        self.post_init()

    @staticmethod
    def _up(c_in: int, c_out: int, mode: str) -> nn.Module:
        if mode == "transpose":
            return nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        if mode == "bilinear":
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(c_in, c_out, 1))
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 1), nn.PixelShuffle(2))

    @property
    def io(self) -> ArchIO:
        # Local, but pooling to a 2**depth grid anchored at the image corner and the reflect
        # padding to a multiple make it not shift-equivariant: no exact tiling radius.
        return ArchIO(kind="image", scale=1, inputs={"lq": "image"}, receptive_radius=None)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, 2 ** self.config.depth, mode="reflect")
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        x = self.head(x)[:, :, :h, :w]
        return x + lq if self.config.residual else x
