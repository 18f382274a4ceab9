"""Restormer against the official implementation (swz30/Restormer), via the fixtures in
../shared/fixtures (seeded random weights + input + official output; reference params/MACs)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models.archs import define_network
from models.archs.layers import BiasFreeLayerNorm2d
from models.archs.restormer_arch import RESTORMER_PRESETS, Restormer_arch, Restormer_config
from utils.errors import ConfigError, DataError
from utils.flops import count_flops, network_cost


@pytest.fixture(scope="module")
def official(fixtures_dir):
    tensors = load_file(str(fixtures_dir / "restormer_official_small.safetensors"))
    meta = json.loads((fixtures_dir / "restormer_official_small.json").read_text())
    state = {k.removeprefix("state_dict."): v.float() for k, v in tensors.items() if k.startswith("state_dict.")}
    return state, tensors["input"], tensors["output"], meta


@pytest.fixture(scope="module")
def official_net(official):
    state, _, _, meta = official
    net = Restormer_arch(Restormer_config(**meta["constructor_kwargs"])).eval()
    net.load_official_state_dict(state)
    return net


@pytest.mark.parametrize("channels_last", [False, True])
def test_reproduces_official_output(official, official_net, channels_last):
    _, x, y_ref, meta = official
    assert sum(p.numel() for p in official_net.parameters()) == meta["parameter_count"]
    net = official_net
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        net = Restormer_arch(official_net.config).eval().to(memory_format=torch.channels_last)
        net.load_state_dict(official_net.state_dict())
    with torch.no_grad():
        y = net(x)
    err = (y - y_ref).abs().max().item()
    assert err <= 1e-5, f"max abs diff {err:.3g}"


def test_official_key_mapping(official):
    state, _, _, _ = official
    assert "encoder_level1.0.norm1.body.weight" in state  # the official layout really has the wrapper
    mapped = Restormer_arch.map_official_keys(state)
    assert "encoder_level1.0.norm1.weight" in mapped and "latent.0.norm2.bias" in mapped
    assert not any(".body." in k and ".norm" in k for k in mapped)
    assert mapped["down1_2.body.0.weight"] is state["down1_2.body.0.weight"]  # other `body`s untouched


def test_from_official_checkpoint(official, tmp_path):
    state, x, y_ref, meta = official
    torch.save({"params": {k: v.half() for k, v in state.items()}}, tmp_path / "restormer.pth")
    net = Restormer_arch.from_official_checkpoint(tmp_path / "restormer.pth", **meta["constructor_kwargs"])
    with torch.no_grad():
        torch.testing.assert_close(net(x), y_ref, atol=1e-5, rtol=0)
    biasfree = Restormer_config(**{**meta["constructor_kwargs"], "LayerNorm_type": "BiasFree"})
    with pytest.raises(DataError, match=r"unexpected: .*norm1\.bias"):  # WithBias weights, BiasFree net
        Restormer_arch(biasfree).load_official_state_dict({"params": state})
    without_norm_bias = {k: v for k, v in state.items() if not (".norm" in k and k.endswith("bias"))}
    with pytest.raises(DataError, match=r"missing: .*norm1\.bias"):  # BiasFree weights, WithBias net
        Restormer_arch(Restormer_config(**meta["constructor_kwargs"])).load_official_state_dict(without_norm_bias)
    Restormer_arch(biasfree).load_official_state_dict(without_norm_bias)  # and the matching net takes them


def test_odd_size_equals_official_test_padding(official_net):
    """Official test scripts reflect-pad to a multiple of 8 and crop; forward does it itself."""
    x = torch.rand(1, 3, 37, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = official_net(x)
        y_manual = official_net(F.pad(x, (0, 6, 0, 3), mode="reflect"))[..., :37, :42]
    assert y.shape == x.shape
    torch.testing.assert_close(y, y_manual, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset,key", [("default", "default"), ("denoising", "default_BiasFree")])
def test_official_configs_params_and_macs(fixtures_dir, preset, key):
    ref = json.loads((fixtures_dir / "restormer_official_reference.json").read_text())["configs"][key]
    cfg = Restormer_config.official(preset)
    assert {k: getattr(cfg, k) for k in ref["constructor_kwargs"]} == ref["constructor_kwargs"]
    cost = network_cost(lambda: Restormer_arch(Restormer_config.official(preset)), size=256)
    assert cost["params"] == ref["params"]
    assert cost["macs"] == ref["macs"]
    with torch.device("meta"):
        net = Restormer_arch(cfg)
        flops = count_flops(net, torch.empty(1, 3, 256, 256))
    assert {f"aten.{op}": n for op, n in flops.items() if op != "total"} == ref["flops_by_op"]
    assert flops["convolution"] // 2 == ref["macs_convolution_only"]


def test_biasfree_layernorm_formula():
    """Restormer BiasFree_LayerNorm: x / sqrt(var + 1e-5) * weight (population variance, no centring)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, 3, generator=g) + 2
    ln = BiasFreeLayerNorm2d(5)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(5, generator=g))
    x3 = x.flatten(2).transpose(1, 2)  # b (h w) c, as upstream
    ref = x3 / torch.sqrt(x3.var(-1, keepdim=True, unbiased=False) + 1e-5) * ln.weight
    torch.testing.assert_close(ln(x), ref.transpose(1, 2).reshape(x.shape))


def test_presets_and_dual_pixel():
    assert {"default", "denoising", "defocus-dual-pixel"} <= set(RESTORMER_PRESETS)
    net = define_network({"type": "Restormer", "preset": "defocus-dual-pixel", "dim": 8, "num_blocks": [1, 1, 1, 1],
                          "num_refinement_blocks": 1, "heads": [1, 1, 2, 2]}).eval()
    assert net.config.inp_channels == 6 and net.config.dual_pixel_task and hasattr(net, "skip_conv")
    with torch.no_grad():
        y = net(torch.rand(1, 6, 16, 24))
    assert y.shape == (1, 3, 16, 24)
    gray = Restormer_config.official("denoising-gray")
    assert (gray.inp_channels, gray.out_channels, gray.LayerNorm_type) == (1, 1, "BiasFree")
    with pytest.raises(ConfigError, match="did you mean 'denoising'"):
        Restormer_config(preset="denoisng")
    with pytest.raises(ConfigError, match="LayerNorm_type"):
        Restormer_config(LayerNorm_type="withbias")
    with pytest.raises(ConfigError, match="heads"):
        Restormer_config(dim=6, heads=[4, 2, 4, 8])
