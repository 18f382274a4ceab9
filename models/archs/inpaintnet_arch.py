"""InpaintNet: a small CPU-trainable inpainting network.

1. **Push-pull pre-fill** (Gortler et al., "The Lumigraph", SIGGRAPH 1996, sec. 3.3.1 — the
   pyramid form of normalised convolution): the known pixels are averaged down a 2× pyramid
   (values and weights alike), then every hole is filled from the coarsest level that sees a
   known pixel, blended upwards level by level. Smooth, parameter-free, any size; known pixels
   are untouched.
2. **Residual U-Net** (residual blocks scaled by 0.2) on [pre-fill, mask − 0.5]: ``depth`` stride-2 levels of ``width·2^l``
   channels (capped at ``max_width``), ``dilated_blocks`` residual blocks with dilations 2, 4, 8…
   at the bottom for a wide receptive field, skip connections by addition; the last conv is
   zero-initialised, so the untrained network returns the pre-fill.
3. Output ``where(mask > 0.5, lq, prefill + residual)``: known pixels are the input's bit for bit.

Inputs: ``lq`` (B×C×H×W, holes may hold anything), ``mask`` (B×1×H×W, 1 = known). H and W are
padded (replicate) to a multiple of 2^depth and cropped back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


def push_pull_fill(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fill the holes of ``x`` (mask 0) from the known pixels (mask 1) by push-pull."""
    m = (mask > 0.5).to(x.dtype)
    sums, weights = [x * m], [m]
    while min(sums[-1].shape[-2:]) > 1:
        sums.append(F.avg_pool2d(sums[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    fill = sums[-1] / weights[-1].clamp_min(eps)
    for s, w in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        up = F.interpolate(fill, size=s.shape[-2:], mode="bilinear", align_corners=False)
        a = (w * 4).clamp(0, 1)  # a level that sees a quarter of its pixels known trusts itself
        fill = a * (s / w.clamp_min(eps)) + (1 - a) * up
    return torch.where(m > 0.5, x, fill)


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return x + 0.2 * self.conv2(self.act(self.conv1(x)))  # residual scaling (EDSR) for stable training


class InpaintNet_config(RestorationConfig):
    """InpaintNet hyper-parameters.

    Args:
        in_channels: image channels.
        width: channels at full resolution (level l has width·2^l, capped by max_width).
        depth: stride-2 levels.
        max_width: channel cap.
        dilated_blocks: residual blocks at the bottom (dilations 2, 4, 8, ... cycling to 8).
        prefill: ``pushpull`` (default) or ``zeros`` (the network sees the holes as zeros).
    """

    model_type = "restorelab_inpaint_net"

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 3, max_width: int = 128,
                 dilated_blocks: int = 3, prefill: str = "pushpull", **kwargs):
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        self.max_width, self.dilated_blocks, self.prefill = int(max_width), int(dilated_blocks), prefill
        if prefill not in ("pushpull", "zeros"):
            raise ConfigError(f"InpaintNet: prefill must be pushpull or zeros, got {prefill!r}")
        if self.depth < 0 or self.width < 1:
            raise ConfigError("InpaintNet: depth >= 0 and width >= 1")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls):
        return cls(width=8, depth=2, max_width=16, dilated_blocks=1)


class InpaintBackbone(nn.Module):
    """The U-Net body: ``encode`` → per-level features, ``decode`` → residual image."""

    def __init__(self, c: InpaintNet_config):
        super().__init__()
        widths = [min(c.width * 2 ** level, c.max_width) for level in range(c.depth + 1)]
        self.widths = widths
        self.head = nn.Conv2d(c.in_channels + 1, widths[0], 3, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1) for i in range(c.depth)])
        self.enc = nn.ModuleList([ResBlock(w) for w in widths])
        self.mid = nn.ModuleList([ResBlock(widths[-1], 2 ** (1 + i % 3)) for i in range(c.dilated_blocks)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 4, stride=2, padding=1)
                                 for i in range(c.depth)])
        self.dec = nn.ModuleList([ResBlock(w) for w in widths[:-1]])
        self.tail = nn.Conv2d(widths[0], c.in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.act = nn.LeakyReLU(0.2)

    def encode(self, x):
        feats = [self.enc[0](self.act(self.head(x)))]
        for i, down in enumerate(self.down):
            feats.append(self.enc[i + 1](self.act(down(feats[-1]))))
        return feats

    def bottom(self, x):
        for blk in self.mid:
            x = blk(x)
        return x

    def decode_level(self, x, skip, i):
        return self.dec[i](self.act(self.up[i](x)) + skip)

    def residual(self, x):
        return self.tail(self.act(x))


class InpaintNet_arch(RestorationModel):
    config_class = InpaintNet_config
    main_input_name = "lq"

    def __init__(self, config: InpaintNet_config):
        super().__init__(config)
        self.body = InpaintBackbone(config)
        self.post_init()

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("lq", "mask")

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="image", inputs={"lq": "image", "mask": "mask"})

    def prepare(self, lq, mask):
        """(padded network input, pre-fill, padded mask, original size)."""
        h, w = lq.shape[-2:]
        k = 2 ** self.config.depth
        m = (mask > 0.5).to(lq.dtype)
        fill = push_pull_fill(lq, m) if self.config.prefill == "pushpull" else lq * m
        x = torch.cat([fill, m - 0.5], dim=1)
        ph, pw = (-h) % k, (-w) % k
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x.contiguous(), fill, (h, w)

    def finish(self, lq, mask, fill, res, size):
        h, w = size
        return torch.where(mask > 0.5, lq, fill + res[..., :h, :w])

    def forward(self, lq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, fill, size = self.prepare(lq, mask)
        b = self.body
        feats = b.encode(x)
        y = b.bottom(feats[-1])
        for i in reversed(range(len(b.down))):
            y = b.decode_level(y, feats[i], i)
        return self.finish(lq, mask, fill, b.residual(y), size)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        gt = torch.rand(batch_size, self.config.in_channels, size, size, generator=generator)
        mask = (torch.rand(batch_size, 1, size, size, generator=generator) > 0.3).float()
        return {"lq": gt * mask, "mask": mask}
