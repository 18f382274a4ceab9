"""BasicVSR++ against the official BasicSR fixtures (small and strong weights), its published
parameter count by construction, strict official loading, and BasicVSR's recurrence."""
from __future__ import annotations

import pytest
import torch

from models.archs.basicvsr_arch import BasicVSR_arch, BasicVSR_config
from models.archs.basicvsrpp_arch import BasicVSRPlusPlus_arch, BasicVSRPlusPlus_config
from utils.errors import DataError
from video_fixtures import full_state_dict, meta


def _small(name):
    tensors, full = full_state_dict(name)
    kw = {k: v for k, v in meta(name)["constructor_kwargs"].items() if k != "spynet_path"}
    net = BasicVSRPlusPlus_arch(BasicVSRPlusPlus_config(**kw)).eval()
    net.load_official_state_dict(full)
    return net, tensors


@pytest.mark.parametrize("name,atol", [("basicvsrpp_official_small", 1e-5), ("basicvsrpp_official_small_strong", 1e-4)])
def test_basicvsrpp_matches_official(name, atol):
    net, t = _small(name)
    assert sum(p.numel() for p in net.parameters()) == 1_952_255
    with torch.no_grad():
        out = net(t["input"])
        if "aux.flows_forward" in t:
            ff, fb = net.compute_flow(t["input"])
            torch.testing.assert_close(ff, t["aux.flows_forward"], atol=1e-5, rtol=0)
            torch.testing.assert_close(fb, t["aux.flows_backward"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out, t["output"], atol=atol, rtol=0)


def test_basicvsrpp_published_parameter_count():
    with torch.device("meta"):
        net = BasicVSRPlusPlus_arch(BasicVSRPlusPlus_config(mid_channels=64, num_blocks=7, max_residue_magnitude=10,
                                                            is_low_res_input=True, cpu_cache_length=100))
    assert sum(p.numel() for p in net.parameters()) == 7_322_927
    assert sum(p.numel() for p in net.spynet.parameters()) == 1_440_300
    assert len(net.state_dict()) == 274


def test_basicvsrpp_official_checkpoint_strict(tmp_path):
    _, full = full_state_dict("basicvsrpp_official_small")
    torch.save({"params": full}, tmp_path / "bvsrpp.pth")
    kw = {k: v for k, v in meta("basicvsrpp_official_small")["constructor_kwargs"].items() if k != "spynet_path"}
    net = BasicVSRPlusPlus_arch.from_official_checkpoint(tmp_path / "bvsrpp.pth", **kw)
    assert not net.training
    with pytest.raises(DataError):
        net.load_official_state_dict({k: v for k, v in full.items() if "conv_offset.6" not in k})


def test_basicvsrpp_mirror_extended_clip_reuses_backward_flows():
    torch.manual_seed(0)
    net = BasicVSRPlusPlus_arch(BasicVSRPlusPlus_config.tiny()).eval()
    half = torch.rand(1, 2, 3, 32, 32)
    clip = torch.cat([half, half.flip(1)], dim=1)
    with torch.no_grad():
        ff, fb = net.compute_flow(clip)
        ff_direct = net.spynet(clip[:, 1:].flatten(0, 1), clip[:, :-1].flatten(0, 1)).view_as(ff)
    torch.testing.assert_close(ff, ff_direct)


def test_basicvsr_is_bidirectional_and_zero_flow_variant_has_no_spynet():
    torch.manual_seed(0)
    net = BasicVSR_arch(BasicVSR_config(num_feat=8, num_block=1)).eval()
    lq = torch.rand(1, 5, 3, 16, 16, requires_grad=True)
    net(lq)[:, 2].sum().backward()
    per_frame = lq.grad.abs().sum(dim=(0, 2, 3, 4))
    assert (per_frame > 0).all()  # frame 2 depends on frames before and after it
    zero = BasicVSR_arch(BasicVSR_config(num_feat=8, num_block=1, flow="zero"))
    assert zero.spynet is None
    assert sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in zero.parameters()) == 1_440_300
    assert zero(torch.rand(1, 3, 3, 16, 16)).shape == (1, 3, 3, 64, 64)
