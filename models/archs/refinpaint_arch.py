"""RefInpaintNet: reference-guided inpainting on the InpaintNet backbone.

A reference image ``ref`` (any size; e.g. another photo of the same mural) guides the fill:

* **Reference encoder**: a conv stack with one stride-2 stage per backbone level, giving the
  reference's features at every level's width; each level's map is average-pooled to at most
  ``ref_tokens``² tokens (keys/values).
* **Cross-attention fusion at every level in ``fusion_levels``** (all wired into the forward,
  so every parameter gets a gradient, unlike the fork's unused 32²/64² modules): queries from
  the target's features (1×1 conv), keys/values from the reference tokens, ``heads`` heads;
  out = x + g·ref_valid·proj(attention), with a learned per-level gate g (init 0.5, the fork's α).
* **Style injection** at the bottleneck: the reference's pooled deepest feature → FC → FiLM
  (1 + γ, β) on the bottleneck, scaled by ``ref_valid``.
* ``ref_valid`` (B, 1 = the reference is real): a sample without reference (``ref_valid = 0``)
  is exactly the backbone (InpaintNet) output — a missing reference is never silent zeros.
* **Freezing**: ``freeze_backbone: true`` sets ``requires_grad=False`` on the backbone
  (``body.*``) except parameters whose name matches a regex of ``unfreeze`` (e.g.
  ``["body.mid", "body.tail"]``); the optimiser then trains the reference branch (+ those).
  For a learning-rate ratio instead (the fork's 1e-4 reference / 1e-5 backbone) use
  ``train.optimizers.net.param_groups: [{match: "^body\\.", lr_mult: 0.1}]``.

Output ``where(mask > 0.5, lq, pred)``: known pixels exact.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig
from models.archs.inpaintnet_arch import InpaintBackbone, InpaintNet_arch
from utils.errors import ConfigError


class CrossAttentionFusion(nn.Module):
    def __init__(self, channels: int, ref_channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(ref_channels, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, ref_tokens, ref_valid):
        b, c, h, w = x.shape
        k, v = self.kv(ref_tokens).chunk(2, dim=-1)                      # B×N×C
        q = self.q(x).flatten(2).transpose(1, 2)                          # B×HW×C
        split = lambda t: t.reshape(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)
        attn = F.scaled_dot_product_attention(split(q), split(k), split(v))
        attn = attn.transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
        return x + (self.gate * ref_valid.reshape(b, 1, 1, 1)) * self.proj(attn)


class RefInpaintNet_config(RestorationConfig):
    """RefInpaintNet hyper-parameters (backbone ones as InpaintNet).

    Args:
        in_channels, width, depth, max_width, dilated_blocks, prefill: the InpaintNet backbone.
        fusion_levels: backbone levels (0 = full resolution … depth) with cross-attention; None = all.
        ref_tokens: reference tokens per side at each level (average pooled).
        heads: attention heads (must divide each fused level's width).
        freeze_backbone, unfreeze: backbone freezing with selective unfreezing (regexes).
    """

    model_type = "restorelab_ref_inpaint_net"

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 3, max_width: int = 128,
                 dilated_blocks: int = 3, prefill: str = "pushpull", fusion_levels: list[int] | None = None,
                 ref_tokens: int = 16, heads: int = 4, freeze_backbone: bool = False,
                 unfreeze: list[str] | None = None, **kwargs):
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        self.max_width, self.dilated_blocks, self.prefill = int(max_width), int(dilated_blocks), prefill
        self.fusion_levels = list(range(self.depth + 1)) if fusion_levels is None else [int(i) for i in fusion_levels]
        self.ref_tokens, self.heads = int(ref_tokens), int(heads)
        self.freeze_backbone, self.unfreeze = bool(freeze_backbone), list(unfreeze or [])
        if any(not 0 <= i <= self.depth for i in self.fusion_levels) or not self.fusion_levels:
            raise ConfigError(f"RefInpaintNet: fusion_levels must be in 0..{self.depth}, got {self.fusion_levels}")
        for i in self.fusion_levels:
            if min(self.width * 2 ** i, self.max_width) % self.heads:
                raise ConfigError(f"RefInpaintNet: heads {self.heads} must divide the width of level {i}")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls):
        return cls(width=8, depth=2, max_width=16, dilated_blocks=1, ref_tokens=4, heads=2)


class RefInpaintNet_arch(InpaintNet_arch):
    config_class = RefInpaintNet_config

    def __init__(self, config: RefInpaintNet_config):
        super(InpaintNet_arch, self).__init__(config)
        c = config
        self.body = InpaintBackbone(c)
        widths = self.body.widths
        self.ref_enc = nn.ModuleList()
        cin = c.in_channels
        for level, w in enumerate(widths):
            stride = 1 if level == 0 else 2
            self.ref_enc.append(nn.Sequential(nn.Conv2d(cin, w, 3, stride=stride, padding=1), nn.LeakyReLU(0.2),
                                              nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2)))
            cin = w
        self.fusion = nn.ModuleDict({str(i): CrossAttentionFusion(widths[i], widths[i], c.heads)
                                     for i in c.fusion_levels})
        self.style = nn.Linear(widths[-1], 2 * widths[-1])
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)
        self.post_init()
        if c.freeze_backbone:
            patterns = [re.compile(p) for p in c.unfreeze]
            for name, p in self.named_parameters():
                if name.startswith("body.") and not any(r.search(name) for r in patterns):
                    p.requires_grad_(False)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("lq", "mask", "ref", "ref_valid")

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="image", inputs={"lq": "image", "mask": "mask", "ref": "image", "ref_valid": "scalar"})

    def encode_ref(self, ref):
        feats, x = [], ref
        for stage in self.ref_enc:
            x = stage(x)
            feats.append(x)
        return feats

    def tokens(self, feat):
        n = self.config.ref_tokens
        if max(feat.shape[-2:]) > n:
            feat = F.adaptive_avg_pool2d(feat, (min(n, feat.shape[-2]), min(n, feat.shape[-1])))
        return feat.flatten(2).transpose(1, 2)

    def forward(self, lq, mask, ref, ref_valid):
        x, fill, size = self.prepare(lq, mask)
        valid = ref_valid.reshape(-1).to(lq.dtype)
        b = self.body
        rf = self.encode_ref(ref)
        feats = b.encode(x)
        fuse = lambda i, f: self.fusion[str(i)](f, self.tokens(rf[i]), valid) if str(i) in self.fusion else f
        feats = [fuse(i, f) for i, f in enumerate(feats)]
        y = b.bottom(feats[-1])
        gamma, beta = self.style(rf[-1].mean(dim=(2, 3))).chunk(2, dim=1)
        v = valid.reshape(-1, 1, 1, 1)
        y = y * (1 + v * gamma[..., None, None]) + v * beta[..., None, None]
        for i in reversed(range(len(b.down))):
            y = b.decode_level(y, feats[i], i)
        return self.finish(lq, mask, fill, b.residual(y), size)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        out = super().example_inputs(batch_size, size, generator)
        out["ref"] = torch.rand(batch_size, self.config.in_channels, size, size, generator=generator)
        out["ref_valid"] = torch.ones(batch_size)
        return out
