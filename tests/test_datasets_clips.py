"""ShiftedClipDataset (known per-frame motion) and the ×s SR option of SyntheticBlurDataset:
checked against brute-force re-renders (scipy), block means, and across DataLoader workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from dataset import create_dataset
from utils.errors import ConfigError

CLIP = {"type": "ShiftedClipDataset", "names": ["camera", "coffee"], "image_size": [40, 48], "crop_size": 12,
        "quantize_bits": None, "seed": 5}


def views(x):
    """(hflip, vflip, transpose) -> the view of ``[..., H, W]`` as a Geometry makes it."""
    out = {}
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                y = x.flip(-1) if h else x
                y = y.flip(-2) if v else y
                out[(h, v, t)] = y.transpose(-1, -2) if t else y
    return out


def undo_view(x, flags):
    h, v, t = flags
    x = x.transpose(-1, -2) if t else x
    x = x.flip(-2) if v else x
    return x.flip(-1) if h else x


def locate(window, image):
    """(top, left, flags): where in ``image`` (C×H×W) the C×h×w ``window`` was cut, by brute force."""
    hits = []
    size = window.shape[-1]
    patches = image.unfold(1, size, 1).unfold(2, size, 1)  # C × nh × nw × size × size
    for flags in views(window):
        target = undo_view(window, flags)
        match = (patches == target[:, None, None]).all(dim=-1).all(dim=-1).all(dim=0)
        hits += [(int(r), int(c), flags) for r, c in torch.nonzero(match)]
    assert len(hits) == 1, f"window found {len(hits)} times"
    return hits[0]


@pytest.mark.parametrize("motion", ["subpixel", "integer"])
def test_frames_are_the_recorded_shifts_of_the_source(motion):
    """Frame t at pixel p = source at (window origin + p + shift_t), re-rendered with scipy's
    bilinear map_coordinates, after locating the centre frame (shift 0) and undoing its flips."""
    ds = create_dataset({**CLIP, "frames": 5, "motion": motion, "max_shift": 1.5, "samples_per_image": 6})
    flags_seen = set()
    for i in range(len(ds)):
        s = ds[i]
        source = ds.images[i // 6].double()
        gt, shifts = s["gt"].double(), s["shifts"].double()
        assert gt.shape == (5, 3, 12, 12) and s["lq"].shape == gt.shape and shifts.shape == (5, 2)
        assert shifts[2].abs().max() == 0  # the centre frame is the unshifted image
        assert (shifts[1:] - shifts[:-1]).abs().max() <= 1.5 + 1e-6  # steps bounded by max_shift
        if motion == "integer":
            assert torch.equal(shifts, shifts.round())
        top, left, flags = locate(gt[2], source)
        flags_seen.add(flags)
        m = ds.margin
        for t in range(5):
            frame = undo_view(gt[t], flags)
            dy, dx = shifts[t].tolist()  # sample axes -> source axes (inverse of the flips)
            if flags[2]:
                dy, dx = dx, dy
            if flags[1]:
                dy = -dy
            if flags[0]:
                dx = -dx
            yy, xx = np.mgrid[0:12, 0:12]
            coords = [yy + top + dy, xx + left + dx]
            expected = np.stack([map_coordinates(source[c].numpy(), coords, order=1) for c in range(3)])
            np.testing.assert_allclose(frame.numpy(), expected, atol=1e-5)
            assert m <= top + dy and top + dy + 12 <= source.shape[1] - m  # never padded
    assert len(flags_seen) >= 6


def test_time_reversal_reverses_frames_and_shifts():
    """The same draws with time_reverse on and off: either identical or frames and shifts reversed."""
    opts = {**CLIP, "frames": 3, "samples_per_image": 8}
    on, off = create_dataset({**opts, "time_reverse": True}), create_dataset({**opts, "time_reverse": False})
    kinds = set()
    for i in range(len(on)):
        a, b = on[i], off[i]
        # With time_reverse the geometry draws one more number, so compare only when crop/flips agree.
        if torch.equal(a["gt"], b["gt"]):
            kinds.add("same")
            assert torch.equal(a["shifts"], b["shifts"])
        elif torch.equal(a["gt"], b["gt"].flip(0)):
            kinds.add("reversed")
            assert torch.equal(a["shifts"], b["shifts"].flip(0))
        else:
            raise AssertionError(f"sample {i}: neither the same clip nor the reversed one")
    assert kinds == {"same", "reversed"}


def test_center_target_scale_and_noise():
    base = {**CLIP, "frames": 3, "scale": 2, "crop_size": 6, "downscale": "area", "samples_per_image": 4}
    clip = create_dataset(base)
    center = create_dataset({**base, "target": "center"})
    for i in range(len(clip)):
        a, b = clip[i], center[i]
        assert a["lq"].shape == (3, 3, 6, 6) and a["gt"].shape == (3, 3, 12, 12)
        # lq = 2x2 block means of gt, whatever the crop and flips (crops aligned at 2x positions)
        blocks = a["gt"].reshape(3, 3, 6, 2, 6, 2).mean(dim=(3, 5))
        torch.testing.assert_close(a["lq"], blocks, atol=1e-6, rtol=0)
        assert torch.equal(b["gt"], a["gt"][1]) and torch.equal(b["lq"], a["lq"])
    noisy = create_dataset({**base, "noise": {"kind": "gaussian", "sigma": 0.05}, "quantize_bits": 8})
    s, s_clean = noisy[0], clip[0]
    assert 0.02 < (s["lq"] - s_clean["lq"]).std() < 0.08
    assert torch.equal(s["lq"], torch.round(s["lq"] * 255) / 255)


def test_validation_clips_fixed_and_keys():
    val = create_dataset({**CLIP, "phase": "val", "crop_size": None, "samples_per_image": 2, "frames": 3})
    assert [val[i]["key"] for i in range(4)] == ["camera_000", "camera_001", "coffee_000", "coffee_001"]
    first = [val[i] for i in range(4)]
    val.set_epoch(3)
    for i in range(4):
        s = val[i]
        assert torch.equal(s["gt"], first[i]["gt"]) and torch.equal(s["shifts"], first[i]["shifts"])
    # whole frames (minus the motion margin), centre frame = the image itself, no flips
    m = val.margin
    h, w = val.frame_size((40, 48))
    assert first[0]["gt"].shape == (3, 3, h, w)
    assert torch.equal(first[0]["gt"][1], val.images[0][:, m:m + h, m:m + w])
    held_out = create_dataset({**CLIP, "names": None, "exclude": ["camera"], "image_size": [24, 24], "crop_size": 8})
    assert "camera" not in {held_out[i]["key"] for i in range(len(held_out))}


def test_clip_option_errors():
    with pytest.raises(ConfigError, match="target: center needs an odd number of frames"):
        create_dataset({**CLIP, "target": "center", "frames": 4})
    with pytest.raises(ConfigError, match="motion must be one of subpixel, integer"):
        create_dataset({**CLIP, "motion": "smooth"})
    with pytest.raises(ConfigError, match="downscale must be one of bicubic, area"):
        create_dataset({**CLIP, "downscale": "nearest"})


SR = {"type": "SyntheticBlurDataset", "names": ["camera", "coffee"], "image_size": [40, 48], "linear_light": False,
      "psf": {"psf_type": "gaussian", "grid_shape": [3, 3], "psf_size": 7, "sensor_res": [40, 48], "seed": 0},
      "scale": 2, "crop_size": 8, "seed": 1}


def test_synthetic_sr_pairs_aligned():
    """gt is found in the source by brute force; lq is the blurred image downscaled, at half the position."""
    from utils.sv_renderer import SVRenderer

    ds = create_dataset({**SR, "noise": {"kind": "none"}, "quantize_bits": None, "samples_per_image": 6,
                         "downscale": "area"})
    renderer = SVRenderer(ds.field, (40, 48), "reflect")
    for j in range(2):
        blurred = renderer(ds.gt_images[j][None])[0].float()
        torch.testing.assert_close(ds.blurred[j], blurred.reshape(3, 20, 2, 24, 2).mean(dim=(2, 4)), atol=1e-6, rtol=0)
    for i in range(len(ds)):
        s = ds[i]
        assert s["gt"].shape == (3, 16, 16) and s["lq"].shape == (3, 8, 8)
        top, left, flags = locate(s["gt"], ds.gt_images[i // 6])
        assert top % 2 == 0 and left % 2 == 0
        lq_window = ds.blurred[i // 6][:, top // 2:top // 2 + 8, left // 2:left // 2 + 8]
        assert torch.equal(undo_view(s["lq"], flags), lq_window)


def test_synthetic_sr_errors():
    with pytest.raises(ConfigError, match=r"image_size \[40, 45\] must be a multiple of scale 2"):
        create_dataset({**SR, "image_size": [40, 45]})
    with pytest.raises(ConfigError, match=r"psf_keys \['psf'\] with scale 2"):
        create_dataset({**SR, "psf_keys": ["psf"]})


@pytest.mark.parametrize("options", [
    {**CLIP, "frames": 3, "scale": 2, "crop_size": 6, "noise": {"kind": "gaussian", "sigma": 0.02},
     "quantize_bits": 8, "samples_per_image": 3},
    {**SR, "noise": {"kind": "gaussian", "sigma": [0.0, 0.03]}, "samples_per_image": 3},
])
def test_dataloader_workers_identical(options):
    ds = create_dataset(options)
    ds.set_epoch(2)

    def collect(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        return [batch for batch in loader]

    single, multi = collect(0), collect(2)
    assert len(single) == len(multi) == 3
    for a, b in zip(single, multi):
        assert a["key"] == b["key"]
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
