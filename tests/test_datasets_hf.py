"""HFDataset: a dataset folder in the DESIGN.md layout read through datasets.load_dataset."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dataset import create_dataset
from utils.errors import DataError


def png_bytes(arr):
    if arr.dtype == np.uint16:  # PIL cannot write 16-bit RGB: OpenCV (BGR order on disk)
        ok, buf = cv2.imencode(".png", arr[:, :, ::-1])
        assert ok
        return buf.tobytes()
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG")
    return b.getvalue()


def make_hf_folder(root, splits=(("train", 5), ("validation", 2)), size=(16, 20), columns=("gt", "lq"),
                   with_key=True, bits=8):
    """data/{split}-00000-of-00001.parquet with Image() columns; lq = max - gt."""
    import datasets

    rng = np.random.default_rng(0)
    top = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    feats = {columns[0]: datasets.Image(), columns[1]: datasets.Image(), "source": datasets.Value("string")}
    if with_key:
        feats["key"] = datasets.Value("string")
    truth = {}
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, n in splits:
        rows = {name: [] for name in feats}
        for i in range(n):
            gt = rng.integers(0, top + 1, (*size, 3), dtype=dtype)
            rows[columns[0]].append({"bytes": png_bytes(gt), "path": None})
            rows[columns[1]].append({"bytes": png_bytes(top - gt), "path": None})
            rows["source"].append(f"img{i}")
            if with_key:
                rows["key"].append(f"{split}_{i:03d}")
            truth[(split, i)] = gt.astype(np.float32) / top
        datasets.Dataset.from_dict(rows, features=datasets.Features(feats)).to_parquet(
            str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return truth


@pytest.fixture()
def hf_folder(tmp_path):
    truth = make_hf_folder(tmp_path / "ds")
    return tmp_path / "ds", truth


def opts(path, tmp_path, **kw):
    return {"type": "HFDataset", "path": str(path), "cache_dir": str(tmp_path / "cache"), **kw}


def test_reads_splits_keys_and_pixels(hf_folder, tmp_path):
    path, truth = hf_folder
    val = create_dataset(opts(path, tmp_path, split="validation", phase="val"))
    assert len(val) == 2
    s = val[1]
    assert s["key"] == "validation_001" and s["gt"].shape == (3, 16, 20) and s["gt"].dtype == torch.float32
    np.testing.assert_array_equal(s["gt"].numpy().transpose(1, 2, 0), truth[("validation", 1)])
    torch.testing.assert_close(s["lq"], 1 - s["gt"], atol=1e-6, rtol=0)
    train = create_dataset(opts(path, tmp_path, crop_size=8, seed=3))
    assert len(train) == 5
    for i in range(5):
        t = train[i]
        assert t["gt"].shape == (3, 8, 8)
        torch.testing.assert_close(t["lq"], 1 - t["gt"], atol=1e-6, rtol=0)  # aligned crop + flips


def test_sixteen_bit_kept(tmp_path):
    truth = make_hf_folder(tmp_path / "ds16", splits=(("train", 1),), bits=16)
    s = create_dataset(opts(tmp_path / "ds16", tmp_path, phase="test"))[0]
    np.testing.assert_allclose(s["gt"].numpy().transpose(1, 2, 0), truth[("train", 0)], atol=1e-7, rtol=0)
    assert len(np.unique(np.round(s["gt"].numpy() * 65535) % 257)) > 1  # not 8-bit values in disguise


def test_determinism_and_epochs(hf_folder, tmp_path):
    path, _ = hf_folder
    a = create_dataset(opts(path, tmp_path, crop_size=8, seed=1))
    b = create_dataset(opts(path, tmp_path, crop_size=8, seed=1))
    assert all(torch.equal(a[i]["gt"], b[i]["gt"]) for i in range(5))
    first = [a[i]["gt"] for i in range(5)]
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["gt"], first[i]) for i in range(5))
    v = create_dataset(opts(path, tmp_path, split="validation", phase="val", crop_size=8))
    x = v[0]["gt"]
    v.set_epoch(7)
    assert torch.equal(v[0]["gt"], x)


def test_custom_columns_and_missing_key_column(tmp_path):
    truth = make_hf_folder(tmp_path / "c", splits=(("train", 2),), columns=("sharp", "blurry"), with_key=False)
    ds = create_dataset(opts(tmp_path / "c", tmp_path, gt_key="sharp", lq_key="blurry", phase="val"))
    s = ds[1]
    assert s["key"] == "train/000001"
    np.testing.assert_array_equal(s["gt"].numpy().transpose(1, 2, 0), truth[("train", 1)])
    with pytest.raises(DataError, match=r"no column 'gt' for gt_key.*columns: sharp, blurry"):
        create_dataset(opts(tmp_path / "c", tmp_path))
    with pytest.raises(DataError, match=r"no column 'blury' for lq_key; did you mean lq_key: blurry\?"):
        create_dataset(opts(tmp_path / "c", tmp_path, gt_key="sharp", lq_key="blury"))


def test_errors(hf_folder, tmp_path):
    path, _ = hf_folder
    with pytest.raises(DataError, match=r"Unknown split \"val\".*validation"):
        create_dataset(opts(path, tmp_path, split="val"))
    with pytest.raises(DataError, match="dataset folder not found: ./nowhere"):
        create_dataset(opts("./nowhere", tmp_path))
    # Offline (conftest sets HF_HUB_OFFLINE): a Hub id fails with one line, no traceback needed.
    with pytest.raises(DataError, match=r"cannot load someone/data \(no such local folder, so read as a Hub dataset id\)"):
        create_dataset(opts("someone/data", tmp_path))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="cannot load dataset folder"):
        create_dataset(opts(tmp_path / "emptydir", tmp_path))


def test_corrupt_image_named(tmp_path):
    import datasets

    (tmp_path / "bad" / "data").mkdir(parents=True)
    good = png_bytes(np.zeros((8, 8, 3), np.uint8))
    feats = datasets.Features({"gt": datasets.Image(), "lq": datasets.Image(), "key": datasets.Value("string")})
    rows = {"gt": [{"bytes": good, "path": None}, {"bytes": good[:20], "path": None}],
            "lq": [{"bytes": good, "path": None}] * 2, "key": ["ok", "broken"]}
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(tmp_path / "bad" / "data" / "train-00000-of-00001.parquet"))
    ds = create_dataset(opts(tmp_path / "bad", tmp_path, phase="val"))
    with pytest.raises(DataError, match=r"cannot decode image 'gt' of sample 'broken'"):
        ds[1]
    ds = create_dataset(opts(tmp_path / "bad", tmp_path, phase="val", skip_bad_samples=True))
    assert ds[1]["key"] == "ok" and len(ds.skipped) == 1
