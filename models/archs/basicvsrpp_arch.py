"""BasicVSR++ (Chan et al., "BasicVSR++: Improving Video Super-Resolution with Enhanced
Propagation and Alignment", CVPR 2022), as BasicSR's ``basicsr/archs/basicvsrpp_arch.py``:
official keywords, parameter names and math, so official checkpoints load strictly
(``BasicVSRPlusPlus_arch.from_official_checkpoint``), with the flow-guided deformable alignment
in pure torch (models/archs/dcn.py; upstream calls ``torchvision.ops.deform_conv2d``).

* Second-order grid propagation: four branches (backward_1, forward_1, backward_2, forward_2);
  at frame i a branch aligns its propagated feature (first order, flow n1) and its feature of
  two frames back (second order, composed flow ``n1 + warp(n2, n1)``) with one modulated DCN whose
  offsets are ``flow + 10·tanh(residual)`` (16 groups: 0–7 first order, 8–15 second order), then
  refines ``[spatial, earlier branches…, aligned]`` with residual blocks.
* Reconstruction reads all five feature sets; ×4 by two PixelShuffles plus bilinear ×4 of the input.

Upstream differences kept out: no CPU cache (``cpu_cache_length`` is accepted and recorded; on
CPU the features stay in memory anyway), the mirror-extension check is made per call (upstream
keeps a sticky flag), and without CUDA upstream silently skips building the DCNs (here they are
always built, as in the fixture). Extension: ``flow: zero`` (ablation without SpyNet) or
``dis`` (OpenCV DIS). In training mode the last flows are kept in ``last_flows``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.basicvsr_arch import FLOW_CHOICES, ConvResidualBlocks, check_clip, pair_flows
from models.archs.dcn import ModulatedDeformConv2d
from models.archs.layers import OfficialCheckpointMixin, check_choice
from models.archs.spynet_arch import SpyNet
from utils.errors import ConfigError
from utils.flow import flow_warp

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


class SecondOrderDeformableAlignment(ModulatedDeformConv2d):
    """Flow-guided DCNv2 over ``[feat_prop, feat_n2]`` (BasicSR's keys: ``weight``, ``bias``,
    ``conv_offset.{0,2,4,6}``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, padding=1, deformable_groups: int = 16,
                 max_residue_magnitude: float = 10):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, deformable_groups=deformable_groups)
        self.max_residue_magnitude = max_residue_magnitude
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * out_channels + 4, out_channels, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=False),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=False),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=False),
            nn.Conv2d(out_channels, 27 * deformable_groups, 3, 1, 1))
        nn.init.zeros_(self.conv_offset[-1].weight)  # upstream init: offsets = flow, masks = 0.5
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(self, x, extra_feat, flow_1, flow_2):
        out = self.conv_offset(torch.cat([extra_feat, flow_1, flow_2], dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        offset_1, offset_2 = torch.chunk(offset, 2, dim=1)
        offset_1 = offset_1 + flow_1.flip(1).repeat(1, offset_1.size(1) // 2, 1, 1)
        offset_2 = offset_2 + flow_2.flip(1).repeat(1, offset_2.size(1) // 2, 1, 1)
        return self.deform(x, torch.cat([offset_1, offset_2], dim=1), torch.sigmoid(mask))


class BasicVSRPlusPlus_config(RestorationConfig):
    """Args (official keywords; published default: 64 channels, 7 blocks):
        mid_channels: feature channels.
        num_blocks: residual blocks per propagation branch.
        max_residue_magnitude: bound of the DCN offset residual around the flow (pixels).
        is_low_res_input: True: ×4 SR of an LR clip; False: same-size restoration (the flow is
            computed on a bicubic ↓4 copy, features extracted with two stride-2 convs).
        spynet_path: official SpyNet weights to load (None: random init).
        cpu_cache_length: accepted for official configs; no effect here.
        flow: ``spynet`` | ``zero`` (ablation: DCN offsets from the residual alone, no SpyNet) |
            ``dis`` (OpenCV DIS flow, not learned, no SpyNet).
    """

    model_type = "restorelab_basicvsr_plus_plus"

    def __init__(self, mid_channels: int = 64, num_blocks: int = 7, max_residue_magnitude: float = 10,
                 is_low_res_input: bool = True, spynet_path: str | None = None, cpu_cache_length: int = 100,
                 flow: str = "spynet", **kwargs):
        if int(mid_channels) < 1 or int(num_blocks) < 0:
            raise ConfigError(f"BasicVSRPlusPlus: mid_channels >= 1 and num_blocks >= 0, got {mid_channels}, {num_blocks}")
        if int(mid_channels) % 16:
            raise ConfigError(f"BasicVSRPlusPlus: mid_channels must be a multiple of 16 (16 deformable groups), got {mid_channels}")
        check_choice("BasicVSRPlusPlus flow", flow, FLOW_CHOICES)
        self.mid_channels, self.num_blocks = int(mid_channels), int(num_blocks)
        self.max_residue_magnitude, self.is_low_res_input = max_residue_magnitude, bool(is_low_res_input)
        self.spynet_path, self.cpu_cache_length, self.flow = spynet_path, int(cpu_cache_length), flow
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "BasicVSRPlusPlus_config":
        return cls(mid_channels=16, num_blocks=1)


class BasicVSRPlusPlus_arch(OfficialCheckpointMixin, RestorationModel):
    config_class = BasicVSRPlusPlus_config

    def __init__(self, config: BasicVSRPlusPlus_config):
        super().__init__(config)
        c = config
        mid = self.mid_channels = c.mid_channels
        self.is_low_res_input = c.is_low_res_input
        self.spynet = SpyNet(c.spynet_path) if c.flow == "spynet" else None
        self.last_flows = None
        if c.is_low_res_input:
            self.feat_extract = ConvResidualBlocks(3, mid, 5)
        else:
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, mid, 3, 2, 1), nn.LeakyReLU(negative_slope=0.1, inplace=False),
                nn.Conv2d(mid, mid, 3, 2, 1), nn.LeakyReLU(negative_slope=0.1, inplace=False),
                ConvResidualBlocks(mid, mid, 5))
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, module in enumerate(BRANCHES):
            self.deform_align[module] = SecondOrderDeformableAlignment(
                2 * mid, mid, 3, padding=1, deformable_groups=16, max_residue_magnitude=c.max_residue_magnitude)
            self.backbone[module] = ConvResidualBlocks((2 + i) * mid, mid, c.num_blocks)
        self.reconstruction = ConvResidualBlocks(5 * mid, mid, 5)
        self.upconv1 = nn.Conv2d(mid, mid * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(mid, 64 * 4, 3, 1, 1, bias=True)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=False)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="clip2clip", scale=4 if self.is_low_res_input else 1, inputs={"lq": "clip"})

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": torch.rand(batch_size, 3, 3, size, size, generator=generator)}

    def compute_flow(self, lqs: torch.Tensor):
        flows = pair_flows(self.spynet, lqs, self.config.flow)
        self.last_flows = flows if self.training and torch.is_grad_enabled() else None
        return flows

    def propagate(self, feats: dict, flows: torch.Tensor, module_name: str) -> dict:
        n, t, _, h, w = flows.shape
        frame_idx = list(range(0, t + 1))
        flow_idx = list(range(-1, t))
        if "backward" in module_name:
            frame_idx = frame_idx[::-1]
            flow_idx = frame_idx
        feat_prop = flows.new_zeros(n, self.mid_channels, h, w)
        for i, idx in enumerate(frame_idx):
            feat_current = feats["spatial"][idx]
            if i > 0:
                flow_n1 = flows[:, flow_idx[i]]
                cond_n1 = flow_warp(feat_prop, flow_n1.permute(0, 2, 3, 1))
                feat_n2 = torch.zeros_like(feat_prop)
                flow_n2 = torch.zeros_like(flow_n1)
                cond_n2 = torch.zeros_like(cond_n1)
                if i > 1:
                    feat_n2 = feats[module_name][-2]
                    flow_n2 = flows[:, flow_idx[i - 1]]
                    flow_n2 = flow_n1 + flow_warp(flow_n2, flow_n1.permute(0, 2, 3, 1))
                    cond_n2 = flow_warp(feat_n2, flow_n2.permute(0, 2, 3, 1))
                cond = torch.cat([cond_n1, feat_current, cond_n2], dim=1)
                feat_prop = torch.cat([feat_prop, feat_n2], dim=1)
                feat_prop = self.deform_align[module_name](feat_prop, cond, flow_n1, flow_n2)
            feat = [feat_current] + [feats[k][idx] for k in feats if k not in ("spatial", module_name)] + [feat_prop]
            feat_prop = feat_prop + self.backbone[module_name](torch.cat(feat, dim=1))
            feats[module_name].append(feat_prop)
        if "backward" in module_name:
            feats[module_name] = feats[module_name][::-1]
        return feats

    def upsample(self, lqs: torch.Tensor, feats: dict) -> torch.Tensor:
        outputs = []
        for i in range(lqs.size(1)):
            hr = torch.cat([feats["spatial"][i]] + [feats[k][i] for k in BRANCHES], dim=1)
            hr = self.reconstruction(hr)
            hr = self.lrelu(self.pixel_shuffle(self.upconv1(hr)))
            hr = self.lrelu(self.pixel_shuffle(self.upconv2(hr)))
            hr = self.lrelu(self.conv_hr(hr))
            hr = self.conv_last(hr)
            if self.is_low_res_input:
                hr = hr + F.interpolate(lqs[:, i], scale_factor=4, mode="bilinear", align_corners=False)
            else:
                hr = hr + lqs[:, i]
            outputs.append(hr)
        return torch.stack(outputs, dim=1)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        check_clip(lq, "BasicVSRPlusPlus")
        lqs = lq
        n, t, c, h, w = lqs.shape
        if self.is_low_res_input:
            lqs_downsample = lqs
        else:
            lqs_downsample = F.interpolate(lqs.reshape(-1, c, h, w), scale_factor=0.25, mode="bicubic").reshape(
                n, t, c, h // 4, w // 4)
        feats_ = self.feat_extract(lqs.reshape(-1, c, h, w))
        feats_ = feats_.reshape(n, t, -1, *feats_.shape[2:])
        feats = {"spatial": [feats_[:, i] for i in range(t)]}
        flows_forward, flows_backward = self.compute_flow(lqs_downsample)
        for iter_ in (1, 2):
            for direction in ("backward", "forward"):
                module = f"{direction}_{iter_}"
                feats[module] = []
                flows = flows_backward if direction == "backward" else flows_forward
                feats = self.propagate(feats, flows, module)
        return self.upsample(lqs, feats)
