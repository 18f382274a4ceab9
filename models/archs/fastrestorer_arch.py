"""FastRestorer: a small, fast generator for CPU runs of the multi-task restoration demo.

A two-level residual U-Net (convolution stem, ``blocks`` residual blocks of two 3×3 convolutions
+ LeakyReLU at full and at half resolution, stride-2 down / pixel-shuffle up, additive skip), and
a global residual: ``out = lq + body(lq)`` (×``upscale`` > 1: a pixel-shuffle head on top of the
bilinear-free residual, ``out = body(lq)``). Every layer is a plain convolution, so ONNX export
with dynamic batch/height/width is exact; any H and W (the
half-resolution level is ⌈H/2⌉ and its upsampling is cropped back).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class FastRestorer_config(RestorationConfig):
    """Args:
        in_channels, out_channels: image channels; extra input channels (in_channels > out_channels)
            are conditioning maps (MultiTaskGAN_model's one-hot task), the residual is over the first
            out_channels.
        width: channels at full resolution (2× at half resolution).
        blocks: residual blocks per level.
        upscale: output pixels per input pixel (1: same-size restoration).
    """

    model_type = "restorelab_fast_restorer"

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 32, blocks: int = 2, upscale: int = 1,
                 **kwargs):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.width, self.blocks, self.upscale = int(width), int(blocks), int(upscale)
        if min(self.in_channels, self.out_channels, self.width, self.upscale) < 1 or self.blocks < 0:
            raise ConfigError("FastRestorer needs positive channels, width and upscale, and blocks >= 0")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "FastRestorer_config":
        return cls(width=4, blocks=1)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class FastRestorer_arch(RestorationModel):
    config_class = FastRestorer_config

    def __init__(self, config: FastRestorer_config):
        super().__init__(config)
        c, w = config, config.width
        self.stem = nn.Conv2d(c.in_channels, w, 3, 1, 1)
        self.enc = nn.Sequential(*[ResBlock(w) for _ in range(c.blocks)])
        self.down = nn.Conv2d(w, 2 * w, 3, 2, 1)  # ⌈H/2⌉: up-sampled back to ≥ H, then cropped
        self.mid = nn.Sequential(*[ResBlock(2 * w) for _ in range(c.blocks)])
        self.up = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.PixelShuffle(2))
        self.dec = nn.Sequential(*[ResBlock(w) for _ in range(c.blocks)])
        self.head = nn.Sequential(nn.Conv2d(w, c.out_channels * c.upscale ** 2, 3, 1, 1), nn.PixelShuffle(c.upscale))
        nn.init.zeros_(self.head[0].weight)  # starts as the identity (global residual)
        nn.init.zeros_(self.head[0].bias)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # the stride-2 level makes the output depend on the position modulo 2 (not shift-equivariant):
        # no declared radius, tiling only hides seams
        return ArchIO(kind="image", scale=self.config.upscale, inputs={"lq": "image"})

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        f0 = self.enc(F.leaky_relu(self.stem(lq), 0.2))
        f1 = self.mid(F.leaky_relu(self.down(f0), 0.2))
        # crop by the traced size, so an ONNX export keeps height and width dynamic
        f = self.dec(f0 + self.up(f1)[:, :, : f0.shape[-2], : f0.shape[-1]])
        out = self.head(f)
        c = self.config
        if c.upscale == 1 and c.in_channels >= c.out_channels:
            # channels beyond out_channels are conditioning maps (e.g. a one-hot task): residual over the image
            out = out + lq[:, : c.out_channels]
        return out
