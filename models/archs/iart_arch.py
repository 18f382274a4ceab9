"""IART (Xu et al., "Enhancing Video Super-Resolution via Implicit Resampling-based Alignment",
CVPR 2024; kai422/IART ``archs/iart_arch.py``, ``psrt_sliding_arch.py``, ``implicit_alignment.py``),
CPU-runnable, with the official constructor keywords, parameter names and math so official
checkpoints load strictly (``IART_arch.from_official_checkpoint``, ``load_official_state_dict``).

* Features: one 3×3 conv RGB → ``embed_dim``. Flow: SpyNet on the LR frames.
* Propagation: four chained branches (backward_1 → forward_1 → backward_2 → forward_2; each
  branch's current feature is the previous branch's output). At frame i a branch aligns its
  propagated feature (flow n1) and its feature two frames back (composed flow
  ``n1 + warp(n2, n1)``) with the **implicit alignment** (``ImplicitWarpModule``: per pixel, 6-head
  attention of a query from the *current* feature + a sine encoding of the fractional flow offset,
  over the 2×2 bilinear taps of the propagated feature + their sine encodings), stacks
  ``[cond_n1, current, cond_n2]`` and runs a 3-frame Swin transformer (``SwinIRFM``: RSTBs of
  (3, 8, 8)-window blocks, shifted every second block) whose centre-frame output + conv is the
  new propagated feature.
* Upsampler on forward_2 only: conv → (conv, PixelShuffle ×2, LReLU) ×2 → conv → conv, plus the
  bilinear ×4 of the LR frame.

Parameters that never affect the output (567,136 of 13,410,503 in the published REDS model,
113,632 in the fixture's small one): each SwinIRFM branch has ``conv_first``, ``conv_first_feat``
and ``conv_before_upsample``, which upstream applies only when the stacked features have 3 or 64
channels (``conv_first``/``conv_first_feat``; never, since they have ``embed_dim``) or when a
``ref`` argument is passed (``conv_before_upsample``; never). **They are kept** so official
checkpoints load strictly and parameter counts match the paper, frozen (``requires_grad=False``:
no optimizer state, no DDP unused-parameter error), and tests check they do not change the
output (``IART_arch.unused_parameter_names()``). If ``embed_dim`` is 3 or 64 the upstream rule
makes ``conv_first``/``conv_first_feat`` live; that rule is reproduced and they are then trainable.

Fixes relative to upstream (none changes the float32 eval math):
* runs without CUDA (upstream builds its transformers only ``if torch.cuda.is_available()`` and
  builds an encoding on ``device='cuda'``);
* the implicit alignment's sampling grid, offsets and sine encodings are float32 even under
  fp16/bf16 autocast (upstream's grid takes the feature dtype, quantising sub-pixel offsets);
* gradient checkpointing is non-reentrant (``use_reentrant=False``; upstream's reentrant
  checkpointing forces DDP's static graph, which the 5,000-iteration SpyNet unfreeze then breaks);
* the mirror-extension check is per call (upstream's flag is sticky);
* ``window_size`` may be a tuple (upstream needs a list); ``cpu_cache_length`` is accepted, unused.

Option ``pe_norm``: ``official`` (upstream: tap codes normalised to {0, 2π}, the query's offset to
frac·π) or ``consistent`` (both on the same scale: frac·2π/(window - 1) … i.e. offset/1 · 2π).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.basicvsr_arch import check_clip, pair_flows
from models.archs.layers import OfficialCheckpointMixin, check_choice
from models.archs.spynet_arch import SpyNet
from utils.errors import ConfigError
from utils.flow import flow_warp

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
PE_NORMS = ("official", "consistent")


# -- implicit alignment ---------------------------------------------------------------------------
def _dim_t(num_pos_feats: int, temperature: float, device) -> torch.Tensor:
    d = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(d, 2, rounding_mode="trunc") / num_pos_feats)


def _sine(y: torch.Tensor, x: torch.Tensor, dim_t: torch.Tensor) -> torch.Tensor:
    """DETR-style encoding: [sin/cos interleaved of y/dim_t, then of x/dim_t] along a new last dim."""
    out = []
    for e in (y, x):
        pos = e[..., None] / dim_t
        out.append(torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(out, dim=-1)


class ImplicitWarpModule(nn.Module):
    """IART's implicit alignment (official keywords, keys ``q``/``k``/``v``, buffers
    ``position_bias`` and ``window_idx_offset``). ``forward(y, x, flow)``: ``y`` the feature to
    align (N×C×H×W), ``x`` the current feature (query), ``flow`` N×H×W×2 ((x, y) pixels, from x's
    frame to y's) → N×dim×H×W. ``aux_loss_out`` (unused by IART) is not supported."""

    def __init__(self, dim, pe_wrp=True, pe_x=True, pe_dim=48, pe_temp=10000, warp_padding="duplicate",
                 num_heads=8, aux_loss_out=False, aux_loss_dim=3, window_size=2, qkv_bias=True, qk_scale=None,
                 use_checkpoint_attn=False, use_checkpoint_ffn=False, pe_norm: str = "official"):
        super().__init__()
        if aux_loss_out:
            raise ConfigError("ImplicitWarpModule: aux_loss_out is not supported")
        check_choice("ImplicitWarpModule warp_padding", warp_padding, ("duplicate", "zero"))
        check_choice("ImplicitWarpModule pe_norm", pe_norm, PE_NORMS)
        if dim % num_heads:
            raise ConfigError(f"ImplicitWarpModule: dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.pe_wrp, self.pe_x, self.pe_dim, self.pe_temp = dim, pe_wrp, pe_x, pe_dim, pe_temp
        self.num_heads, self.warp_padding, self.pe_norm = num_heads, warp_padding, pe_norm
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.window_size = (window_size, window_size)
        self.num_values = window_size * window_size
        self.q = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.k = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.v = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.register_buffer("position_bias", self._window_encoding())
        gh, gw = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        self.register_buffer("window_idx_offset", torch.stack((gh, gw), 2).reshape(self.num_values, 2))

    def _window_encoding(self) -> torch.Tensor:
        """1 × taps × pe_dim: the encoding of each tap's position in the window, normalised to
        [0, 2π] (tap 0 → 0, last tap → 2π/(1 + 1e-6), upstream's ``normalize``)."""
        wh, ww = self.window_size
        ones = torch.ones(1, wh, ww)
        y = ones.cumsum(1, dtype=torch.float32) - 1
        x = ones.cumsum(2, dtype=torch.float32) - 1
        y = y / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
        x = x / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
        pe = _sine(y, x, _dim_t(self.pe_dim // 2, self.pe_temp, None))  # 1, wh, ww, pe_dim
        return pe.reshape(1, wh * ww, self.pe_dim).contiguous()

    def _offset_encoding(self, off: torch.Tensor) -> torch.Tensor:
        """N × HW × 2 fractional offsets (y, x) → N × HW × pe_dim."""
        if self.pe_norm == "official":
            y = off[..., 0] / (self.window_size[0] + 1e-6) * (2 * math.pi)
            x = off[..., 1] / (self.window_size[1] + 1e-6) * (2 * math.pi)
        else:  # on the taps' scale: offset 1 (the far tap) ↔ 2π/(1 + 1e-6)
            y = off[..., 0] / (self.window_size[0] - 1 + 1e-6) * (2 * math.pi)
            x = off[..., 1] / (self.window_size[1] - 1 + 1e-6) * (2 * math.pi)
        return _sine(y, x, _dim_t(self.pe_dim // 2, self.pe_temp, off.device))

    def forward(self, y: torch.Tensor, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != flow.shape[1:3]:
            raise ValueError(f"ImplicitWarpModule: feature size {tuple(x.shape[-2:])} != flow size {tuple(flow.shape[1:3])}")
        n, c, h, w = x.shape
        dev = x.device
        with torch.autocast(device_type=dev.type, enabled=False):  # float32 grid, offsets and encodings
            gh, gw = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                    torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
            grid = torch.stack((gh, gw), 2).unsqueeze(0) + flow.float().flip(-1)  # n, h, w, (y, x)
            flr = torch.floor(grid)
            off = (grid - flr).reshape(n, h * w, 2)
            taps = flr.long().reshape(n, h * w, 1, 2) + self.window_idx_offset  # n, hw, taps, 2
            ty, tx = taps[..., 0], taps[..., 1]
            iy, ix = ty.clamp(0, h - 1), tx.clamp(0, w - 1)
            x_pe = self._offset_encoding(off)
        lin = (iy * w + ix).reshape(n, 1, h * w * self.num_values)
        wrp = y.reshape(n, c, h * w).gather(-1, lin.expand(n, c, lin.shape[-1]))  # n, c, hw*taps
        wrp = wrp.permute(0, 2, 1)  # n, hw*taps, c
        if self.warp_padding == "zero":
            invalid = ((ty < 0) | (ty > h - 1) | (tx < 0) | (tx > w - 1)).reshape(n, -1, 1)
            wrp = wrp.masked_fill(invalid, 0)
        rep = self.pe_dim // c
        wrp = wrp.repeat(1, 1, rep)
        if self.pe_wrp:
            wrp = wrp + self.position_bias.to(wrp.dtype).repeat(n, h * w, 1)
        q_in = x.flatten(2).permute(0, 2, 1).repeat(1, 1, rep)
        if self.pe_x:
            q_in = q_in + x_pe.to(q_in.dtype)
        nhw, hd = n * h * w, self.dim // self.num_heads
        kw = self.k(wrp).reshape(nhw, self.num_values, self.num_heads, hd).permute(0, 2, 1, 3)
        vw = self.v(wrp).reshape(nhw, self.num_values, self.num_heads, hd).permute(0, 2, 1, 3)
        qx = self.q(q_in).reshape(nhw, self.num_heads, 1, hd)
        attn = ((qx * self.scale) @ kw.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ vw).reshape(nhw, self.dim)
        return out.reshape(n, h, w, self.dim).permute(0, 3, 1, 2)


# -- 3-frame Swin transformer (PSRT's SwinIRFM) ------------------------------------------------------
class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, ws) -> torch.Tensor:
    b, d, h, w, c = x.shape
    x = x.reshape(b, d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws[0] * ws[1] * ws[2], c)


def window_reverse(windows: torch.Tensor, ws, b, d, h, w) -> torch.Tensor:
    x = windows.reshape(b, d // ws[0], h // ws[1], w // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@lru_cache(maxsize=32)
def _shift_mask(t: int, h: int, w: int, ws: tuple, shift: tuple, device: str) -> torch.Tensor:
    dp, hp, wp = (math.ceil(s / k) * k for s, k in zip((t, h, w), ws))
    img = torch.zeros(1, dp, hp, wp, 1, device=device)
    cnt = 0
    slices = [(slice(-k), slice(-k, -s), slice(-s, None)) for k, s in zip(ws, shift)]
    for sd in slices[0]:
        for sh in slices[1]:
            for sw in slices[2]:
                img[:, sd, sh, sw, :] = cnt
                cnt += 1
    mw = window_partition(img, ws).view(-1, ws[0] * ws[1] * ws[2])
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, tuple(window_size), num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wd, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += wd - 1
        rel[:, :, 1] += wh - 1
        rel[:, :, 2] += ww - 1
        rel[:, :, 0] *= (2 * wh - 1) * (2 * ww - 1)
        rel[:, :, 1] *= 2 * ww - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index[:n, :n].reshape(-1)].reshape(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0).to(attn.dtype)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, num_heads, window_size=(3, 8, 8), shift_size=(0, 0, 0), mlp_ratio=2.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm):
        super().__init__()
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x, attn_mask):
        b, t, h, w, c = x.shape
        ws, ss = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x)
        pd = (ws[0] - t % ws[0]) % ws[0]
        pb = (ws[1] - h % ws[1]) % ws[1]
        pr = (ws[2] - w % ws[2]) % ws[2]
        x = F.pad(x, (0, 0, 0, pr, 0, pb, 0, pd))
        _, dp, hp, wp, _ = x.shape
        shifted = any(s > 0 for s in ss)
        if shifted:
            x = torch.roll(x, shifts=(-ss[0], -ss[1], -ss[2]), dims=(1, 2, 3))
        windows = self.attn(window_partition(x, ws), mask=attn_mask if shifted else None)
        x = window_reverse(windows, ws, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=ss, dims=(1, 2, 3))
        x = x[:, :t, :h, :w, :]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """Keys ``blocks.{i}``; holds no parameters of its own (upstream's name)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                 drop_path, norm_layer, use_checkpoint):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        ws = list(window_size)
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, num_heads, ws, (0, 0, 0) if i % 2 == 0 else (ws[0], ws[1] // 2, ws[2] // 2),
                                 mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                                 drop_path[i] if isinstance(drop_path, list) else drop_path, norm_layer)
            for i in range(depth)])

    def forward(self, x, attn_mask):  # x: b, c, t, h, w
        x = x.permute(0, 2, 3, 4, 1)
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled() and self.training:
                x = checkpoint(blk, x, attn_mask, use_reentrant=False)
            else:
                x = blk(x, attn_mask)
        return x.permute(0, 4, 1, 2, 3)


class RSTB(nn.Module):
    """Residual Swin group: blocks, a 3×3 conv per frame, residual (keys ``residual_group``, ``conv``)."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path,
                 norm_layer, use_checkpoint):
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop,
                                         attn_drop, drop_path, norm_layer, use_checkpoint)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x, attn_mask):  # b, c, t, h, w
        n, c, t, h, w = x.shape
        y = self.residual_group(x, attn_mask)
        y = self.conv(y.permute(0, 2, 1, 3, 4).reshape(-1, c, h, w)).reshape(n, t, -1, h, w)
        return y.permute(0, 2, 1, 3, 4) + x


class SwinIRFM(nn.Module):
    """PSRT's multi-frame SwinIR body as IART uses it: ``forward(x)`` with x N×T×C×H×W (T = 3:
    [aligned n1, current, aligned n2]) → the refined centre frame N×C×H×W."""

    def __init__(self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6), window_size=(3, 8, 8), mlp_ratio=2.0, qkv_bias=True, qk_scale=None,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, norm_layer=nn.LayerNorm, patch_norm=True,
                 use_checkpoint=False, resi_connection="1conv", num_frames=3, num_feat=64):
        super().__init__()
        if resi_connection != "1conv":
            raise ConfigError("SwinIRFM: only resi_connection='1conv' (what IART uses) is supported")
        self.in_chans, self.embed_dim, self.num_feat = in_chans, embed_dim, num_feat
        self.window_size = tuple(window_size)
        self.shift_size = (window_size[0], window_size[1] // 2, window_size[2] // 2)
        self.num_frames = num_frames
        # Upstream applies conv_first / conv_first_feat only to 3- / 64-channel inputs and
        # conv_before_upsample only with a `ref` argument: see the module docstring.
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.conv_first_feat = nn.Conv2d(num_feat, embed_dim, 3, 1, 1)
        self.patch_embed = nn.Module()
        self.patch_embed.norm = norm_layer(embed_dim) if patch_norm else None
        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList([
            RSTB(embed_dim, depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                 attn_drop_rate, dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer, use_checkpoint)
            for i in range(len(depths))])
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Conv2d(embed_dim, num_feat, 3, 1, 1)
        for m in self.modules():  # upstream _init_weights
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def unused_prefixes(self) -> list[str]:
        out = ["conv_before_upsample"]
        if self.embed_dim != self.in_chans:
            out.append("conv_first")
        if self.embed_dim != self.num_feat:
            out.append("conv_first_feat")
        return out

    def forward_features(self, x):  # n, t, c, h, w
        n, t, c, h, w = x.shape
        x = x.permute(0, 2, 1, 3, 4)  # n, c, t, h, w
        if self.patch_embed.norm is not None:
            x = self.patch_embed.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        mask = _shift_mask(self.num_frames, h, w, self.window_size, self.shift_size, str(x.device))
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x.permute(0, 2, 3, 4, 1))  # n, t, h, w, c
        return x.permute(0, 1, 4, 2, 3)

    def forward(self, x):
        n, t, c, h, w = x.shape
        if c == self.in_chans:
            x = self.conv_first(x.reshape(-1, c, h, w)).reshape(n, t, -1, h, w)
        if c == self.num_feat:
            x = self.conv_first_feat(x.reshape(-1, c, h, w)).reshape(n, t, -1, h, w)
        x_center = x[:, t // 2]
        feats = self.forward_features(x)
        return self.conv_after_body(feats[:, t // 2]) + x_center


# -- IART ----------------------------------------------------------------------------------------------
class IART_config(RestorationConfig):
    """Args (official keywords; published REDS-N16: mid_channels 64, embed_dim 120, depths/num_heads
    [6, 6, 6], window [3, 8, 8]):
        in_channels: image channels (3).
        mid_channels: channels of the upsampler's first stage.
        embed_dim: transformer width (the propagated features).
        depths, num_heads: blocks and heads per RSTB of each branch.
        window_size: (frames, height, width) of the attention windows.
        num_frames: frames per transformer call (3: [aligned n1, current, aligned n2]).
        img_size, patch_size: recorded for official configs (no effect).
        cpu_cache_length: accepted for official configs; no effect.
        is_low_res_input: True: ×4 SR; False: same-size output (flow on a bicubic ↓4 copy).
        use_checkpoint: per branch, gradient checkpointing of the transformer blocks (non-reentrant).
        spynet_path: official SpyNet weights to load (None: random init).
        drop_path_rate: stochastic depth of each branch (0.1 hard-coded upstream).
        pe_norm: ``official`` | ``consistent`` (see the module docstring).
    """

    model_type = "restorelab_iart"

    def __init__(self, in_channels: int = 3, mid_channels: int = 64, embed_dim: int = 120, depths=(6, 6, 6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6, 6, 6), window_size=(3, 8, 8), num_frames: int = 3, img_size: int = 64,
                 patch_size: int = 1, cpu_cache_length: int = 100, is_low_res_input: bool = True,
                 use_checkpoint=(True, True, True, True), spynet_path: str | None = None,
                 drop_path_rate: float = 0.1, pe_norm: str = "official", **kwargs):
        depths, num_heads, window_size = list(depths), list(num_heads), list(window_size)
        use_checkpoint = list(use_checkpoint) if isinstance(use_checkpoint, (list, tuple)) else [bool(use_checkpoint)] * 4
        if len(depths) != len(num_heads) or not depths:
            raise ConfigError(f"IART: depths {depths} and num_heads {num_heads} must be non-empty and of equal length")
        if any(embed_dim % h for h in num_heads):
            raise ConfigError(f"IART: embed_dim {embed_dim} must be divisible by every num_heads {num_heads}")
        if len(window_size) != 3 or len(use_checkpoint) != 4:
            raise ConfigError("IART: window_size needs 3 entries (frames, height, width), use_checkpoint 4")
        check_choice("IART pe_norm", pe_norm, PE_NORMS)
        self.in_channels, self.mid_channels, self.embed_dim = int(in_channels), int(mid_channels), int(embed_dim)
        self.depths, self.num_heads, self.window_size = [int(d) for d in depths], [int(h) for h in num_heads], [int(w) for w in window_size]
        self.num_frames, self.img_size, self.patch_size = int(num_frames), img_size, patch_size
        self.cpu_cache_length, self.is_low_res_input = int(cpu_cache_length), bool(is_low_res_input)
        self.use_checkpoint, self.spynet_path = [bool(u) for u in use_checkpoint], spynet_path
        self.drop_path_rate, self.pe_norm = float(drop_path_rate), pe_norm
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "IART_config":
        return cls(mid_channels=8, embed_dim=12, depths=[2], num_heads=[2], window_size=[3, 4, 4])

    @classmethod
    def official_reds(cls, **overrides) -> "IART_config":
        """The published network (options/IART_REDS_N16_600K.yml; N6 and Vimeo use the same)."""
        kw = dict(mid_channels=64, embed_dim=120, depths=[6, 6, 6], num_heads=[6, 6, 6], window_size=[3, 8, 8],
                  num_frames=3, img_size=64, patch_size=1, cpu_cache_length=100, is_low_res_input=True)
        kw.update(overrides)
        return cls(**kw)


class IART_arch(OfficialCheckpointMixin, RestorationModel):
    config_class = IART_config

    def __init__(self, config: IART_config):
        super().__init__(config)
        c = config
        self.embed_dim, self.mid_channels, self.is_low_res_input = c.embed_dim, c.mid_channels, c.is_low_res_input
        self.conv_before_upsample = nn.Conv2d(c.embed_dim, c.mid_channels, 3, 1, 1)
        self.spynet = SpyNet(c.spynet_path)
        self.last_flows = None
        if not c.is_low_res_input:
            raise ConfigError("IART: is_low_res_input=False has no feature extractor upstream either; use True")
        self.conv_first = nn.Conv2d(c.in_channels, c.embed_dim, 3, 1, 1)
        self.swin_backbone = nn.ModuleDict()
        for i, module in enumerate(BRANCHES):
            self.swin_backbone[module] = SwinIRFM(
                img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_channels, embed_dim=c.embed_dim,
                depths=c.depths, num_heads=c.num_heads, window_size=c.window_size, mlp_ratio=2.0, qkv_bias=True,
                drop_path_rate=c.drop_path_rate, patch_norm=True, use_checkpoint=c.use_checkpoint[i],
                num_frames=c.num_frames)
        self.upconv1 = nn.Conv2d(c.mid_channels, c.mid_channels * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(c.mid_channels, 64 * 4, 3, 1, 1, bias=True)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=False)
        self.implicit_warp = ImplicitWarpModule(dim=c.embed_dim, pe_dim=c.embed_dim, num_heads=c.num_heads[0],
                                                pe_temp=0.01, pe_norm=c.pe_norm)
        for name, p in self.named_parameters():
            if name in self.unused_parameter_names():
                p.requires_grad_(False)
        self.post_init()

    def unused_parameter_names(self) -> set[str]:
        """Parameters that never affect the output (kept for strict official loading; frozen)."""
        names = set()
        for branch, m in self.swin_backbone.items():
            for prefix in m.unused_prefixes():
                names |= {f"swin_backbone.{branch}.{prefix}.weight", f"swin_backbone.{branch}.{prefix}.bias"}
        return names

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="clip2clip", scale=4, inputs={"lq": "clip"})

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": torch.rand(batch_size, 3, self.config.in_channels, size, size, generator=generator)}

    def compute_flow(self, lqs: torch.Tensor):
        flows = pair_flows(self.spynet, lqs)
        self.last_flows = flows if self.training and torch.is_grad_enabled() else None
        return flows

    def frame_alignment(self, feat_prop, feat_current, flow):
        return self.implicit_warp(feat_prop, feat_current, flow.permute(0, 2, 3, 1))

    def propagate(self, feats: dict, flows: torch.Tensor, module_name: str) -> dict:
        n, t, _, h, w = flows.shape
        frame_idx = list(range(0, t + 1))
        flow_idx = list(range(-1, t))
        if "backward" in module_name:
            frame_idx = frame_idx[::-1]
            flow_idx = frame_idx
        source = {"backward_1": "spatial", "forward_1": "backward_1", "backward_2": "forward_1",
                  "forward_2": "backward_2"}[module_name]
        net = self.swin_backbone[module_name]
        feat_prop = None
        for i, idx in enumerate(frame_idx):
            feat_current = feats[source][idx]
            if i == 0:
                cond = torch.stack([feat_current, feat_current, feat_current], dim=1)
            else:
                flow_n1 = flows[:, flow_idx[i]]
                cond_n1 = self.frame_alignment(feat_prop, feat_current, flow_n1)
                if i > 1:
                    feat_n2 = feats[module_name][-2]
                    flow_n2 = flow_n1 + flow_warp(flows[:, flow_idx[i - 1]], flow_n1.permute(0, 2, 3, 1))
                    cond_n2 = self.frame_alignment(feat_n2, feat_current, flow_n2)
                else:
                    cond_n2 = torch.zeros_like(cond_n1)
                cond = torch.stack([cond_n1, feat_current, cond_n2], dim=1)
            feat_prop = net(cond)
            feats[module_name].append(feat_prop)
        if "backward" in module_name:
            feats[module_name] = feats[module_name][::-1]
        return feats

    def upsample(self, lqs: torch.Tensor, feats: dict) -> torch.Tensor:
        outputs = []
        for i in range(lqs.size(1)):
            hr = self.conv_before_upsample(feats["forward_2"][i])
            hr = self.lrelu(self.pixel_shuffle(self.upconv1(hr)))
            hr = self.lrelu(self.pixel_shuffle(self.upconv2(hr)))
            hr = self.lrelu(self.conv_hr(hr))
            hr = self.conv_last(hr)
            outputs.append(hr + F.interpolate(lqs[:, i], scale_factor=4, mode="bilinear", align_corners=False))
        return torch.stack(outputs, dim=1)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        check_clip(lq, "IART")
        n, t, c, h, w = lq.shape
        feats_ = self.conv_first(lq.reshape(-1, c, h, w)).reshape(n, t, -1, h, w)
        feats = {"spatial": [feats_[:, i] for i in range(t)]}
        flows_forward, flows_backward = self.compute_flow(lq)
        for iter_ in (1, 2):
            for direction in ("backward", "forward"):
                module = f"{direction}_{iter_}"
                feats[module] = []
                feats = self.propagate(feats, flows_backward if direction == "backward" else flows_forward, module)
        return self.upsample(lq, feats)
