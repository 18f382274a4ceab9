"""HAT: Hybrid Attention Transformer (Chen et al., "Activating More Pixels in Image Super-Resolution
Transformer", CVPR 2023).

A port of github.com/XPixelGroup/HAT (Apache-2.0; ``hat/archs/hat_arch.py`` at 1638a9a): the
official constructor keywords and parameter names (the two relative-position index buffers
included), so official ``.pth`` files load strictly (``HAT_arch.from_official_checkpoint``).
Residual hybrid attention groups (RHAG) of hybrid attention blocks (HAB: (shifted) window
self-attention + a channel-attention convolution branch scaled by ``conv_scale``) and one
overlapping cross-attention block (OCAB) each; pixel-shuffle reconstruction.

Differences from the official code: none numerically. ``forward`` pads the input (reflect,
right/bottom) to a multiple of ``window_size`` and crops the output back, which the official
code does in ``HATModel.pre_process/post_process`` (the official network alone needs aligned
inputs). ``upscale: 1`` gives a same-size restoration network (no upsampling layers).

Presets by name (``options/test/*.yml``, ×4): ``HAT-S`` (embed 144, 6×6 blocks, heads 6,
compress 24, squeeze 24), ``HAT`` (180, 6×6, compress 3, squeeze 30), ``HAT-L`` (180, 12×6);
window 16, mlp ratio 2. YAML: ``{type: HAT, preset: HAT-S, upscale: 2}`` (explicit keys win).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import OfficialCheckpointMixin
from utils.errors import ConfigError
from utils.registry import unknown_name_message

_COMMON = dict(img_size=64, window_size=16, mlp_ratio=2.0, upsampler="pixelshuffle", resi_connection="1conv",
               upscale=4, overlap_ratio=0.5, conv_scale=0.01, img_range=1.0)
HAT_PRESETS: dict[str, dict] = {
    "HAT-S": dict(_COMMON, embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24),
    "HAT": dict(_COMMON, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30),
    "HAT-L": dict(_COMMON, embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, compress_ratio=3, squeeze_factor=30),
}
# The official constructor's defaults
_DEFAULTS = dict(img_size=64, embed_dim=96, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=7,
                 compress_ratio=3, squeeze_factor=30, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=4.0, upscale=2,
                 img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv")


class HAT_config(RestorationConfig):
    """Official HAT keywords (``hat_arch.HAT``); ``preset``: ``HAT-S``, ``HAT`` or ``HAT-L``.
    ``upsampler`` must be ``pixelshuffle`` (the published models); ``norm_layer`` is LayerNorm."""

    model_type = "restorelab_hat"

    def __init__(self, img_size: int | None = None, patch_size: int = 1, in_chans: int = 3,
                 embed_dim: int | None = None, depths: Sequence[int] | None = None,
                 num_heads: Sequence[int] | None = None, window_size: int | None = None,
                 compress_ratio: int | None = None, squeeze_factor: int | None = None, conv_scale: float | None = None,
                 overlap_ratio: float | None = None, mlp_ratio: float | None = None, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, ape: bool = False, patch_norm: bool = True, use_checkpoint: bool = False,
                 upscale: int | None = None, img_range: float | None = None, upsampler: str | None = None,
                 resi_connection: str | None = None, preset: str | None = None, **kwargs):
        if preset is not None and preset not in HAT_PRESETS:
            raise ConfigError(unknown_name_message("HAT preset", preset, list(HAT_PRESETS)))
        base = {**_DEFAULTS, **(HAT_PRESETS[preset] if preset else {})}
        given = dict(img_size=img_size, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                     window_size=window_size, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor,
                     conv_scale=conv_scale, overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, upscale=upscale,
                     img_range=img_range, upsampler=upsampler, resi_connection=resi_connection)
        r = {k: (v if v is not None else base[k]) for k, v in given.items()}
        self.img_size, self.patch_size, self.in_chans = int(r["img_size"]), int(patch_size), int(in_chans)
        self.embed_dim = int(r["embed_dim"])
        self.depths = [int(d) for d in r["depths"]]
        self.num_heads = [int(h) for h in r["num_heads"]]
        self.window_size = int(r["window_size"])
        self.compress_ratio, self.squeeze_factor = int(r["compress_ratio"]), int(r["squeeze_factor"])
        self.conv_scale, self.overlap_ratio = float(r["conv_scale"]), float(r["overlap_ratio"])
        self.mlp_ratio = float(r["mlp_ratio"])
        self.qkv_bias, self.qk_scale = bool(qkv_bias), qk_scale
        self.drop_rate, self.attn_drop_rate, self.drop_path_rate = float(drop_rate), float(attn_drop_rate), float(drop_path_rate)
        self.ape, self.patch_norm, self.use_checkpoint = bool(ape), bool(patch_norm), bool(use_checkpoint)
        self.upscale, self.img_range = int(r["upscale"]), float(r["img_range"])
        self.upsampler, self.resi_connection = r["upsampler"], r["resi_connection"]
        self.preset = preset
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ConfigError(f"HAT: depths {self.depths} and num_heads {self.num_heads} must have the same length")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ConfigError(f"HAT: embed_dim {self.embed_dim} must be divisible by every num_heads {self.num_heads}")
        if self.upsampler != "pixelshuffle":
            raise ConfigError(f"HAT: upsampler must be pixelshuffle (the published models), got {self.upsampler!r}")
        if self.resi_connection not in ("1conv", "identity"):
            raise ConfigError(f"HAT: resi_connection must be 1conv or identity, got {self.resi_connection!r}")
        if self.upscale not in (1, 2, 3, 4, 8):
            raise ConfigError(f"HAT: upscale must be 1, 2, 3, 4 or 8, got {self.upscale}")
        super().__init__(**kwargs)

    @classmethod
    def official(cls, name: str, **overrides) -> "HAT_config":
        return cls(preset=name, **overrides)

    @classmethod
    def tiny(cls) -> "HAT_config":
        return cls(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, compress_ratio=3,
                   squeeze_factor=4, mlp_ratio=2.0, upscale=2, drop_path_rate=0.0)


# ---------------------------------------------------------------------------------------------
# Building blocks (official names)


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x.div(keep) * mask


class ChannelAttention(nn.Module):
    def __init__(self, num_feat, squeeze_factor=16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1, padding=0), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1, padding=0), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class CAB(nn.Module):
    def __init__(self, num_feat, compress_ratio=3, squeeze_factor=30):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1), ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x):
        return self.cab(x)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x, window_size):
    """B×H×W×C → (B·nW)×ws×ws×C."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows, window_size, h, w):
    # batch inferred (-1), not computed as a Python int: an ONNX export keeps it dynamic
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention in a window with a relative position bias (Swin)."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, rpi, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        ws = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[rpi.view(-1)].view(ws, ws, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention + conv_scale × channel-attention conv, then MLP."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, compress_ratio=3,
                 squeeze_factor=30, conv_scale=0.01, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0):
        super().__init__()
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size, self.mlp_ratio = window_size, shift_size, mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, (self.window_size, self.window_size), num_heads, qkv_bias, qk_scale,
                                    attn_drop, drop)
        self.conv_scale = conv_scale
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x, x_size, rpi_sa, attn_mask):
        h, w = x_size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous().view(b, h * w, c)
        if self.shift_size > 0:
            shifted = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            shifted, attn_mask = x, None
        windows = window_partition(shifted, self.window_size).view(-1, self.window_size * self.window_size, c)
        attn_windows = self.attn(windows, rpi=rpi_sa, mask=attn_mask).view(-1, self.window_size, self.window_size, c)
        shifted = window_reverse(attn_windows, self.window_size, h, w)
        attn_x = torch.roll(shifted, shifts=(self.shift_size, self.shift_size), dims=(1, 2)) if self.shift_size > 0 else shifted
        x = shortcut + self.drop_path(attn_x.view(b, h * w, c)) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention: queries from ws×ws windows, keys/values from overlapping
    (ws + overlap_ratio·ws)² windows."""

    def __init__(self, dim, input_resolution, window_size, overlap_ratio, num_heads, qkv_bias=True, qk_scale=None,
                 mlp_ratio=2):
        super().__init__()
        self.dim, self.input_resolution, self.window_size, self.num_heads = dim, input_resolution, window_size, num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=(self.overlap_win_size, self.overlap_win_size), stride=window_size,
                                padding=(self.overlap_win_size - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) * (window_size + self.overlap_win_size - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, x_size, rpi):
        h, w = x_size
        b, _, c = x.shape
        ws, ow = self.window_size, self.overlap_win_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        qkv = self.qkv(x).reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)  # 3, b, c, h, w
        q = qkv[0].permute(0, 2, 3, 1)
        kv = torch.cat((qkv[1], qkv[2]), dim=1)
        q_windows = window_partition(q, ws).view(-1, ws * ws, c)
        kv_windows = self.unfold(kv)  # b, (2·c·ow·ow), nw
        nw = kv_windows.shape[-1]
        # 'b (nc ch owh oww) nw -> nc (b nw) (owh oww) ch'
        kv_windows = kv_windows.view(b, 2, c, ow * ow, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ow * ow, c)
        k_windows, v_windows = kv_windows[0], kv_windows[1]
        b_, nq, _ = q_windows.shape
        n = k_windows.shape[1]
        d = self.dim // self.num_heads
        q = q_windows.reshape(b_, nq, self.num_heads, d).permute(0, 2, 1, 3)
        k = k_windows.reshape(b_, n, self.num_heads, d).permute(0, 2, 1, 3)
        v = v_windows.reshape(b_, n, self.num_heads, d).permute(0, 2, 1, 3)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ow * ow, -1).permute(2, 0, 1).contiguous()
        attn = self.softmax(attn + bias.unsqueeze(0))
        attn_windows = (attn @ v).transpose(1, 2).reshape(b_, nq, self.dim).view(-1, ws, ws, self.dim)
        x = window_reverse(attn_windows, ws, h, w).view(b, h * w, self.dim)
        x = self.proj(x) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, compress_ratio, squeeze_factor,
                 conv_scale, overlap_ratio, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path):
        super().__init__()
        self.blocks = nn.ModuleList([
            HAB(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio,
                squeeze_factor, conv_scale, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                drop_path[i] if isinstance(drop_path, list) else drop_path)
            for i in range(depth)])
        self.overlap_attn = OCAB(dim, input_resolution, window_size, overlap_ratio, num_heads, qkv_bias, qk_scale,
                                 mlp_ratio)

    def forward(self, x, x_size, params):
        for blk in self.blocks:
            x = blk(x, x_size, params["rpi_sa"], params["attn_mask"])
        return self.overlap_attn(x, x_size, params["rpi_oca"])


class PatchEmbed(nn.Module):
    """B×C×H×W → B×(H·W)×C (patch size 1), optional LayerNorm."""

    def __init__(self, embed_dim, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


def patch_unembed(x, x_size):
    return x.transpose(1, 2).contiguous().view(x.shape[0], x.shape[2], x_size[0], x_size[1])


class RHAG(nn.Module):
    def __init__(self, dim, resi_connection, **block_kwargs):
        super().__init__()
        self.residual_group = AttenBlocks(dim=dim, **block_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()

    def forward(self, x, x_size, params):
        y = patch_unembed(self.residual_group(x, x_size, params), x_size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class Upsample(nn.Sequential):
    def __init__(self, scale, num_feat):
        m = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        super().__init__(*m)


def relative_position_index_sa(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def relative_position_index_oca(ws: int, overlap_ratio: float) -> torch.Tensor:
    ext = ws + int(overlap_ratio * ws)
    ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    ex = torch.stack(torch.meshgrid(torch.arange(ext), torch.arange(ext), indexing="ij")).flatten(1)
    rel = (ex[:, None, :] - ori[:, :, None]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - ext + 1
    rel[:, :, 1] += ws - ext + 1
    rel[:, :, 0] *= ws + ext - 1
    return rel.sum(-1)


class HAT_arch(OfficialCheckpointMixin, RestorationModel):
    config_class = HAT_config

    def __init__(self, config: HAT_config):
        super().__init__(config)
        c = config
        self.window_size = c.window_size
        self.shift_size = c.window_size // 2
        self.img_range = c.img_range
        num_feat = 64
        # the DIV2K RGB mean; a constant, not in the official state dict (made in forward, so
        # loading on the meta device, as from_pretrained does, cannot leave it uninitialised)
        self.rgb_mean = (0.4488, 0.4371, 0.4040) if c.in_chans == 3 else (0.0,) * c.in_chans
        self.register_buffer("relative_position_index_SA", relative_position_index_sa(c.window_size))
        self.register_buffer("relative_position_index_OCA", relative_position_index_oca(c.window_size, c.overlap_ratio))
        self.conv_first = nn.Conv2d(c.in_chans, c.embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(c.embed_dim, c.patch_norm)
        res = (c.img_size // c.patch_size, c.img_size // c.patch_size)
        if c.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res[0] * res[1], c.embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=c.drop_rate)
        dpr = [x.item() for x in torch.linspace(0, c.drop_path_rate, sum(c.depths), device="cpu")]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(c.depths):
            self.layers.append(RHAG(
                c.embed_dim, c.resi_connection, input_resolution=res, depth=depth, num_heads=c.num_heads[i],
                window_size=c.window_size, compress_ratio=c.compress_ratio, squeeze_factor=c.squeeze_factor,
                conv_scale=c.conv_scale, overlap_ratio=c.overlap_ratio, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                qk_scale=c.qk_scale, drop=c.drop_rate, attn_drop=c.attn_drop_rate,
                drop_path=dpr[sum(c.depths[:i]):sum(c.depths[:i + 1])]))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.conv_after_body = nn.Conv2d(c.embed_dim, c.embed_dim, 3, 1, 1) if c.resi_connection == "1conv" else nn.Identity()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(c.embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(c.upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, c.in_chans, 3, 1, 1)
        self.apply(self._official_init)
        self.post_init()

    @staticmethod
    def _official_init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @property
    def io(self) -> ArchIO:
        # window attention: an output pixel sees whole (shifted, overlapping) windows, and the
        # padding to a window multiple depends on the image size -> no bounded receptive radius
        return ArchIO(kind="image", scale=self.config.upscale, inputs={"lq": "image"})

    def calculate_mask(self, x_size, device):
        h, w = x_size
        ws, ss = self.window_size, self.shift_size
        img_mask = torch.zeros((1, h, w, 1), device=device)
        slices = (slice(0, -ws), slice(-ws, -ss), slice(-ss, None))
        cnt = 0
        for hs in slices:
            for wsl in slices:
                img_mask[:, hs, wsl, :] = cnt
                cnt += 1
        mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)
        attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)

    def forward_features(self, x):
        x_size = (x.shape[2], x.shape[3])
        params = {"attn_mask": self.calculate_mask(x_size, x.device).to(x.dtype),
                  "rpi_sa": self.relative_position_index_SA, "rpi_oca": self.relative_position_index_OCA}
        x = self.patch_embed(x)
        if self.config.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, x_size, params)
        return patch_unembed(self.norm(x), x_size)

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """The official ``HAT.forward`` (H and W multiples of ``window_size``)."""
        mean = torch.tensor(self.rgb_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + mean

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Reflect-pad right/bottom to a multiple of ``window_size`` (official ``HATModel.pre_process``),
        run, crop the output back to ``upscale`` × the input size."""
        h, w = lq.shape[-2:]
        ws = self.window_size
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(lq, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else lq
        out = self.forward_aligned(x)
        s = self.config.upscale
        return out[..., : h * s, : w * s]
