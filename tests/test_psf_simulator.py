"""PSFSimulator: options, validation, geometry, attributes, reproducibility from the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psf.field import load_psf_field, save_psf_field
from psf.svpsf import PSFSimulator
from utils.errors import ConfigError

SMALL = dict(grid_shape=(3, 4), psf_size=11, sensor_res=(60, 80))


def test_validation_messages():
    with pytest.raises(ConfigError, match="unknown psf_type 'seidl'; did you mean 'seidel'"):
        PSFSimulator("seidl")
    with pytest.raises(ConfigError, match="unknown option 'sigma' for psf_type 'gaussian'; did you mean 'sigma_px'"):
        PSFSimulator("gaussian", sigma=1.0)
    with pytest.raises(ConfigError, match="psf_size must be a positive odd"):
        PSFSimulator("gaussian", psf_size=32)
    with pytest.raises(ConfigError, match="name the channels with channel_order"):
        PSFSimulator("gaussian", wavelengths_nm=[600.0, 500.0])
    with pytest.raises(ConfigError, match="channel_order 'RG' names 2 channels but 3"):
        PSFSimulator("gaussian", channel_order="RG")
    with pytest.raises(ConfigError, match="not in RGB order"):
        PSFSimulator("gaussian", wavelengths_nm=[470.0, 530.0, 610.0])
    with pytest.raises(ConfigError, match="wavelengths in nm"):
        PSFSimulator("gaussian", wavelengths_nm=[0.61, 0.53, 0.47])
    with pytest.raises(ConfigError, match="grid_shape must be two integers"):
        PSFSimulator("gaussian", grid_shape=(0, 3))
    with pytest.raises(ConfigError, match="lateral_color_px needs one value per channel"):
        PSFSimulator("gaussian", lateral_color_px=[0.1, 0.2], **SMALL).simulate()
    assert PSFSimulator("gaussian", wavelengths_nm=[550.0]).channel_order == "L"
    with pytest.raises(ConfigError, match="unknown torch device 'gpu0'"):
        PSFSimulator("gaussian", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            PSFSimulator("gaussian", device="cuda")


@pytest.mark.parametrize("psf_type", ["gaussian", "seidel", "zernike", "motion"])
def test_every_type_normalised_float32_and_rebuilt_from_file(tmp_path, psf_type):
    options = {"seidel": {"seidel": {"W040": 0.5, "W131": 0.5}}, "zernike": {"rms_waves": 0.1}}.get(psf_type, {})
    sim = PSFSimulator(psf_type, seed=3, **SMALL, **options)
    field = sim.simulate()
    assert field.psfs.dtype == torch.float32 and field.psfs.shape == (3, 1, 12, 11, 11)
    sums = field.psfs.double().sum(dim=(-2, -1))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    assert field.normalized and 0 < field.attrs["window_energy_min"] <= 1.0
    save_psf_field(field, tmp_path)
    loaded = load_psf_field(tmp_path)
    assert loaded.attrs["seed"] == 3 and loaded.attrs["pixel_pitch_um"] == 2.0
    assert loaded.attrs["wavelengths_nm"] == [610.0, 530.0, 470.0]
    # the stored args regenerate the identical field
    again = PSFSimulator.from_config(loaded.attrs["args"]).simulate()
    assert torch.equal(again.psfs, field.psfs)


def test_object_plane_homography():
    sim = PSFSimulator("gaussian", grid_shape=(3, 3), sensor_res=(101, 201), pixel_pitch_um=4.0, magnification=-0.5)
    field = sim.simulate()
    to_obj = lambda col, row: (field.H_obj @ [col, row, 1.0])[:2]  # noqa: E731
    np.testing.assert_allclose(to_obj(1, 1), [0.0, 0.0], atol=1e-12)  # centre node on the axis
    # node (0, 0) is at pixel (0, 0): 100 px left, 50 px above the axis; x 4 um / (-0.5) -> +0.8 mm, +0.4 mm
    np.testing.assert_allclose(to_obj(0, 0), [0.8, 0.4])
    np.testing.assert_allclose(field.positions[[0, 8]], [[0, 0], [200, 100]])


def test_custom_grid_homography():
    H = np.array([[10.0, 0, 5], [0, 12.0, 6], [0, 0, 1]])
    sim = PSFSimulator("gaussian", grid_shape=(2, 2), sensor_res=(40, 40), H_img=H)
    field = sim.simulate()
    np.testing.assert_allclose(field.positions, [[5, 6], [15, 6], [5, 18], [15, 18]])
    np.testing.assert_allclose(PSFSimulator.from_config(field.attrs["args"]).H_img, H)


def test_metadata_arrays_round_trip(tmp_path):
    z = PSFSimulator("zernike", **SMALL, rms_waves=0.1).simulate()
    m = PSFSimulator("motion", **SMALL, n_steps=300).simulate()
    for name, f, key in (("z", z, "zernike_coefficients"), ("m", m, "motion_trajectory_px")):
        loaded = load_psf_field(save_psf_field(f, tmp_path / f"{name}.h5"))
        np.testing.assert_allclose(np.asarray(loaded.attrs[key]), np.asarray(f.attrs[key]))
    assert json.loads(z.attrs["args"])["rms_waves"] == 0.1
