"""Flow: ``flow_warp`` and SpyNet against the official BasicSR fixtures, ``flow_warp`` against scipy,
the pure-torch modulated deformable convolution against a brute-force loop, flow composition,
and the non-learned estimators (OpenCV DIS, Farnebäck) on exactly known motion."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.archs.dcn import deform_conv2d
from models.archs.spynet_arch import SpyNet
from utils.errors import DataError
from utils.flow import batched_flow, compose_flows, dis_flow, epe, farneback_flow, flow_warp
from video_fixtures import load, state_dict


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_flow_warp_matches_official(padding):
    t = load("flow_warp_official")
    out = flow_warp(t["input_image"], t["input_flow"], padding_mode=padding)
    torch.testing.assert_close(out, t[f"output_bilinear_{padding}"], atol=1e-5, rtol=0)


def test_flow_warp_matches_scipy_and_direction():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 2, 12, 15, generator=g, dtype=torch.float64).float()
    flow = (torch.rand(1, 12, 15, 2, generator=g) - 0.5) * 3
    out = flow_warp(x, flow, padding_mode="zeros")
    yy, xx = np.mgrid[0:12, 0:15].astype(np.float64)
    coords = [yy + flow[0, ..., 1].double().numpy(), xx + flow[0, ..., 0].double().numpy()]
    for c in range(2):
        ref = ndimage.map_coordinates(x[0, c].double().numpy(), coords, order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(out[0, c].numpy(), ref, atol=1e-5)
    # out(p) = x(p + flow): a constant flow (+1, +2) reads one column right and two rows down.
    shifted = flow_warp(x, torch.tensor([1.0, 2.0]).expand(1, 12, 15, 2).contiguous())
    torch.testing.assert_close(shifted[..., :10, :14], x[..., 2:, 1:], atol=1e-6, rtol=0)


def test_flow_warp_grid_is_float32_under_autocast():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, 40, 300, generator=g)
    flow = torch.full((1, 40, 300, 2), 0.3)
    flow[..., 0] += 0.001  # below bf16 resolution of coordinates near 300
    ref = flow_warp(x, flow)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = flow_warp(x, flow)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("suffix", ["", "_2"])
def test_spynet_matches_official(suffix):
    t = load("spynet_official")
    net = SpyNet().eval()
    net.load_official_state_dict(state_dict(t))
    assert sum(p.numel() for p in net.parameters()) == 1_440_300
    with torch.no_grad():
        out = net(ref=t[f"input_ref{suffix}"], supp=t[f"input_supp{suffix}"])
    torch.testing.assert_close(out, t[f"output{suffix}"], atol=1e-5, rtol=0)


def test_spynet_official_file_loads_strictly(tmp_path):
    t = load("spynet_official")
    sd = state_dict(t)
    torch.save({"params": {k: v for k, v in sd.items() if k not in ("mean", "std")}}, tmp_path / "spynet.pth")
    net = SpyNet(load_path=str(tmp_path / "spynet.pth")).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(t["input_ref"], t["input_supp"]), t["output"], atol=1e-5, rtol=0)
    with pytest.raises(DataError):
        net.load_official_state_dict({**sd, "extra.weight": torch.zeros(1)})


def test_spynet_runs_below_64_pixels():
    net = SpyNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 37), torch.rand(2, 3, 32, 37))
    assert out.shape == (2, 2, 32, 37) and torch.isfinite(out).all()


def _deform_conv_brute(x, offset, weight, bias, padding, mask):
    """Direct definition: per output pixel, per tap, bilinear read with zero outside."""
    x, offset, weight, mask = (a.double().numpy() for a in (x, offset, weight, mask))
    n, c, h, w = x.shape
    co, _, kh, kw = weight.shape
    k = kh * kw
    dg = offset.shape[1] // (2 * k)
    out = np.zeros((n, co, h, w))

    def read(img, y, xx):
        y0, x0 = int(np.floor(y)), int(np.floor(xx))
        v = 0.0
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xc, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                if 0 <= yy < h and 0 <= xc < w:
                    v += wy * wx * img[yy, xc]
        return v

    for b in range(n):
        for oy in range(h):
            for ox in range(w):
                cols = np.zeros((c, k))
                for ci in range(c):
                    g = ci // (c // dg)
                    for t in range(k):
                        i, j = divmod(t, kw)
                        dy = offset[b, 2 * (g * k + t), oy, ox]
                        dx = offset[b, 2 * (g * k + t) + 1, oy, ox]
                        cols[ci, t] = read(x[b, ci], oy - padding + i + dy, ox - padding + j + dx) * mask[b, g * k + t, oy, ox]
                out[b, :, oy, ox] = weight.reshape(co, -1) @ cols.reshape(-1) + bias.double().numpy()
    return out


def test_deform_conv2d_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 4, 6, 7, generator=g)
    offset = (torch.rand(1, 2 * 2 * 9, 6, 7, generator=g) - 0.5) * 6  # 2 groups, many taps outside
    mask = torch.rand(1, 2 * 9, 6, 7, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    bias = torch.randn(3, generator=g)
    out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    np.testing.assert_allclose(out.numpy(), _deform_conv_brute(x, offset, weight, bias, 1, mask), atol=2e-5)
    # Zero offsets and unit masks: an ordinary convolution.
    plain = deform_conv2d(x, torch.zeros_like(offset), weight, bias, padding=1, mask=torch.ones_like(mask))
    torch.testing.assert_close(plain, torch.nn.functional.conv2d(x, weight, bias, padding=1), atol=1e-5, rtol=0)


def test_compose_flows_of_constant_flows_adds_them():
    f1 = torch.tensor([1.25, -0.5]).view(1, 2, 1, 1).expand(1, 2, 16, 16)
    f2 = torch.tensor([-0.75, 2.0]).view(1, 2, 1, 1).expand(1, 2, 16, 16)
    out = compose_flows(f1, f2)
    torch.testing.assert_close(out[..., 2:-4, 2:-4], (f1 + f2)[..., 2:-4, 2:-4])


def _smooth_pair(dy=1.6, dx=-2.3, size=96):
    """A smooth textured image and a copy translated by (dy, dx): supp(p) = ref(p - d), so the
    flow from ref to supp is +d (ref(p) = supp(p + d))."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()[100:100 + size + 16, 150:150 + size + 16].astype(np.float32) / 255).permute(2, 0, 1)
    ref = img[:, 8:8 + size, 8:8 + size]
    coords_y, coords_x = np.mgrid[0:size, 0:size].astype(np.float64)
    supp = torch.stack([torch.from_numpy(ndimage.map_coordinates(
        img[c].double().numpy(), [coords_y + 8 - dy, coords_x + 8 - dx], order=3, mode="nearest")).float() for c in range(3)])
    gt = torch.tensor([dx, dy]).view(2, 1, 1).expand(2, size, size)
    return ref, supp, gt


@pytest.mark.parametrize("estimator", [dis_flow, farneback_flow])
def test_opencv_flow_direction_and_accuracy(estimator):
    ref, supp, gt = _smooth_pair()
    flow = estimator(ref, supp)
    inner = (slice(None), slice(12, -12), slice(12, -12))
    zero_epe = epe(torch.zeros_like(gt)[inner], gt[inner])
    est_epe = epe(flow[inner], gt[inner])
    assert est_epe * 5 <= zero_epe, (est_epe, zero_epe)
    # The convention: warping supp with it aligns supp onto ref.
    warped = flow_warp(supp[None], flow.permute(1, 2, 0)[None])[0]
    assert (warped - ref)[inner].square().mean() * 10 < (supp - ref)[inner].square().mean()
    batch = batched_flow(estimator, ref[None], supp[None])
    torch.testing.assert_close(batch[0], flow)


def test_dis_flow_on_synthetic_clips_is_5x_better_than_zero_flow():
    """Acceptance: on the demo's held-out synthetic clips (BD ×4, 32×32 LR frames, exact flow),
    OpenCV DIS has a mean EPE at least 5× below zero flow (interior, 3 px border left out)."""
    from dataset.video_synthetic_dataset import SyntheticVideoDataset

    ds = SyntheticVideoDataset(names=["astronaut", "chelsea", "coffee", "motorcycle", "rocket"], image_size=[160, 160],
                               frame_size=[128, 128], frames=4, max_shift=4.0, max_sprite_speed=4.0, phase="val")
    zero, dis = [], []
    inner = (slice(None), slice(3, -3), slice(3, -3))
    for i in range(len(ds)):
        s = ds[i]
        for t in range(s["lq"].shape[0] - 1):
            gt = s["flows_backward"][t]
            zero.append(epe(torch.zeros_like(gt)[inner], gt[inner]))
            dis.append(epe(dis_flow(s["lq"][t], s["lq"][t + 1])[inner], gt[inner]))
    ratio = np.mean(zero) / np.mean(dis)
    print(f"synthetic LR EPE: zero flow {np.mean(zero):.3f} px, DIS {np.mean(dis):.3f} px, ratio {ratio:.2f}")
    assert ratio >= 5, ratio
