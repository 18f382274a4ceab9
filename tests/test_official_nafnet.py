"""NAFNet / NAFNetLocal against the official implementation (megvii-research/NAFNet).

Reference data was produced by the upstream code (see ../shared/fixtures/README.md): a seeded
random width-8 model's weights, an input and the official output; parameter counts and
FlopCounterMode MACs of the four official configurations. TLC is checked against a brute-force
sliding-window mean and against the official kernel-size rule measured on real feature maps.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models.archs import define_network
from models.archs.layers import LayerNorm2d
from models.archs.nafnet_arch import (
    NAFNET_PRESETS,
    LocalAvgPool2d,
    NAFNet_arch,
    NAFNet_config,
    NAFNetLocal_arch,
    NAFNetLocal_config,
)
from utils.errors import ConfigError, DataError
from utils.flops import count_macs, network_cost

REFERENCE_NAMES = {  # our preset -> key in nafnet_official_reference.json
    "GoPro-width32": "GoPro/NAFNet-width32",
    "GoPro-width64": "GoPro/NAFNet-width64",
    "SIDD-width32": "SIDD/NAFNet-width32",
    "SIDD-width64": "SIDD/NAFNet-width64",
}


@pytest.fixture(scope="module")
def official(fixtures_dir):
    tensors = load_file(str(fixtures_dir / "nafnet_official_w8.safetensors"))
    meta = json.loads((fixtures_dir / "nafnet_official_w8.json").read_text())
    state = {k.removeprefix("state_dict."): v.float() for k, v in tensors.items() if k.startswith("state_dict.")}
    return state, tensors["input"], tensors["output"], meta


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return json.loads((fixtures_dir / "nafnet_official_reference.json").read_text())


def official_net(meta, state):
    net = NAFNet_arch(NAFNet_config(**meta["constructor_kwargs"])).eval()
    net.load_official_state_dict(state)
    return net


@pytest.mark.parametrize("channels_last", [False, True])
def test_reproduces_official_output(official, channels_last):
    state, x, y_ref, meta = official
    net = official_net(meta, state)
    assert sum(p.numel() for p in net.parameters()) == meta["parameter_count"]
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = net(x)
    err = (y - y_ref).abs().max().item()
    assert err <= 1e-5, f"max abs diff {err:.3g}"


def test_official_output_at_padded_size(official):
    """A size that is not a multiple of 16 takes the official zero-padding path: the network
    must equal running it on the zero-padded image and cropping."""
    state, x, _, meta = official
    net = official_net(meta, state)
    crop = x[..., :53, :50]
    with torch.no_grad():
        y = net(crop)
        y_manual = net(F.pad(crop, (0, 14, 0, 11)))[..., :53, :50]
    assert y.shape == crop.shape
    torch.testing.assert_close(y, y_manual, atol=1e-6, rtol=0)


def test_from_official_checkpoint_file_formats(official, tmp_path):
    state, x, y_ref, meta = official
    kwargs = meta["constructor_kwargs"]
    ema = {k: v + 0.01 for k, v in state.items()}
    # BasicSR layout with both entries: `params` is what the official test scripts load.
    torch.save({"params": state, "params_ema": ema}, tmp_path / "basicsr.pth")
    # DataParallel-style prefix under `state_dict`.
    torch.save({"state_dict": {f"module.{k}": v.half() for k, v in state.items()}}, tmp_path / "ddp.pth")
    with torch.no_grad():
        for name in ("basicsr.pth", "ddp.pth"):
            net = NAFNet_arch.from_official_checkpoint(tmp_path / name, **kwargs)
            assert not net.training
            torch.testing.assert_close(net(x), y_ref, atol=1e-5, rtol=0)
        net_ema = NAFNet_arch.from_official_checkpoint(tmp_path / "basicsr.pth", param_key="params_ema", **kwargs)
        assert torch.equal(net_ema.intro.weight, ema["intro.weight"])


def test_mismatched_checkpoint_is_a_clear_error(official, tmp_path):
    state, _, _, meta = official
    torch.save({"params": state}, tmp_path / "w8.pth")
    with pytest.raises(DataError, match=r"does not match.*shape mismatch: intro.weight"):
        NAFNet_arch.from_official_checkpoint(tmp_path / "w8.pth", **{**meta["constructor_kwargs"], "width": 16})
    with pytest.raises(DataError, match=r"missing: .*encoders\.0\.1\."):
        NAFNet_arch.from_official_checkpoint(tmp_path / "w8.pth", **{**meta["constructor_kwargs"], "enc_blk_nums": [2, 1, 1, 1]})
    with pytest.raises(DataError, match="no 'params_ema' entry"):
        NAFNet_arch.from_official_checkpoint(tmp_path / "w8.pth", param_key="params_ema", **meta["constructor_kwargs"])
    with pytest.raises(DataError, match="not found"):
        NAFNet_arch.from_official_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("preset", sorted(REFERENCE_NAMES))
def test_official_configs_params_and_macs(preset, reference):
    ref = reference["configs"][REFERENCE_NAMES[preset]]
    cfg = NAFNet_config.official(preset)
    assert {k: getattr(cfg, k) for k in ref["constructor_kwargs"]} == ref["constructor_kwargs"]
    assert cfg.tlc == (ref["network_g_type"] == "NAFNetLocal")
    for arch, key in ((NAFNet_arch, "NAFNet"), (NAFNetLocal_arch, "NAFNetLocal")):
        if key not in ref:
            continue
        config_cls = arch.config_class
        cost = network_cost(lambda: arch(config_cls(preset=preset)), size=256)
        assert cost["params"] == ref[key]["params"]
        assert cost["macs"] == ref[key]["macs"]


def test_presets_from_yaml_mapping_and_rebuild():
    with torch.device("meta"):
        net = define_network({"type": "NAFNet", "preset": "SIDD-width64", "drop_out_rate": 0.1})
        cfg = net.config
        assert (cfg.width, cfg.middle_blk_num, cfg.enc_blk_nums, cfg.drop_out_rate) == (64, 12, [2, 2, 4, 8], 0.1)
        # Explicit keys override the preset; the saved config rebuilds exactly the same network.
        plain = define_network({"type": "NAFNet", "preset": "GoPro-width32", "tlc": False})
        assert not plain.config.tlc and plain.config.enc_blk_nums == [1, 1, 1, 28]
        options = {k: v for k, v in plain.config.to_diff_dict().items() if k in NAFNet_config.option_names()}
        rebuilt = define_network({"type": "NAFNet", **options})
        assert rebuilt.config.to_dict() == plain.config.to_dict()
        assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    assert set(NAFNET_PRESETS) == set(REFERENCE_NAMES)
    with pytest.raises(ConfigError, match="did you mean 'GoPro-width64'"):
        NAFNet_config(preset="gopro-width64x")
    with pytest.raises(ConfigError, match="fast_imp"):
        NAFNet_config(fast_imp=True)
    with pytest.raises(ConfigError, match="as many decoder"):
        NAFNet_config(enc_blk_nums=[1, 1], dec_blk_nums=[1])


def test_layernorm2d_matches_official_formula_without_custom_autograd():
    """Official LayerNorm2d: (x - mean_c) / sqrt(var_c + 1e-6) with the population variance,
    then per-channel affine; ours must match it in value and gradient, natively differentiated."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 6, 5, 7, generator=g) * 3 + 1).requires_grad_()
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=g))
        ln.bias.copy_(torch.randn(6, generator=g))
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    ref = ln.weight.view(1, -1, 1, 1) * (x - mu) / torch.sqrt(var + 1e-6) + ln.bias.view(1, -1, 1, 1)
    y = ln(x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn(y.shape, generator=g)
    grads = torch.autograd.grad((y * w).sum(), [x, ln.weight, ln.bias])
    grads_ref = torch.autograd.grad((ref * w).sum(), [x, ln.weight, ln.bias])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_no_custom_autograd_function_in_graph():
    net = NAFNet_arch(NAFNetLocal_config.tiny()).train()
    y = net(torch.rand(1, 3, 32, 32))
    seen, stack, names = set(), [y.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    assert "NativeLayerNormBackward0" in names
    assert "BackwardCFunction" not in names  # what a custom torch.autograd.Function leaves


# ---------------------------------------------------------------------------------- TLC
def brute_force_local_mean(x, kh, kw):
    """Mean over every kh×kw window inside the map (avg_pool2d, stride 1), edges replicated
    so the result has the input size: the TLC definition, written without summed-area tables."""
    h, w = x.shape[-2:]
    if kh >= h and kw >= w:
        return x.mean(dim=(-2, -1), keepdim=True)
    k1, k2 = min(h, kh), min(w, kw)
    out = F.avg_pool2d(x.double(), (k1, k2), stride=1)
    oh, ow = out.shape[-2:]
    return F.pad(out, ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2), mode="replicate").float()


@pytest.mark.parametrize("shape,kernel", [((19, 23), (6, 9)), ((16, 16), (16, 5)), ((12, 30), (40, 7)),
                                           ((9, 9), (9, 9)), ((9, 9), (20, 20)), ((31, 17), (1, 1))])
def test_local_pool_equals_brute_force(shape, kernel):
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(3))
    y = LocalAvgPool2d(kernel)(x)
    ref = brute_force_local_mean(x, *kernel)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=2e-6, rtol=0)


def test_tlc_kernel_sizes_follow_official_rule():
    """Upstream sets each pooling window lazily on a forward of a ``train_size`` input:
    kernel = (that layer's feature size) * base_size // train_size. Measure the feature sizes
    each pooling layer really sees and compare."""
    cfg = NAFNetLocal_config(width=4, middle_blk_num=1, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1],
                             train_size=[1, 3, 100, 60])  # not multiples of 8: the padded size counts
    net = NAFNetLocal_arch(cfg).eval()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a[0].shape[-2:])))
             for m in net.modules() if isinstance(m, LocalAvgPool2d)]
    with torch.no_grad():
        net(torch.rand(1, 3, 100, 60))
    for h in hooks:
        h.remove()
    assert len(seen) == 7  # 3 encoder + 1 middle + 3 decoder blocks
    base_h, base_w = int(100 * 1.5), int(60 * 1.5)
    for module, (fh, fw) in seen:
        assert module.kernel_size == (fh * base_h // 100, fw * base_w // 60)
    assert {m.kernel_size for m, _ in seen} == {(156, 96), (78, 48), (39, 24), (19, 12)}
    assert NAFNet_config(tlc=True, train_size=[256, 256]).tlc_kernel_sizes() == [
        (384, 384), (192, 192), (96, 96), (48, 48), (24, 24)]


def test_tlc_equals_global_pooling_up_to_base_size_and_differs_beyond(official):
    """At or below 1.5 × train_size every window covers its map, so NAFNetLocal is exactly NAFNet
    (this is why their params/MACs agree at 256²); on a larger image it pools locally."""
    state, _, _, meta = official
    plain = official_net(meta, state)
    local = NAFNetLocal_arch(NAFNetLocal_config(**meta["constructor_kwargs"], train_size=[1, 3, 32, 32])).eval()
    local.load_official_state_dict(state)
    g = torch.Generator().manual_seed(4)
    small = torch.rand(1, 3, 48, 40, generator=g)
    large = torch.rand(1, 3, 96, 80, generator=g) * torch.linspace(0, 1, 80)  # dark left, bright right
    with torch.no_grad():
        assert torch.equal(local(small), plain(small))
        assert (local(large) - plain(large)).abs().max() > 1e-4  # ~100× the float error
    assert count_macs(local, small) == count_macs(plain, small)


def test_tlc_network_equals_brute_force_pooling(official):
    """The whole NAFNetLocal forward equals NAFNet with each block's channel-attention pooling
    swapped for the brute-force local mean at the same window size."""
    state, _, _, meta = official
    local = NAFNetLocal_arch(NAFNetLocal_config(**meta["constructor_kwargs"], train_size=[1, 3, 32, 32])).eval()
    local.load_official_state_dict(state)
    brute = NAFNetLocal_arch(local.config).eval()
    brute.load_state_dict(local.state_dict())

    class Brute(torch.nn.Module):
        def __init__(self, kernel):
            super().__init__()
            self.kernel = kernel

        def forward(self, x):
            return brute_force_local_mean(x, *self.kernel)

    for module in brute.modules():
        if hasattr(module, "sca"):
            module.sca[0] = Brute(module.sca[0].kernel_size)
    x = torch.rand(1, 3, 90, 70, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(local(x), brute(x), atol=1e-5, rtol=0)


def test_local_pool_half_precision_input_keeps_float32_accuracy():
    x = torch.rand(1, 2, 300, 300, generator=torch.Generator().manual_seed(6)) + torch.linspace(0, 10, 300)
    pool = LocalAvgPool2d((64, 48))
    ref = brute_force_local_mean(x.bfloat16().float(), 64, 48)
    y = pool(x.bfloat16())
    assert y.dtype == torch.bfloat16
    # Only the final rounding to bfloat16 (relative 2^-8) remains.
    torch.testing.assert_close(y.float(), ref, atol=0, rtol=2 ** -8)
