"""HAT port against the official code's output (../shared/fixtures/sr/hat_official_small.*) and the
published parameter counts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.archs.hat_arch import HAT_arch, HAT_config

FIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "sr"


def _fixture():
    from safetensors.torch import load_file

    meta = json.loads((FIX / "hat_official_small.json").read_text())
    tensors = load_file(str(FIX / "hat_official_small.safetensors"))
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    kwargs = {k: v for k, v in meta["constructor_kwargs"].items() if k != "norm_layer"}
    return meta, tensors, state, kwargs


def test_official_output_aligned_and_unaligned():
    meta, t, state, kwargs = _fixture()
    net = HAT_arch(HAT_config(**kwargs))
    net.load_official_state_dict(state)
    net.eval()
    assert sum(p.numel() for p in net.parameters()) == meta["parameter_count"] == 415_801
    assert len(net.state_dict()) == len(state) == 130
    with torch.no_grad():
        out = net(t["input"])
        assert out.shape == t["output"].shape
        assert (out - t["output"]).abs().max() < 1e-5
        # 37×45 is not a multiple of the window: padded to 40×48, run, cropped to 74×90
        out = net(t["input_unaligned"])
        assert out.shape == t["output_unaligned"].shape
        assert (out - t["output_unaligned"]).abs().max() < 1e-5


def test_from_official_checkpoint(tmp_path):
    from safetensors.torch import save_file

    _, t, state, kwargs = _fixture()
    path = tmp_path / "hat.pth"
    torch.save({"params_ema": state}, path)
    net = HAT_arch.from_official_checkpoint(path, param_key="params_ema", **kwargs)
    with torch.no_grad():
        assert (net(t["input"]) - t["output"]).abs().max() < 1e-5
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "hat.safetensors"))
    net = HAT_arch.from_official_checkpoint(tmp_path / "hat.safetensors", **kwargs)
    with torch.no_grad():
        assert (net(t["input"]) - t["output"]).abs().max() < 1e-5


def test_wrong_checkpoint_is_refused():
    from utils.errors import DataError

    _, _, state, kwargs = _fixture()
    net = HAT_arch(HAT_config(**{**kwargs, "embed_dim": 60, "num_heads": [3, 3]}))
    with pytest.raises(DataError, match="shape mismatch"):
        net.load_official_state_dict(state)


@pytest.mark.parametrize("preset,count,elements,keys", [
    ("HAT-S", 9_621_183, 9_834_175, 864), ("HAT", 20_772_507, 20_985_499, 864), ("HAT-L", 40_846_575, 41_059_567, 1_710)])
def test_published_parameter_counts(preset, count, elements, keys):
    with torch.device("meta"):
        net = HAT_arch(HAT_config(preset=preset))
    assert sum(p.numel() for p in net.parameters()) == count
    sd = net.state_dict()
    assert len(sd) == keys
    assert sum(v.numel() for v in sd.values()) == elements


def test_preset_keys_are_overridable():
    c = HAT_config(preset="HAT-S", upscale=2)
    assert (c.embed_dim, c.window_size, c.upscale, c.compress_ratio) == (144, 16, 2, 24)
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="HAT-M"):
        HAT_config(preset="HAT-M")


def test_upscale_1_keeps_size_and_trains():
    net = HAT_arch(HAT_config(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=1,
                              squeeze_factor=4, drop_path_rate=0.0))
    x = torch.rand(2, 3, 13, 10, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
