"""Every registered network, tested the day it lands (timm-style, parametrised over the registry).

What a network returns is read from its ``io`` (``ArchIO``), never assumed: for each ``{Type}``
in ``models/archs`` its ``tiny()`` config builds; the output shape follows from kind, scale and
frames; gradients reach the main input and every trainable parameter; ``save_pretrained`` /
``from_pretrained`` (and ``AutoModel.from_pretrained``) reproduce the outputs bit for bit; the
config alone rebuilds the same architecture; two forwards are identical (no hidden randomness in
eval mode); channels_last gives the same output; a network with a bounded receptive radius gives
the whole-input output when tiled with the overlap that radius asks for, and not with less.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from models.archs import LEGACY_MODEL_TYPES, define_network, get_network_classes, network_names
from models.archs.arch_util import KINDS, LAYOUTS, ArchIO, from_sample_range, to_sample_range
from utils.tiling import tiled_predict

NAMES = network_names()


def build(name):
    config_cls, arch_cls = get_network_classes(name)
    torch.manual_seed(0)
    return arch_cls(config_cls.tiny()).eval()


def inputs_for(net, size=32):
    return net.example_inputs(batch_size=2, size=size, generator=torch.Generator().manual_seed(1))


def expected_shape(net, inputs) -> tuple[int, ...]:
    """The output shape the network's ``io`` promises for these inputs."""
    io = net.io
    x = inputs[io.main_input]
    b, (h, w) = x.shape[0], x.shape[-2:]
    c_in = x.shape[-3]
    c_out = getattr(net.config, "out_channels", c_in)
    s = io.scale
    if io.kind in ("image", "denoiser"):
        return (b, c_out, h * s, w * s)
    if io.kind == "clip2clip":
        return (b, x.shape[1], c_out, h * s, w * s)
    if io.kind == "clip2frame":
        return (b, c_out, h * s, w * s)
    if io.kind == "critic":
        return (b, 1, math.ceil(h / s), math.ceil(w / s))
    if io.kind == "autoencoder":  # forward = reconstruction
        return (b, c_in, h, w)
    raise AssertionError(f"unknown kind {io.kind}")


def test_registry_not_empty_and_every_kind_has_a_toy():
    assert {"NAFNet", "UNet", "ToySR", "ToyClipFrame", "ToyClipClip", "ToyCritic", "ToyAutoencoder",
            "ToyDenoiser"} <= set(NAMES)
    kinds = {build(n).io.kind for n in NAMES}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("name", NAMES)
def test_io_is_declared_and_consistent(name):
    net = build(name)
    io = net.io
    assert isinstance(io, ArchIO) and io.kind in KINDS
    assert tuple(net.input_keys) == tuple(io.inputs) == io.input_keys
    assert set(io.inputs.values()) <= set(LAYOUTS)
    assert set(inputs_for(net)) == set(io.inputs)
    # Config ids: restorelab_<snake name>, e.g. NAFNetLocal -> restorelab_nafnet_local.
    model_type = net.config.model_type
    assert model_type.startswith("restorelab_") and model_type == model_type.lower()
    assert model_type.replace("_", "") == "restorelab" + name.lower()


def test_config_ids_are_unique():
    ids = [build(n).config.model_type for n in NAMES]
    assert len(set(ids)) == len(ids)
    assert not set(LEGACY_MODEL_TYPES) & set(ids)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_determinism(name):
    net = build(name)
    for size in (32, 37):  # an odd size must work too
        inputs = inputs_for(net, size)
        with torch.no_grad():
            y1 = net(**inputs)
            y2 = net(**inputs)
        assert tuple(y1.shape) == expected_shape(net, inputs)
        assert torch.isfinite(y1).all()
        assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", NAMES)
def test_backward(name):
    net = build(name).train()
    inputs = inputs_for(net)
    main = net.io.main_input
    inputs[main].requires_grad_(True)
    net(**inputs).square().mean().backward()
    grad = inputs[main].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    from transformers import AutoModel

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
    auto = AutoModel.from_pretrained(tmp_path).eval()
    assert type(auto) is arch_cls
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), y)
        assert torch.equal(auto(**inputs), y)


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_architecture(name):
    net = build(name)
    config_cls, _ = get_network_classes(name)
    options = {k: v for k, v in net.config.to_diff_dict().items() if k in config_cls.option_names()}
    rebuilt = define_network({"type": name, **options}).eval()
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in net.state_dict().items()]
    assert rebuilt.io == net.io
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


# -- autoencoders: the diffusers API --------------------------------------------------------------------
AUTOENCODERS = [n for n in NAMES if build(n).io.kind == "autoencoder"]


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_encode_decode_shapes(name):
    net = build(name)
    f = net.io.scale
    x = inputs_for(net, size=8 * f)["lq"]
    with torch.no_grad():
        dist = net.encode(to_sample_range(x, net.io)).latent_dist
        z = dist.sample(generator=torch.Generator().manual_seed(0))
        assert dist.mean.shape == dist.logvar.shape == z.shape
        assert z.shape[0] == x.shape[0] and z.shape[-2:] == (8, 8)
        assert not torch.equal(z, dist.mean)  # a sample, not the mean
        assert torch.equal(dist.sample(generator=torch.Generator().manual_seed(0)), z)
        out = net.decode(dist.mean).sample
        assert out.shape == x.shape
        # forward = reconstruction from the mean, in [0, 1] (decode works in io.sample_range)
        assert torch.equal(from_sample_range(out, net.io), net(x))


# -- tiling: tiled = whole for every network with a bounded receptive field -----------------------------
BOUNDED = [n for n in NAMES if build(n).io.receptive_radius is not None and build(n).io.kind != "critic"]


def tiled_case(net):
    """Inputs big enough for several tiles and a tight overlap: exactly 2 × the declared radius
    (rounded up to the latent grid for autoencoders), no blend."""
    io = net.io
    grid = io.scale if io.kind == "autoencoder" else 1
    overlap = -(-2 * io.receptive_radius // grid) * grid
    patch = max(2 * overlap, 12)
    patch = -(-patch // grid) * grid
    inputs = net.example_inputs(batch_size=1, size=0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    height, width = 3 * patch - grid * 3 if grid > 1 else 3 * patch - 5, 2 * patch + 4 * grid
    big = {}
    for k, v in inputs.items():  # regenerate every per-pixel input at the big size
        if v.dim() >= 4:
            big[k] = torch.rand(*v.shape[:-2], height, width, generator=g)
        else:
            big[k] = v
    return big, patch, overlap


@pytest.mark.parametrize("name", BOUNDED)
def test_tiled_equals_whole_with_the_declared_radius(name):
    net = build(name)
    with torch.no_grad():  # random weights far from identity, so every tap matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inputs, patch, overlap = tiled_case(net)
    io = net.io
    with torch.no_grad():
        whole = net(**inputs)
        kw = {"frames_window": None} if io.kind == "clip2clip" else {}  # space here; time below
        tiled = tiled_predict(net, inputs, io, patch, overlap, blend=0, **kw)
        assert tiled.shape == whole.shape
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
        if io.kind == "autoencoder":
            return  # the radius bounds the pixel dependency; on the latent grid less margin may do
        # The radius is not overstated: one pixel less of margin shows.
        less = tiled_predict(net, inputs, io, patch, overlap - 2, blend=0, **kw)
        assert (less - whole).abs().max() > 1e-4


def test_clip_net_is_tiled_in_time():
    """The clip→clip toy on 13 frames, windows of 4r frames overlapping by 2r (3 windows) and
    spatial tiles = the whole clip; 2 frames less of overlap shows."""
    net = build("ToyClipClip")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    r = net.io.temporal_radius
    clip = torch.rand(1, 13, 3, 20, 23, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = net(clip)
        tiled = tiled_predict(net, {"lq": clip}, net.io, 12, 2 * net.io.receptive_radius, frames_window=4 * r,
                              frames_overlap=2 * r, blend=0)
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
        short = tiled_predict(net, {"lq": clip}, net.io, 12, 2 * net.io.receptive_radius, frames_window=4 * r,
                              frames_overlap=2 * r - 2, blend=0)
        assert (short - whole).abs().max() > 1e-4


def test_critic_is_not_tiled():
    net = build("ToyCritic")
    with pytest.raises(ValueError, match="critic"):
        tiled_predict(net, inputs_for(net), net.io, 16, 4)


# -- config ids: folders saved under the old ids still load ---------------------------------------------
@pytest.mark.parametrize("old_id", sorted(LEGACY_MODEL_TYPES))
def test_folder_saved_with_a_legacy_id_still_loads(old_id, tmp_path):
    from transformers import AutoModel

    name = next(n for n in NAMES if build(n).config.model_type == LEGACY_MODEL_TYPES[old_id])
    net = build(name)
    net.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = old_id
    (tmp_path / "config.json").write_text(json.dumps(config))
    inputs = inputs_for(net)
    _, arch_cls = get_network_classes(name)
    for loaded in (AutoModel.from_pretrained(tmp_path), arch_cls.from_pretrained(tmp_path)):
        assert type(loaded) is arch_cls and loaded.config.model_type == LEGACY_MODEL_TYPES[old_id]
        with torch.no_grad():
            assert torch.equal(loaded.eval()(**inputs), net(**inputs))
    resaved = tmp_path / "resaved"
    loaded.save_pretrained(resaved)
    assert json.loads((resaved / "config.json").read_text())["model_type"] == LEGACY_MODEL_TYPES[old_id]


def test_auto_classes_need_no_arch_import(tmp_path):
    """``import models.archs`` alone lets AutoModel load a saved folder (lazy stand-ins): a fresh
    process that has imported no arch module loads a DnCNN folder as the real DnCNN_arch."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    define_network({"type": "DnCNN", "width": 4, "depth": 3}).save_pretrained(tmp_path)
    code = ("import sys\nimport models.archs\n"
            "assert not [m for m in sys.modules if m.startswith('models.archs.')], 'an arch module was imported'\n"
            "from transformers import AutoModel\n"
            "m = AutoModel.from_pretrained(sys.argv[1])\nprint(type(m).__name__, m.io.receptive_radius)\n"
            "print(sorted(m for m in sys.modules if m.startswith('models.archs.')))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first.split() == ["DnCNN_arch", "3"]
    assert second == "['models.archs.arch_util', 'models.archs.dncnn_arch']"  # only the one network


def test_register_auto_classes_registers_every_network():
    from transformers import AutoConfig, AutoModel

    from models.archs import register_auto_classes

    status = register_auto_classes()
    assert set(status) == set(NAMES) and set(status.values()) == {"ok"}
    for name in NAMES:
        config_cls, arch_cls = get_network_classes(name)
        options = {k: v for k, v in config_cls.tiny().to_diff_dict().items() if k in config_cls.option_names()}
        config = AutoConfig.for_model(config_cls.model_type, **options)
        assert type(config) is config_cls
        assert type(AutoModel.from_config(config)) is arch_cls
