"""SyntheticBlurDataset with a simulated sensor (``sensor:`` instead of ``noise:``), and its one-line
refusal of depth PSF fields (a depth stack from psf options, or a depth-aware PSF file)."""
from __future__ import annotations

import math

import pytest
import torch

from dataset import create_dataset
from psf.field import save_psf_field
from tests.test_datasets_psf import random_field
from tests.test_datasets_synthetic import NO_NOISE, SIZE, srgb_decode
from utils.errors import ConfigError


@pytest.fixture(scope="module")
def psf_file(tmp_path_factory):
    field = random_field(grid=(3, 3), k=7, seed=3)
    return field, save_psf_field(field, tmp_path_factory.mktemp("psf") / "psfs.h5")


def synth(psf_file, **kw):
    return create_dataset({"type": "SyntheticBlurDataset", "psf_path": str(psf_file[1]),
                           "names": ["camera", "coffee"], **kw})


def test_one_bit_qis_on_the_blur_follows_poisson_statistics(psf_file):
    """lq of a 1-bit QIS (photons_per_pixel 3) is binary with P(1) = 1 - exp(-3 x), x the
    linear-light blur of the noise-free dataset: the number of ones is within 4 sigma."""
    clean = synth(psf_file, phase="val", noise=NO_NOISE, quantize_bits=None)
    qis = synth(psf_file, phase="val", sensor={"kind": "qis", "photons_per_pixel": 3}, quantize_bits=None)
    ones = expected = variance = 0.0
    for i in range(len(qis)):
        lq = qis[i]["lq"]
        assert lq.shape == (3, *SIZE) and set(lq.unique().tolist()) <= {0.0, 1.0}
        p = 1 - torch.exp(-3 * srgb_decode(clean[i]["lq"].double()).clamp(min=0))
        ones += float(lq.sum())
        expected += float(p.sum())
        variance += float((p * (1 - p)).sum())
    assert abs(ones - expected) < 4 * math.sqrt(variance), (ones, expected)


def test_sensor_seeded_per_sample(psf_file):
    opts = {"kind": "qis", "photons_per_pixel": [1, 20], "bits": 3}
    val = synth(psf_file, phase="val", sensor=opts)
    first = val[0]["lq"]
    val.set_epoch(4)
    assert torch.equal(val[0]["lq"], first)  # validation: fixed forever
    assert torch.equal(synth(psf_file, phase="val", sensor=opts)[0]["lq"], first)
    levels = first * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)  # 8-bit levels
    train = synth(psf_file, crop_size=12, samples_per_image=4, seed=2, use_flip=False, use_rot=False, sensor=opts,
                  quantize_bits=None)
    a = [train[i]["lq"] for i in range(len(train))]
    assert all(torch.equal(a[i], train[i]["lq"]) for i in range(len(train)))  # same epoch, same sample
    levels = torch.cat(a) * 7  # a 3-bit readout: levels 0..7 (float32)
    torch.testing.assert_close(levels, levels.round(), atol=1e-5, rtol=0)
    train.set_epoch(1)
    assert all(not torch.equal(a[i], train[i]["lq"]) for i in range(len(train)))
    # the photon level is drawn per sample: the mean readouts of crops spread over the range
    means = torch.tensor([x.mean().item() for x in a])
    assert means.max() > 1.5 * means.min()


def test_raw_sensor_low_light_is_noisier(psf_file):
    clean = synth(psf_file, phase="val", noise=NO_NOISE, quantize_bits=None)
    bright = synth(psf_file, phase="val", sensor={"kind": "raw"}, quantize_bits=None)
    dark = synth(psf_file, phase="val", sensor={"kind": "raw", "exposure": 0.02, "digital_gain": True},
                 quantize_bits=None)
    for ds in (bright, dark):
        assert ds[0]["lq"].shape == (3, *SIZE) and 0 <= ds[0]["lq"].min() and ds[0]["lq"].max() <= 1
    # Same camera in both (the draws come in the same order); the gap to the noise-free image
    # grows at a 50x shorter exposure.
    def gap(ds):
        return sum(float((ds[i]["lq"] - clean[i]["lq"]).abs().mean()) for i in range(2))
    assert gap(dark) > 1.5 * gap(bright)


def test_sensor_errors(psf_file):
    with pytest.raises(ConfigError, match="give noise or sensor, not both"):
        synth(psf_file, noise=NO_NOISE, sensor={"kind": "qis"})
    with pytest.raises(ConfigError, match="unknown sensor 'qiss'; did you mean 'qis'"):
        synth(psf_file, sensor={"kind": "qiss"})
    with pytest.raises(ConfigError, match=r"unknown key sensor.exposur for the raw sensor.*did you mean sensor.exposure"):
        synth(psf_file, sensor={"kind": "raw", "exposur": 0.1})
    with pytest.raises(ConfigError, match="sensor must be a mapping"):
        synth(psf_file, sensor="qis")
    with pytest.raises(ConfigError, match=r"lq size \[15, 15\] \(crop_size\) must be even"):
        synth(psf_file, sensor={"kind": "raw"}, crop_size=15)
    synth(psf_file, sensor={"kind": "raw", "bayer": False}, crop_size=15)[0]


def test_depth_psf_fields_are_refused_in_one_line(tmp_path):
    from psf.depth import save_depth_psf_field
    from psf.svpsf import PSFSimulator

    options = {"psf_type": "seidel", "grid_shape": [2, 2], "psf_size": 9, "sensor_res": [24, 32],
               "pixel_pitch_um": 4.0, "f_number": 4.0, "focal_length_mm": 25.0, "focus_distance_m": 2.0,
               "object_distance_m": [1.0, 3.0]}
    with pytest.raises(ConfigError) as info:
        create_dataset({"type": "SyntheticBlurDataset", "psf": options, "names": ["camera"]})
    text = str(info.value)
    assert "\n" not in text and "object_distance_m lists 2 distances (1, 3 m)" in text
    assert "--scenes layered" in text and "HFDataset (extra_keys: [depth])" in text
    save_depth_psf_field(PSFSimulator(**options).simulate(), tmp_path / "psfs.h5")
    with pytest.raises(ConfigError) as info:
        create_dataset({"type": "SyntheticBlurDataset", "psf_path": str(tmp_path), "names": ["camera"]})
    text = str(info.value)
    assert "\n" not in text and "depth-aware PSF file (2 planes, 1, 3 m)" in text and "at_depth" in text
    # one distance is one plane: accepted
    ds = create_dataset({"type": "SyntheticBlurDataset", "psf": {**options, "object_distance_m": 1.0},
                         "names": ["camera"], "phase": "val"})
    assert ds[0]["lq"].shape == (3, 24, 32)
