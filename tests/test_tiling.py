"""utils.tiling.tiled_forward: coverage, exact blending weights, equality with the full-image
forward for networks whose receptive field fits in the overlap, conditioning maps."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from utils.errors import ConfigError
from utils.tiling import tile_starts, tiled_forward


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size,patch,overlap,blend", [
    ((50, 61), 16, 4, None), ((50, 61), 16, 8, 0), ((50, 61), 16, 8, 8), ((33, 17), (20, 12), (6, 2), None),
    ((10, 7), 16, 8, None),  # smaller than one tile
    ((97, 40), 32, 16, None),  # overlap = half the tile
])
def test_identity_is_exact(size, patch, overlap, blend):
    x = rand(2, 3, *size)
    calls = []
    y = tiled_forward(lambda t: calls.append(t.shape) or t.clone(), x, patch, overlap, blend=blend)
    assert torch.equal(y, x)
    assert len(calls) > 1 or max(size) <= 16


def test_identity_exact_over_many_geometries():
    """Every offset of every tile is right: an off-by-one anywhere breaks the identity."""
    for length in range(1, 60, 3):
        for patch in (4, 7, 16):
            for overlap in range(0, patch // 2 + 1):
                x = rand(1, 1, length, length + 5, seed=length)
                assert torch.equal(tiled_forward(lambda t: t * 1, x, patch, overlap), x), (length, patch, overlap)


def test_tile_placement_covers_borders():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]  # stride 24, last tile ends at 100
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(20, 32, 8) == [0]
    for length in range(33, 200):
        starts = tile_starts(length, 32, 8)
        assert starts[0] == 0 and starts[-1] + 32 == length
        assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))  # overlap >= 8 everywhere


def small_convnet(layers=3):
    torch.manual_seed(0)
    convs = []
    for i in range(layers):
        convs += [nn.Conv2d(3 if i == 0 else 8, 8 if i < layers - 1 else 2, 3, padding=1), nn.GELU()]
    return nn.Sequential(*convs[:-1]).eval()


@pytest.mark.parametrize("overlap,blend", [(8, 0), (12, None), (10, 4)])
def test_conv_net_equals_full_forward(overlap, blend):
    """Receptive field 7×7 (radius 3) ≤ the unused margin (overlap - blend) // 2 → equal up to
    float error, including the zero-padded image borders. Output channels may differ."""
    net = small_convnet(3)
    x = rand(1, 3, 70, 53)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, 24, overlap, blend=blend)
    assert tiled.shape == full.shape == (1, 2, 70, 53)
    torch.testing.assert_close(tiled, full, atol=1e-6, rtol=0)


def test_conv_net_margin_too_small_is_not_equal():
    """Control for the test above: a receptive field wider than the margin does show."""
    net = small_convnet(6)  # radius 6 > (8 - 0) // 2
    x = rand(1, 3, 70, 53)
    with torch.no_grad():
        assert (tiled_forward(net, x, 24, 8, blend=0) - net(x)).abs().max() > 1e-4


def tile_mean(t):
    """Global per-tile statistic, like channel attention's pooling: constant within a tile."""
    return t.mean(dim=(-2, -1), keepdim=True).expand_as(t) * 2 + 1


def test_constant_input_gives_constant_output():
    x = torch.full((1, 3, 45, 70), 0.3)
    y = tiled_forward(tile_mean, x, 16, 6)
    assert torch.equal(y, tile_mean(x))


def test_weights_are_a_convex_partition_and_hide_seams():
    """Per-tile constants blend into values between the tile values (weights in [0, 1] summing
    to one) and the ramp spreads each tile-to-tile step over several pixels."""
    x = rand(1, 1, 64, 64) * torch.linspace(0, 4, 64)  # tiles get very different means
    hard = tiled_forward(tile_mean, x, 24, 8, blend=0)
    soft = tiled_forward(tile_mean, x, 24, 8, blend=8)
    starts = tile_starts(64, 24, 8)
    means = torch.stack([tile_mean(x[..., a:a + 24, b:b + 24])[0, 0, 0, 0] for a in starts for b in starts])
    assert soft.min() >= means.min() - 1e-6 and soft.max() <= means.max() + 1e-6
    step_hard = (hard[..., 1:] - hard[..., :-1]).abs().max()
    step_soft = (soft[..., 1:] - soft[..., :-1]).abs().max()
    assert step_soft < step_hard / 3


def test_conditioning_maps_are_tiled_and_others_passed_through():
    x = rand(2, 3, 40, 50)
    mask = rand(2, 1, 40, 50, seed=1)
    coef = rand(3, 1, 4, 40, 50, seed=2)  # per-pixel basis coefficients, no batch axis
    basis = rand(3, 1, 4, 5, 5, seed=3)

    def fn(t, mask, coef, basis, gain):
        assert basis is globals_basis[0] and gain == 2.0
        assert mask.shape[-2:] == t.shape[-2:] == coef.shape[-2:]
        return t * mask * gain + coef.sum(dim=(0, 1, 2))

    globals_basis = [basis]
    y = tiled_forward(fn, x, 16, 4, mask=mask, coef=coef, basis=basis, gain=2.0)  # (``scale`` is tiled_forward's own)
    torch.testing.assert_close(y, x * mask * 2.0 + coef.sum(dim=(0, 1, 2)))
    # tiled_keys overrides the detection: a map not tiled reaches fn whole.
    seen = []
    tiled_forward(lambda t, m: seen.append(m.shape) or t, x, 16, 4, tiled_keys=[], m=mask)
    assert set(seen) == {mask.shape}


def test_bad_arguments():
    x = rand(1, 3, 40, 40)
    with pytest.raises(ConfigError, match="half the patch"):
        tiled_forward(lambda t: t, x, 16, 9)
    with pytest.raises(ConfigError, match="blend"):
        tiled_forward(lambda t: t, x, 16, 4, blend=5)
    with pytest.raises(ValueError, match="size-preserving"):
        tiled_forward(lambda t: t[..., ::2, ::2], x, 16, 4)


# -- scale factor, clips, encoder/decoder grids, tiled_predict --------------------------------
from utils.tiling import tiled_clip_forward, tiled_decode, tiled_encode  # noqa: E402


def nearest_up(t, s=2):
    """A "network" whose exact output is known: nearest-neighbour upsampling by ``s``."""
    return t.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


@pytest.mark.parametrize("size,patch,overlap,blend,scale", [
    ((50, 61), 16, 4, None, 2), ((50, 61), 16, 8, 0, 2), ((33, 17), (20, 12), (6, 2), None, 3),
    ((10, 7), 16, 8, None, 2), ((97, 40), 32, 16, 16, 4),
])
def test_scaled_tiles_are_placed_at_scaled_positions(size, patch, overlap, blend, scale):
    """Nearest upsampling tiled = nearest upsampling of the whole image, bit for bit: every output
    tile lands at ``scale``× its input position and the blend weights still sum to one."""
    x = rand(2, 3, *size)
    y = tiled_forward(lambda t: nearest_up(t, scale), x, patch, overlap, blend=blend, scale=scale)
    assert y.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert torch.equal(y, nearest_up(x, scale))


def test_scaled_tiles_with_position_dependent_output():
    """Each tile's output encodes where the tile came from (its pixel coordinates): the stitched
    output must show the global coordinate grid, upsampled."""
    H, W = 45, 38
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    coords = torch.stack([yy, xx])[None]
    y = tiled_forward(lambda t: nearest_up(t, 2), coords, 16, 6, scale=2, blend=0)
    assert torch.equal(y, nearest_up(coords, 2))


def sr_convnet(scale=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
                         nn.PixelShuffle(scale)).eval()


def test_sr_net_equals_full_forward():
    """Radius 2 (two 3×3 convs at the input resolution) ≤ (overlap - blend) // 2 = 2."""
    net = sr_convnet(2)
    x = rand(1, 3, 41, 30)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, 12, 4, blend=0, scale=2)
        assert (tiled_forward(net, x, 12, 2, blend=0, scale=2) - full).abs().max() > 1e-4  # control
    assert tiled.shape == full.shape == (1, 3, 82, 60)
    torch.testing.assert_close(tiled, full, atol=1e-6, rtol=0)


def test_scale_must_match_the_output():
    with pytest.raises(ValueError, match="2x its tile"):
        tiled_forward(lambda t: t, rand(1, 3, 40, 40), 16, 4, scale=2)


def temporal_mix(clip):
    """clip→clip "network" with temporal radius 1: each frame + its neighbours (zeros outside)."""
    padded = torch.nn.functional.pad(clip, (0, 0, 0, 0, 0, 0, 1, 1))
    return padded[:, :-2] + 2 * padded[:, 1:-1] - padded[:, 2:]


@pytest.mark.parametrize("frames,window,overlap,blend", [(11, 4, 2, 0), (11, 6, 2, 0), (13, 6, 3, 1), (3, 8, 2, 0)])
def test_clip_windows_equal_the_whole_clip(frames, window, overlap, blend):
    x = rand(2, frames, 3, 9, 10)
    calls = []

    def fn(c):
        calls.append(c.shape[1])
        return temporal_mix(c)

    y = tiled_clip_forward(fn, x, window, overlap, blend=blend)
    torch.testing.assert_close(y, temporal_mix(x), atol=1e-6, rtol=0)
    assert set(calls) == {min(window, frames)} and (len(calls) > 1 or frames <= window)


def test_clip_windows_blend_and_identity():
    x = rand(1, 17, 2, 5, 6)
    assert torch.equal(tiled_clip_forward(lambda c: c * 1, x, 6, 3), x)  # convex weights, exact identity
    # Too little overlap for temporal radius 1 shows.
    assert (tiled_clip_forward(temporal_mix, x, 6, 0, blend=0) - temporal_mix(x)).abs().max() > 1e-3


def test_clip_windows_and_spatial_tiles_with_scale():
    x = rand(1, 9, 3, 20, 17)

    def fn(c):
        return nearest_up(temporal_mix(c), 2)

    y = tiled_clip_forward(fn, x, 4, 2, blend=0, patch_size=8, spatial_overlap=2, scale=2)
    torch.testing.assert_close(y, fn(x), atol=1e-6, rtol=0)


def patchify_encoder(f=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU(), nn.Conv2d(6, 4, f, stride=f)).eval()


def test_encoder_tiles_start_on_the_latent_grid():
    """A stride-4 encoder is shift-equivariant only for shifts of 4: tiles laid out on the latent
    grid reproduce the whole encoding (radius 1 input pixel + the 4-pixel cell → 1 latent cell of
    margin suffices); every tile starts at a multiple of 4."""
    enc = patchify_encoder(4)
    x = rand(1, 3, 44, 60)
    starts = []

    def fn(t):
        starts.append(t.shape[-2:])
        return enc(t)

    with torch.no_grad():
        z = tiled_encode(fn, x, 16, 8, 4, blend=0)
        full = enc(x)
    assert z.shape == full.shape == (1, 4, 11, 15)
    torch.testing.assert_close(z, full, atol=1e-6, rtol=0)
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in starts)
    with pytest.raises(ValueError, match="multiple of the downsampling factor 4"):
        tiled_encode(enc, rand(1, 3, 42, 60), 16, 8, 4)


def test_decoder_tiles_scale_by_the_factor():
    x = rand(1, 4, 11, 15)
    y = tiled_decode(lambda z: nearest_up(z, 4), x, 6, 2, 4)
    assert torch.equal(y, nearest_up(x, 4))


def test_tiled_predict_dispatches_on_kind():
    from models.archs.arch_util import ArchIO
    from utils.tiling import tiled_predict

    class Up(nn.Module):
        def forward(self, lq, mask):
            return nearest_up(lq * mask, 2)

    x, mask = rand(1, 3, 30, 26), rand(1, 1, 30, 26, seed=1)
    y = tiled_predict(Up(), {"lq": x, "mask": mask}, ArchIO(scale=2, inputs={"lq": "image", "mask": "mask"}), 12, 4)
    assert torch.equal(y, nearest_up(x * mask, 2))

    class Clip(nn.Module):
        def forward(self, lq):
            return temporal_mix(lq)

    clip = rand(1, 10, 3, 16, 16)
    io = ArchIO(kind="clip2clip", inputs={"lq": "clip"}, temporal_radius=1, receptive_radius=0)
    torch.testing.assert_close(tiled_predict(Clip(), {"lq": clip}, io, 8, 2, frames_window=4, blend=0),
                               temporal_mix(clip), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="critic"):
        tiled_predict(Up(), {"lq": x}, ArchIO(kind="critic", scale=4), 12, 4)
