"""IART against the official kai422/IART fixtures (implicit alignment alone, small and strong
networks at 66×68 through the window padding), the published parameter count by construction,
the 567,136 never-used parameters (kept, frozen, without effect), strict official loading and
the float32 sampling grid under autocast."""
from __future__ import annotations

import pytest
import torch

from models.archs.iart_arch import IART_arch, IART_config, ImplicitWarpModule
from utils.errors import DataError
from utils.flow import flow_warp
from video_fixtures import full_state_dict, load, meta, state_dict


def _kwargs(name):
    return {k: v for k, v in meta(name)["constructor_kwargs"].items() if k != "spynet_path"}


def test_implicit_warp_matches_official():
    t = load("iart_implicit_warp_official")
    m = ImplicitWarpModule(dim=120, pe_dim=120, num_heads=6, pe_temp=0.01).eval()
    m.load_state_dict(state_dict(t), strict=True)
    assert sum(p.numel() for p in m.parameters()) == 43_560
    with torch.no_grad():
        out = m(t["input_feat_prop"], t["input_feat_current"], t["input_flow"].permute(0, 2, 3, 1))
    torch.testing.assert_close(out, t["output"], atol=1e-4, rtol=0)


def test_implicit_warp_is_float32_under_autocast():
    t = load("iart_implicit_warp_official")
    m = ImplicitWarpModule(dim=120, pe_dim=120, num_heads=6, pe_temp=0.01).eval()
    m.load_state_dict(state_dict(t), strict=True)
    args = (t["input_feat_prop"], t["input_feat_current"], t["input_flow"].permute(0, 2, 3, 1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*args)
    # bf16 matmuls cost ~1e-2; a bf16 grid (offsets quantised, sines of ~270 rad) costs O(1).
    assert (out.float() - t["output"]).abs().max() < 0.1


def test_implicit_warp_taps_are_the_bilinear_neighbours():
    """With values = the feature and attention replaced by bilinear weights, the gather equals
    border-padded bilinear warping (the tap indices and clamping are flow_warp's)."""
    g = torch.Generator().manual_seed(2)
    n, c, h, w = 1, 4, 9, 11
    y = torch.randn(n, c, h, w, generator=g)
    flow = (torch.rand(n, h, w, 2, generator=g) - 0.5) * 8
    m = ImplicitWarpModule(dim=c, pe_dim=c, num_heads=1)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    py, px = gy + flow[..., 1], gx + flow[..., 0]
    fy, fx = py.floor(), px.floor()
    out = torch.zeros(n, c, h, w)
    for (oy, ox) in m.window_idx_offset.tolist():
        iy = (fy + oy).clamp(0, h - 1).long()
        ix = (fx + ox).clamp(0, w - 1).long()
        wgt = (1 - (py - fy - oy).abs()) * (1 - (px - fx - ox).abs())
        out += y[0][:, iy[0], ix[0]][None] * wgt
    torch.testing.assert_close(out, flow_warp(y, flow, padding_mode="border"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,atol", [("iart_official_small", 1e-5), ("iart_official_small_strong", 1e-4)])
def test_iart_matches_official(name, atol):
    t, full = full_state_dict(name)
    net = IART_arch(IART_config(**_kwargs(name))).eval()
    net.load_official_state_dict(full)
    assert sum(p.numel() for p in net.parameters()) == 1_752_959
    with torch.no_grad():
        out = net(t["input"])
    torch.testing.assert_close(out, t["output"], atol=atol, rtol=0)


def test_iart_published_parameter_count_and_unused_parameters():
    with torch.device("meta"):
        net = IART_arch(IART_config.official_reds())
    assert sum(p.numel() for p in net.parameters()) == 13_410_503
    assert len(net.state_dict()) == 1162
    unused = net.unused_parameter_names()
    assert sum(p.numel() for k, p in net.named_parameters() if k in unused) == 567_136
    assert all(not p.requires_grad for k, p in net.named_parameters() if k in unused)
    assert sum(p.numel() for k, p in net.named_parameters() if k.startswith("implicit_warp")) == 43_560


def test_iart_unused_parameters_do_not_affect_output_or_get_gradients():
    name = "iart_official_small"
    assert set(meta(name)["params_not_affecting_output"]["names"]) == IART_arch(IART_config(**_kwargs(name))).unused_parameter_names()
    torch.manual_seed(0)
    net = IART_arch(IART_config.tiny()).train()
    lq = torch.rand(1, 3, 3, 16, 16)
    torch.manual_seed(1)
    y = net(lq)
    y.square().mean().backward()
    for k, p in net.named_parameters():
        if k in net.unused_parameter_names():
            assert p.grad is None
        else:
            assert p.grad is not None, k
    with torch.no_grad():
        for k, p in net.named_parameters():
            if k in net.unused_parameter_names():
                p.add_(torch.randn_like(p))
    torch.manual_seed(1)  # same drop-path draws
    assert torch.equal(net(lq), y)


def test_iart_official_checkpoint_strict(tmp_path):
    _, full = full_state_dict("iart_official_small")
    torch.save({"params": full}, tmp_path / "iart.pth")
    net = IART_arch.from_official_checkpoint(tmp_path / "iart.pth", **_kwargs("iart_official_small"))
    assert isinstance(net, IART_arch) and not net.training
    with pytest.raises(DataError):  # strict: an unused conv missing is an error too
        net.load_official_state_dict({k: v for k, v in full.items() if "conv_first_feat" not in k})


@pytest.mark.parametrize("arch", ["IART", "BasicVSRPlusPlus"])
def test_output_frame_depends_on_frames_before_and_after(arch):
    from models.archs import define_network
    from models.archs.basicvsrpp_arch import BasicVSRPlusPlus_config

    torch.manual_seed(0)
    cfg = IART_config.tiny() if arch == "IART" else BasicVSRPlusPlus_config.tiny()
    net = define_network({"type": arch, **{k: v for k, v in cfg.to_diff_dict().items()
                                           if k in type(cfg).option_names()}}).eval()
    lq = torch.rand(1, 5, 3, 16, 16, requires_grad=True)
    net(lq)[:, 2].sum().backward()
    per_frame = lq.grad.abs().sum(dim=(0, 2, 3, 4))
    assert (per_frame > 0).all(), per_frame
