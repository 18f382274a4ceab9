"""WF-VAE (models/archs/wfvae_arch.py) against the official image model's outputs on seeded weights
(../shared/fixtures/vae_inpaint), its parameter count, its .ckpt layouts, tiling and latent statistics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.archs.wfvae_arch import (
    WFVAE_arch,
    WFVAE_config,
    newest_checkpoint,
    receptive_radius,
)
from models.losses import build_loss
from utils.tiling import tiled_predict

FIX = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vae_inpaint"
SMALL = FIX / "wfvae_image_official_small"


def fixture():
    from safetensors.torch import load_file

    if not SMALL.with_suffix(".safetensors").is_file():
        pytest.skip("WF-VAE fixture missing")
    tensors = load_file(str(SMALL.with_suffix(".safetensors")))
    meta = json.loads(SMALL.with_suffix(".json").read_text())
    return tensors, meta


def official_state(tensors):
    return {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}


@pytest.fixture(scope="module")
def official():
    tensors, meta = fixture()
    net = WFVAE_arch(WFVAE_config(**meta["constructor_kwargs"])).eval()
    net.load_official_state_dict(official_state(tensors))
    return net, tensors, meta


def maxdiff(a, b):
    return (a - b).abs().max().item()


def test_small_config_keys_shapes_and_count(official):
    net, tensors, meta = official
    state = official_state(tensors)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert sum(p.numel() for p in net.parameters()) == meta["parameter_count"] == 800_700
    assert sum(p.numel() for p in net.encoder.parameters()) == meta["parameter_count_encoder"]
    assert sum(p.numel() for p in net.decoder.parameters()) == meta["parameter_count_decoder"]


def test_published_1024_configuration_by_construction():
    _, meta = fixture()
    pub = meta["published_1024_config"]
    kw = {k: v for k, v in pub["config"].items() if not k.startswith("_")}
    with torch.device("meta"):
        net = WFVAE_arch(WFVAE_config(**kw))
    assert sum(p.numel() for p in net.parameters()) == pub["parameter_count"] == 44_110_516
    assert sum(p.numel() for p in net.encoder.parameters()) == pub["parameter_count_encoder"]
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == pub["state_dict_keys_and_shapes"]
    assert WFVAE_config.official_1024().to_diff_dict()["latent_dim"] == 8


def test_posterior_reconstruction_coefficients_kl_and_wavelet_loss(official):
    net, f, _ = official
    with torch.no_grad():
        enc = net.encode(f["input"])
        dist = enc.latent_dist
        assert maxdiff(net.encoder.wavelet_transform_in(f["input"]), f["input_haar_coeffs"]) <= 1e-6
        assert maxdiff(dist.mean, f["latent_mean"]) <= 1e-5
        assert maxdiff(dist.logvar, f["latent_logvar"]) <= 1e-5
        assert maxdiff(dist.std, f["latent_std"]) <= 1e-5
        for i, c in enumerate(enc.extra_output):
            assert maxdiff(c, f[f"encoder_coeffs.{i}"]) <= 1e-5
        dec = net.decode(f["latent_mean"].contiguous())
        assert maxdiff(dec.sample, f["reconstruction"]) <= 1e-5
        for i, c in enumerate(dec.extra_output):
            assert maxdiff(c, f[f"decoder_coeffs.{i}"]) <= 1e-5
        z = net.decode(f["decode_z_input"])
        assert maxdiff(z.sample, f["decode_z_output"]) <= 1e-5
        for i, c in enumerate(z.extra_output):
            assert maxdiff(c, f[f"decode_z_coeffs.{i}"]) <= 1e-5
        assert maxdiff(dist.mean + dist.std * f["sample_eps"], f["latent_sample"]) <= 1e-5
        kl = build_loss({"type": "KL", "reduction": "sum"})(dist)
        assert abs(kl.item() - f["kl"].item()) <= 1e-5 * max(1.0, abs(f["kl"].item()))
        assert abs(dist.kl().item() - f["kl"].item()) <= 1e-5 * max(1.0, abs(f["kl"].item()))
        wl = build_loss({"type": "Wavelet", "reduction": "sum"})(
            [f["encoder_coeffs.0"], f["encoder_coeffs.1"]], [f["decoder_coeffs.0"], f["decoder_coeffs.1"]])
        assert abs(wl.item() - f["wavelet_loss"].item()) <= 1e-5 * abs(f["wavelet_loss"].item())
        ours = build_loss({"type": "Wavelet", "reduction": "sum"})(enc.extra_output, dec.extra_output)
        assert abs(ours.item() - f["wavelet_loss"].item()) <= 1e-5 * abs(f["wavelet_loss"].item())


def test_forward_is_the_lab_contract(official):
    net, f, _ = official
    x01 = (f["input"] + 1) / 2
    with torch.no_grad():
        y = net(x01)
        assert maxdiff(y, (f["reconstruction"] + 1) / 2) <= 1e-5
        odd = net(x01[..., :61, :59])  # padded to 64 and cropped back
        assert odd.shape == (1, 3, 61, 59) and torch.isfinite(odd).all()
        out = net(x01, return_dict=True)
        assert maxdiff(out.sample, f["reconstruction"]) <= 1e-5 and len(out.encoder_coeffs) == 2
        latent, = net.encode(f["input"], return_dict=False)
        sample, = net.decode(latent.mean, return_dict=False)
        assert maxdiff(sample, f["reconstruction"]) <= 1e-5


# -- official .ckpt layouts (wfvae_ckpt_layout.json) ------------------------------------------------
def training_ckpt(state, ema=None, step=100):
    return {"epoch": 0, "current_step": step,
            "optimizer_state": {"gen_optimizer": {}, "disc_optimizer": {}},
            "state_dict": {"gen_model": dict(state), "disc_model": {}},
            "ema_state_dict": {} if ema is None else ema,
            "scaler_state": {}, "sampler_state": {"epoch": 0, "seed": 0, "current_index": 0}}


def perturbed(state, delta):
    return {k: (v + delta if v.is_floating_point() and not k.endswith((".aa", ".ad", ".da", ".dd")) else v)
            for k, v in state.items()}


def module_ema(state, only=None):
    """EMA dict as the official trainer writes it: parameters only, 'module.' prefix, no buffers."""
    return {f"module.{k}": v for k, v in state.items()
            if not k.endswith((".aa", ".ad", ".da", ".dd")) and (only is None or k.startswith(only))}


def test_ckpt_ema_by_default_plain_on_request(tmp_path, official):
    _net, tensors, meta = official
    gen = official_state(tensors)
    ema = module_ema(perturbed(gen, 0.5))
    path = tmp_path / "checkpoint-100.ckpt"
    torch.save(training_ckpt(gen, ema), path)
    loaded = WFVAE_arch.from_official_checkpoint(path, **meta["constructor_kwargs"])
    w = "decoder.conv_out.weight"
    assert torch.equal(loaded.state_dict()[w], gen[w] + 0.5)  # EMA weights (module. stripped)
    assert torch.equal(loaded.state_dict()["decoder.inverse_wavelet_transform_out.aa"],
                       gen["decoder.inverse_wavelet_transform_out.aa"])  # buffers the EMA lacks
    plain = WFVAE_arch.from_official_checkpoint(path, use_ema=False, **meta["constructor_kwargs"])
    assert torch.equal(plain.state_dict()[w], gen[w])
    torch.save(training_ckpt(gen, {}), path)  # EMA disabled in training: {}
    assert torch.equal(WFVAE_arch.from_official_checkpoint(path, **meta["constructor_kwargs"]).state_dict()[w], gen[w])


def test_ckpt_decoder_only_ema_keeps_the_trained_encoder(tmp_path, official):
    _, tensors, meta = official
    gen = official_state(tensors)
    ema = module_ema(perturbed(gen, 0.25), only="decoder.")
    path = tmp_path / "checkpoint-7.ckpt"
    torch.save(training_ckpt(gen, ema), path)
    net = WFVAE_arch.from_official_checkpoint(path, **meta["constructor_kwargs"])
    sd = net.state_dict()
    assert torch.equal(sd["decoder.conv_in.weight"], gen["decoder.conv_in.weight"] + 0.25)
    assert torch.equal(sd["encoder.conv_in.weight"], gen["encoder.conv_in.weight"])


def test_ckpt_raw_state_dict_and_strictness(tmp_path, official):
    _, tensors, meta = official
    gen = official_state(tensors)
    net = WFVAE_arch(WFVAE_config(**meta["constructor_kwargs"]))
    net.load_official_state_dict({"state_dict": gen})  # state_dict without gen_model
    net.load_official_state_dict({f"module.{k}": v for k, v in gen.items()})  # a bare DDP state dict
    bad = dict(gen)
    bad.pop("encoder.conv_in.weight")
    from utils.errors import DataError

    with pytest.raises(DataError, match="missing"):
        net.load_official_state_dict({"state_dict": {"gen_model": bad}})


def test_newest_checkpoint_by_step_number_not_by_name(tmp_path, official):
    _, tensors, meta = official
    gen = official_state(tensors)
    torch.save(training_ckpt(perturbed(gen, 1.0), step=9000), tmp_path / "checkpoint-9000.ckpt")
    torch.save(training_ckpt(gen, step=10000), tmp_path / "checkpoint-10000.ckpt")
    assert max(p.name for p in tmp_path.glob("*.ckpt")) == "checkpoint-9000.ckpt"  # the official pick
    assert newest_checkpoint(tmp_path).name == "checkpoint-10000.ckpt"
    (tmp_path / "config.json").write_text(json.dumps(meta["config_json_equivalent"]))
    net = WFVAE_arch.from_official_checkpoint(tmp_path)
    assert torch.equal(net.state_dict()["encoder.conv_in.weight"], gen["encoder.conv_in.weight"])


def test_diffusers_folder_layout(tmp_path, official):
    from safetensors.torch import save_file

    _, tensors, meta = official
    gen = official_state(tensors)
    save_file({k: v.contiguous() for k, v in gen.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(meta["config_json_equivalent"]))
    net = WFVAE_arch.from_official_checkpoint(tmp_path)
    with torch.no_grad():
        assert maxdiff(net.decode(tensors["latent_mean"]).sample, tensors["reconstruction"]) <= 1e-5


# -- tiling ---------------------------------------------------------------------------------------------
def local_config(**kw):
    base = {"latent_dim": 4, "base_channels": [8, 16, 16], "encoder_energy_flow_size": 8, "decoder_energy_flow_size": 8,
                "encoder_num_resblocks": 1, "decoder_num_resblocks": 2, "mid_layers_type": ["ResnetBlock2D"]}
    base.update(kw)
    return WFVAE_config(**base)


def perturbed_net(config, seed=0):
    torch.manual_seed(seed)
    net = WFVAE_arch(config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_declared_radius_bounds_the_gradient_footprint():
    net = perturbed_net(local_config())
    r = net.io.receptive_radius
    assert r is not None and receptive_radius(WFVAE_config.tiny()) is None  # attention: unbounded
    size = 2 * r + 64
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    c = size // 2
    net(x)[0, :, c, c].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)) > 0, as_tuple=True)
    assert (ys - c).abs().max() <= r and (xs - c).abs().max() <= r
    assert (ys - c).abs().max() > r // 4  # not a vacuous bound


def test_tiled_decode_equals_whole_without_attention():
    net = perturbed_net(local_config())
    overlap = -(-net.io.receptive_radius // 8) * 8  # the decoder alone looks less far than encoder + decoder
    z = torch.randn(1, 4, 2 * overlap // 8 + 17, 2 * overlap // 8 + 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net.decode(z).sample
        net.enable_tiling(tile_size=2 * overlap, overlap=overlap, blend=0)
        assert net._tiles_needed(*(8 * v for v in z.shape[-2:]))  # several tiles, not one
        tiled = net.decode(z).sample
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() <= 1e-5


def test_tiled_reconstruction_equals_whole_without_attention():
    net = perturbed_net(local_config())
    r = net.io.receptive_radius
    overlap = -(-2 * r // 8) * 8
    x = torch.rand(1, 3, 2 * overlap + 40, 2 * overlap + 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_predict(net, {"lq": x}, net.io, 2 * overlap, overlap, blend=0)
        net.enable_tiling(tile_size=2 * overlap, overlap=overlap, blend=0)
        internal = net(x)
    assert (tiled - whole).abs().max() <= 1e-5
    assert (internal - whole).abs().max() <= 1e-5


# -- latent statistics ------------------------------------------------------------------------------------
def test_normalised_latents_round_trip():
    net = perturbed_net(local_config(scale=[2.0, 0.5, 1.0, 4.0], shift=[0.1, -0.2, 0.0, 1.0]))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        d = net.encode(x).latent_dist
        dn = net.encode(x, normalize=True).latent_dist
        scale = torch.tensor([2.0, 0.5, 1.0, 4.0]).view(1, -1, 1, 1)
        shift = torch.tensor([0.1, -0.2, 0.0, 1.0]).view(1, -1, 1, 1)
        torch.testing.assert_close(dn.mean, (d.mean - shift) * scale)
        torch.testing.assert_close(dn.std, d.std * scale)
        torch.testing.assert_close(net.decode(dn.mean, normalized=True).sample, net.decode(d.mean).sample,
                                   atol=1e-5, rtol=0)
