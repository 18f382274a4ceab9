"""utils.flops: MACs against closed forms, meta-device counting equals a real forward."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.archs import get_network_classes
from utils.flops import count_flops, count_macs, count_params, network_cost


def test_conv_and_matmul_closed_form():
    conv = nn.Conv2d(3, 8, 3, padding=1)  # MACs = C_out * C_in * k² * H * W
    assert count_macs(conv, torch.rand(2, 3, 10, 12)) == 2 * 8 * 3 * 9 * 10 * 12
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depth-wise: C * k² * H * W
    assert count_macs(dw, torch.rand(1, 8, 10, 12)) == 8 * 9 * 10 * 12
    lin = nn.Linear(5, 7)
    assert count_macs(lin, torch.rand(4, 5)) == 4 * 5 * 7

    class Attn(nn.Module):
        def forward(self, x):
            return torch.softmax(x @ x.transpose(-2, -1), -1) @ x

    flops = count_flops(Attn(), torch.rand(2, 6, 9))
    assert flops["bmm"] == 2 * (2 * 6 * 9 * 6) * 2 and flops["total"] == flops["bmm"]


def test_not_counted_ops_and_params():
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=True), nn.LayerNorm([4, 5, 5]), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert count_macs(net, torch.rand(1, 3, 5, 5)) == 4 * 3 * 25  # only the conv
    assert count_params(net) == 4 * 3 + 4 + 2 * 100
    net[1].weight.requires_grad_(False)
    assert count_params(net, trainable_only=True) == 4 * 3 + 4 + 100


@pytest.mark.parametrize("name", ["DnCNN", "NAFNet", "NAFNetLocal", "Restormer", "UNet"])
def test_meta_device_count_equals_real_forward(name):
    config_cls, arch_cls = get_network_classes(name)
    meta = network_cost(lambda: arch_cls(config_cls.tiny()), size=40)
    real = network_cost(lambda: arch_cls(config_cls.tiny()), size=40, device="cpu")
    assert meta == real and meta["macs"] > 0


def test_dncnn_closed_form():
    """Paper configuration (17 layers, 64 channels, BN): params and MACs by hand."""
    config_cls, arch_cls = get_network_classes("DnCNN")
    cost = network_cost(lambda: arch_cls(config_cls()), size=256)
    c, w, d = 3, 64, 17
    params = (c * w * 9 + w) + (d - 2) * (w * w * 9 + 2 * w) + (w * c * 9 + c)
    assert cost["params"] == params
    assert cost["macs"] == 256 * 256 * 9 * (c * w + (d - 2) * w * w + w * c)
