"""dataset/transforms.py: every keyed entry moved in alignment (any scale), layouts, and samples
unchanged from the geometry the datasets used before keyed transforms (scale 1)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import create_dataset
from dataset.base import sample_generator
from dataset.transforms import Geometry, KeyedTransform, downscale
from utils.errors import ConfigError, DataError


# -- today's behaviour, frozen ------------------------------------------------------------------
def legacy_draw(h, w, crop, use_flip, use_rot, generator):
    """The geometry draw of dataset/base.py before keyed transforms (copied verbatim, as a reference)."""
    ch, cw = crop
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    hflip = vflip = transpose = False
    if use_flip:
        hflip, vflip = (bool(b) for b in torch.rand(2, generator=generator) < 0.5)
    if use_rot and ch == cw:
        transpose = bool(torch.rand(1, generator=generator) < 0.5)
    return (top, left, ch, cw, hflip, vflip, transpose)


@pytest.mark.parametrize("crop", [(8, 8), (6, 10), (24, 32)])
@pytest.mark.parametrize("use_flip,use_rot", [(True, True), (True, False), (False, True), (False, False)])
def test_draws_equal_the_legacy_geometry(crop, use_flip, use_rot):
    transform = KeyedTransform(crop, 1, use_flip, use_rot, time_reverse=True)
    for index in range(50):
        g_new, g_old = sample_generator(3, 1, index), sample_generator(3, 1, index)
        geometry = transform.draw((24, 32), g_new, "x", clip=False)
        assert (geometry.top, geometry.left, geometry.height, geometry.width, geometry.hflip, geometry.vflip,
                geometry.transpose) == legacy_draw(24, 32, crop, use_flip, use_rot, g_old)
        assert not geometry.reverse_time  # an image sample never draws a time reversal
        # Same number of draws consumed: later draws (noise) are unchanged too.
        assert torch.equal(torch.rand(4, generator=g_new), torch.rand(4, generator=g_old))


# Digests of PairedFolderDataset samples (4 epochs of every option set) computed with the code
# before keyed transforms (commit eb9ac40) on tests/test_datasets_paired.make_folder's data.
LEGACY_DIGESTS = [
    ({"crop_size": 8, "seed": 3}, "0ee991a0543d31c52ee8"),
    ({"crop_size": [6, 10], "seed": 4}, "10a0559d0d9a08a15d7c"),
    ({"crop_size": 8, "use_rot": False, "seed": 5}, "96f2c392e6647aefd8dd"),
    ({"phase": "val", "crop_size": [9, 12]}, "d0a410672b7cfa625d2f"),
    ({"phase": "test"}, "06960c30c61bff3fa504"),
]


def test_folder_samples_bit_identical_to_before(tmp_path):
    from test_datasets_paired import make_folder

    make_folder(tmp_path, names=("a", "sub/b", "c"), size=(24, 32))
    for options, expected in LEGACY_DIGESTS:
        ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), **options})
        h = hashlib.sha256()
        for epoch in range(4):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                s = ds[i]
                h.update(s["gt"].numpy().tobytes())
                h.update(s["lq"].numpy().tobytes())
                h.update(s["key"].encode())
        assert h.hexdigest()[:20] == expected, options


def test_synthetic_samples_equal_the_legacy_crop_and_noise_order():
    """Legacy geometry on the same generator, then the dataset's own noise: equal to ds[i]."""
    ds = create_dataset({"type": "SyntheticBlurDataset", "names": ["camera", "coffee"], "image_size": [40, 36],
                         "psf": {"psf_type": "gaussian", "grid_shape": [3, 3], "psf_size": 7, "sensor_res": [40, 36]},
                         "noise": {"kind": "gaussian", "sigma": [0.0, 0.05]}, "crop_size": 16,
                         "samples_per_image": 4, "seed": 7, "psf_keys": ["psf", "basis_coef"]})
    ds.set_epoch(2)
    for i in range(len(ds)):
        g = ds.generator(i)
        top, left, ch, cw, hf, vf, tr = legacy_draw(40, 36, (16, 16), True, True, g)
        geometry = Geometry(top, left, ch, cw, hf, vf, tr)
        j = ds.image_index(i)
        expected = {"gt": geometry.apply(ds.gt_images[j]), "lq": geometry.apply(ds.blurred[j]), "key": ds.sample_key(i)}
        ds.psf_attacher.attach(expected, "psfs.h5", geometry)
        ds.finish_sample(expected, i, geometry, g)
        got = ds[i]
        assert got.keys() == expected.keys()
        for key in ("gt", "lq", "psf", "basis_coef"):
            assert torch.equal(got[key], expected[key]), (i, key)


# -- alignment by construction ------------------------------------------------------------------
def nearest_up(x: torch.Tensor, s: int) -> torch.Tensor:
    return x.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_every_layout_moves_in_alignment(scale):
    """gt = nearest-upsampled lq stays so; a marked mask pixel keeps its lq value; a gt-resolution
    mask and a lq-resolution map follow; kernels get the flips only; vectors/scalars untouched."""
    h, w, crop = 10, 12, 6
    lq = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)  # every value unique
    kernel = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)
    layouts = {"gt": "image", "lq": "image", "mask": "mask", "gt_mask": "mask", "coef": "map",
               "kernel": "kernel", "params": "vector", "level": "scalar"}
    transform = KeyedTransform((crop, crop), scale, use_flip=True, use_rot=True)
    seen = set()
    for index in range(60):
        mark = (index * 7 % h, index * 5 % w)
        mask = torch.zeros(1, h, w)
        mask[0, mark[0], mark[1]] = 1
        sample = {"gt": nearest_up(lq, scale), "lq": lq, "mask": mask, "gt_mask": nearest_up(mask, scale),
                  "coef": lq[:2] * 2, "kernel": kernel, "params": torch.tensor([1.0, 2.0]),
                  "level": torch.tensor(0.5), "key": "k"}
        out, g = transform(sample, layouts, sample_generator(0, 0, index))
        seen.add((g.hflip, g.vflip, g.transpose))
        assert out["lq"].shape == (3, crop, crop) and out["gt"].shape == (3, crop * scale, crop * scale)
        assert torch.equal(out["gt"], nearest_up(out["lq"], scale))
        assert torch.equal(out["gt_mask"], nearest_up(out["mask"], scale))
        assert torch.equal(out["coef"], out["lq"][:2] * 2)
        inside = g.top <= mark[0] < g.top + crop and g.left <= mark[1] < g.left + crop
        assert out["mask"].sum() == int(inside)
        if inside:
            r, c = (int(v) for v in torch.nonzero(out["mask"][0])[0])
            assert torch.equal(out["lq"][:, r, c], lq[:, mark[0], mark[1]])  # the marked pixel moved with its mask
            assert g.source_pixel(r, c) == mark
        view = kernel.flip(-1) if g.hflip else kernel
        view = view.flip(-2) if g.vflip else view
        view = view.transpose(-1, -2) if g.transpose else view
        assert torch.equal(out["kernel"], view)
        assert torch.equal(out["params"], sample["params"]) and out["level"] == 0.5 and out["key"] == "k"
    assert len(seen) == 8


def test_sr_crop_positions_and_evaluation_geometry():
    """×2: the lq crop at (top, left) is the gt crop at (2 top, 2 left); evaluation = centre, no flips."""
    lq = torch.rand(3, 20, 30)
    gt = torch.rand(3, 40, 60)
    layouts = {"gt": "image", "lq": "image"}
    out, g = KeyedTransform((8, 8), 2, use_flip=False, use_rot=False)({"gt": gt, "lq": lq}, layouts,
                                                                        sample_generator(1, 0, 0))
    assert torch.equal(out["lq"], lq[:, g.top:g.top + 8, g.left:g.left + 8])
    assert torch.equal(out["gt"], gt[:, 2 * g.top:2 * g.top + 16, 2 * g.left:2 * g.left + 16])
    evaluation = KeyedTransform((8, 10), 2, use_flip=True, use_rot=True, time_reverse=True, random=False)
    for index in range(5):
        out, g = evaluation({"gt": gt, "lq": lq}, layouts, sample_generator(1, index, index))
        assert (g.top, g.left, g.is_identity_transform) == (6, 10, True)  # (20-8)//2, (30-10)//2
        assert torch.equal(out["gt"], gt[:, 12:28, 20:40])


def test_clip_time_reversal_moves_frames_and_per_frame_displacements_together():
    T = 5
    clip = torch.arange(T, dtype=torch.float32)[:, None, None, None].expand(T, 3, 8, 8).clone()
    clip += torch.rand(3, 8, 8)  # frame t holds values in [t, t+1)
    disp = torch.stack([torch.arange(T) + 1.0, torch.arange(T) + 101.0], -1)  # (t+1, t+101)
    layouts = {"gt": "clip", "lq": "clip", "shifts": "displacement"}
    transform = KeyedTransform((4, 4), 1, use_flip=True, use_rot=True, time_reverse=True)
    reversed_seen = set()
    for index in range(40):
        out, g = transform({"gt": clip, "lq": clip.clone(), "shifts": disp}, layouts, sample_generator(2, 0, index))
        frame_ids = out["lq"].floor().amax(dim=(1, 2, 3)).long().tolist()
        assert frame_ids == (list(range(T))[::-1] if g.reverse_time else list(range(T)))
        reversed_seen.add(g.reverse_time)
        for t, source in enumerate(frame_ids):  # each frame keeps its own displacement (signs/order aside)
            assert sorted(out["shifts"][t].abs().tolist()) == [source + 1, source + 101]
        assert torch.equal(out["gt"], out["lq"])
    assert reversed_seen == {False, True}


def test_displacement_follows_a_moving_pixel():
    """A pixel at p in frame 0 and p + d in frame 1: after any flips, it is at q and q + d'."""
    layouts = {"gt": "clip", "lq": "clip", "d": "displacement"}
    transform = KeyedTransform((9, 9), 1, use_flip=True, use_rot=True)
    for index in range(30):
        clip = torch.zeros(2, 1, 9, 9)
        p, d = (2, 3), (4, -2)
        clip[0, 0, p[0], p[1]] = 1
        clip[1, 0, p[0] + d[0], p[1] + d[1]] = 1
        out, g = transform({"gt": clip, "lq": clip, "d": torch.tensor([[0.0, 0.0], [float(d[0]), float(d[1])]])},
                           layouts, sample_generator(4, 0, index))
        q0 = torch.nonzero(out["lq"][0, 0])[0]
        q1 = torch.nonzero(out["lq"][1, 0])[0]
        assert (q1 - q0).tolist() == out["d"][1].long().tolist()


# -- errors --------------------------------------------------------------------------------------
def test_scale_and_layout_errors(tmp_path):
    layouts = {"gt": "image", "lq": "image"}
    transform = KeyedTransform((4, 4), 2)
    g = sample_generator(0, 0, 0)
    with pytest.raises(DataError, match=r"sample 'im7': gt is 30x20 but lq is 15x11 .* gt must be 15x11 or 30x22 \(scale 2\)"):
        transform({"gt": torch.rand(3, 20, 30), "lq": torch.rand(3, 11, 15), "key": "im7"}, layouts, g)
    with pytest.raises(DataError, match=r"sample 'im7': entry 'mask' has no declared layout"):
        transform({"gt": torch.rand(3, 8, 8), "lq": torch.rand(3, 4, 4), "mask": torch.ones(1, 4, 4), "key": "im7"},
                  layouts, g)
    with pytest.raises(DataError, match=r"entry 'mask' of shape \(3, 4, 4\) does not fit layout mask"):
        transform({"gt": torch.rand(3, 8, 8), "lq": torch.rand(3, 4, 4), "mask": torch.ones(3, 4, 4), "key": "x"},
                  {**layouts, "mask": "mask"}, g)
    with pytest.raises(DataError, match=r"clips of different lengths"):
        transform({"gt": torch.rand(2, 3, 8, 8), "lq": torch.rand(3, 3, 4, 4), "key": "x"},
                  {"gt": "clip", "lq": "clip"}, g)
    with pytest.raises(ConfigError, match="scale must be a positive integer"):
        KeyedTransform(None, 0)
    with pytest.raises(DataError, match=r"sample 'x' is 4x4 lq .*smaller than crop_size 5x5"):
        KeyedTransform((5, 5), 2)({"gt": torch.rand(3, 8, 8), "lq": torch.rand(3, 4, 4), "key": "x"}, layouts, g)


# -- PairedFolderDataset with scale ---------------------------------------------------------------
def write_sr_folder(root, names=("a", "b"), lq_size=(12, 16), scale=2):
    rng = np.random.default_rng(1)
    lqs = {}
    for name in names:
        lq = rng.integers(0, 256, size=(*lq_size, 3), dtype=np.uint8)
        gt = lq.repeat(scale, 0).repeat(scale, 1)
        for side, arr in (("gt", gt), ("lq", lq)):
            (root / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / side / f"{name}.png")
        lqs[name] = torch.from_numpy(lq.transpose(2, 0, 1).astype(np.float32) / 255)
    return lqs


def test_folder_sr_pairs_aligned_and_centre_crop(tmp_path):
    lqs = write_sr_folder(tmp_path)
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 2, "crop_size": 6, "seed": 2})
    ds.pairs = ds.pairs * 10
    for i in range(len(ds)):
        s = ds[i]
        assert s["lq"].shape == (3, 6, 6) and s["gt"].shape == (3, 12, 12)
        assert torch.equal(s["gt"], nearest_up(s["lq"], 2))
    val = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 2, "crop_size": [6, 8],
                          "phase": "val"})
    s = val[0]
    assert torch.equal(s["lq"], lqs["a"][:, 3:9, 4:12])  # (12-6)//2, (16-8)//2
    assert torch.equal(s["gt"], nearest_up(lqs["a"], 2)[:, 6:18, 8:24])
    full = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 2, "phase": "test"})[1]
    assert torch.equal(full["lq"], lqs["b"]) and full["gt"].shape == (3, 24, 32)


def test_folder_scale_mismatch_names_the_sample(tmp_path):
    write_sr_folder(tmp_path, names=("a",), scale=3)
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 2, "phase": "val"})
    with pytest.raises(DataError, match=r"sample 'a': gt is 48x36 but lq is 16x12 \(width x height\); with scale 2 "
                                        r"gt must be 32x24 \(or lq 24x18\)"):
        ds[0]
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val"})
    with pytest.raises(DataError, match=r"sample 'a': gt is 48x36 but lq is 16x12 .*pairs must match"):
        ds[0]
    with pytest.raises(ConfigError, match="scale must be a positive integer"):
        create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 1.5})
    with pytest.raises(ConfigError, match=r"psf_keys \['psf'\] with scale 2"):
        create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "scale": 2, "psf_keys": ["psf"]})


# -- downscaling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_is_matlab_bicubic_and_block_means(scale):
    x = torch.rand(2, 3, 12 * scale, 10 * scale)
    area = downscale(x, scale, "area")
    blocks = x.reshape(2, 3, 12, scale, 10, scale).mean(dim=(3, 5))
    torch.testing.assert_close(area, blocks, atol=1e-6, rtol=0)
    ours = downscale(x, scale, "bicubic")
    from utils.imresize import imresize  # MATLAB's imresize (tests/test_imresize.py: BasicSR and Octave fixtures)

    torch.testing.assert_close(ours, imresize(x, 1 / scale).clamp(0, 1), atol=1e-6, rtol=0)
    # PIL's bicubic has the same kernel: equal away from the borders (it renormalises at the edges).
    for b in range(2):
        for c in range(3):
            pil = Image.fromarray(x[b, c].numpy(), mode="F").resize((10, 12), Image.BICUBIC)
            np.testing.assert_allclose(ours[b, c, 2:-2, 2:-2].numpy(), np.clip(np.asarray(pil), 0, 1)[2:-2, 2:-2],
                                       atol=1e-5)
    with pytest.raises(DataError, match="multiples of 3"):
        downscale(torch.rand(3, 10, 9), 3)


# -- a dataset with clips and extra keyed entries through the base class ---------------------------
class ToyKeyed:
    """Built lazily (the base class lives in dataset.base): clips as T×H×W×C arrays from
    load_pair, plus a mask, an aligned reference image and a per-sample parameter."""

    @staticmethod
    def make(**kw):
        from dataset.base import PairedImageDataset, as_chw

        class Toy(PairedImageDataset):
            layouts = {"mask": "mask", "ref": "image", "sigma": "scalar"}

            def __init__(self, **kw):
                super().__init__(**{"phase": "train", "crop_size": 4, "use_flip": True, "use_rot": True, "seed": 0,
                                    "skip_bad_samples": False, **kw})
                rng = np.random.default_rng(0)
                self.lq = rng.random((3, 8, 10, 3), dtype=np.float32)  # T×H×W×C
                self.mask = (rng.random((1, 8, 10)) < 0.3).astype(np.float32)

            def __len__(self):
                return 20

            def load_pair(self, index):
                gt = self.lq.repeat(self.scale, 1).repeat(self.scale, 2)
                return gt, self.lq, f"clip{index}"

            def load_sample(self, index, generator):
                sample = super().load_sample(index, generator)
                lq = as_chw(self.lq)
                return {**sample, "mask": torch.from_numpy(self.mask), "ref": lq[1] * 0.5,
                        "sigma": torch.tensor(float(index))}

        return Toy(**kw)


@pytest.mark.parametrize("scale", [1, 2])
def test_base_class_clips_and_extra_entries(scale):
    ds = ToyKeyed.make(scale=scale, time_reverse=True)
    for i in range(len(ds)):
        s = ds[i]
        assert s["lq"].shape == (3, 3, 4, 4) and s["gt"].shape == (3, 3, 4 * scale, 4 * scale)
        assert torch.equal(s["gt"], nearest_up(s["lq"], scale))
        assert torch.equal(s["ref"], s["lq"][1] * 0.5)  # the centre frame survives time reversal
        # the mask moved with lq: the (unique) pixel values it marks are those it marked in the source
        source_pixels = torch.from_numpy(ds.lq[1]).reshape(-1, 3)
        marked = {tuple(v) for v in source_pixels[torch.from_numpy(ds.mask[0]).reshape(-1) > 0].tolist()}
        pixels = s["lq"][1].permute(1, 2, 0).reshape(-1, 3)
        flags = s["mask"][0].reshape(-1) > 0
        assert all((tuple(v) in marked) == bool(f) for v, f in zip(pixels.tolist(), flags.tolist()))
        assert s["sigma"] == float(i) and s["key"] == f"clip{i}"
    val = ToyKeyed.make(scale=scale, phase="val")
    s = val[0]
    assert torch.equal(s["lq"], as_tchw(ds.lq)[..., 2:6, 3:7])  # centre crop (8-4)//2, (10-4)//2, no reversal


def as_tchw(arr):
    return torch.from_numpy(arr.transpose(0, 3, 1, 2))


def test_base_class_rejects_clips_of_different_lengths():
    ds = ToyKeyed.make()
    ds.load_pair = lambda index: (ds.lq[:2], ds.lq, "c")
    with pytest.raises(DataError, match="sample 'c': gt has 2 frames but lq has 3"):
        ds[0]
