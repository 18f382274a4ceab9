"""MAT: Mask-Aware Transformer for large-hole inpainting (Li et al., CVPR 2022), the official
``networks/mat.py`` Generator re-implemented in pure torch (no CUDA extensions).

Layout and parameter names follow the official Generator exactly (``synthesis.first_stage.*``,
``synthesis.enc.*``, ``synthesis.to_square``, ``synthesis.to_style.*``, ``synthesis.dec.*``,
``mapping.fc0..7``; 442 state-dict entries at 256), so official weights load strictly with
``load_official_state_dict``; ``from_official_checkpoint(path)`` reads a released ``.pkl``
(``utils/official_pickle``-style restricted unpickler in this module: tensors, numpy arrays and
plain containers only; the source code such pickles embed is kept as text and never run).

Replacements of the StyleGAN2-ADA custom ops (``bias_act``, ``upfirdn2d``, ``conv2d_resample``):
the reference paths of those ops, re-written here; equal to them up to float rounding.

Differences from the official forward, all opt-in or outside the official path:

* **Determinism.** The official code calls ``F.dropout(ones·0.5, training=True)`` twice per
  forward (first stage at 16², synthesis at 16²), so it is random even in eval mode. Here the two
  0/1 maps (and ``z`` and the ``random`` noise) come from a ``torch.Generator`` seeded with
  ``eval_seed`` in eval mode, so two forwards agree; in training mode from the global RNG, as
  upstream. ``generator_forward(..., dropout_maps=(first, synthesis))`` injects recorded maps.
* **Sizes.** The windows need H and W multiples of ``img_resolution``; other sizes are padded
  (replicate, image and mask alike) and cropped back. ``noise_mode='const'`` at a padded size
  tiles the per-resolution constant noise.
* **Range and known pixels.** ``forward(lq, mask)`` takes images in [0, 1] (mapped to [-1, 1]
  inside), masks 1 = known, and returns ``where(mask > 0.5, lq, pred)``: known pixels are the
  input's bit for bit.

Extra (non-official) keywords shrink the network for tests: ``first_stage_dim`` (180),
``num_heads`` (6), ``channel_divisor`` (1: the official channel table), ``mapping_layers`` (8).
"""
from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import load_strict
from utils.errors import ConfigError, DataError

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


# ---------------------------------------------------------------------------------------------
# Pure-torch versions of the StyleGAN2-ADA ops (reference semantics)


def bias_act(x, b=None, act="linear", dim=1, gain=None, clamp=None):
    """x + b (broadcast along ``dim``), activation (linear, or leaky ReLU 0.2), × gain
    (default √2 for lrelu, 1 for linear), optional clamp."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = SQRT2 if gain is None else gain
    elif act != "linear":
        raise ConfigError(f"MAT: unsupported activation {act}")
    gain = 1.0 if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """2-D separable low-pass filter outer(taps, taps), normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Zero-insertion upsampling, pad (negative = crop) [x0, x1, y0, y1], FIR filter (true
    convolution, filter × gain), then keep every ``down``-th pixel."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def upsample2d(x, f, up=2, gain=1.0):
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=gain * up * up)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1):
    """Convolution with FIR up/downsampling, as StyleGAN2-ADA's ``conv2d_resample`` (cross-
    correlation with ``w``; transposed convolution with the flipped kernel when upsampling)."""
    kh, kw = w.shape[-2:]
    fw = f.shape[-1] if f is not None else 1
    px0 = px1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, pad=(px0, px1, px0, px1))
        return F.conv2d(x, w, groups=groups)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, pad=(px0, px1, px0, px1), gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, pad=(px0, px1, px0, px1))
        return F.conv2d(x, w, stride=down, groups=groups)
    if up > 1:
        out_c, in_c = w.shape[:2]
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_c // groups, in_c, kh, kw).transpose(1, 2).reshape(groups * in_c, out_c // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        pt = max(min(-px0, -px1), 0)
        x = F.conv_transpose2d(x, w.flip([2, 3]), stride=up, padding=[pt, pt], groups=groups)
        x = upfirdn2d(x, f, pad=(px0 + pt, px1 + pt, px0 + pt, px1 + pt), gain=up * up)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and px0 >= 0:
        return F.conv2d(x, w, padding=px0, groups=groups)
    x = upfirdn2d(x, None, pad=(px0, px1, px0, px1))
    return F.conv2d(x, w, groups=groups)


def normalize_2nd_moment(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def feature2token(x):
    b, c = x.shape[:2]
    return x.reshape(b, c, -1).transpose(1, 2)


def token2feature(x, size):
    b, _, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, size[0], size[1])


def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_reverse(windows, ws, h, w):
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.reshape(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


# ---------------------------------------------------------------------------------------------
# Layers (official names and parameter layout)


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        y = x.matmul((self.weight * self.weight_gain).t())
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        return bias_act(y, b, self.activation, dim=y.ndim - 1)


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1):
        super().__init__()
        self.activation, self.up, self.down = activation, up, down
        self.register_buffer("resample_filter", fir_filter())
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = SQRT2 if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x, gain=1.0):
        x = conv2d_resample(x, self.weight * self.weight_gain, self.resample_filter, self.up, self.down, self.padding)
        return bias_act(x, self.bias, self.activation, gain=self.act_gain * gain)


class Conv2dLayerPartial(nn.Module):
    """MAT's partial convolution: out = Conv2dLayer(x) · k²/(valid count) where any input pixel
    is valid, 0 elsewhere (x is not masked first); new mask = any valid pixel in the window."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, bias, activation, up, down)
        self.kernel_size, self.stride = kernel_size, down
        self.padding = kernel_size // 2 if kernel_size % 2 == 1 else 0

    def forward(self, x, mask=None):
        if mask is None:
            return self.conv(x), None
        with torch.no_grad():
            ones = torch.ones(1, 1, self.kernel_size, self.kernel_size, dtype=x.dtype, device=x.device)
            update = F.conv2d(mask, ones, stride=self.stride, padding=self.padding)
            ratio = self.kernel_size ** 2 / (update + 1e-8)
            update = update.clamp(0, 1)
            ratio = ratio * update
        return self.conv(x) * ratio, update


class ModulatedConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, style_dim, demodulate=True, up=1, down=1):
        super().__init__()
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.out_channels, self.kernel_size = out_channels, kernel_size
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding, self.up, self.down = kernel_size // 2, up, down
        self.register_buffer("resample_filter", fir_filter())
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1)

    def forward(self, x, style):
        b, c, h, w = x.shape
        style = self.affine(style).reshape(b, 1, c, 1, 1)
        weight = self.weight * self.weight_gain * style
        if self.demodulate:
            weight = weight * (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(b, self.out_channels, 1, 1, 1)
        weight = weight.reshape(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        x = conv2d_resample(x.reshape(1, b * c, h, w), weight, self.resample_filter, self.up, self.down,
                            self.padding, groups=b)
        return x.reshape(b, self.out_channels, *x.shape[2:])


class StyleConv(nn.Module):
    def __init__(self, in_channels, out_channels, style_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", demodulate=True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate, up=up)
        self.use_noise = use_noise
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.activation = activation

    def forward(self, x, style, noise_mode="random", generator=None):
        x = self.conv(x, style)
        if self.use_noise and noise_mode != "none":
            h, w = x.shape[-2:]
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, h, w, generator=generator, dtype=x.dtype).to(x.device)
            else:
                const = self.noise_const
                r = const.shape[0]
                if (h, w) != (r, r):  # padded sizes: tile the constant noise
                    const = const.repeat(-(-h // r), -(-w // r))[:h, :w]
                noise = const
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, self.activation)


class ToRGB(nn.Module):
    def __init__(self, in_channels, out_channels, style_dim, kernel_size=1, demodulate=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, x, style, skip=None):
        out = bias_act(self.conv(x, style), self.bias)
        if skip is not None:
            if skip.shape != out.shape:
                skip = upsample2d(skip, self.resample_filter)
            out = out + skip
        return out


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = FullyConnectedLayer(in_features, hidden_features, activation="lrelu")
        self.fc2 = FullyConnectedLayer(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class WindowAttention(nn.Module):
    """Mask-aware window attention: q, k from L2-normalised tokens, v from raw ones; hole keys get
    −100 on their logits; a window with any valid token becomes all valid."""

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = FullyConnectedLayer(dim, dim)
        self.k = FullyConnectedLayer(dim, dim)
        self.v = FullyConnectedLayer(dim, dim)
        self.proj = FullyConnectedLayer(dim, dim)

    def forward(self, x, mask_windows=None, mask=None):
        b_, n, c = x.shape
        h = self.num_heads
        xn = F.normalize(x, p=2.0, dim=-1)
        q = self.q(xn).reshape(b_, n, h, c // h).permute(0, 2, 1, 3)
        k = self.k(xn).reshape(b_, n, h, c // h).permute(0, 2, 3, 1)
        v = self.v(x).reshape(b_, n, h, c // h).permute(0, 2, 1, 3)
        attn = (q @ k) * self.scale
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.reshape(b_ // nw, nw, h, n, n) + mask.unsqueeze(1).unsqueeze(0)).reshape(-1, h, n, n)
        if mask_windows is not None:
            keys = mask_windows.squeeze(-1).unsqueeze(1).unsqueeze(1)
            attn = attn + keys.masked_fill(keys == 0, -100.0).masked_fill(keys == 1, 0.0)
            with torch.no_grad():
                mask_windows = mask_windows.sum(dim=1, keepdim=True).clamp(0, 1).repeat(1, n, 1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x), mask_windows


def shifted_window_mask(h, w, ws, shift) -> torch.Tensor:
    """The Swin region mask (0 / −100) of the cyclically shifted windows."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class SwinTransformerBlock(nn.Module):
    """No LayerNorm, no inner residual: x = Mlp(fuse(cat[shortcut, attention]))."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=2.0):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        self.attn = WindowAttention(dim, self.window_size, num_heads)
        self.fuse = FullyConnectedLayer(dim * 2, dim, activation="lrelu")
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        attn_mask = shifted_window_mask(*self.input_resolution, self.window_size, self.shift_size) \
            if self.shift_size > 0 else None
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x, x_size, mask=None):
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = x.reshape(b, h, w, c)
        if mask is not None:
            mask = mask.reshape(b, h, w, 1)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(-s, -s), dims=(1, 2))
        xw = window_partition(x, ws).reshape(-1, ws * ws, c)
        mw = window_partition(mask, ws).reshape(-1, ws * ws, 1) if mask is not None else None
        region = None
        if s > 0:
            region = self.attn_mask if tuple(x_size) == self.input_resolution else \
                shifted_window_mask(h, w, ws, s).to(x.device, x.dtype)
        aw, mw = self.attn(xw, mw, mask=region)
        x = window_reverse(aw.reshape(-1, ws, ws, c), ws, h, w)
        if mask is not None:
            mask = window_reverse(mw.reshape(-1, ws, ws, 1), ws, h, w)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(s, s), dims=(1, 2))
        x = x.reshape(b, h * w, c)
        if mask is not None:
            mask = mask.reshape(b, h * w, 1)
        return self.mlp(self.fuse(torch.cat([shortcut, x], dim=-1))), mask


class PatchMerging(nn.Module):
    def __init__(self, in_channels, out_channels, down=2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels, out_channels, 3, activation="lrelu", down=down)
        self.down = down

    def forward(self, x, x_size, mask=None):
        x = token2feature(x, x_size)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(x, mask)
        x_size = (x_size[0] // self.down, x_size[1] // self.down)
        return feature2token(x), x_size, (feature2token(mask) if mask is not None else None)


class PatchUpsampling(nn.Module):
    def __init__(self, in_channels, out_channels, up=2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels, out_channels, 3, activation="lrelu", up=up)
        self.up = up

    def forward(self, x, x_size, mask=None):
        x = token2feature(x, x_size)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(x, mask)
        x_size = (x_size[0] * self.up, x_size[1] * self.up)
        return feature2token(x), x_size, (feature2token(mask) if mask is not None else None)


class BasicLayer(nn.Module):
    """One transformer stage: optional merge/upsample, blocks (shift 0, w/2 alternating),
    partial conv, identity residual."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=2.0, downsample=None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio) for i in range(depth)])
        self.conv = Conv2dLayerPartial(dim, dim, 3, activation="lrelu")

    def forward(self, x, x_size, mask=None):
        if self.downsample is not None:
            x, x_size, mask = self.downsample(x, x_size, mask)
        identity = x
        for blk in self.blocks:
            x, mask = blk(x, x_size, mask)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(token2feature(x, x_size), mask)
        x = feature2token(x) + identity
        return x, x_size, (feature2token(mask) if mask is not None else None)


def style_code(a, b):
    return torch.cat([a, b], dim=1)


class DecStyleBlock(nn.Module):
    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, 3, up=2, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, 2 ** res, 3, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim, 1, demodulate=False)

    def forward(self, x, img, style, skip, noise_mode="random", generator=None):
        x = self.conv0(x, style, noise_mode, generator)
        x = x + skip
        x = self.conv1(x, style, noise_mode, generator)
        return x, self.toRGB(x, style, skip=img)


class FirstStage(nn.Module):
    """Coarse stage: partial convs to 64² (at 256: one stride-2), five mask-aware transformer
    stages 64/32/16/32/64, style manipulation at 16², StyleGAN2-modulated decoder."""

    def __init__(self, img_channels, img_resolution=256, dim=180, w_dim=512, use_noise=False, demodulate=True,
                 activation="lrelu", num_heads=6):
        super().__init__()
        res = 64
        self.conv_first = Conv2dLayerPartial(img_channels + 1, dim, 3, activation=activation)
        self.enc_conv = nn.ModuleList()
        down_time = int(np.log2(img_resolution // res))
        for _ in range(down_time):
            self.enc_conv.append(Conv2dLayerPartial(dim, dim, 3, down=2, activation=activation))
        depths, ratios, windows = [2, 3, 4, 3, 2], [1, 1 / 2, 1 / 2, 2, 2], [8, 16, 16, 16, 8]
        self.tran = nn.ModuleList()
        for i, depth in enumerate(depths):
            res = int(res * ratios[i])
            if ratios[i] < 1:
                merge = PatchMerging(dim, dim, down=int(1 / ratios[i]))
            elif ratios[i] > 1:
                merge = PatchUpsampling(dim, dim, up=int(ratios[i]))
            else:
                merge = None
            self.tran.append(BasicLayer(dim, [res, res], depth, num_heads, windows[i], downsample=merge))
        down_conv: list[nn.Module] = [Conv2dLayer(dim, dim, 3, down=2, activation=activation) for _ in range(4)]
        down_conv.append(nn.AdaptiveAvgPool2d((1, 1)))
        self.down_conv = nn.Sequential(*down_conv)
        self.to_style = FullyConnectedLayer(dim, dim * 2, activation=activation)
        self.ws_style = FullyConnectedLayer(w_dim, dim, activation=activation)
        self.to_square = FullyConnectedLayer(dim, 16 * 16, activation=activation)
        self.dec_conv = nn.ModuleList()
        for _ in range(down_time):
            res = res * 2
            self.dec_conv.append(DecStyleBlock(res, dim, dim, activation, dim * 3, use_noise, demodulate, img_channels))

    def forward(self, images_in, masks_in, ws, noise_mode="random", dropout_map=None, generator=None):
        x = torch.cat([masks_in - 0.5, images_in * masks_in], dim=1)
        skips = []
        x, mask = self.conv_first(x, masks_in)
        skips.append(x)
        for i, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if i != len(self.enc_conv) - 1:
                skips.append(x)
        x_size = tuple(x.shape[-2:])
        x, mask = feature2token(x), feature2token(mask)
        mid = len(self.tran) // 2
        for i, block in enumerate(self.tran):
            if i < mid:
                x, x_size, mask = block(x, x_size, mask)
                skips.append(x)
            elif i > mid:
                x, x_size, mask = block(x, x_size, None)
                x = x + skips[mid - i]
            else:
                x, x_size, mask = block(x, x_size, None)
                mul_map = dropout_map if dropout_map is not None else _half_dropout(x, generator)
                wss = self.ws_style(ws[:, -1])
                add_n = self.to_square(wss).unsqueeze(1)
                add_n = F.interpolate(add_n, size=x.shape[1], mode="linear", align_corners=False).squeeze(1).unsqueeze(-1)
                x = x * mul_map + add_n * (1 - mul_map)
                gs = self.to_style(self.down_conv(token2feature(x, x_size)).flatten(start_dim=1))
                style = torch.cat([gs, wss], dim=1)
        x = token2feature(x, x_size).contiguous()
        img = None
        for i, block in enumerate(self.dec_conv):
            x, img = block(x, img, style, skips[len(self.dec_conv) - i - 1], noise_mode, generator)
        return img * (1 - masks_in) + images_in * masks_in


def _half_dropout(like, generator=None):
    """The 0/1 map of ``F.dropout(ones·0.5, p=0.5, training=True)`` (each entry 1 with
    probability 1/2), from ``generator`` when given."""
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype).to(like.device) if generator is not None \
        else torch.rand_like(like)
    return (u >= 0.5).to(like.dtype)


class EncFromRGB(nn.Module):
    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 1, activation=activation)
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, activation=activation)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class ConvBlockDown(nn.Module):
    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 3, activation=activation, down=2)
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, activation=activation)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class Encoder(nn.Module):
    def __init__(self, res_log2, img_channels, activation, nf):
        super().__init__()
        self.resolution = []
        for i in range(res_log2, 3, -1):
            res = 2 ** i
            self.resolution.append(res)
            block = EncFromRGB(img_channels * 2 + 1, nf(i), activation) if i == res_log2 else \
                ConvBlockDown(nf(i + 1), nf(i), activation)
            setattr(self, f"EncConv_Block_{res}x{res}", block)

    def forward(self, x):
        out = {}
        for res in self.resolution:
            x = getattr(self, f"EncConv_Block_{res}x{res}")(x)
            out[int(np.log2(res))] = x
        return out


class ToStyle(nn.Module):
    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv = nn.Sequential(*[Conv2dLayer(in_channels, in_channels, 3, activation=activation, down=2)
                                    for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_channels, out_channels, activation=activation)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(start_dim=1))


class DecBlockFirstV2(nn.Module):
    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.res = res
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, activation=activation)
        self.conv1 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, 3, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim, 1, demodulate=False)

    def forward(self, x, ws, gs, feats, noise_mode="random", generator=None):
        x = self.conv0(x) + feats[self.res]
        x = self.conv1(x, style_code(ws[:, 0], gs), noise_mode, generator)
        return x, self.toRGB(x, style_code(ws[:, 1], gs), skip=None)


class DecBlock(nn.Module):
    def __init__(self, res, in_channels, out_channels, activation, style_dim, use_noise, demodulate, img_channels):
        super().__init__()
        self.res = res
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, 3, up=2, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, 2 ** res, 3, use_noise=use_noise,
                               activation=activation, demodulate=demodulate)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim, 1, demodulate=False)

    def forward(self, x, img, ws, gs, feats, noise_mode="random", generator=None):
        r = self.res
        x = self.conv0(x, style_code(ws[:, r * 2 - 9], gs), noise_mode, generator)
        x = x + feats[r]
        x = self.conv1(x, style_code(ws[:, r * 2 - 8], gs), noise_mode, generator)
        return x, self.toRGB(x, style_code(ws[:, r * 2 - 7], gs), skip=img)


class Decoder(nn.Module):
    def __init__(self, res_log2, activation, style_dim, use_noise, demodulate, img_channels, nf):
        super().__init__()
        self.Dec_16x16 = DecBlockFirstV2(4, nf(4), nf(4), activation, style_dim, use_noise, demodulate, img_channels)
        for res in range(5, res_log2 + 1):
            setattr(self, f"Dec_{2 ** res}x{2 ** res}",
                    DecBlock(res, nf(res - 1), nf(res), activation, style_dim, use_noise, demodulate, img_channels))
        self.res_log2 = res_log2

    def forward(self, x, ws, gs, feats, noise_mode="random", generator=None):
        x, img = self.Dec_16x16(x, ws, gs, feats, noise_mode, generator)
        for res in range(5, self.res_log2 + 1):
            x, img = getattr(self, f"Dec_{2 ** res}x{2 ** res}")(x, img, ws, gs, feats, noise_mode, generator)
        return img


class SynthesisNet(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels=3, activation="lrelu", use_noise=True, demodulate=True,
                 first_stage_dim=180, num_heads=6, channel_divisor=1):
        super().__init__()
        res_log2 = int(np.log2(img_resolution))
        table = {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}

        def nf(stage):
            return max(table[2 ** stage] // channel_divisor, 1)

        self.num_layers = res_log2 * 2 - 3 * 2
        self.first_stage = FirstStage(img_channels, img_resolution, first_stage_dim, w_dim, use_noise=False,
                                      demodulate=demodulate, num_heads=num_heads)
        self.enc = Encoder(res_log2, img_channels, activation, nf)
        self.to_square = FullyConnectedLayer(w_dim, 16 * 16, activation=activation)
        self.to_style = ToStyle(nf(4), nf(2) * 2, activation)
        self.dec = Decoder(res_log2, activation, w_dim + nf(2) * 2, use_noise, demodulate, img_channels, nf)

    def forward(self, images_in, masks_in, ws, noise_mode="random", return_stg1=False, dropout_maps=None,
                generator=None):
        first, second = dropout_maps if dropout_maps is not None else (None, None)
        out_stg1 = self.first_stage(images_in, masks_in, ws, noise_mode, first, generator)
        x = images_in * masks_in + out_stg1 * (1 - masks_in)
        feats = self.enc(torch.cat([masks_in - 0.5, x, images_in * masks_in], dim=1))
        fea_16 = feats[4]
        mul_map = second if second is not None else _half_dropout(fea_16, generator)
        add_n = self.to_square(ws[:, 0]).reshape(-1, 16, 16).unsqueeze(1)
        add_n = F.interpolate(add_n, size=fea_16.shape[-2:], mode="bilinear", align_corners=False)
        fea_16 = fea_16 * mul_map + add_n * (1 - mul_map)
        feats[4] = fea_16
        gs = self.to_style(fea_16)
        img = self.dec(fea_16, ws, gs, feats, noise_mode, generator)
        img = img * (1 - masks_in) + images_in * masks_in
        return (img, out_stg1) if return_stg1 else img


class MappingNet(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed = w_dim if c_dim > 0 else 0
        feats = [z_dim + embed] + [w_dim] * num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, skip_w_avg_update=False):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ---------------------------------------------------------------------------------------------


class MAT_config(RestorationConfig):
    """MAT Generator (official keywords ``z_dim, c_dim, w_dim, img_resolution, img_channels``).

    Args:
        z_dim, c_dim, w_dim: latent, label and W dimensions (official 512, 0, 512).
        img_resolution: the training resolution (256 or 512); inputs are padded to multiples of it.
        img_channels: image channels.
        noise_mode: StyleGAN noise in eval (``const``, ``random`` or ``none``); training uses ``random``.
        truncation_psi: truncation of W in eval (1 = none; official training uses 0.5 only for
            its progress images).
        eval_seed: seed of the generator that draws z, the two dropout maps and random noise in
            eval mode (deterministic outputs).
        first_stage_dim, num_heads, channel_divisor, mapping_layers: non-official size knobs
            (180, 6, 1, 8 = the official network).
    """

    model_type = "restorelab_mat"

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, noise_mode: str = "const", truncation_psi: float = 1.0, eval_seed: int = 0,
                 first_stage_dim: int = 180, num_heads: int = 6, channel_divisor: int = 1, mapping_layers: int = 8,
                 **kwargs):
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        self.noise_mode, self.truncation_psi, self.eval_seed = noise_mode, float(truncation_psi), int(eval_seed)
        self.first_stage_dim, self.num_heads = int(first_stage_dim), int(num_heads)
        self.channel_divisor, self.mapping_layers = int(channel_divisor), int(mapping_layers)
        r = self.img_resolution
        if r < 128 or r & (r - 1):
            raise ConfigError(f"MAT: img_resolution must be a power of two >= 128, got {r}")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"MAT: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if self.first_stage_dim % self.num_heads:
            raise ConfigError("MAT: first_stage_dim must be a multiple of num_heads")
        if self.c_dim != 0:
            raise ConfigError("MAT: class conditioning (c_dim > 0) is not supported")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> MAT_config:
        return cls(z_dim=8, w_dim=8, img_resolution=128, first_stage_dim=12, num_heads=2, channel_divisor=32,
                   mapping_layers=2)


class MAT_arch(RestorationModel):
    config_class = MAT_config
    main_input_name = "lq"

    def __init__(self, config: MAT_config):
        super().__init__(config)
        c = config
        self.synthesis = SynthesisNet(c.w_dim, c.img_resolution, c.img_channels, first_stage_dim=c.first_stage_dim,
                                      num_heads=c.num_heads, channel_divisor=c.channel_divisor)
        self.mapping = MappingNet(c.z_dim, c.c_dim, c.w_dim, self.synthesis.num_layers, num_layers=c.mapping_layers)
        self.post_init()

    def to(self, *args, **kwargs):
        """As ``nn.Module.to``; ``memory_format`` applies to the 4-D tensors only (the official
        modulated-conv weights are 5-D, which ``channels_last`` cannot take)."""
        fmt = kwargs.pop("memory_format", None)
        out = super().to(*args, **kwargs)
        if fmt is not None:
            for t in list(self.parameters()) + list(self.buffers()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=fmt)
        return out

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="image", inputs={"lq": "image", "mask": "mask"})

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("lq", "mask")

    def generator_forward(self, images_in, masks_in, z, c=None, truncation_psi=1.0, truncation_cutoff=None,
                          noise_mode="random", return_stg1=False, dropout_maps=None, generator=None):
        """The official ``Generator.forward`` (images in [-1, 1], native-multiple sizes) with the
        dropout maps injectable and the randomness drawn from ``generator``."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(images_in, masks_in, ws, noise_mode, return_stg1, dropout_maps, generator)

    def forward(self, lq: torch.Tensor, mask: torch.Tensor, z: torch.Tensor | None = None,
                return_stg1: bool = False):
        """Inpaint ``lq`` (in [0, 1]) where ``mask`` (B×1×H×W, 1 = known) is 0. Known pixels of
        the output(s) are ``lq``'s exactly."""
        h, w = lq.shape[-2:]
        m = (mask > 0.5).to(lq.dtype)
        r = self.config.img_resolution
        ph, pw = (-h) % r, (-w) % r
        img, mp = lq * 2 - 1, m
        if ph or pw:
            img = F.pad(img, (0, pw, 0, ph), mode="replicate")
            mp = F.pad(mp, (0, pw, 0, ph), mode="replicate")
        gen = None
        if not self.training:
            gen = torch.Generator().manual_seed(self.config.eval_seed)
        if z is None:
            z = torch.randn(lq.shape[0], self.config.z_dim, generator=gen).to(lq.device, lq.dtype)
        noise = "random" if self.training else self.config.noise_mode
        psi = 1.0 if self.training else self.config.truncation_psi
        out, stg1 = self.generator_forward(img.contiguous(), mp.contiguous(), z, None, psi, None, noise, True,
                                           None, gen)
        known = mask > 0.5
        out = torch.where(known, lq, (out[..., :h, :w] + 1) / 2)
        if return_stg1:
            return out, torch.where(known, lq, (stg1[..., :h, :w] + 1) / 2)
        return out

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        gt = torch.rand(batch_size, self.config.img_channels, size, size, generator=generator)
        mask = (torch.rand(batch_size, 1, size, size, generator=generator) > 0.3).float()
        return {"lq": gt * mask, "mask": mask}

    # -- official weights ---------------------------------------------------------------------
    def load_official_state_dict(self, state_dict: Mapping) -> None:
        """Load the official Generator's ``state_dict`` (keys ``synthesis.*``/``mapping.*``; a
        ``G_ema.``/``G.`` prefix is removed) strictly."""
        state = {}
        for k, v in state_dict.items():
            for prefix in ("G_ema.", "G.", "module."):
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    break
            state[k] = torch.as_tensor(v)
        load_strict(self, state, "official MAT generator")

    @classmethod
    def from_official_checkpoint(cls, path, key: str = "G_ema", **official_kwargs):
        """Build from the official keywords and load a released ``.pkl`` (network ``key``:
        ``G_ema`` as the official ``generate_image.py``, or ``G``) through the restricted
        unpickler, or a ``.pth``/``.safetensors`` state dict."""
        from models.archs.layers import read_checkpoint

        net = cls(cls.config_class(**official_kwargs))
        if str(path).endswith(".pkl"):
            state = official_pkl_state_dict(path, key)
        else:
            state = read_checkpoint(path)
        net.load_official_state_dict(state)
        return net.eval()


# ---------------------------------------------------------------------------------------------
# Restricted unpickler for the official ``.pkl`` checkpoints (StyleGAN2-ADA ``persistence``)


class UnsafePickleError(DataError):
    """A pickle asks for a global outside the allowed set."""


class PersistentRecord:
    """What ``torch_utils.persistence`` pickled: class name, source text (never executed) and
    the object's state (``_parameters``, ``_buffers``, ``_modules``...)."""

    def __init__(self, meta):
        if not isinstance(meta, dict):
            raise UnsafePickleError("persistent object without a meta dict")
        self.class_name = str(meta.get("class_name"))
        self.module_src = meta.get("module_src")
        self.state = meta.get("state") or {}


class ModuleRecord:
    """A ``torch.nn`` container/layer from the pickle, holding only its state dict."""

    torch_name = ""

    def __setstate__(self, state):
        self.state = state


_MODULE_RECORDS: dict[str, type] = {}


def _module_record(name: str) -> type:
    if name not in _MODULE_RECORDS:
        _MODULE_RECORDS[name] = type(f"Record_{name}", (ModuleRecord,), {"torch_name": name})
    return _MODULE_RECORDS[name]


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _load_storage_bytes(b):
    return torch.load(io.BytesIO(b), weights_only=True)


def _reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, ModuleRecord)) or base is not object:
        raise UnsafePickleError(f"copyreg reconstruction of {cls!r} is not allowed")
    return object.__new__(cls)


# torch.nn classes MAT's modules contain: turned into records, never instantiated
_TORCH_NN = {"ModuleList", "Sequential", "ModuleDict", "AdaptiveAvgPool2d", "Softmax", "Dropout", "Identity",
             "GELU", "LayerNorm", "LeakyReLU", "ReLU"}


class RestrictedUnpickler(pickle.Unpickler):
    """Tensors (``torch._utils._rebuild_tensor_v2``, storages loaded with ``weights_only``),
    numpy arrays/scalars/dtypes, ``OrderedDict``, and records for StyleGAN2-ADA persistent
    objects and ``torch.nn`` modules. Any other global raises ``UnsafePickleError``."""

    def find_class(self, module, name):
        import torch._utils as tu

        allowed = {
            ("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
            ("copyreg", "_reconstructor"): _reconstructor,
            ("builtins", "object"): object,
            ("numpy", "dtype"): np.dtype,
            ("numpy", "ndarray"): np.ndarray,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(np.core.multiarray if hasattr(np, "core") else np._core.multiarray, name)
        if module.startswith("numpy") and name.endswith("DType"):
            return type(np.dtype("float32"))  # numpy 2 dtype classes (only used to rebuild dtypes)
        if module.startswith("torch.nn.modules.") and name in _TORCH_NN:
            return _module_record(name)
        if module == "dnnlib.util" and name == "EasyDict":
            return _module_record("EasyDict")
        raise UnsafePickleError(f"pickle global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        raise UnsafePickleError("persistent ids are not allowed")


def restricted_load(file) -> object:
    """Unpickle ``file`` (path or binary file) with ``RestrictedUnpickler``."""
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        with open(file, "rb") as fh:
            return RestrictedUnpickler(fh).load()
    return RestrictedUnpickler(file).load()


def record_state_dict(record, prefix: str = "") -> dict[str, torch.Tensor]:
    """The flat ``state_dict`` of a module record (parameters, persistent buffers, children)."""
    state = record.state if isinstance(record, (PersistentRecord, ModuleRecord)) else record
    if not isinstance(state, dict):
        raise DataError(f"{prefix or 'network'}: not a module record")
    out: dict[str, torch.Tensor] = {}
    for name, p in (state.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, b in (state.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(record_state_dict(child, f"{prefix}{name}."))
    return out


def official_pkl_state_dict(path, key: str = "G_ema") -> dict[str, torch.Tensor]:
    """The state dict of network ``key`` in an official MAT/StyleGAN2-ADA ``.pkl``."""
    data = restricted_load(path)
    if not isinstance(data, dict) or key not in data:
        have = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: no '{key}' network in the pickle (has: {have})")
    return record_state_dict(data[key])
