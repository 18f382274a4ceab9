"""A depth-aware step-3 dataset (``--scenes layered``) read back by HFDataset with
``extra_keys: [depth]``: the depth map in metres as a ``map`` entry, cropped and flipped exactly
as gt and lq; layered scenes captured by a simulated sensor store it per sample."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from data_gen.depth_dataset import DepthSceneConfig, build_depth_dataset
from dataset import create_dataset
from psf.depth import save_depth_psf_field
from psf.svpsf import PSFSimulator
from utils.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    root = tmp_path_factory.mktemp("layered")
    stack = PSFSimulator("seidel", grid_shape=(2, 2), psf_size=9, sensor_res=(24, 32), pixel_pitch_um=4.0,
                         f_number=4.0, focal_length_mm=25.0, focus_distance_m=2.0,
                         object_distance_m=[1.0, 2.0, 8.0]).simulate()
    save_depth_psf_field(stack, root / "psf" / "psfs.h5")
    cfg = DepthSceneConfig(psf_data_path=str(root / "psf"), splits={"train": 3, "validation": 2}, seed=1,
                           sensor="qis", sensor_options={"photons_per_pixel": [20, 40], "bits": 3})
    return build_depth_dataset(cfg, root / "ds", progress=False)


def parquet_rows(out, split):
    import pyarrow.parquet as pq

    return pq.read_table(out / "data" / f"{split}-00000-of-00001.parquet").to_pylist()


def decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def test_layered_scenes_store_their_sensor(layered):
    card = (layered / "README.md").read_text()
    assert "quanta image sensor" in card and "sensor_from_dict" in card
    for row in parquet_rows(layered, "train"):
        params = json.loads(row["sensor"])
        assert row["noise"] == params["kind"] == "qis" and params["bits"] == 3 and 20 <= params["photons_per_pixel"] <= 40
        lq = decode(row["lq"]["bytes"]).astype(np.float64)
        levels = lq / 255 * 7  # a 3-bit readout stored as 8-bit levels: k/7 rounded
        assert np.abs(np.round(levels) / 7 * 255 - lq).max() <= 0.5


def test_val_depth_is_the_stored_map_in_metres(layered):
    ds = create_dataset({"type": "HFDataset", "path": str(layered), "split": "validation", "phase": "val",
                         "extra_keys": ["depth"]})
    assert ds.layouts == {"depth": "map"}
    rows = parquet_rows(layered, "validation")
    for i, row in enumerate(rows):
        s = ds[i]
        depth_mm = decode(row["depth"]["bytes"])
        assert depth_mm.dtype == np.uint16 and s["depth"].shape == (1, 24, 32) and s["depth"].dtype == torch.float32
        np.testing.assert_allclose(s["depth"][0].numpy(), depth_mm / 1000.0, rtol=1e-7)
        layers = np.asarray(row["layer_depths_m"])
        assert all(np.abs(layers - v).min() < 6e-4 for v in np.unique(s["depth"].numpy()))  # mm rounding


def dihedral(a: np.ndarray):  # the 8 flips/transposes of an H×W(×C) array
    for t in (False, True):
        b = a.transpose(1, 0, *range(2, a.ndim)) if t else a
        for fy in (False, True):
            for fx in (False, True):
                yield (t, fy, fx), b[::-1 if fy else 1, ::-1 if fx else 1]


def test_train_depth_is_cropped_and_flipped_with_the_image(layered):
    ds = create_dataset({"type": "HFDataset", "path": str(layered), "split": "train", "phase": "train",
                         "crop_size": 12, "extra_keys": ["depth"], "seed": 5})
    rows = parquet_rows(layered, "train")
    transforms_seen = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i, row in enumerate(rows):
            s = ds[i]
            gt_full = decode(row["gt"]["bytes"])[:, :, ::-1].astype(np.float32) / 255
            lq_full = decode(row["lq"]["bytes"])[:, :, ::-1].astype(np.float32) / 255
            depth_full = decode(row["depth"]["bytes"]) / 1000.0
            gt, lq, depth = (s[k].numpy() for k in ("gt", "lq", "depth"))
            gt, lq = gt.transpose(1, 2, 0), lq.transpose(1, 2, 0)
            # brute force: every transform and crop position whose gt matches the sample's
            matches = []
            for t, g in dihedral(gt_full):
                for y in range(g.shape[0] - 11):
                    for x in range(g.shape[1] - 11):
                        if np.array_equal(g[y:y + 12, x:x + 12], gt):
                            matches.append((t, y, x))
            assert matches, "gt crop not found in the full gt"
            ok = False
            for t, y, x in matches:
                lq_t = dict(dihedral(lq_full))[t][y:y + 12, x:x + 12]
                d_t = dict(dihedral(depth_full))[t][y:y + 12, x:x + 12]
                if np.array_equal(lq_t, lq) and np.allclose(d_t, depth[0], rtol=1e-7):
                    ok = True
                    transforms_seen.add(t)
            assert ok, f"depth/lq not aligned with gt (sample {i}, epoch {epoch})"
    assert len(transforms_seen) > 1  # flips really happened


def test_extra_keys_errors(layered):
    base = {"type": "HFDataset", "path": str(layered), "split": "validation"}
    with pytest.raises(DataError, match="no column 'dept' for extra_keys; did you mean depth"):
        create_dataset({**base, "extra_keys": ["dept"]})
    with pytest.raises(ConfigError, match="extra_keys takes image columns"):
        create_dataset({**base, "extra_keys": ["layer_depths_m"]})
    with pytest.raises(ConfigError, match="already a sample entry"):
        create_dataset({**base, "extra_keys": ["gt"]})
    with pytest.raises(ConfigError, match="must be a list of column names"):
        create_dataset({**base, "extra_keys": "depth"})
