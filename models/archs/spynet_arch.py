"""SpyNet (Ranjan & Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR 2017),
as BasicSR's ``basicsr/archs/spynet_arch.py``: same constructor keyword (``load_path``), call
signature ``forward(ref, supp)``, parameter names (``basic_module.{level}.basic_module.{i}``)
and buffers (``mean``/``std``), so official weights load strictly.

``SpyNet(ref, supp)`` is the flow from ``ref`` to ``supp`` (N×2×H×W, (x, y) pixels):
``flow_warp(supp, flow.permute(0, 2, 3, 1))`` aligns ``supp`` onto ``ref`` (utils/flow.py).

It is a building block of the recurrent VSR networks (BasicVSR, BasicVSR++, IART), not a
registered restoration network. No pretrained SpyNet can be downloaded here: it trains from
scratch inside a VSR model (frozen for N steps, then at an lr multiplier) or on its own against
exact flow (``supervised_flow_loss`` on the synthetic clips of dataset/video_synthetic_dataset.py).

One extension: frames smaller than 64 px are resized up to 64 (upstream needs ≥ 64 px, since its
six-level pyramid over a 32 px frame reaches an empty level); for ≥ 64 px the computation is
upstream's (the fixture test checks it at 64×96 and 60×100).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.layers import load_strict, read_checkpoint, unwrap_state_dict
from utils.flow import flow_warp


class BasicModule(nn.Module):
    """One pyramid level: [ref, warped supp, flow] (8 ch) → flow residual (2 ch), five 7×7 convs."""

    def __init__(self):
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            layers.append(nn.Conv2d(a, b, kernel_size=7, stride=1, padding=3))
            if i < len(chans) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, tensor_input: torch.Tensor) -> torch.Tensor:
        return self.basic_module(tensor_input)


class SpyNet(nn.Module):
    """Args:
        load_path: an official SpyNet ``.pth`` (``params`` entry) or ``.safetensors``; None = random init.
    """

    levels = 6

    def __init__(self, load_path: str | None = None):
        super().__init__()
        self.basic_module = nn.ModuleList([BasicModule() for _ in range(self.levels)])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if load_path:
            self.load_official_state_dict(read_checkpoint(load_path))

    # -- official checkpoints ---------------------------------------------------------------------
    def load_official_state_dict(self, state_dict: Mapping, param_key: str | None = None) -> None:
        """Load official SpyNet weights strictly (the ``mean``/``std`` buffers may be absent, as
        in the released ``spynet_sintel_final-3d2a1287.pth``; they are constants)."""
        sd = dict(unwrap_state_dict(state_dict, param_key))
        sd.setdefault("mean", self.mean.detach().clone())
        sd.setdefault("std", self.std.detach().clone())
        load_strict(self, sd, "official SpyNet checkpoint")

    @classmethod
    def from_official_checkpoint(cls, path, param_key: str | None = None) -> "SpyNet":
        net = cls()
        net.load_official_state_dict(read_checkpoint(path), param_key=param_key)
        return net.eval()

    # -- computation ------------------------------------------------------------------------------
    def preprocess(self, tensor_input: torch.Tensor) -> torch.Tensor:
        return (tensor_input - self.mean) / self.std

    def process(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs, supps = [self.preprocess(ref)], [self.preprocess(supp)]
        for _ in range(self.levels - 1):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2, count_include_pad=False))
        n, _, h0, w0 = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h0 // 2, w0 // 2)
        for level in range(len(refs)):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.size(2) != refs[level].size(2):
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.size(3) != refs[level].size(3):
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), interp_mode="bilinear", padding_mode="border")
            flow = self.basic_module[level](torch.cat([refs[level], warped, up], 1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow from ``ref`` to ``supp`` (N×3×H×W RGB in [0, 1]) → N×2×H×W."""
        if ref.shape != supp.shape:
            raise ValueError(f"SpyNet: ref {tuple(ref.shape)} and supp {tuple(supp.shape)} differ")
        h, w = ref.shape[-2:]
        h_in = max(64, math.ceil(h / 32.0) * 32)
        w_in = max(64, math.ceil(w / 32.0) * 32)
        ref = F.interpolate(ref, size=(h_in, w_in), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_in, w_in), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.process(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / w_in, h / h_in], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
        return flow * scale


def supervised_flow_loss(spynet: SpyNet, ref: torch.Tensor, supp: torch.Tensor, flow: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error of ``spynet(ref, supp)`` against an exact ``flow`` (N×2×H×W), over
    ``mask`` (N×H×W bool) if given: the loss that trains SpyNet from scratch on synthetic clips."""
    err = (spynet(ref, supp) - flow).square().sum(1).add(1e-12).sqrt()
    return err[mask].mean() if mask is not None else err.mean()
