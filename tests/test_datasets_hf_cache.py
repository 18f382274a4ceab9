"""HFDataset never reads a stale cache: two local dataset folders with the same name and card
(or one folder regenerated) are different datasets to it."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import cv2
import skimage.data

from psf.field import save_psf_field
from psf.example_fields import elliptical_gaussian_field

ROOT = Path(__file__).resolve().parent.parent


def step3(argv):
    spec = importlib.util.spec_from_file_location("step3", ROOT / "data_gen" / "3.generate_dataset_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_same_folder_name_and_card_are_not_confused(tmp_path):
    from dataset import create_dataset

    save_psf_field(elliptical_gaussian_field(grid_shape=(2, 2), psf_size=5, sensor_res=(16, 24)), tmp_path / "psf")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(images / f"{name}.png"), getattr(skimage.data, name)()[::8, ::8, ::-1])
    cache = tmp_path / "cache"

    def make(folder, samples):
        assert step3(["--psf_data_path", str(tmp_path / "psf"), "--images", str(images), "--out", str(folder),
                      "--splits", "train=1", "--samples_per_image", str(samples), "--workers", "1"]) == 0

    def count(folder):
        return len(create_dataset({"type": "HFDataset", "path": str(folder), "split": "train", "cache_dir": str(cache)}))

    make(tmp_path / "a" / "ds", 1)
    make(tmp_path / "b" / "ds", 2)  # same folder name, same card metadata, other contents
    assert count(tmp_path / "a" / "ds") == 3
    assert count(tmp_path / "b" / "ds") == 6
    shutil.rmtree(tmp_path / "a" / "ds")
    make(tmp_path / "a" / "ds", 3)  # regenerated in place
    assert count(tmp_path / "a" / "ds") == 9
