"""Step 3 with a simulated sensor (``--sensor qis|raw``): the sensor column, exact re-rendering of
every lq from its gt and its stored sensor, identical bytes for the same seed, the 1-bit QIS
statistics (P(1) = 1 - exp(-QE theta)), a low-light RAW dataset noisier than a full exposure,
and one-line refusals."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from psf.example_fields import elliptical_gaussian_field
from psf.field import load_psf_field, save_psf_field
from psf.sensors import QISSensor, RawSensor, sensor_from_dict
from utils.errors import ConfigError, DataError
from utils.noise import srgb_to_linear
from utils.sv_renderer import SVRenderer, simulate_capture

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "data_gen" / "3.generate_dataset_synthetic.py"
_spec = importlib.util.spec_from_file_location("generate_dataset_synthetic_sensors", SCRIPT)
step3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step3)

FEW = ["--split_names", "validation=astronaut,coffee,chelsea"]  # a few built-in images, fixed


@pytest.fixture(scope="module")
def psf_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("psf")
    save_psf_field(elliptical_gaussian_field(grid_shape=(3, 3), psf_size=11, sensor_res=(32, 48), sigma_radial=2.0), root)
    return root


def run(psf_dir, out, *extra):
    return step3.main(["--psf_data_path", str(psf_dir), "--images", "builtin", "--out", str(out), "--seed", "4",
                       "--splits", "train=0.5,validation=0.5", *FEW, "--workers", "1", *extra])


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(out: Path, split: str = "validation") -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(min((out / "data").glob(f"{split}-*.parquet"))).to_pylist()


def decode(png: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float64) / 255).permute(2, 0, 1)[None]


QIS_ARGS = ("--sensor", "qis", "--sensor_options", '{"photons_per_pixel": [2, 6], "bits": 1}')


@pytest.fixture(scope="module")
def qis_dataset(psf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("qis") / "ds"
    assert run(psf_dir, out, *QIS_ARGS) == 0
    return out


def test_qis_dataset_stores_the_sensor_and_rerenders_exactly(qis_dataset, psf_dir):
    import datasets

    ds = datasets.load_dataset(str(qis_dataset), split="validation", cache_dir=str(qis_dataset.parent / "cache"))
    assert "sensor" in ds.column_names and len(ds) == 3
    field = load_psf_field(qis_dataset / "psfs" / "psfs.h5")
    renderer = SVRenderer(field, field.sensor_res, "reflect", "full", dtype=torch.float64)
    ppps = set()
    for row in rows(qis_dataset):
        params = json.loads(row["sensor"])
        assert params["kind"] == "qis" == row["noise"] and params["bits"] == 1
        assert 2 <= params["photons_per_pixel"] <= 6  # log-uniform draw inside the range
        ppps.add(params["photons_per_pixel"])
        sensor = sensor_from_dict(params)
        assert isinstance(sensor, QISSensor) and sensor.as_dict() == params
        gt, lq = decode(row["gt"]["bytes"]), decode(row["lq"]["bytes"])
        again = simulate_capture(as_tensor(gt), renderer, sensor, torch.Generator().manual_seed(row["noise_seed"]), bits=8)
        assert np.array_equal(np.round(again[0].permute(1, 2, 0).numpy() * 255), lq)
    assert len(ppps) == 3  # drawn per sample
    card = (qis_dataset / "README.md").read_text()
    assert "quanta image sensor" in card and "sensor_from_dict" in card and "--sensor qis" in card


def test_one_bit_qis_follows_the_poisson_formula(qis_dataset):
    """A 1-bit pixel reads 1 with probability 1 - exp(-QE * ppp * x), x the blurred linear image:
    the count of ones over every validation pixel lies within 4 sigma of the sum of those
    probabilities (the blur computed independently, in float64, from the stored gt)."""
    field = load_psf_field(qis_dataset / "psfs" / "psfs.h5")
    renderer = SVRenderer(field, field.sensor_res, "reflect", "full", dtype=torch.float64)
    ones, expected, variance = 0.0, 0.0, 0.0
    for row in rows(qis_dataset):
        ppp = json.loads(row["sensor"])["photons_per_pixel"]
        lq = decode(row["lq"]["bytes"])
        assert set(np.unique(lq)) <= {0, 255}  # a binary readout
        x = renderer(srgb_to_linear(as_tensor(decode(row["gt"]["bytes"])))).clamp(min=0)
        p = 1 - torch.exp(-ppp * x)
        ones += float((lq == 255).sum())
        expected += float(p.sum())
        variance += float((p * (1 - p)).sum())
    assert abs(ones - expected) < 4 * math.sqrt(variance), (ones, expected, math.sqrt(variance))


def test_same_seed_same_bytes_and_plain_manifest_unchanged(qis_dataset, psf_dir, tmp_path):
    again = tmp_path / "again"
    assert run(psf_dir, again, *QIS_ARGS) == 0
    assert tree(again) == tree(qis_dataset)
    # resuming a finished folder with the same arguments is a no-op; other sensor options are refused
    assert run(psf_dir, again, *QIS_ARGS) == 0 and tree(again) == tree(qis_dataset)
    with pytest.raises(DataError, match=r"arguments differ \(sensor_options"):
        run(psf_dir, again, "--sensor", "qis", "--sensor_options", '{"photons_per_pixel": [2, 7], "bits": 1}')
    # Without --sensor the manifest and columns are those of a plain dataset (no sensor keys).
    plain = tmp_path / "plain"
    assert run(psf_dir, plain, "--noise", "gaussian", "--sigma", "0.01") == 0
    config = json.loads((plain / "generation.json").read_text())["config"]
    assert "sensor" not in config and "sensor_options" not in config
    assert "sensor" not in rows(plain)[0]


def test_low_light_raw_dataset(psf_dir, tmp_path):
    """The low-light recipe of docs/data_generation.md: a short RAW exposure brightened back.
    Every lq re-renders exactly from its stored camera, and its deviation from the same camera's
    noise-free capture is larger than for a full exposure (noise variance / exposure)."""
    field = load_psf_field(psf_dir / "psfs.h5")
    renderer = SVRenderer(field, field.sensor_res, "reflect", "full", dtype=torch.float64)

    def noise_rms(out):
        errs = []
        for row in rows(out):
            params = json.loads(row["sensor"])
            sensor = sensor_from_dict(params)
            assert isinstance(sensor, RawSensor) and sensor.bayer
            gt = as_tensor(decode(row["gt"]["bytes"]))
            lq = decode(row["lq"]["bytes"]).astype(np.float64)
            gen = torch.Generator().manual_seed(row["noise_seed"])
            again = simulate_capture(gt, renderer, sensor, gen, bits=8)[0].permute(1, 2, 0).numpy() * 255
            assert np.array_equal(np.round(again), lq)
            clean = RawSensor(**{**{k: v for k, v in params.items() if k != "kind"}, "shot_noise": 0.0, "read_noise": 0.0})
            ref = simulate_capture(gt, renderer, clean, None, bits=8)[0].permute(1, 2, 0).numpy() * 255
            errs.append(np.sqrt(np.mean((lq - ref) ** 2)))
        return float(np.mean(errs)), params

    dark = tmp_path / "dark"
    assert run(psf_dir, dark, "--sensor", "raw", "--sensor_options", '{"exposure": [0.02, 0.05], "digital_gain": true}') == 0
    bright = tmp_path / "bright"
    assert run(psf_dir, bright, "--sensor", "raw") == 0
    (rms_dark, p_dark), (rms_bright, p_bright) = noise_rms(dark), noise_rms(bright)
    assert 0.02 <= p_dark["exposure"] <= 0.05 and p_dark["digital_gain"] == pytest.approx(1 / p_dark["exposure"])
    assert p_bright["exposure"] == 1.0 and p_bright["digital_gain"] == 1.0
    assert rms_dark > 2 * rms_bright, (rms_dark, rms_bright)
    assert "CMOS RAW" in (dark / "README.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (("--sensor", "qis", "--noise", "gaussian"), "replaces the noise model"),
    (("--sensor", "qis", "--sensor_options", '{"photon_per_pixel": 3}'), "did you mean sensor.photons_per_pixel"),
    (("--sensor", "qis", "--sensor_options", '{"exposure": 0.1}'), "unknown key sensor.exposure for the qis sensor"),
    (("--sensor", "raw", "--sensor_options", "[1, 2]"), "must be a JSON mapping"),
    (("--sensor", "raw", "--sensor_options", "{bad"), "is not JSON"),
    (("--sensor_options", '{"bits": 2}'), "needs --sensor"),
    (("--sensor", "qis", "--sensor_options", '{"bits": 0}'), "bits must be"),
])
def test_bad_sensor_arguments_are_one_line_errors(psf_dir, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        run(psf_dir, tmp_path / "x", *extra)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_raw_needs_an_even_sensor(tmp_path):
    save_psf_field(elliptical_gaussian_field(grid_shape=(2, 2), psf_size=7, sensor_res=(31, 48)), tmp_path / "odd")
    with pytest.raises(ConfigError, match="Bayer mosaic"):
        run(tmp_path / "odd", tmp_path / "x", "--sensor", "raw")
    assert run(tmp_path / "odd", tmp_path / "y", "--sensor", "raw", "--sensor_options", '{"bayer": false}') == 0
