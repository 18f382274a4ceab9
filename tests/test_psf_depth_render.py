"""Layered RGB-D rendering (utils/layered_renderer.py): equal-depth layers equal the single-plane
render, occlusion keeps a sharp foreground free of background blur beyond its own PSF support,
interpolated depths equal the same mix of plane renders (linearity), old single-plane files work."""
from __future__ import annotations

import pytest
import torch

from psf.depth import blur_diameter_um
from psf.svpsf import PSFSimulator
from utils.layered_renderer import LayeredRenderer, depth_to_layers, render_rgbd
from utils.sv_renderer import render

F_MM, N, FOCUS, PITCH, K = 25.0, 4.0, 2.0, 4.0, 31


@pytest.fixture(scope="module")
def stack():
    """Seidel lens with a little field-dependent coma, focused at 2 m; planes at 1.5, 2 and 8 m."""
    return PSFSimulator("seidel", grid_shape=(3, 3), psf_size=K, sensor_res=(48, 64), pixel_pitch_um=PITCH,
                        f_number=N, focal_length_mm=F_MM, focus_distance_m=FOCUS, object_distance_m=[1.5, 2.0, 8.0],
                        seidel={"W131": 0.3}).simulate()


def image(seed=0, shape=(2, 3, 48, 64)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_two_layers_at_one_depth_equal_the_single_plane(stack):
    x = image()
    mask = (torch.rand(2, 1, 48, 64, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    r = LayeredRenderer(stack, (48, 64), dtype=torch.float64)
    for depth in (1.5, 8.0, 3.0):  # stored planes and an interpolated depth
        single = r.blur_at_depth(x, depth)
        layered = r.render_layers(x, torch.stack([mask, 1 - mask], dim=1), [depth, depth])
        assert float((layered - single).abs().max()) < 1e-6
    # the plane itself is the plain renderer's output
    torch.testing.assert_close(r.blur_at_depth(x, 1.5), render(x, stack.plane(0)), atol=1e-12, rtol=0)
    # a constant depth map is one layer
    depth = torch.full((2, 1, 48, 64), 8.0, dtype=torch.float64)
    assert float((render_rgbd(x, depth, stack) - render(x, stack.plane(2))).abs().max()) < 1e-6


def test_interpolated_depth_is_the_mix_of_plane_renders(stack):
    """Between planes the field mixes linearly in 1/distance, and rendering is linear in the PSF."""
    x = image(3)
    r = LayeredRenderer(stack, (48, 64), dtype=torch.float64)
    depth = 1.0 / (0.5 * (1 / 1.5 + 1 / 2.0))
    direct = render(x, stack.at_depth(depth))
    # at_depth stores the mixed PSFs in float32
    torch.testing.assert_close(r.blur_at_depth(x, depth), direct, atol=1e-7, rtol=0)


def test_occlusion_edge_no_background_leak(stack):
    """Sharp foreground (left half, in focus at 2 m, black) in front of a blurred white background at
    8 m (blur disk D|v - v_f|/v = 14.8 px). Over the foreground the result differs from the foreground's
    own render only by the foreground PSF's energy reaching across the edge, 1 - H_fg alpha_fg; beyond
    the foreground PSF's window (k // 2) it is exactly the plain in-focus render. A sum of blurred
    layers without occlusion would put the background's blur over the foreground."""
    assert blur_diameter_um(F_MM, N, FOCUS, 8.0) / PITCH == pytest.approx(14.8, abs=0.1)
    x = torch.zeros(1, 3, 48, 64, dtype=torch.float64)
    x[..., 32:] = 1.0
    fg = torch.zeros(1, 1, 48, 64, dtype=torch.float64)
    fg[..., :32] = 1.0
    r = LayeredRenderer(stack, (48, 64), dtype=torch.float64)
    out = r.render_layers(x, torch.stack([fg, 1 - fg], dim=1), [FOCUS, 8.0])
    cover_fg = r.blur_at_depth(fg.expand(1, 3, 48, 64), FOCUS)
    own_fg = r.blur_at_depth(x * fg, FOCUS)
    leak = (out - own_fg)[..., :32]
    assert float((leak - (1 - cover_fg[..., :32]) * 1.0).max()) < 1e-9  # bounded by the fg PSF's own tail
    far = slice(0, 32 - K // 2)
    plain_fg = render(x, stack.plane(1))
    assert float((out[..., far] - plain_fg[..., far]).abs().max()) < 1e-6
    # three pixels inside the edge: the layered result is dark, the occlusion-free sum is not
    naive = own_fg + r.blur_at_depth(x * (1 - fg), 8.0)
    assert float(out[..., 20:28, 29].max()) < 0.02
    assert float(naive[..., 20:28, 29].min()) > 0.1
    # far from the edge on the background side the background render is untouched
    bg = render(x, stack.plane(2))
    assert float((out[..., 32 + K // 2:] - bg[..., 32 + K // 2:]).abs().max()) < 1e-6


def test_depth_map_to_layers_nearest_in_diopters():
    depth = torch.tensor([[[[1.0, 1.3, 1.45, 6.0, 100.0]]]])
    masks, used = depth_to_layers(depth, [1.0, 2.0, 8.0])
    # 1/1.3 = 0.77: |0.77 - 1| < |0.77 - 0.5| -> 1 m; 1/1.45 = 0.69 -> 2 m; 1/6 = 0.17: nearer 1/8 than 1/2 -> 8 m
    assert used.tolist() == [1.0, 2.0, 8.0]
    assert masks[0, :, 0, 0].argmax(0).tolist() == [0, 0, 1, 2, 2]
    assert torch.equal(masks.sum(1), torch.ones_like(depth))
    with pytest.raises(ValueError, match="positive"):
        depth_to_layers(torch.zeros(1, 1, 2, 2), [1.0])


def test_single_plane_field_is_depth_independent():
    """An old single-plane file drives the layered renderer: every depth gets its PSF."""
    field = PSFSimulator("gaussian", grid_shape=(2, 2), psf_size=9, sensor_res=(20, 24)).simulate()
    x = image(4, (1, 3, 20, 24))
    depth = 1.0 + 4.0 * torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(render_rgbd(x, depth, field), render(x, field), atol=1e-12, rtol=0)
