"""Every registered network, tested the day it lands (timm-style, parametrised over the registry).

For each ``{Type}`` in ``models/archs``: its ``tiny()`` config builds; the forward keeps the
input size; gradients reach the input and every trainable parameter; ``save_pretrained`` /
``from_pretrained`` reproduces the outputs bit for bit; the config alone rebuilds the same
architecture; two forwards are identical (no hidden randomness in eval mode).
"""
from __future__ import annotations

import pytest
import torch

from models.archs import define_network, get_network_classes, network_names

NAMES = network_names()


def build(name):
    config_cls, arch_cls = get_network_classes(name)
    torch.manual_seed(0)
    return arch_cls(config_cls.tiny()).eval()


def inputs_for(net, size=32):
    return net.example_inputs(batch_size=2, size=size, generator=torch.Generator().manual_seed(1))


def test_registry_not_empty():
    assert {"NAFNet", "UNet"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_determinism(name):
    net = build(name)
    for size in (32, 37):  # an odd size must come back the same size too
        inputs = inputs_for(net, size)
        with torch.no_grad():
            y1 = net(**inputs)
            y2 = net(**inputs)
        assert y1.shape == inputs["lq"].shape[:1] + (net.config.out_channels if hasattr(net.config, "out_channels") else inputs["lq"].shape[1],) + inputs["lq"].shape[2:]
        assert torch.isfinite(y1).all()
        assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", NAMES)
def test_backward(name):
    net = build(name).train()
    inputs = inputs_for(net)
    inputs["lq"].requires_grad_(True)
    net(**inputs).square().mean().backward()
    assert inputs["lq"].grad is not None and torch.isfinite(inputs["lq"].grad).all()
    assert inputs["lq"].grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    net = build(name)
    # Perturb weights so the round trip cannot pass by re-initialisation luck.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    inputs = inputs_for(net)
    with torch.no_grad():
        y = net(**inputs)
    net.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    _, arch_cls = get_network_classes(name)
    loaded = arch_cls.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), y)


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_architecture(name):
    net = build(name)
    config_cls, _ = get_network_classes(name)
    options = {k: v for k, v in net.config.to_diff_dict().items() if k in config_cls.option_names()}
    rebuilt = define_network({"type": name, **options}).eval()
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in net.state_dict().items()]
    rebuilt.load_state_dict(net.state_dict())
    inputs = inputs_for(net)
    with torch.no_grad():
        assert torch.equal(rebuilt(**inputs), net(**inputs))


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_layout_gives_the_same_output(name):
    """``train.channels_last`` converts networks and 4-D inputs to NHWC: every arch must accept it."""
    net = build(name)
    inputs = inputs_for(net)
    with torch.no_grad():
        y = net(**inputs)
        net.to(memory_format=torch.channels_last)
        nhwc = {k: (v.to(memory_format=torch.channels_last) if v.ndim == 4 else v) for k, v in inputs.items()}
        y_cl = net(**nhwc)
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=1e-4)
