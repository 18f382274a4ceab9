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
