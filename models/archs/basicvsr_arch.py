"""BasicVSR (Chan et al., "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021), as BasicSR's ``basicsr/archs/basicvsr_arch.py``:
official keywords (``num_feat``, ``num_block``, ``spynet_path``), parameter names and math, so
official checkpoints load strictly (``BasicVSR_arch.from_official_checkpoint``).

Bidirectional recurrence: a backward pass (frame T-1 → 0) and a forward pass (0 → T-1), each
warping the propagated feature onto the current frame with SpyNet flow (``flow_warp``, zeros
padding) and refining it with residual blocks; the two are fused per frame, upsampled ×4 by two
PixelShuffles and added to the bilinear ×4 of the LR frame.

Extensions (defaults reproduce upstream): ``in_channels`` (3 upstream), ``hr_channels`` (64)
and ``flow``:
``spynet`` (upstream), ``zero`` (no alignment: the propagated feature is used as is; the
ablation that measures what alignment buys), ``dis`` (OpenCV DIS flow on the LR frames: a
non-learned estimator, so a small network trains on CPU without SpyNet's 1.44 M parameters).

In training mode the last forward's flows are kept in ``last_flows`` ((forward, backward),
B×(T-1)×2×H×W) so a model can supervise SpyNet on exact flow (models/vsr_model.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import OfficialCheckpointMixin, check_choice
from models.archs.spynet_arch import SpyNet
from utils.errors import ConfigError
from utils.flow import flow_warp

FLOW_CHOICES = ("spynet", "zero", "dis", "none")


class ResidualBlockNoBN(nn.Module):
    """BasicSR's residual block without BN: ``x + conv2(relu(conv1(x))) * res_scale``."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=False)
        for conv in (self.conv1, self.conv2):  # BasicSR default_init_weights(scale=0.1)
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class ConvResidualBlocks(nn.Module):
    """conv(in→out) + LeakyReLU(0.1) + ``num_block`` residual blocks (BasicSR's name and keys ``main.*``)."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 64, num_block: int = 15):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1, bias=True), nn.LeakyReLU(negative_slope=0.1, inplace=False),
            nn.Sequential(*[ResidualBlockNoBN(num_feat=num_out_ch) for _ in range(num_block)]))

    def forward(self, fea: torch.Tensor) -> torch.Tensor:
        return self.main(fea)


def check_clip(lqs: torch.Tensor, name: str) -> None:
    if lqs.dim() != 5:
        raise ValueError(f"{name}: expected a clip batch B×T×C×H×W, got shape {tuple(lqs.shape)}")


def pair_flows(spynet: nn.Module, lqs: torch.Tensor, mode: str = "spynet"):
    """``(flows_forward, flows_backward)``, each B×(T-1)×2×H×W: ``flows_backward[:, i]`` = flow
    from frame i to frame i+1, ``flows_forward[:, i]`` = from frame i+1 to frame i. A
    mirror-extended clip (frame i == frame T-1-i, checked per call) reuses the backward flows."""
    n, t, c, h, w = lqs.shape
    if t < 2:
        return lqs.new_zeros(n, 0, 2, h, w), lqs.new_zeros(n, 0, 2, h, w)
    if mode in ("zero", "none"):
        z = lqs.new_zeros(n, t - 1, 2, h, w)
        return z, z
    if mode == "dis":  # OpenCV DIS on each pair (not learned, no gradient)
        from utils.flow import batched_flow, dis_flow

        with torch.no_grad():
            a, b = lqs[:, :-1].reshape(-1, c, h, w).float(), lqs[:, 1:].reshape(-1, c, h, w).float()
            fb = batched_flow(dis_flow, a, b).to(lqs.dtype).reshape(n, t - 1, 2, h, w)
            ff = batched_flow(dis_flow, b, a).to(lqs.dtype).reshape(n, t - 1, 2, h, w)
        return ff, fb
    lqs_1 = lqs[:, :-1].reshape(-1, c, h, w)
    lqs_2 = lqs[:, 1:].reshape(-1, c, h, w)
    flows_backward = spynet(lqs_1, lqs_2).reshape(n, t - 1, 2, h, w)
    if is_mirror_extended(lqs):
        flows_forward = flows_backward.flip(1)
    else:
        flows_forward = spynet(lqs_2, lqs_1).reshape(n, t - 1, 2, h, w)
    return flows_forward, flows_backward


def is_mirror_extended(lqs: torch.Tensor) -> bool:
    """True when an even-length clip is its own time reversal (upstream's check, per call)."""
    if lqs.size(1) % 2:
        return False
    a, b = torch.chunk(lqs, 2, dim=1)
    return bool(torch.equal(a, b.flip(1)))


class BasicVSR_config(RestorationConfig):
    """Args (official keywords first):
        num_feat: feature channels (64 published).
        num_block: residual blocks per propagation trunk (30 published; 15 the signature default).
        spynet_path: official SpyNet weights to load (None: random init).
        in_channels: image channels (3).
        flow: ``spynet`` | ``zero`` (ablation: no alignment) | ``dis`` (OpenCV DIS flow, not
            learned) | ``none`` (no recurrence: every frame restored alone by the same layers,
            a single-frame SR network of equal parameters). SpyNet is built for ``spynet`` only.
        hr_channels: channels of the upsampler's ×2 and ×4 stages (64 upstream; smaller makes
            a CPU demo affordable: at ×4 the 64→64 HR conv dominates the cost).
    """

    model_type = "restorelab_basicvsr"

    def __init__(self, num_feat: int = 64, num_block: int = 15, spynet_path: str | None = None,
                 in_channels: int = 3, flow: str = "spynet", hr_channels: int = 64, **kwargs):
        if int(num_feat) < 1 or int(num_block) < 0:
            raise ConfigError(f"BasicVSR: num_feat must be >= 1 and num_block >= 0, got {num_feat}, {num_block}")
        check_choice("BasicVSR flow", flow, FLOW_CHOICES)
        self.num_feat, self.num_block, self.spynet_path = int(num_feat), int(num_block), spynet_path
        self.in_channels, self.flow, self.hr_channels = int(in_channels), flow, int(hr_channels)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "BasicVSR_config":
        return cls(num_feat=8, num_block=1)


class BasicVSR_arch(OfficialCheckpointMixin, RestorationModel):
    config_class = BasicVSR_config

    def __init__(self, config: BasicVSR_config):
        super().__init__(config)
        c = config
        self.num_feat = c.num_feat
        # flow: zero builds no SpyNet (nothing of it could learn).
        self.spynet = SpyNet(c.spynet_path) if c.flow == "spynet" else None
        self.last_flows = None
        self.backward_trunk = ConvResidualBlocks(c.num_feat + c.in_channels, c.num_feat, c.num_block)
        self.forward_trunk = ConvResidualBlocks(c.num_feat + c.in_channels, c.num_feat, c.num_block)
        self.fusion = nn.Conv2d(c.num_feat * 2, c.num_feat, 1, 1, 0, bias=True)
        self.upconv1 = nn.Conv2d(c.num_feat, c.num_feat * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(c.num_feat, c.hr_channels * 4, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(c.hr_channels, c.hr_channels, 3, 1, 1)
        self.conv_last = nn.Conv2d(c.hr_channels, c.in_channels, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=False)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="clip2clip", scale=4, inputs={"lq": "clip"})

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": torch.rand(batch_size, 3, self.config.in_channels, size, size, generator=generator)}

    def get_flow(self, x: torch.Tensor):
        flows = pair_flows(self.spynet, x, self.config.flow)
        self.last_flows = flows if self.training and torch.is_grad_enabled() else None
        return flows

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        check_clip(lq, "BasicVSR")
        x = lq
        flows_forward, flows_backward = self.get_flow(x)
        b, n, _, h, w = x.shape
        align = self.config.flow not in ("zero", "none")
        recurrent = self.config.flow != "none"
        out_l: list[torch.Tensor] = []
        feat_prop = x.new_zeros(b, self.num_feat, h, w)
        for i in range(n - 1, -1, -1):
            if not recurrent:
                feat_prop = x.new_zeros(b, self.num_feat, h, w)
            elif i < n - 1 and align:
                feat_prop = flow_warp(feat_prop, flows_backward[:, i].permute(0, 2, 3, 1))
            feat_prop = self.backward_trunk(torch.cat([x[:, i], feat_prop], dim=1))
            out_l.insert(0, feat_prop)
        feat_prop = torch.zeros_like(feat_prop)
        for i in range(n):
            if not recurrent:
                feat_prop = x.new_zeros(b, self.num_feat, h, w)
            elif i > 0 and align:
                feat_prop = flow_warp(feat_prop, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            feat_prop = self.forward_trunk(torch.cat([x[:, i], feat_prop], dim=1))
            out = self.lrelu(self.fusion(torch.cat([out_l[i], feat_prop], dim=1)))
            out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
            out = self.lrelu(self.conv_hr(out))
            out = self.conv_last(out)
            out_l[i] = out + F.interpolate(x[:, i], scale_factor=4, mode="bilinear", align_corners=False)
        return torch.stack(out_l, dim=1)
