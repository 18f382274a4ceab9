"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image
Denoising", IEEE TIP 2017): a plain stack of 3×3 convolutions that predicts the residual
``lq - restored``. A small, fast, single-scale baseline; written from the paper (no official
weights are loaded).
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class DnCNN_config(RestorationConfig):
    """DnCNN hyper-parameters.

    Args:
        in_channels, out_channels: image channels (equal when ``residual``).
        width: feature channels of the hidden layers.
        depth: convolution layers in total (17 in the paper; receptive field ``2 * depth + 1``).
        batch_norm: BatchNorm after the hidden convolutions, as in the paper.
        residual: predict the residual (``out = lq - net(lq)``), as in the paper.
    """

    model_type = "restorelab_dncnn"

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 64, depth: int = 17,
                 batch_norm: bool = True, residual: bool = True, **kwargs):
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.depth = int(depth)
        self.batch_norm = bool(batch_norm)
        self.residual = bool(residual)
        if self.depth < 2 or min(self.in_channels, self.out_channels, self.width) < 1:
            raise ConfigError("DnCNN needs depth >= 2 and positive channel counts")
        if self.residual and self.in_channels != self.out_channels:
            raise ConfigError(f"DnCNN residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "DnCNN_config":
        return cls(width=8, depth=4)


class DnCNN_arch(RestorationModel):
    config_class = DnCNN_config

    def __init__(self, config: DnCNN_config):
        super().__init__(config)
        c = config
        layers = [nn.Conv2d(c.in_channels, c.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(c.depth - 2):
            layers.append(nn.Conv2d(c.width, c.width, 3, padding=1, bias=not c.batch_norm))
            if c.batch_norm:
                layers.append(nn.BatchNorm2d(c.width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(c.width, c.out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # ``depth`` 3×3 convolutions (BatchNorm is per pixel in eval mode): radius = depth.
        return ArchIO(kind="image", scale=1, inputs={"lq": "image"}, receptive_radius=self.config.depth)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = self.body(lq)
        return lq - x if self.config.residual else x
