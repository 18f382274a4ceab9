"""MAT port (models/archs/mat_arch.py) against the official fixtures in
../shared/fixtures/vae_inpaint: partial convolutions and mask-aware transformer stages ≤ 1e-5
(output and updated mask), the parameter count of the official 256 Generator (meta device), the
full Generator with the recorded dropout maps (slow), the restricted unpickler (refuses a
forbidden global, loads a synthetic checkpoint in the official pickle layout), deterministic
eval and bit-exact known pixels at odd sizes."""
import hashlib
import io
import json
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from models.archs import mat_arch as M

FIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "vae_inpaint"


def _load(name):
    if not (FIX / name).is_file():
        pytest.skip("shared fixtures not available")
    from safetensors.torch import load_file

    return load_file(str(FIX / name))


def _case_state(t, case):
    p = f"{case}.state_dict."
    return {k[len(p):]: v for k, v in t.items() if k.startswith(p)}


PCONV = {
    "pconv_k3": {"in_channels": 4, "out_channels": 8, "kernel_size": 3, "activation": "lrelu"},
    "pconv_k3_down2": {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "activation": "lrelu", "down": 2},
    "pconv_k5_linear": {"in_channels": 3, "out_channels": 6, "kernel_size": 5, "activation": "linear"},
}


@pytest.mark.parametrize("case", list(PCONV))
def test_partial_conv_matches_official(case):
    t = _load("mat_official_block.safetensors")
    layer = M.Conv2dLayerPartial(**PCONV[case])
    layer.load_state_dict(_case_state(t, case), strict=True)
    out, out_mask = layer(t[f"{case}.x"], t[f"{case}.mask"])
    torch.testing.assert_close(out, t[f"{case}.out"], atol=1e-5, rtol=0)
    assert torch.equal(out_mask, t[f"{case}.out_mask"])
    torch.testing.assert_close(layer(t[f"{case}.x"])[0], t[f"{case}.out_nomask"], atol=1e-5, rtol=0)


def test_partial_conv_by_hand():
    """k²/valid-count scaling and the any-valid mask update on a 3×3 example."""
    layer = M.Conv2dLayerPartial(1, 1, 3, bias=False, activation="linear")
    with torch.no_grad():
        layer.conv.weight.fill_(3.0)  # weight_gain 1/3: every tap weighs 1
    x = torch.ones(1, 1, 3, 3)
    mask = torch.zeros(1, 1, 3, 3)
    mask[0, 0, 0, 0] = 1
    out, new = layer(x, mask)
    # centre: 9 input pixels (x not masked) × 9/1 valid; corner (2,2): no valid pixel in its window
    assert out[0, 0, 1, 1].item() == pytest.approx(9 * 9, rel=1e-6)
    assert out[0, 0, 0, 0].item() == pytest.approx(4 * 9, rel=1e-6)  # zero padding: 4 pixels
    assert out[0, 0, 2, 2].item() == 0 and new[0, 0, 2, 2].item() == 0 and new[0, 0, 1, 1].item() == 1


@pytest.mark.parametrize("case", ["swin_stage", "swin_stage_merge"])
def test_transformer_stage_matches_official(case):
    t = _load("mat_official_block.safetensors")
    merge = M.PatchMerging(24, 24, down=2) if case.endswith("merge") else None
    layer = M.BasicLayer(24, [16, 16], 2, 2, 8, downsample=merge)
    layer.load_state_dict(_case_state(t, case), strict=True)
    size = (32, 32) if merge else (16, 16)
    x, mask = t[f"{case}.x"], t[f"{case}.mask"]
    with torch.no_grad():
        if merge:
            xm, _sm, mm = layer.downsample(x, size, mask)
            torch.testing.assert_close(xm, t[f"{case}.after_downsample"], atol=1e-5, rtol=0)
            assert torch.equal(mm, t[f"{case}.after_downsample_mask"])
            xb, mb = xm, mm
        else:
            xb, mb = x, mask
        for i, blk in enumerate(layer.blocks):
            xb, mb = blk(xb, (16, 16), mb)
            torch.testing.assert_close(xb, t[f"{case}.block{i}_out"], atol=1e-5, rtol=0)
            assert torch.equal(mb, t[f"{case}.block{i}_out_mask"])
        out, out_size, out_mask = layer(x, size, mask)
        assert out_size == (16, 16)
        torch.testing.assert_close(out, t[f"{case}.out"], atol=1e-5, rtol=0)
        assert torch.equal(out_mask, t[f"{case}.out_mask"])
        torch.testing.assert_close(layer(x, size, None)[0], t[f"{case}.out_nomask"], atol=1e-5, rtol=0)


def test_hole_features_do_not_reach_windows_with_a_valid_token():
    """Perturbing hole tokens leaves the output of non-shifted mask-aware attention unchanged
    in every window with at least one valid token (hole keys get −100 on their logits)."""
    torch.manual_seed(0)
    blk = M.SwinTransformerBlock(8, (8, 8), 2, window_size=4, shift_size=0).eval()
    x = torch.randn(1, 64, 8)
    mask = torch.ones(1, 64, 1)
    mask[0, :20] = 0
    x2 = x.clone()
    x2[0, :20] += 5 * torch.randn(20, 8)
    with torch.no_grad():
        y1, m1 = blk(x, (8, 8), mask)
        y2, _ = blk(x2, (8, 8), mask)
    valid_tokens = (mask[0, :, 0] > 0)
    # the shortcut passes each token's own features on: compare the valid (unperturbed) tokens
    diff = (y1 - y2).abs()[0, valid_tokens].max().item()
    assert diff < 1e-3  # softmax weights of −100 keys are e^−100: below float resolution
    assert torch.equal(m1.squeeze(), torch.ones(64))  # every window had a valid token


def test_official_parameter_count_on_meta():
    with torch.device("meta"):
        net = M.MAT_arch(M.MAT_config(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3))
    assert sum(p.numel() for p in net.parameters()) == 59_779_834
    assert len(net.state_dict()) == 442
    assert sum(b.numel() for b in net.buffers()) == 1_224_336
    if (FIX / "mat_generator256_regen.json").is_file():
        keys = [e["key"] for e in json.loads((FIX / "mat_generator256_regen.json").read_text())["weight_recipe"]["entries"]]
        assert keys == list(net.state_dict())
        shapes = {e["key"]: tuple(e["shape"]) for e in
                  json.loads((FIX / "mat_generator256_regen.json").read_text())["weight_recipe"]["entries"]}
        assert all(tuple(v.shape) == shapes[k] for k, v in net.state_dict().items())


@pytest.mark.slow
def test_full_generator_matches_official_with_recorded_dropout():
    t = _load("mat_generator256_regen.safetensors")
    entries = json.loads((FIX / "mat_generator256_regen.json").read_text())["weight_recipe"]["entries"]
    net = M.MAT_arch(M.MAT_config()).eval()
    own = net.state_dict()
    state = {}
    for e in entries:
        if e["regenerated"]:
            rs = np.random.RandomState(e["seed"])
            v = np.asarray(e["offset"] + e["scale"] * rs.uniform(-1.0, 1.0, size=tuple(e["shape"])),
                           dtype=np.float64).astype(np.float32)
            state[e["key"]] = torch.from_numpy(v)
        else:  # constructor-made buffers: our construction must give the official bytes
            v = own[e["key"]].numpy()
            state[e["key"]] = own[e["key"]]
        assert hashlib.sha256(np.ascontiguousarray(v, dtype="<f4").tobytes()).hexdigest() == e["sha256_float32"], e["key"]
    net.load_official_state_dict(state)
    maps = (t["dropout_first_stage"].float(), t["dropout_synthesis"].float())
    with torch.no_grad():
        ws = net.mapping(t["z"], None)
        out, stg1 = net.generator_forward(t["image"], t["mask"], t["z"], None, 1, None, "const", True, maps)
    torch.testing.assert_close(ws, t["ws"], atol=1e-5, rtol=0)
    for got, ref in ((stg1, t["output_stage1"]), (out, t["output"])):
        # |x| reaches 23 with random weights; float32 reimplementations differ by ~1e-5 relative
        rel = ((got - ref).abs() / ref.abs().amax()).max().item()
        assert rel <= 1e-4, rel
        assert (got - ref).abs().mean().item() <= 2e-5  # 0.6e-5 to 1.05e-5 measured (1 or 2 threads)
    known = t["mask"].expand_as(out) > 0.5
    assert torch.equal(out[known], t["image"][known])


def test_eval_is_deterministic_and_dropout_maps_matter():
    torch.manual_seed(0)
    net = M.MAT_arch(M.MAT_config.tiny()).eval()
    x = net.example_inputs(1, 128, torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = net(**x), net(**x)
        assert torch.equal(a, b)
        img, m = x["lq"] * 2 - 1, x["mask"]
        z = torch.zeros(1, net.config.z_dim)
        ones = (torch.ones(1, 256, 12), torch.ones(1, 512 // 32, 16, 16))  # 16² tokens × dim; nf(4) channels
        zeros = (torch.zeros_like(ones[0]), torch.zeros_like(ones[1]))
        y1 = net.generator_forward(img, m, z, dropout_maps=ones, noise_mode="const")
        y0 = net.generator_forward(img, m, z, dropout_maps=zeros, noise_mode="const")
        assert not torch.equal(y1, y0)
        assert torch.equal(y1, net.generator_forward(img, m, z, dropout_maps=ones, noise_mode="const"))


@pytest.mark.parametrize("size", [(37, 41), (128, 130), (64, 64)])
def test_known_pixels_bit_exact_at_odd_sizes(size):
    torch.manual_seed(0)
    net = M.MAT_arch(M.MAT_config.tiny()).eval()
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 3, *size, generator=g)
    mask = (torch.rand(2, 1, *size, generator=g) > 0.4).float()
    with torch.no_grad():
        out, stg1 = net(gt * mask, mask, return_stg1=True)
    known = mask.expand_as(out) > 0.5
    assert out.shape == gt.shape
    assert torch.equal(out[known], (gt * mask)[known]) and torch.equal(stg1[known], (gt * mask)[known])


# -- restricted unpickler ------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run > /dev/null",))


def test_restricted_unpickler_refuses_forbidden_globals(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(M.UnsafePickleError, match="posix.system|os.system|nt.system"):
        M.restricted_load(path)
    with pytest.raises(M.UnsafePickleError):
        M.restricted_load(io.BytesIO(pickle.dumps(print)))


def _official_layout_pickle(net: torch.nn.Module, monkeypatch) -> bytes:
    """Pickle ``net`` the way StyleGAN2-ADA's ``torch_utils.persistence`` does: every MAT
    class as ``_reconstruct_persistent_obj(meta)`` with its source text and ``__dict__``;
    torch.nn containers as themselves."""
    pkg, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # the official one would exec meta["module_src"]
        raise AssertionError("never called when dumping")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = pers
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", pers)

    class Persistent:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def convert(module, name=None):
        state = {k: v for k, v in module.__dict__.items() if k not in ("config", "_modules") and not callable(v)}
        state["_modules"] = OrderedDict((n, convert(c)) for n, c in module._modules.items())
        if type(module).__module__.startswith("torch.nn"):
            clone = type(module).__new__(type(module))
            clone.__dict__.update(state)
            return clone
        src = "import os\nos.system('echo the embedded source must never run')\n"
        return Persistent({"type": "class", "version": 4, "module_src": src,
                           "class_name": name or type(module).__name__, "state": state})

    gen = Persistent({"type": "class", "version": 4, "module_src": "", "class_name": "networks.mat.Generator",
                      "state": {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "training": False,
                                "_modules": OrderedDict(synthesis=convert(net.synthesis),
                                                        mapping=convert(net.mapping)),
                                "z_dim": net.config.z_dim, "w_dim": np.float64(net.config.w_dim)}})
    data = {"G": gen, "D": None, "G_ema": gen, "augment_pipe": None, "training_set_kwargs": {"resolution": 128}}
    return pickle.dumps(data, protocol=4)


def test_official_pkl_layout_loads_strictly(tmp_path, monkeypatch):
    torch.manual_seed(1)
    kwargs = dict(M.MAT_config.tiny().to_diff_dict())
    kwargs = {k: v for k, v in kwargs.items() if k in M.MAT_config.option_names()}
    source = M.MAT_arch(M.MAT_config(**kwargs)).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "official.pkl"
    path.write_bytes(_official_layout_pickle(source, monkeypatch))
    monkeypatch.delitem(sys.modules, "torch_utils")
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    state = M.official_pkl_state_dict(path)
    assert list(state) == list(source.state_dict())
    loaded = M.MAT_arch.from_official_checkpoint(path, **kwargs)
    x = source.example_inputs(1, 40, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(**x), source(**x))
    assert "torch_utils" not in sys.modules  # nothing was imported or executed
