"""Depth-dependent PSFs (thin lens, psf/depth.py) against closed forms, and PSF files with a depth axis.

Closed forms: Gaussian lens equation, the geometric blur disk D |v - v_f| / v, the pupil-edge
defocus (D²/8)(1/v_f - 1/v) (Goodman §6.4.4), the pixel-integrated Airy peak (Strehl)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from psf.depth import (DepthPSFField, blur_diameter_um, defocus_w020_um, image_distance_mm, load_depth_psf_field,
                       save_depth_psf_field, working_f_number)
from psf.field import PSFField, default_H_img, load_psf_field, save_psf_field
from psf.svpsf import PSFSimulator
from utils.errors import ConfigError, DataError

F_MM, N, FOCUS, OBJ, LAM, PITCH = 25.0, 4.0, 2.0, 1.5, 550.0, 2.0


def lens_sim(psf_type="seidel", k=81, depths=(OBJ, FOCUS), grid=(1, 1), sensor=(64, 64), **kw):
    opts = dict(focal_length_mm=F_MM, focus_distance_m=FOCUS, object_distance_m=list(depths), f_number=N,
                reference_wavelength_nm=LAM)
    opts.update(kw)
    return PSFSimulator(psf_type, grid_shape=grid, psf_size=k, sensor_res=sensor, wavelengths_nm=[LAM],
                        pixel_pitch_um=PITCH, **opts)


def second_moment_px2(psf: torch.Tensor) -> float:
    """<r²> about the centroid (px²)."""
    k = psf.shape[-1]
    c = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = psf.double() / psf.double().sum()
    mx, my = (p * xx).sum(), (p * yy).sum()
    return float((p * ((xx - mx) ** 2 + (yy - my) ** 2)).sum())


def test_thin_lens_closed_forms():
    """Lens equation by hand: v = f s / (s - f); disk D |v - v_f| / v; W020 = (D²/8)(1/v_f - 1/v)."""
    v_f = 25.0 * 2000.0 / 1975.0
    v = 25.0 * 1500.0 / 1475.0
    assert image_distance_mm(F_MM, FOCUS) == pytest.approx(v_f, rel=1e-12)
    assert image_distance_mm(F_MM, math.inf) == F_MM
    assert blur_diameter_um(F_MM, N, FOCUS, OBJ) == pytest.approx(6.25 * (v - v_f) / v * 1e3, rel=1e-12)
    assert blur_diameter_um(F_MM, N, FOCUS, OBJ) / PITCH == pytest.approx(13.19, abs=0.01)  # svd_rest.md: 13.2 px
    w = defocus_w020_um(F_MM, N, FOCUS, OBJ)
    assert w == pytest.approx(6.25 ** 2 / 8 * (1 / v_f - 1 / v) * 1e3, rel=1e-12) and w > 0  # nearer: behind sensor
    assert defocus_w020_um(F_MM, N, FOCUS, 5.0) < 0
    assert defocus_w020_um(F_MM, N, FOCUS, FOCUS) == 0.0
    # the wave-optics ray-aberration scale 2 N_w lambda dW/drho gives back the disk: 8 N_w W020 = D |v - v_f| / v
    assert 8 * working_f_number(F_MM, N, FOCUS) * w == pytest.approx(blur_diameter_um(F_MM, N, FOCUS, OBJ), rel=1e-12)


@pytest.mark.parametrize("psf_type", ["seidel", "zernike"])
def test_blur_diameter_from_second_moment(psf_type):
    """f = 25 mm, f/4, focused at 2 m, object at 1.5 m: geometric diameter sqrt(8 (<r²> - <r²>_focus))
    (a uniform disk of diameter d has <r²> = d²/8; wave optics adds the in-focus moment, Fourier
    moment theorem) within 3 % of D |v - v_f| / v (measured -1.2 % at k = 81, -0.6 % at k = 161)."""
    extra = {"coefficients": {4: 0.0}} if psf_type == "zernike" else {}
    stack = lens_sim(psf_type, **extra).simulate()
    assert isinstance(stack, DepthPSFField) and list(stack.depths_m) == [OBJ, FOCUS]
    defocused, focused = stack.psfs[0, 0, 0, 0], stack.psfs[0, 0, 1, 0]
    d_px = math.sqrt(8 * (second_moment_px2(defocused) - second_moment_px2(focused)))
    expected = blur_diameter_um(F_MM, N, FOCUS, OBJ) / PITCH
    assert d_px == pytest.approx(expected, rel=0.03)
    assert abs(d_px / expected - 1) < 0.015


def pixel_airy_peak(lam_n_um: float, pitch_um: float, samples: int = 401) -> float:
    """Energy of the centre pixel of a unit-energy Airy pattern (midpoint rule on the pixel square):
    I(r) = pi / (4 (lambda N)²) [2 J1(x) / x]², x = pi r / (lambda N)."""
    from scipy.special import j1

    t = (np.arange(samples) + 0.5) / samples * pitch_um - pitch_um / 2
    xx, yy = np.meshgrid(t, t)
    x = np.pi * np.hypot(xx, yy) / lam_n_um
    airy = np.where(x > 0, (2 * j1(np.maximum(x, 1e-12)) / np.maximum(x, 1e-12)) ** 2, 1.0)
    return float(np.pi / (4 * lam_n_um ** 2) * airy.mean() * pitch_um ** 2)


def test_strehl_at_focus_distance():
    """At the focus distance the PSF is diffraction-limited: centre pixel / closed-form pixel-integrated
    Airy peak (working f-number v_f / D) >= 0.99; a closer object loses it."""
    n_w = working_f_number(F_MM, N, FOCUS)
    peak = pixel_airy_peak(LAM * 1e-3 * n_w, PITCH)
    strehl = {}
    for depth in (FOCUS, 1.9):
        sim = lens_sim(k=41)
        sim.options.object_distance_m = depth
        field = sim.simulate()
        assert field.attrs["working_f_number"] == pytest.approx(n_w)
        # stored PSFs sum to 1 over the window: back to fractions of the total energy
        strehl[depth] = float(field.psfs[0, 0, 0, 20, 20]) * field.attrs["window_energy_min"] / peak
    # measured 1.0067: the simulator normalises over its computation period, which leaves out
    # ~0.5 % of the Airy energy (docs/optics.md, "Measured accuracy")
    assert 0.99 <= strehl[FOCUS] <= 1.01
    assert strehl[1.9] < 0.9


def test_depth_attributes_and_magnification():
    sim = lens_sim(k=9, depths=(1.0, 2.0, 4.0), grid=(3, 3), sensor=(33, 33))
    stack = sim.simulate()
    v_f = image_distance_mm(F_MM, FOCUS)
    assert sim.magnification == pytest.approx(-v_f / 2000.0)
    assert stack.attrs["magnification"] == pytest.approx([-v_f / 1000, -v_f / 2000, -v_f / 4000])
    # H_obj of plane d: object mm = sensor mm / m_d; the corner node is (W-1)/2 px from the axis
    corner_x_mm = [(stack.H_obj[d] @ np.array([0.0, 0.0, 1.0]))[0] for d in range(3)]
    assert corner_x_mm == pytest.approx([-16 * PITCH * 1e-3 / m for m in stack.attrs["magnification"]])
    plane = stack.plane(1)
    assert isinstance(plane, PSFField) and plane.attrs["object_distance_m"] == 2.0
    # a single object distance gives a plain PSFField
    single = lens_sim(k=9, depths=(1.0,), grid=(1, 1), sensor=(9, 9))
    single.options.object_distance_m = 1.0
    one = single.simulate()
    assert isinstance(one, PSFField) and one.attrs["object_distance_m"] == 1.0
    assert torch.allclose(one.psfs[:, :, 0], lens_sim(k=9, depths=(1.0, 2.0), sensor=(9, 9)).simulate().psfs[:, :, 0, 0])


def test_lens_option_errors():
    with pytest.raises(ConfigError, match="focal_length_mm"):
        PSFSimulator("seidel", object_distance_m=1.0)
    with pytest.raises(ConfigError, match="focus_distance_m"):
        PSFSimulator("seidel", focal_length_mm=25.0)
    with pytest.raises(ConfigError, match="increasing"):
        PSFSimulator("seidel", focal_length_mm=25.0, focus_distance_m=2.0, object_distance_m=[2.0, 1.0])
    with pytest.raises(ConfigError, match="beyond the focal length"):
        PSFSimulator("seidel", focal_length_mm=25.0, focus_distance_m=2.0, object_distance_m=0.02)
    with pytest.raises(ConfigError, match="contradicts"):
        PSFSimulator("seidel", focal_length_mm=25.0, focus_distance_m=2.0, magnification=-0.1)


def test_inverse_depth_interpolation():
    """Between planes the PSF mixes linearly in 1/distance (the defocus W020 is linear in 1/s)."""
    stack = lens_sim(k=21, depths=(1.0, 2.0, 4.0)).simulate()
    assert stack.depth_weights(2.0) == [(1, 1.0)]
    (i, wi), (j, wj) = stack.depth_weights(1.0 / 0.75)  # halfway between 1/1 and 1/2 diopters
    assert (i, j) == (0, 1) and wi == pytest.approx(0.5) and wj == pytest.approx(0.5)
    assert stack.depth_weights(0.5) == [(0, 1.0)] and stack.depth_weights(100.0) == [(2, 1.0)]
    mid = stack.at_depth(1.0 / 0.75)
    assert torch.allclose(mid.psfs, 0.5 * (stack.psfs[:, :, 0] + stack.psfs[:, :, 1]), atol=1e-7)


def test_depth_file_round_trip_and_old_files(tmp_path):
    stack = lens_sim(k=9, depths=(1.0, 3.0), grid=(2, 2), sensor=(16, 16)).simulate()
    path = save_depth_psf_field(stack, tmp_path / "depth")
    with h5py.File(path) as f:
        assert f["psfs"].shape == (1, 1, 2, 4, 9, 9) and f["psfs"].dtype == np.float32
        assert f["depths_m"][()].tolist() == [1.0, 3.0] and f["H_obj"].shape == (2, 3, 3)
        assert f.attrs["focal_length_mm"] == F_MM and f.attrs["focus_distance_m"] == FOCUS
    back = load_depth_psf_field(tmp_path / "depth")
    assert torch.equal(back.psfs, stack.psfs) and np.array_equal(back.depths_m, stack.depths_m)
    np.testing.assert_array_equal(back.H_obj, stack.H_obj)
    # the single-plane reader refuses a depth file with one clear line
    with pytest.raises(DataError, match="depth-aware PSF file"):
        load_psf_field(path)
    # old single-plane files: written by hand with h5py in the original 5-D layout, read by both readers
    psfs = torch.rand(3, 1, 4, 5, 5)
    psfs /= psfs.sum(dim=(-2, -1), keepdim=True)
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f["psfs"] = psfs.numpy()
        f["H_img"] = default_H_img((2, 2), (10, 10))
        f["H_obj"] = np.eye(3)
        f.attrs.update({"psf_type": "gaussian", "grid_shape": [2, 2], "psf_size": 5, "sensor_res": [10, 10],
                        "channel_order": "RGB", "normalized": True})
    field = load_psf_field(old)
    assert torch.equal(field.psfs, psfs)
    as_stack = load_depth_psf_field(old)
    assert as_stack.n_depths == 1 and math.isinf(as_stack.depths_m[0])
    assert torch.equal(as_stack.at_depth(1.234).psfs, psfs)
    # and a new single-plane file still is an old-layout file
    save_psf_field(field, tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5") as f:
        assert f["psfs"].ndim == 5 and "depths_m" not in f


def test_step1_cli_depth_stack(tmp_path):
    script = Path(__file__).resolve().parent.parent / "data_gen" / "1.generate_psfs_synthetic.py"
    run = subprocess.run([sys.executable, str(script), "--psf_type", "seidel", "--save_dir", str(tmp_path / "d"),
                          "--grid", "2", "2", "--psf_size", "15", "--sensor_res", "32", "32", "--f_number", "4",
                          "--focal_length_mm", "25", "--focus_distance_m", "2", "--object_distance_m", "1", "2", "4",
                          "--lateral_color", "0.001", "0", "-0.001", "--abbe_number", "60"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    stack = load_depth_psf_field(tmp_path / "d")
    assert stack.psfs.shape == (3, 1, 3, 4, 15, 15) and stack.depths_m.tolist() == [1.0, 2.0, 4.0]
    assert sorted(p.name for p in (tmp_path / "d").glob("psf_grid_depth*.png")) == [
        "psf_grid_depth00.png", "psf_grid_depth01.png", "psf_grid_depth02.png"]
    # the file regenerates itself from its args
    again = PSFSimulator.from_config(stack.attrs["args"]).simulate()
    assert torch.equal(again.psfs, stack.psfs)
    bad = subprocess.run([sys.executable, str(script), "--psf_type", "gaussian", "--save_dir", str(tmp_path / "g"),
                          "--focal_length_mm", "25"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--focal_length_mm applies to --psf_type seidel or zernike" in bad.stderr
