"""``motion`` PSFs: one shake trajectory per field; roll makes the blur grow with radius."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psf.motion import shake_trajectory
from psf.svpsf import FieldGeometry, PSFSimulator
from utils.errors import ConfigError


def motion(**kw):
    base = dict(grid_shape=(5, 5), psf_size=41, sensor_res=(201, 201), seed=7)
    base.update(kw)
    return PSFSimulator("motion", **base).simulate()


def test_trajectory_length_and_seed():
    g = torch.Generator().manual_seed(0)
    path = shake_trajectory(500, 12.0, 0.005, g)
    assert path.shape == (500, 2)
    assert float((path[1:] - path[:-1]).norm(dim=1).sum()) == pytest.approx(12.0, rel=1e-9)
    again = shake_trajectory(500, 12.0, 0.005, torch.Generator().manual_seed(0))
    assert torch.equal(path, again)


def test_kernels_sum_to_one_and_are_seeded():
    a = motion(length_px=12.0, roll_deg=1.0)
    b = motion(length_px=12.0, roll_deg=1.0)
    c = motion(length_px=12.0, roll_deg=1.0, seed=8)
    assert a.psfs.dtype == torch.float32 and a.psfs.shape == (3, 1, 25, 41, 41)
    torch.testing.assert_close(a.psfs.double().sum(dim=(-2, -1)), torch.ones(3, 1, 25, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert torch.equal(a.psfs, b.psfs) and not torch.equal(a.psfs, c.psfs)
    assert torch.equal(a.psfs[0], a.psfs[2])  # camera motion is achromatic
    assert len(a.attrs["motion_trajectory_px"]) == 2000


def test_no_roll_identical_across_field():
    f = motion(length_px=15.0, roll_deg=0.0)
    psfs = f.psfs[0, 0]
    assert all(torch.equal(psfs[0], psfs[n]) for n in range(1, 25))
    assert (psfs[0] > 0).sum() > 10  # a real blur, not a delta
    # reference pose = mean position: the kernel centroid is at the window centre
    k = 41
    yy, xx = torch.meshgrid(torch.arange(k) - k // 2, torch.arange(k) - k // 2, indexing="ij")
    assert abs(float((psfs[0] * xx).sum())) < 0.05 and abs(float((psfs[0] * yy).sum())) < 0.05


def test_roll_blur_grows_with_radius():
    """Pure roll by a peak-to-peak angle d_phi: a point at radius r sweeps an arc of chord ~ r d_phi."""
    roll = 6.0
    f = motion(length_px=0.0, roll_deg=roll, psf_size=31)
    geom = FieldGeometry(f.grid_shape, f.sensor_res, f.H_img)
    radius = np.hypot(*geom.offsets().T)
    extents = []
    for n in range(25):
        rows, cols = np.nonzero(f.psfs[0, 0, n].numpy())
        pts = np.stack([cols, rows], 1).astype(float)
        extent = max(np.hypot(*(pts[:, None] - pts[None]).reshape(-1, 2).T)) if len(pts) > 1 else 0.0
        extents.append(extent)
        chord = 2 * radius[n] * math.sin(math.radians(roll) / 2)
        assert extent == pytest.approx(chord, abs=1.5)
    assert extents[12] == 0.0  # the centre does not move under roll
    order = np.argsort(radius)
    assert np.all(np.diff(np.array(extents)[order]) >= -1.5)
    assert max(extents) > 10


def test_edge_cases():
    f = motion(grid_shape=(1, 1), psf_size=3, length_px=0.0, roll_deg=0.0)
    assert torch.equal(f.psfs[0, 0, 0], torch.tensor([[0, 0, 0], [0, 1.0, 0], [0, 0, 0]]))
    f = motion(grid_shape=(2, 3), sensor_res=(40, 90), psf_size=5, length_px=30.0, roll_deg=3.0, n_steps=50)
    assert f.attrs["window_energy_min"] < 1.0  # a blur larger than the window is cut, then renormalised
    assert torch.allclose(f.psfs.sum(dim=(-2, -1)), torch.ones(3, 1, 6), atol=1e-6)
    with pytest.raises(ConfigError, match="n_steps must be >= 2"):
        PSFSimulator("motion", n_steps=1)
    with pytest.raises(ConfigError, match="did you mean 'roll_deg'"):
        PSFSimulator("motion", rol_deg=1.0)
