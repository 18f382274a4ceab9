"""utils/evaluation.py: masked metrics against a numpy brute force, averaging per clip by hand,
clip naming, the Evaluator on a toy clip model and a toy ×2 model, and calculate_metrics.py on
clip folders and mask folders against the same code on the same tensors."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

import calculate_metrics
from utils.config import ValConfig
from utils.errors import DataError, run_cli
from utils.evaluation import (
    Evaluator,
    ScoreItem,
    aggregate,
    clip_means,
    default_items,
    image_grid,
    output_name,
    score_items,
)
from utils.image_io import quantize, read_image, write_image
from utils.metrics import MetricInputError, compute_metrics

Y = np.array([65.481, 128.553, 24.966])


def levels(x: torch.Tensor, crop: int, y: bool) -> np.ndarray:
    """C×H×W [0, 1] -> H×W×C' float64 8-bit levels, cropped, optionally BT.601 Y (brute force)."""
    a = np.round(np.clip(x.double().numpy().transpose(1, 2, 0), 0, 1) * 255)
    if crop:
        a = a[crop:-crop, crop:-crop]
    if y:
        a = 16.0 + (a / 255.0) @ Y
        a = a[..., None]
    return a


def random_case(seed=0, h=30, w=37):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(3, h, w, generator=g)
    pred = (gt + 0.08 * torch.randn(3, h, w, generator=g)).clamp(-0.1, 1.1)
    mask = (torch.rand(1, h, w, generator=g) > 0.6).float()
    return quantize(pred), gt, mask


# -- masked metrics --------------------------------------------------------------------------


@pytest.mark.parametrize("crop,y", [(0, False), (3, False), (2, True)])
def test_masked_psnr_and_l1_equal_numpy_brute_force(crop, y):
    pred, gt, mask = random_case()
    got = score_items([ScoreItem("a.png", pred, gt, mask)], ["psnr", "l1"], crop, y)["a.png"]
    p, g = levels(pred, crop, y), levels(gt, crop, y)
    m = mask[0].numpy().astype(bool)
    if crop:
        m = m[crop:-crop, crop:-crop]
    diff = (p - g)[m]                        # masked pixels × channels
    assert got["psnr"] == pytest.approx(10 * math.log10(255.0 ** 2 / np.mean(diff ** 2)), abs=1e-10)
    assert got["l1"] == pytest.approx(np.mean(np.abs(diff)) / 255.0, abs=1e-12)


def ssim_map_np(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Wang et al. 2004 SSIM map of one channel, 11×11 Gaussian σ 1.5, 'valid' region (scipy)."""
    x = np.arange(11) - 5.0
    win = np.exp(-x ** 2 / 4.5)
    win /= win.sum()

    def blur(a):
        return correlate1d(correlate1d(a, win, axis=0), win, axis=1)[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = blur(p), blur(g)
    s11, s22, s12 = blur(p * p) - mu1 ** 2, blur(g * g) - mu2 ** 2, blur(p * g) - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))


@pytest.mark.parametrize("crop", [0, 2])
def test_masked_ssim_is_the_map_mean_over_masked_window_centres(crop):
    pred, gt, mask = random_case(1)
    got = score_items([ScoreItem("a.png", pred, gt, mask)], ["ssim"], crop)["a.png"]["ssim"]
    p, g = levels(pred, crop, False), levels(gt, crop, False)
    m = mask[0].numpy().astype(bool)
    if crop:
        m = m[crop:-crop, crop:-crop]
    centres = m[5:-5, 5:-5]
    expected = np.mean([ssim_map_np(p[..., c], g[..., c])[centres].mean() for c in range(3)])
    assert got == pytest.approx(expected, abs=1e-10)


def test_all_ones_mask_equals_unmasked_and_bad_masks_fail():
    pred, gt, _ = random_case(2)
    ones = torch.ones(1, *gt.shape[1:])
    names = ["psnr", "ssim", "ssim_3d", "l1"]
    masked = score_items([ScoreItem("a.png", pred, gt, ones)], names, 1, True)["a.png"]
    plain = compute_metrics(pred[None], gt[None], names, 1, True)
    for n in names:
        assert masked[n] == pytest.approx(float(plain[n][0]), abs=1e-10)
    with pytest.raises(MetricInputError, match="no scored pixel"):
        score_items([ScoreItem("a.png", pred, gt, torch.zeros_like(ones))], ["psnr"])
    with pytest.raises(MetricInputError, match="cannot be restricted to a mask"):
        score_items([ScoreItem("a.png", pred, gt, ones)], ["lpips"])


# -- averaging ---------------------------------------------------------------------------------


def test_aggregate_per_clip_by_hand_on_unequal_clips():
    per_item = {"a/0.png": {"psnr": 10.0}, "a/1.png": {"psnr": 20.0}, "a/2.png": {"psnr": 36.0},
                "b/0.png": {"psnr": 50.0}}
    groups = {k: k.split("/")[0] for k in per_item}
    assert aggregate(per_item, groups, "clip") == {"psnr": pytest.approx((22.0 + 50.0) / 2)}   # clip a: 66/3
    assert aggregate(per_item, groups, "frame") == {"psnr": pytest.approx(116.0 / 4)}
    assert aggregate(per_item, groups, "image") == {"psnr": pytest.approx(116.0 / 4)}
    assert clip_means(per_item, groups) == {"a": {"frames": 3, "psnr": pytest.approx(22.0)},
                                            "b": {"frames": 1, "psnr": 50.0}}
    assert aggregate(per_item, None, "clip") == aggregate(per_item, None, "image")   # images: own groups
    inf = {**per_item, "b/0.png": {"psnr": math.inf}}
    assert aggregate(inf, groups, "clip")["psnr"] == math.inf
    with pytest.raises(ValueError, match="average must be one of"):
        aggregate(per_item, groups, "video")


# -- naming ------------------------------------------------------------------------------------


def test_default_items_name_images_and_clip_frames():
    from torch.utils.data import default_collate

    gt = torch.rand(2, 3, 3, 8, 8)
    images = default_items({"gt": gt[:, 0], "key": ["x/im1.jpg", "im2"]}, gt[:, 0])
    assert [(i.name, i.group) for i in images] == [("x/im1.png", "x/im1.png"), ("im2.png", "im2.png")]
    frames = default_items({"gt": gt, "key": ["seq/clip1", "clip2.png"]}, gt)
    assert [(i.name, i.group) for i in frames] == [
        ("seq/clip1/00000000.png", "seq/clip1"), ("seq/clip1/00000001.png", "seq/clip1"),
        ("seq/clip1/00000002.png", "seq/clip1"),
        ("clip2/00000000.png", "clip2"), ("clip2/00000001.png", "clip2"), ("clip2/00000002.png", "clip2")]
    assert torch.equal(frames[4].pred, gt[1, 1])
    # Frame names given by the dataset, through the DataLoader's default collation (T lists of B).
    batch = default_collate([{"gt": gt[b], "key": f"c{b}", "frame_names": [f"f{b}{t}.jpg" for t in range(3)]}
                             for b in range(2)])
    assert [i.name for i in default_items(batch, gt)] == [
        "c0/f00.png", "c0/f01.png", "c0/f02.png", "c1/f10.png", "c1/f11.png", "c1/f12.png"]
    assert output_name("../../etc/x") == "etc/x.png"
    with pytest.raises(DataError, match="B×T×C×H×W gt"):
        default_items({"gt": gt[:, 0], "key": ["a", "b"]}, gt)


# -- the Evaluator on toy models ----------------------------------------------------------------


class Clips(torch.utils.data.Dataset):
    """Two clips of unequal length (4 and 2 frames), lq = gt + noise."""

    lengths = (4, 2)

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        self.gt = [torch.rand(t, 3, 16, 20, generator=g) for t in self.lengths]
        self.lq = [(x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1) for x in self.gt]

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return {"lq": self.lq[i], "gt": self.gt[i], "key": f"clip{i}"}


class Toy:
    """Model stand-in: ``predict`` smooths lq a little (any per-frame map will do)."""

    def __init__(self, scale=1):
        self.scale = scale

    def predict(self, batch, tile=None):
        lq = batch["lq"]
        out = 0.8 * lq + 0.1
        if self.scale > 1:
            flat = out.flatten(0, -4) if out.ndim == 5 else out
            flat = torch.nn.functional.interpolate(flat, scale_factor=self.scale, mode="nearest")
            out = flat.view(*out.shape[:-2], *flat.shape[-2:])
        return out

    def eval(self):
        pass

    def train(self):
        pass


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_evaluator_on_clips_matches_calculate_metrics_on_its_pngs(tmp_path, accelerator, capsys):
    data = Clips()
    val = ValConfig(metrics=("psnr", "ssim", "l1"), best_metric="psnr", average="clip")
    ev = Evaluator(val, accelerator)
    result = ev.run(Toy(), data, tmp_path / "pred", log_images=1)
    # One item per frame, named CLIP/FRAME.png; clip mean = mean over frames, then over clips.
    assert list(result.per_image) == [f"clip0/{t:08d}.png" for t in range(4)] + [f"clip1/{t:08d}.png" for t in range(2)]
    by_hand = {}
    for i, x in enumerate(data.gt):
        values = compute_metrics(quantize(0.8 * data.lq[i] + 0.1), x, ["psnr", "ssim", "l1"])
        by_hand[f"clip{i}"] = {n: float(v.mean()) for n, v in values.items()}
    for n in ("psnr", "ssim", "l1"):
        assert result.mean[n] == pytest.approx((by_hand["clip0"][n] + by_hand["clip1"][n]) / 2, abs=1e-9)
    assert result.describe() == "6 frames of 2 clips"
    # The tracker grid: lq | pred | gt of the centre frame.
    grid = result.grids["val/0"]
    assert grid.shape == (16, 60, 3)
    centre = np.round(data.gt[0][2].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    assert np.array_equal(grid[:, 40:], centre)

    ev.write(tmp_path / "pred", result, {"split": "test"})
    saved = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert saved["convention"]["average"] == "clip" and saved["per_clip"]["clip1"]["frames"] == 2
    rows = list(csv.reader((tmp_path / "pred" / "metrics_per_clip.csv").open()))
    assert rows[0] == ["clip", "frames", "psnr", "ssim", "l1"] and [r[:2] for r in rows[1:]] == [["clip0", "4"], ["clip1", "2"]]

    # calculate_metrics.py on the written PNGs against the ground truths in clip folders.
    for i, x in enumerate(data.gt):
        for t in range(len(x)):
            write_image(tmp_path / "gt" / f"clip{i}" / f"{t:08d}.png", x[t])
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: calculate_metrics.main(["--gt_folder", str(tmp_path / "gt"), "--pred_folder",
                                                str(tmp_path / "pred"), "--metrics", "psnr,ssim,l1", "--average",
                                                "clip", "--out", str(tmp_path / "cm"), "--quiet"]))
    assert exc.value.code == 0, capsys.readouterr().err
    files = json.loads((tmp_path / "cm" / "metrics.json").read_text())
    for n in ("psnr", "ssim", "l1"):
        assert files["mean"][n] == pytest.approx(result.mean[n], abs=1e-9)
        for clip in ("clip0", "clip1"):
            assert files["per_clip"][clip][n] == pytest.approx(saved["per_clip"][clip][n], abs=1e-9)
        for name, values in result.per_image.items():
            assert files["per_image"][name][n] == pytest.approx(values[n], abs=1e-9)
    assert (tmp_path / "cm" / "metrics_per_clip.csv").is_file()


def test_evaluator_sr_grid_enlarges_the_input(accelerator):
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"lq": torch.rand(3, 8, 10, generator=g), "gt": torch.rand(3, 16, 20, generator=g), "key": f"i{i}.png"}

    result = Evaluator(ValConfig(), accelerator).run(Toy(scale=2), Pairs(), log_images=2)
    assert list(result.per_image) == ["i0.png", "i1.png"] and result.describe() == "2 images"
    grid = result.grids["val/0"]
    assert grid.shape == (16, 60, 3)
    lq = Pairs()[0]["lq"]
    assert np.array_equal(grid[::2, 0:20:2], np.round(lq.numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
    assert np.array_equal(image_grid(torch.zeros(3, 4, 4), torch.ones(1, 4, 4))[:, 4:], np.full((4, 4, 3), 255, np.uint8))


def test_model_hook_scores_the_hole_and_calculate_metrics_agrees(tmp_path, accelerator, capsys):
    """An inpainting-style model: evaluation_items scores the hole (mask 0 in DESIGN.md's convention)."""

    class Holes(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(10 + i)
            gt = torch.rand(3, 24, 28, generator=g)
            known = torch.ones(1, 24, 28)
            known[:, 4 + i: 15 + i, 6:20] = 0.0     # the hole
            return {"lq": gt * known, "gt": gt, "mask": known, "key": f"sub/h{i}.png"}

    class Inpaint(Toy):
        def evaluation_items(self, batch, pred):
            return [ScoreItem(it.name, it.pred, it.gt, 1.0 - batch["mask"][b], it.group)
                    for b, it in enumerate(default_items(batch, pred))]

    val = ValConfig(metrics=("psnr", "ssim", "l1"), best_metric="psnr", crop_border=1)
    ev = Evaluator(val, accelerator)
    result = ev.run(Inpaint(), Holes(), tmp_path / "pred")
    assert result.masked == 3
    ev.write(tmp_path / "pred", result, {"split": "val"})
    assert "masked_items" in json.loads((tmp_path / "pred" / "metrics.json").read_text())["convention"]["mask"]
    data = Holes()
    for i in range(3):
        s = data[i]
        write_image(tmp_path / "gt" / "sub" / f"h{i}.png", s["gt"])
        write_image(tmp_path / "masks" / "sub" / f"h{i}.png", s["mask"])   # white = known, black = hole
        expected = score_items([ScoreItem("x", quantize(0.8 * s["lq"] + 0.1), s["gt"], 1.0 - s["mask"])],
                               ["psnr"], 1)["x"]["psnr"]
        assert result.per_image[f"sub/h{i}.png"]["psnr"] == pytest.approx(expected, abs=1e-12)

    def cm(*extra):
        with pytest.raises(SystemExit) as exc:
            run_cli(lambda: calculate_metrics.main(["--gt_folder", str(tmp_path / "gt"), "--pred_folder",
                                                    str(tmp_path / "pred"), "--metrics", "psnr,ssim,l1",
                                                    "--crop_border", "1", "--mask_folder", str(tmp_path / "masks"),
                                                    "--quiet", *extra]))
        return exc.value.code

    assert cm("--out", str(tmp_path / "cm")) == 0, capsys.readouterr().err
    files = json.loads((tmp_path / "cm" / "metrics.json").read_text())
    assert files["convention"]["mask"]["region"] == "hole"
    for name, values in result.per_image.items():
        for n in ("psnr", "ssim", "l1"):
            assert files["per_image"][name][n] == pytest.approx(values[n], abs=1e-9)
    assert files["mean"]["psnr"] == pytest.approx(result.mean["psnr"], abs=1e-9)
    # --mask_region known scores the other pixels.
    assert cm("--mask_region", "known", "--out", str(tmp_path / "known")) == 0
    known = json.loads((tmp_path / "known" / "metrics.json").read_text())
    assert known["per_image"]["sub/h0.png"]["psnr"] != files["per_image"]["sub/h0.png"]["psnr"]
    # A missing mask is listed; LPIPS takes no mask.
    (tmp_path / "masks" / "sub" / "h2.png").unlink()
    assert cm() == 2 and "without a mask" in capsys.readouterr().err
    assert cm("--metrics", "psnr,lpips") == 2 and "cannot be restricted to a mask" in capsys.readouterr().err


def test_clip_layout_needs_clip_folders(tmp_path, capsys):
    for folder in ("gt", "pred"):
        write_image(tmp_path / folder / "loose.png", torch.rand(3, 12, 12))
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: calculate_metrics.main(["--gt_folder", str(tmp_path / "gt"), "--pred_folder",
                                                str(tmp_path / "pred"), "--average", "clip", "--quiet"]))
    assert exc.value.code == 2 and "not inside a clip folder" in capsys.readouterr().err
    assert read_image(tmp_path / "gt" / "loose.png").shape == (12, 12, 3)
