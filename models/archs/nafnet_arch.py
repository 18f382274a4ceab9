"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) with TLC
(Chu et al., "Improving Image Restoration by Revisiting Global Information Aggregation", ECCV 2022).

A port of github.com/megvii-research/NAFNet (MIT; ``NAFNet_arch.py``, ``local_arch.py``):
same constructor keywords (``img_channel``, ``width``, ``middle_blk_num``, ``enc_blk_nums``,
``dec_blk_nums``; ``NAFNetLocal``'s ``train_size``), same parameter names, so official
``.pth`` files load strictly (``NAFNet_arch.from_official_checkpoint``). Differences from the
official code are numerical-only: ``LayerNorm2d`` is one fused ``F.layer_norm`` call instead of a
custom ``autograd.Function``, the 1×1 convolutions of a block run as matrix products on
channels-last tensors (``PointwiseConv2d``, with the channel attention folded into ``conv3``'s
weights), the scaled residuals are one ``addcmul`` each, and
the TLC window sums use one cumulative-sum table per call. Train with ``train.channels_last: true``
on CPU: the quickstart's training step is then ~1.3× faster than it was in NCHW before these
changes (BENCHMARKS.md, "CPU training step").

Official configurations by name: ``NAFNet_config.official("GoPro-width64")`` or, in YAML,
``network: {type: NAFNet, preset: GoPro-width64}`` (explicit keys override the preset).
The GoPro presets are ``NAFNetLocal`` upstream, i.e. ``tlc=True`` with ``train_size`` 256.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import LayerNorm2d, OfficialCheckpointMixin, PointwiseConv2d, SimpleGate, pad_to_multiple
from utils.errors import ConfigError
from utils.registry import unknown_name_message

# Options files of the official repository (options/train/{GoPro,SIDD}/NAFNet-width{32,64}.yml).
_GOPRO = dict(middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1], tlc=True, train_size=[1, 3, 256, 256])
_SIDD = dict(middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2], tlc=False)
NAFNET_PRESETS: dict[str, dict] = {
    "GoPro-width32": dict(width=32, **_GOPRO),
    "GoPro-width64": dict(width=64, **_GOPRO),
    "SIDD-width32": dict(width=32, **_SIDD),
    "SIDD-width64": dict(width=64, **_SIDD),
}
# Used when neither the options nor a preset set a field: the GoPro-width32 layout, global pooling.
_DEFAULTS = dict(width=32, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1], tlc=False)


class NAFNet_config(RestorationConfig):
    """NAFNet hyper-parameters.

    Args:
        img_channel: input and output channels.
        width: channels at full resolution (doubled at each encoder level).
        middle_blk_num, enc_blk_nums, dec_blk_nums: NAFBlocks in the bottleneck / per encoder
            level / per decoder level (``len(enc_blk_nums) == len(dec_blk_nums)`` levels).
        dw_expand, ffn_expand: channel expansion of the depth-wise and feed-forward branches.
        drop_out_rate: dropout after both branches of every block (0 = none).
        tlc: replace the global average pooling of the channel attention with TLC's local
            average pooling (``NAFNetLocal`` upstream). Applies in training and evaluation.
        train_size: TLC training size, ``[N, C, H, W]`` (official form) or ``[H, W]``.
        base_size: TLC window at full resolution, ``[H, W]``; default ``1.5 × train_size``.
            At a level where the features are ``h × w`` the window is
            ``h_train * base_size // train_size`` (``h_train`` = that level's size for a
            ``train_size`` input), as in the official ``local_arch.py``.
        fast_imp: the official non-equivalent strided approximation; only ``False`` is supported.
        preset: an official configuration (``NAFNET_PRESETS``); other explicit keys override it.
    """

    model_type = "restorelab_nafnet"

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
        **kwargs,
    ):
        if preset is not None and preset not in NAFNET_PRESETS:
            raise ConfigError(unknown_name_message("NAFNet preset", preset, list(NAFNET_PRESETS)))
        base = {**_DEFAULTS, "train_size": [1, 3, 256, 256], **(NAFNET_PRESETS[preset] if preset else {})}
        given = dict(width=width, middle_blk_num=middle_blk_num, enc_blk_nums=enc_blk_nums,
                     dec_blk_nums=dec_blk_nums, tlc=tlc, train_size=train_size)
        resolved = {k: (v if v is not None else base[k]) for k, v in given.items()}
        self.img_channel = int(img_channel)
        self.width = int(resolved["width"])
        self.middle_blk_num = int(resolved["middle_blk_num"])
        self.enc_blk_nums = [int(n) for n in resolved["enc_blk_nums"]]
        self.dec_blk_nums = [int(n) for n in resolved["dec_blk_nums"]]
        self.dw_expand = int(dw_expand)
        self.ffn_expand = int(ffn_expand)
        self.drop_out_rate = float(drop_out_rate)
        self.tlc = bool(resolved["tlc"])
        self.train_size = [int(n) for n in resolved["train_size"]]
        self.base_size = None if base_size is None else [int(n) for n in base_size]
        self.fast_imp = bool(fast_imp)
        self.preset = preset
        self._validate()
        super().__init__(**kwargs)

    def _validate(self) -> None:
        if len(self.enc_blk_nums) != len(self.dec_blk_nums):
            raise ConfigError(f"NAFNet needs as many decoder as encoder levels, got enc_blk_nums={self.enc_blk_nums} "
                              f"and dec_blk_nums={self.dec_blk_nums}")
        if self.width < 1 or self.img_channel < 1 or min(self.enc_blk_nums + self.dec_blk_nums + [self.middle_blk_num], default=0) < 0:
            raise ConfigError("NAFNet width/img_channel must be positive and block counts non-negative")
        if len(self.train_size) not in (2, 4) or min(self.train_size) < 1:
            raise ConfigError(f"NAFNet train_size must be [N, C, H, W] or [H, W], got {self.train_size}")
        if self.base_size is not None and (len(self.base_size) != 2 or min(self.base_size) < 1):
            raise ConfigError(f"NAFNet base_size must be [H, W], got {self.base_size}")
        if self.fast_imp:
            raise ConfigError("NAFNet fast_imp=True (the official non-equivalent TLC approximation) is not supported; "
                              "the exact local pooling is used with fast_imp=False")

    @property
    def in_channels(self) -> int:
        return self.img_channel

    @property
    def out_channels(self) -> int:
        return self.img_channel

    @classmethod
    def official(cls, name: str, **overrides) -> "NAFNet_config":
        """An official configuration by name, e.g. ``official("GoPro-width64")``."""
        return cls(preset=name, **overrides)

    @classmethod
    def tiny(cls) -> "NAFNet_config":
        return cls(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])

    def tlc_kernel_sizes(self) -> list[tuple[int, int]]:
        """TLC pooling window ``(kh, kw)`` for each level (0 = full resolution, last = middle)."""
        th, tw = self.train_size[-2:]
        bh, bw = self.base_size or (int(th * 1.5), int(tw * 1.5))
        padder = 2 ** len(self.enc_blk_nums)
        ph, pw = math.ceil(th / padder) * padder, math.ceil(tw / padder) * padder  # forward pads first
        return [((ph >> lvl) * bh // th, (pw >> lvl) * bw // tw) for lvl in range(len(self.enc_blk_nums) + 1)]


class LocalAvgPool2d(nn.Module):
    """TLC's local average pooling (``local_arch.AvgPool2d`` with ``fast_imp=False``).

    The mean over a ``kernel_size`` window, computed for every window that fits inside the map
    from a summed-area table, then replicate-padded back to the input size (official semantics;
    the table is built on mean-centred values for float32 accuracy). When the window
    covers the whole map it is the global average pooling the network was trained with.
    """

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        h, w = x.shape[-2:]
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        k1, k2 = min(h, kh), min(w, kw)
        # Summed-area table of the map minus its mean, in float32 even under autocast: the same
        # window means, but the entries (and so the cancellation in their differences) stay small.
        xf = x.float()
        mean = xf.mean(dim=(-2, -1), keepdim=True)
        s = F.pad((xf - mean).cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))
        out = s[..., k1:, k2:] + s[..., :-k1, :-k2] - s[..., :-k1, k2:] - s[..., k1:, :-k2]
        out = out / (k1 * k2) + mean
        oh, ow = out.shape[-2:]
        out = F.pad(out, ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2), mode="replicate")
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class NAFBlock(nn.Module):
    """NAFNet block: LayerNorm → 1×1 → depth-wise 3×3 → SimpleGate → channel attention → 1×1,
    then LayerNorm → 1×1 → SimpleGate → 1×1; both residuals scaled by learned ``beta``/``gamma``
    (zero at initialisation, so every block starts as the identity).

    The 1×1 convolutions are ``PointwiseConv2d`` (matrix products on channels-last tensors), the
    channel attention's product goes into ``conv3``'s per-sample weights (``forward_scaled``) and
    ``y = inp + x * beta`` is one ``addcmul``: the official arithmetic up to float round-off,
    measured faster on CPU (``scripts/bench_models.py --variants``)."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0,
                 pool: nn.Module | None = None):
        super().__init__()
        dw_channel = c * dw_expand
        self.conv1 = PointwiseConv2d(c, dw_channel)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, 3, padding=1, groups=dw_channel)
        self.conv3 = PointwiseConv2d(dw_channel // 2, c)
        # Simplified channel attention: pooled statistics → 1×1 conv → channel weights.
        self.sca = nn.Sequential(pool if pool is not None else nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(dw_channel // 2, dw_channel // 2, 1))
        self.sg = SimpleGate()
        ffn_channel = ffn_expand * c
        self.conv4 = PointwiseConv2d(c, ffn_channel)
        self.conv5 = PointwiseConv2d(ffn_channel // 2, c)
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3.forward_scaled(x, self.sca(x)))
        y = torch.addcmul(inp, x, self.beta)
        x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return torch.addcmul(y, x, self.gamma)


class NAFNet_arch(OfficialCheckpointMixin, RestorationModel):
    """NAFNet U-Net of NAFBlocks; input padded with zeros (right/bottom) to a multiple of
    ``2 ** levels`` as upstream, output cropped back, global residual ``out = net(x) + x``."""

    config_class = NAFNet_config

    def __init__(self, config: NAFNet_config):
        super().__init__(config)
        c = config
        pools = c.tlc_kernel_sizes() if c.tlc else None

        def blocks(chan: int, num: int, level: int) -> nn.Sequential:
            return nn.Sequential(*[
                NAFBlock(chan, c.dw_expand, c.ffn_expand, c.drop_out_rate,
                         pool=LocalAvgPool2d(pools[level]) if pools else None)
                for _ in range(num)
            ])

        self.intro = nn.Conv2d(c.img_channel, c.width, 3, padding=1)
        self.ending = nn.Conv2d(c.width, c.img_channel, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        chan = c.width
        for level, num in enumerate(c.enc_blk_nums):
            self.encoders.append(blocks(chan, num, level))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))
            chan *= 2
        levels = len(c.enc_blk_nums)
        self.middle_blks = blocks(chan, c.middle_blk_num, levels)
        for i, num in enumerate(c.dec_blk_nums):
            self.ups.append(nn.Sequential(PointwiseConv2d(chan, chan * 2, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(blocks(chan, num, levels - 1 - i))
        self.padder_size = 2 ** levels
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # Channel attention pools globally (TLC: over train_size windows) and the input is padded
        # to a multiple of 2**levels: no bounded, shift-equivariant receptive field.
        return ArchIO(kind="image", scale=1, inputs={"lq": "image"}, receptive_radius=None)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        inp = pad_to_multiple(lq, self.padder_size, mode="constant")
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        x = self.ending(x) + inp
        return x[:, :, :h, :w]


class NAFNetLocal_config(NAFNet_config):
    """``NAFNetLocal`` upstream: NAFNet with TLC on by default (``train_size`` [1, 3, 256, 256])."""

    model_type = "restorelab_nafnet_local"

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
        tlc: bool | None = True,
        train_size: Sequence[int] | None = None,
        base_size: Sequence[int] | None = None,
        fast_imp: bool = False,
        preset: str | None = None,
        **kwargs,
    ):
        super().__init__(img_channel=img_channel, width=width, middle_blk_num=middle_blk_num,
                         enc_blk_nums=enc_blk_nums, dec_blk_nums=dec_blk_nums, dw_expand=dw_expand,
                         ffn_expand=ffn_expand, drop_out_rate=drop_out_rate, tlc=tlc, train_size=train_size,
                         base_size=base_size, fast_imp=fast_imp, preset=preset, **kwargs)

    @classmethod
    def tiny(cls) -> "NAFNetLocal_config":
        # A 16 px training size makes TLC pool locally on the 32/37 px test images.
        return cls(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], train_size=[1, 3, 16, 16])


class NAFNetLocal_arch(NAFNet_arch):
    """``type: NAFNetLocal`` (official options files): NAFNet with TLC."""

    config_class = NAFNetLocal_config
