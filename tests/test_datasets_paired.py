"""PairedFolderDataset: pairing, aligned seeded augmentation, determinism, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import check_dataset_options, create_dataset
from dataset.base import sample_seed
from utils.errors import ConfigError, DataError


def save_rgb(path, arr_uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr_uint8).save(path)  # PIL writes RGB: independent of our OpenCV reader


def make_folder(root, names=("a", "sub/b", "c"), size=(24, 32), ext_lq=".png"):
    """gt random 8-bit; lq = 255 - gt, so alignment is checkable pixel by pixel."""
    rng = np.random.default_rng(0)
    images = {}
    for name in names:
        gt = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        save_rgb(root / "gt" / f"{name}.png", gt)
        save_rgb(root / "lq" / f"{name}{ext_lq}", 255 - gt)
        images[name] = gt.astype(np.float32) / 255
    return images


def dihedral_views(img_chw):
    """All 8 flips/transposes of a C×H×W tensor, keyed like Geometry (hflip, vflip, transpose)."""
    out = {}
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                x = img_chw
                x = x.flip(-1) if h else x
                x = x.flip(-2) if v else x
                x = x.transpose(-1, -2) if t else x
                out[(h, v, t)] = x
    return out


def locate(sample_gt, source_hwc):
    """(top, left, (hflip, vflip, transpose)) such that the sample is that view of a source window."""
    src = torch.from_numpy(source_hwc.transpose(2, 0, 1))
    h, w = sample_gt.shape[-2:]
    hits = []
    for t in (False, True):
        ch, cw = (w, h) if t else (h, w)
        for top in range(src.shape[1] - ch + 1):
            for left in range(src.shape[2] - cw + 1):
                window = src[:, top:top + ch, left:left + cw]
                for flags, view in dihedral_views(window).items():
                    if flags[2] == t and view.shape == sample_gt.shape and torch.equal(view, sample_gt):
                        hits.append((top, left, flags))
    assert len(hits) == 1, f"sample matches {len(hits)} windows"
    return hits[0]


def test_pairing_keys_and_full_images(tmp_path):
    images = make_folder(tmp_path, ext_lq=".bmp")  # extension may differ between gt and lq
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val"})
    assert len(ds) == 3 and ds.keys == ["a", "c", "sub/b"]
    s = ds[2]
    assert s["key"] == "sub/b"
    assert s["gt"].dtype == torch.float32 and s["gt"].shape == (3, 24, 32)
    np.testing.assert_array_equal(s["gt"].numpy().transpose(1, 2, 0), images["sub/b"])
    torch.testing.assert_close(s["lq"], 1 - s["gt"], atol=1e-6, rtol=0)


def test_channel_order_is_rgb(tmp_path):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    save_rgb(tmp_path / "gt" / "r.png", red)
    save_rgb(tmp_path / "lq" / "r.png", red)
    s = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "test"})[0]
    assert s["gt"][0].min() == 1 and s["gt"][1:].max() == 0


def test_train_crops_aligned_random_and_all_flips(tmp_path):
    images = make_folder(tmp_path, names=("a",))
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": 8, "seed": 5})
    ds.pairs = ds.pairs * 40  # 40 draws of the same image
    seen_flags, seen_pos = set(), set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["gt"].shape == (3, 8, 8)
        torch.testing.assert_close(s["lq"], 1 - s["gt"], atol=1e-6, rtol=0)  # aligned after crop+flip
        top, left, flags = locate(s["gt"], images["a"])
        seen_flags.add(flags)
        seen_pos.add((top, left))
    assert len(seen_flags) == 8  # every rotation/reflection occurs
    assert len(seen_pos) > 20  # crop positions spread over the image


def test_flip_options_off_and_rectangular_crop(tmp_path):
    images = make_folder(tmp_path, names=("a",))
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": [6, 10],
                         "use_flip": False, "use_rot": False})
    ds.pairs = ds.pairs * 10
    for i in range(len(ds)):
        s = ds[i]
        assert s["gt"].shape == (3, 6, 10)
        assert locate(s["gt"], images["a"])[2] == (False, False, False)


def test_seeded_by_seed_epoch_index(tmp_path):
    make_folder(tmp_path)
    opt = {"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": 8, "seed": 1}
    a, b = create_dataset(opt), create_dataset(opt)
    b[1], b[0]  # access order must not matter (no shared RNG state)
    for i in range(len(a)):
        assert torch.equal(a[i]["gt"], b[i]["gt"])
    first = [a[i]["gt"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["gt"], first[i]) for i in range(len(a)))
    a.set_epoch(0)
    assert all(torch.equal(a[i]["gt"], first[i]) for i in range(len(a)))
    c = create_dataset({**opt, "seed": 2})
    assert any(not torch.equal(c[i]["gt"], first[i]) for i in range(len(a)))
    assert len({sample_seed(0, e, i) for e in range(20) for i in range(50)}) == 1000


def test_dataloader_workers_see_identical_samples(tmp_path):
    make_folder(tmp_path)
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": 8})
    ds.set_epoch(3)

    def collect(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        return [(batch["key"], batch["gt"]) for batch in loader]

    single, multi = collect(0), collect(2)
    assert [k for k, _ in single] == [k for k, _ in multi]
    for (_, x), (_, y) in zip(single, multi):
        assert torch.equal(x, y)


def test_validation_is_fixed_centre_crop(tmp_path):
    images = make_folder(tmp_path, names=("a",))
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val", "crop_size": 10})
    first = ds[0]["gt"]
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert torch.equal(ds[0]["gt"], first)
    # 24x32 image, 10x10 crop: top (24-10)//2 = 7, left (32-10)//2 = 11, no flip.
    expected = torch.from_numpy(images["a"][7:17, 11:21].transpose(2, 0, 1))
    assert torch.equal(first, expected)


def test_errors(tmp_path):
    opt = {"type": "PairedFolderDataset", "root": str(tmp_path / "nope")}
    with pytest.raises(DataError, match="dataset folder not found"):
        create_dataset(opt)
    (tmp_path / "d" / "gt").mkdir(parents=True)
    with pytest.raises(DataError, match="lq_folder not found"):
        create_dataset({**opt, "root": str(tmp_path / "d")})
    (tmp_path / "d" / "lq").mkdir()
    with pytest.raises(DataError, match="no images in"):
        create_dataset({**opt, "root": str(tmp_path / "d")})

    make_folder(tmp_path / "u", names=("a", "b", "c", "d", "e"))
    (tmp_path / "u" / "lq" / "b.png").unlink()
    save_rgb(tmp_path / "u" / "lq" / "zz.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"unpaired images: 1 in .*gt without a partner in the lq folder: b; "
                                        r"1 in .*lq without a partner in the gt folder: zz"):
        create_dataset({**opt, "root": str(tmp_path / "u")})

    make_folder(tmp_path / "dup", names=("a",))
    save_rgb(tmp_path / "dup" / "gt" / "a.bmp", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="share the name 'a'"):
        create_dataset({**opt, "root": str(tmp_path / "dup")})

    make_folder(tmp_path / "size", names=("a",))
    save_rgb(tmp_path / "size" / "lq" / "a.png", np.zeros((24, 30, 3), np.uint8))
    ds = create_dataset({**opt, "root": str(tmp_path / "size")})
    with pytest.raises(DataError, match=r"sample 'a': gt is 32x24 but lq is 30x24"):
        ds[0]

    make_folder(tmp_path / "small", names=("a",))
    ds = create_dataset({**opt, "root": str(tmp_path / "small"), "crop_size": 30})
    with pytest.raises(DataError, match=r"sample 'a' is 32x24 .*smaller than crop_size 30x30"):
        ds[0]

    with pytest.raises(ConfigError, match="phase must be one of train, val, test"):
        create_dataset({**opt, "root": str(tmp_path / "small"), "phase": "validation"})
    with pytest.raises(ConfigError, match="crop_size must be"):
        create_dataset({**opt, "root": str(tmp_path / "small"), "crop_size": "96"})


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown key datasets.train.crop_sise .*did you mean datasets.train.crop_size"):
        check_dataset_options({"type": "PairedFolderDataset", "root": "x", "crop_sise": 9}, prefix="datasets.train")


def test_unreadable_image_named_and_skipped(tmp_path):
    make_folder(tmp_path, names=("a", "b", "c"))
    (tmp_path / "gt" / "b.png").write_bytes(b"not a png")
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val"})
    with pytest.raises(DataError, match=r"cannot read image .*gt/b.png"):
        ds[1]
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val", "skip_bad_samples": True})
    keys = [ds[i]["key"] for i in range(3)]
    assert keys == ["a", "c", "c"]  # the next good sample stands in
    assert list(ds.skipped) == ["1"] and "gt/b.png" in ds.skipped["1"]


def test_every_registered_dataset_is_a_dataset_class():
    """Module constants or helpers in dataset/*_dataset.py must not leak into the registry."""
    from dataset import dataset_names
    from utils.registry import DATASETS

    names = dataset_names()
    assert {"HFDataset", "PairedFolderDataset", "SyntheticBlurDataset"} <= set(names)
    for name in names:
        cls = DATASETS.get(name)
        assert isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset), name
