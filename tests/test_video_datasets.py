"""Video datasets: synthetic clips whose stored flow is exact (warping with it aligns frames, in
HR and LR; augmentation moves frames and flows consistently), and folder/video-file clip sets
(REDS with meta info, Vimeo septuplets, variable lengths, LQ/GT mismatch errors, video files)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.base import Geometry
from dataset.video_folder_dataset import VideoFolderDataset
from dataset.video_synthetic_dataset import SyntheticVideoDataset, transform_flow_vectors
from utils.degradations_video import bd_downscale
from utils.errors import DataError
from utils.flow import flow_warp
from utils.image_io import write_image
from utils.video_io import write_video

NAMES = ["astronaut", "chelsea", "coffee"]


def _synthetic(**kw):
    opts = dict(names=NAMES, image_size=[160, 160], frame_size=[128, 128], frames=3, phase="val", max_shift=6.0,
                max_sprite_speed=5.0)
    opts.update(kw)
    return SyntheticVideoDataset(**opts)


def _mse_ratio(frames, flows, border):
    """MSE(frame i+1 vs frame i) / MSE(warped frame i+1 vs frame i) over the interior."""
    inner = (slice(None), slice(border, -border), slice(border, -border))
    before = after = 0.0
    for i in range(frames.shape[0] - 1):
        warped = flow_warp(frames[i + 1:i + 2], flows[i:i + 1].permute(0, 2, 3, 1))[0]
        before += float((frames[i + 1] - frames[i])[inner].square().mean())
        after += float((warped - frames[i])[inner].square().mean())
    return before / after


def test_exact_flow_aligns_hr_frames_10x():
    ds = _synthetic()
    ratios = []
    for i in range(len(ds)):
        motion = ds.motion(i, ds.generator(i))
        s = ds[i]
        py, px = torch.meshgrid(torch.arange(128.0, dtype=torch.float64), torch.arange(128.0, dtype=torch.float64), indexing="ij")
        flows = torch.stack([motion.flow(t, t + 1, py, px) for t in range(2)]).float()
        ratios.append(_mse_ratio(s["gt"], flows, 16))
    assert min(ratios) >= 10, ratios


def test_exact_lr_flow_aligns_lr_frames():
    ds = _synthetic(max_shift=8.0, max_sprite_speed=6.0)
    ratios = [_mse_ratio(ds[i]["lq"], ds[i]["flows_backward"], 4) for i in range(len(ds))]
    assert np.mean(ratios) >= 10, ratios
    # forward flows align the other way
    s = ds[0]
    assert _mse_ratio(s["lq"].flip(0), s["flows_forward"].flip(0), 4) >= 5


def test_lr_is_bd_of_gt_and_shapes():
    ds = _synthetic(quantize_bits=None)
    s = ds[0]
    assert s["gt"].shape == (3, 3, 128, 128) and s["lq"].shape == (3, 3, 32, 32)
    assert s["flows_backward"].shape == (2, 2, 32, 32)
    torch.testing.assert_close(s["lq"], bd_downscale(s["gt"], 4))


def test_zero_motion_gives_zero_flow_and_identical_frames():
    ds = _synthetic(max_shift=0.0, max_rotation=0.0, max_zoom=0.0, sprites=0)
    s = ds[0]
    assert s["flows_backward"].abs().max() == 0 and torch.equal(s["gt"][0], s["gt"][1])


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_frames_and_flows_consistent(seed):
    """After random crop/flips/transpose/time reversal the stored flows still align the frames."""
    ds = _synthetic(phase="train", crop_size=24, max_shift=8.0, seed=seed, sprites=0, max_rotation=0.0, max_zoom=0.0)
    s = ds[0]
    assert s["lq"].shape == (3, 3, 24, 24) and s["flows_forward"].shape == (2, 2, 24, 24)
    assert _mse_ratio(s["lq"], s["flows_backward"], 3) >= 4
    assert _mse_ratio(s["lq"].flip(0), s["flows_forward"].flip(0), 3) >= 4


def test_flow_vector_transform():
    f = torch.zeros(1, 2, 4, 4)
    f[:, 0], f[:, 1] = 1.0, 2.0
    g = transform_flow_vectors(f, Geometry(0, 0, 4, 4, hflip=True, vflip=False, transpose=True))
    assert g[0, 0, 0, 0] == 2.0 and g[0, 1, 0, 0] == -1.0


# -- folders and files ---------------------------------------------------------------------------
def _write_clip(folder, n, size=(16, 16), names=None, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = names[i] if names else f"{i:08d}.png"
        write_image(folder / name, rng.random((size[0], size[1], 3)).astype(np.float32))


def test_reds_layout_with_meta_info_and_variable_lengths(tmp_path):
    gt, lq = tmp_path / "train_sharp", tmp_path / "train_sharp_bicubic" / "X4"
    for clip, n in (("000", 5), ("011", 3), ("015", 4)):
        _write_clip(gt / clip, n, (32, 32))
        _write_clip(lq / clip, n, (8, 8))
    meta = tmp_path / "meta_info_REDS_GT.txt"
    meta.write_text("015 4 (32,32,3)\n000 5 (32,32,3)\n")
    ds = VideoFolderDataset(gt_folder=str(gt), lq_folder=str(lq), meta_info=str(meta), phase="val")
    assert ds.keys_ == ["015", "000"] and len(ds) == 2
    s = ds[1]
    assert s["gt"].shape == (5, 3, 32, 32) and s["lq"].shape == (5, 3, 8, 8) and s["key"] == "000"
    assert s["frame_names"][0] == "00000000.png"
    train = VideoFolderDataset(gt_folder=str(gt), lq_folder=str(lq), num_frames=3, crop_size=4, phase="train",
                               samples_per_epoch=10)
    assert len(train) == 10
    t = train[3]
    assert t["gt"].shape == (3, 3, 16, 16) and t["lq"].shape == (3, 3, 4, 4)
    with pytest.raises(DataError, match="'011' has 3 frames"):
        VideoFolderDataset(gt_folder=str(gt), lq_folder=str(lq), num_frames=4, phase="train", clips=["011"])[0]


def test_vimeo_layout_mirror_and_synthesised_lq(tmp_path):
    seqs = tmp_path / "sequences"
    for key in ("00001/0001", "00001/0002"):
        _write_clip(seqs / key, 7, (16, 16), names=[f"im{i}.png" for i in range(1, 8)])
    ds = VideoFolderDataset(gt_folder=str(seqs), degradation="BD", phase="val", mirror=True)
    assert ds.keys_ == ["00001/0001", "00001/0002"]
    s = ds[0]
    assert s["gt"].shape == (14, 3, 16, 16) and s["lq"].shape == (14, 3, 4, 4)
    assert torch.equal(s["gt"][:7], s["gt"][7:].flip(0))
    assert s["frame_names"][:3] == ["im1.png", "im2.png", "im3.png"]


def test_mismatched_lq_gt_is_one_error_naming_the_clip(tmp_path):
    gt, lq = tmp_path / "GT", tmp_path / "BIx4"
    _write_clip(gt / "calendar", 4, (16, 16))
    _write_clip(lq / "calendar", 3, (4, 4))
    _write_clip(gt / "city", 2, (16, 16))
    _write_clip(lq / "city", 2, (4, 4))
    with pytest.raises(DataError, match="clip 'calendar': GT has 4 frames, LQ has 3"):
        VideoFolderDataset(gt_folder=str(gt), lq_folder=str(lq), phase="val")
    _write_clip(gt / "walk", 2, (16, 16))
    with pytest.raises(DataError, match="clip 'walk'"):
        VideoFolderDataset(gt_folder=str(gt), lq_folder=str(lq), phase="val", clips=["city", "walk"])


def test_video_files_as_clips(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (6, 16, 24, 3), dtype=np.uint8)
    write_video(tmp_path / "vids" / "a.mkv", frames, fps=30)
    ds = VideoFolderDataset(gt_folder=str(tmp_path / "vids"), degradation="BI", phase="val")
    s = ds[0]
    assert s["key"] == "a" and s["gt"].shape == (6, 3, 16, 24) and s["lq"].shape == (6, 3, 4, 6)
    np.testing.assert_array_equal((s["gt"] * 255).round().byte().permute(0, 2, 3, 1).numpy(), frames)
    half = VideoFolderDataset(gt_folder=str(tmp_path / "vids"), fps=15, phase="val")[0]
    assert half["gt"].shape[0] == 3


def test_hf_clip_dataset_round_trip(tmp_path):
    from dataset.video_hf_dataset import VideoHFDataset, write_clip_dataset

    src = _synthetic(frames=4)
    samples = [src[i] for i in range(2)]
    write_clip_dataset(samples, tmp_path / "hf", split="validation")
    ds = VideoHFDataset(path=str(tmp_path / "hf"), split="validation", phase="val")
    assert ds.keys_ == [s["key"] for s in samples]
    back = ds[1]
    assert torch.equal(back["gt"], samples[1]["gt"]) and torch.equal(back["lq"], samples[1]["lq"])  # 8-bit exact
    assert back["frame_names"] == [f"{t:08d}.png" for t in range(4)]
    train = VideoHFDataset(path=str(tmp_path / "hf"), split="validation", num_frames=2, crop_size=8, phase="train")
    assert train[0]["lq"].shape == (2, 3, 8, 8) and train[0]["gt"].shape == (2, 3, 32, 32)
