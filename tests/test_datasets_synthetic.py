"""SyntheticBlurDataset: exact spatially varying blur of built-in images, seeded noise, held-out names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset import create_dataset
from dataset.sources import BUILTIN_IMAGES, fit_to_size, load_builtin
from psf.field import save_psf_field
from tests.test_datasets_psf import check_sample, pixel_psfs, random_field, scatter
from utils.errors import ConfigError

SIZE = (30, 36)  # = the test field's sensor_res


@pytest.fixture(scope="module")
def psf_file(tmp_path_factory):
    field = random_field(grid=(3, 3), k=7, seed=3)
    return field, save_psf_field(field, tmp_path_factory.mktemp("psf") / "psfs.h5")


def synth(psf_file, **kw):
    return create_dataset({"type": "SyntheticBlurDataset", "psf_path": str(psf_file[1]),
                           "names": ["camera", "coffee"], **kw})


NO_NOISE = {"kind": "none"}


def srgb_decode(v):  # IEC 61966-2-1, written out here
    return torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v):
    return torch.where(v <= 0.0031308, 12.92 * v, 1.055 * v.clamp(min=0) ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("linear_light", [False, True])
def test_lq_is_exact_sv_blur_of_gt(psf_file, linear_light):
    field, _ = psf_file
    ds = synth(psf_file, phase="val", noise=NO_NOISE, quantize_bits=None, boundary="zero", linear_light=linear_light)
    assert len(ds) == 2 and [ds[i]["key"] for i in range(2)] == ["camera", "coffee"]
    for i, name in enumerate(["camera", "coffee"]):
        s = ds[i]
        expected_gt = torch.from_numpy(fit_to_size(load_builtin(name), SIZE).transpose(2, 0, 1))
        torch.testing.assert_close(s["gt"], expected_gt)
        maps = pixel_psfs(field, *SIZE)  # independent brute-force scatter
        if linear_light:
            expected_lq = srgb_encode(scatter(srgb_decode(s["gt"].double()), maps))
        else:
            expected_lq = scatter(s["gt"], maps)
        torch.testing.assert_close(s["lq"], expected_lq.float(), atol=2e-5, rtol=0)


def test_quantized_gt_and_noise_statistics(psf_file):
    clean = synth(psf_file, phase="val", noise=NO_NOISE, quantize_bits=None)
    noisy = synth(psf_file, phase="val", noise={"kind": "gaussian", "sigma": 0.05}, quantize_bits=None)
    resid = torch.cat([(noisy[i]["lq"] - clean[i]["lq"]).flatten() for i in range(2)])
    assert abs(resid.std().item() - 0.05) < 0.05 * 0.06  # 6480 samples: std within 6 %
    assert abs(resid.mean().item()) < 0.004
    q = synth(psf_file, phase="val")  # default: Gaussian sigma 0.01, 8-bit
    for i in range(2):
        for key in ("gt", "lq"):
            levels = q[i][key] * 255
            torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)  # 8-bit levels


def test_validation_noise_fixed_training_noise_per_epoch(psf_file):
    val = synth(psf_file, phase="val")
    first = val[0]["lq"]
    val.set_epoch(5)
    assert torch.equal(val[0]["lq"], first)
    assert torch.equal(synth(psf_file, phase="val")[0]["lq"], first)  # a fresh instance too
    train = synth(psf_file, crop_size=12, samples_per_image=3, seed=7)
    assert len(train) == 6 and train[4]["key"] == "coffee#1"
    a = [train[i]["lq"] for i in range(6)]
    assert all(torch.equal(a[i], train[i]["lq"]) for i in range(6))
    train.set_epoch(1)
    assert all(not torch.equal(a[i], train[i]["lq"]) for i in range(6))


def test_noise_range_drawn_per_sample(psf_file):
    clean = synth(psf_file, crop_size=12, noise=NO_NOISE, quantize_bits=None, samples_per_image=20, use_flip=False,
                  use_rot=False)
    noisy = synth(psf_file, crop_size=12, noise={"kind": "gaussian", "sigma": [0.0, 0.1]}, quantize_bits=None,
                  samples_per_image=20, use_flip=False, use_rot=False)
    stds = torch.tensor([(noisy[i]["lq"] - clean[i]["lq"]).std().item() for i in range(len(noisy))])
    assert stds.min() < 0.03 and stds.max() > 0.07  # spread over the range, not one fixed level


def test_poisson_gaussian_noise_variance_follows_signal(psf_file):
    """Shot noise in linear light: Var = L/photons (+ read noise), so brighter pixels are noisier."""
    clean = synth(psf_file, phase="val", noise=NO_NOISE, quantize_bits=None)
    noisy = synth(psf_file, phase="val", noise={"kind": "poisson_gaussian", "photons": 200, "read_noise": 0},
                  quantize_bits=None)
    lin_clean = torch.cat([srgb_decode(clean[i]["lq"].double()).flatten() for i in range(2)])
    lin_noisy = torch.cat([srgb_decode(noisy[i]["lq"].double()).flatten() for i in range(2)])
    resid = lin_noisy - lin_clean
    for lo, hi in ((0.05, 0.2), (0.4, 0.9)):
        sel = (lin_clean > lo) & (lin_clean < hi)
        ratio = resid[sel].var() / (lin_clean[sel].mean() / 200)
        assert 0.85 < ratio < 1.15, (lo, hi, ratio)


def test_psf_keys_recreate_sample(psf_file):
    field, _ = psf_file
    ds = synth(psf_file, crop_size=16, noise=NO_NOISE, quantize_bits=None, samples_per_image=4, linear_light=False,
               psf_keys=["psf", "basis_psfs", "basis_coef"])
    for i in range(len(ds)):
        check_sample(ds[i], field)


def test_names_exclude_and_errors(psf_file):
    ds = create_dataset({"type": "SyntheticBlurDataset", "psf_path": str(psf_file[1]), "phase": "val",
                         "exclude": ["astronaut", "camera"], "image_size": [20, 24]})
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert keys == sorted(set(BUILTIN_IMAGES) - {"astronaut", "camera"}) and "cat" not in keys
    assert ds[0]["gt"].shape == (3, 20, 24)
    with pytest.raises(ConfigError, match=r"unknown built-in image 'astronot'; did you mean 'astronaut'"):
        synth(psf_file, names=["astronot"])
    with pytest.raises(ConfigError, match="give exactly one of psf_path"):
        create_dataset({"type": "SyntheticBlurDataset", "names": ["camera"]})
    with pytest.raises(ConfigError, match=r"noise.sigma must be a number >= 0 or a \[low, high\] range"):
        synth(psf_file, noise={"kind": "gaussian", "sigma": [0.1, 0.0]})
    with pytest.raises(ConfigError, match=r"unknown key noise.sigm .*did you mean noise.sigma"):
        synth(psf_file, noise={"kind": "gaussian", "sigm": 0.1})
    with pytest.raises(ConfigError, match="noise.kind must be one of"):
        synth(psf_file, noise={"kind": "poisson"})


def test_image_folder_source(tmp_path, psf_file):
    from utils.image_io import write_image

    rng = np.random.default_rng(0)
    for name in ("x/one", "two"):
        write_image(tmp_path / "imgs" / f"{name}.png", rng.random((40, 50, 3)).astype(np.float32))
    ds = create_dataset({"type": "SyntheticBlurDataset", "psf_path": str(psf_file[1]), "images": str(tmp_path / "imgs"),
                         "phase": "test"})
    assert [ds[i]["key"] for i in range(2)] == ["two", "x/one"] and ds[0]["gt"].shape == (3, *SIZE)


def test_field_simulated_from_psf_options():
    from psf.svpsf import PSFSimulator

    options = {"psf_type": "gaussian", "grid_shape": [3, 3], "psf_size": 9, "sensor_res": list(SIZE),
               "sigma_px": 0.7, "sigma_corner_radial_px": 2.0, "sigma_corner_tangential_px": 1.0}
    ds = create_dataset({"type": "SyntheticBlurDataset", "psf": options, "names": ["camera"], "phase": "val",
                         "noise": NO_NOISE, "quantize_bits": None, "boundary": "zero", "linear_light": False})
    field = PSFSimulator(**options).simulate()
    torch.testing.assert_close(ds.field.psfs, field.psfs)
    s = ds[0]
    torch.testing.assert_close(s["lq"], scatter(s["gt"], pixel_psfs(field, *SIZE)).float(), atol=2e-5, rtol=0)
    with pytest.raises(ConfigError, match=r"unknown option 'sigma' for psf_type 'gaussian'; did you mean 'sigma_px'"):
        create_dataset({"type": "SyntheticBlurDataset", "psf": {**options, "sigma": 1.0}, "names": ["camera"]})


def test_sources_hide_no_file_and_step3_reads_the_same_pixels(tmp_path):
    """One list of sources for the on-the-fly datasets and step 3: files sharing a stem keep their
    extension in the name (none hides another); step 3 names files with their extension."""
    import cv2

    from data_gen.step3_writer import read_step3_source, step3_sources
    from dataset.sources import list_sources, load_source

    (tmp_path / "sub").mkdir()
    pixels = {}
    for i, name in enumerate(["a.png", "a.bmp", "b-c.png", "b.png", "sub/d.png"]):
        img = np.full((4, 5, 3), 40 * i, np.uint8)
        img[0, 0] = (255, 0, 0)  # BGR on disk: channel order is checked too
        cv2.imwrite(str(tmp_path / name), img)
        pixels[name] = img[:, :, ::-1].astype(np.float32) / 255
    sources = list_sources(str(tmp_path))
    assert [n for n, _ in sources] == ["a.bmp", "a.png", "b", "b-c", "sub/d"]
    assert [p.relative_to(tmp_path).as_posix() for _, p in sources] == ["a.bmp", "a.png", "b.png", "b-c.png", "sub/d.png"]
    step3 = step3_sources(str(tmp_path))
    assert [s["name"] for s in step3] == ["a.bmp", "a.png", "b-c.png", "b.png", "sub/d.png"]  # byte order of the names
    assert [s["bytes"] for s in step3] == [(tmp_path / s["name"]).stat().st_size for s in step3]
    for name, path in sources:
        rel = path.relative_to(tmp_path).as_posix()
        np.testing.assert_array_equal(load_source(name, path), pixels[rel])
        np.testing.assert_array_equal(read_step3_source(str(tmp_path), rel), pixels[rel])
    assert [s["name"] for s in step3_sources("builtin")] == list(BUILTIN_IMAGES)
    np.testing.assert_array_equal(read_step3_source("builtin", "camera"), load_builtin("camera"))
