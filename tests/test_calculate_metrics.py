"""calculate_metrics.py: BasicSR reference through the CLI path, pairing, reports, bad input."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import calculate_metrics
from utils.errors import DataError, run_cli
from utils.image_io import write_image
from utils.metrics import compute_metrics, psnr_np
from utils.metrics.folders import evaluate_folders, pair_images, write_reports

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tid(fixtures_dir):
    folder = fixtures_dir / "metrics"
    return folder / "ref", folder / "dist", json.loads((folder / "basicsr_reference.json").read_text())["values"]


def run_main(argv, capsys):
    """Run the CLI in-process the way ``python calculate_metrics.py`` does: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: calculate_metrics.main(argv))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("test_y_channel", [False, True])
@pytest.mark.parametrize("crop_border", [0, 4])
def test_reproduces_basicsr_reference(tid, test_y_channel, crop_border):
    ref, dist, values = tid
    result = evaluate_folders(ref, dist, "psnr,ssim", crop_border, test_y_channel, progress=False)
    key = f"{'y' if test_y_channel else 'rgb'}_crop{crop_border}"
    assert sorted(result.per_image) == sorted(values)
    for name, got in result.per_image.items():
        assert got["psnr"] == pytest.approx(values[name][f"psnr_{key}"], abs=1e-4)
        assert got["ssim"] == pytest.approx(values[name][f"ssim_{key}"], abs=1e-6)
    assert result.mean["psnr"] == pytest.approx(np.mean([v[f"psnr_{key}"] for v in values.values()]), abs=1e-4)


def test_cli_writes_csv_and_json(tid, tmp_path, capsys):
    ref, dist, values = tid
    code, out, err = run_main([
        "--gt_folder", str(ref), "--pred_folder", str(dist), "--metrics", "psnr,ssim,lpips",
        "--crop_border", "4", "--test_y_channel", "--out", str(tmp_path / "res"), "--quiet",
    ], capsys)
    assert code == 0, err
    assert "I04.bmp" in out and "mean" in out
    report = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert report["convention"]["crop_border"] == 4 and report["convention"]["test_y_channel"] is True
    assert report["convention"]["round_to_uint8"] is True and report["convention"]["n_images"] == 3
    assert set(report["mean"]) == {"psnr", "ssim", "lpips"}
    for name, v in values.items():
        assert report["per_image"][name]["psnr"] == pytest.approx(v["psnr_y_crop4"], abs=1e-4)
        assert report["per_image"][name]["ssim"] == pytest.approx(v["ssim_y_crop4"], abs=1e-6)
    assert report["mean"]["lpips"] == pytest.approx(np.mean([r["lpips"] for r in report["per_image"].values()]))
    rows = list(csv.DictReader((tmp_path / "res" / "metrics.csv").open()))
    assert [r["image"] for r in rows] == sorted(values) and list(rows[0]) == ["image", "psnr", "ssim", "lpips"]
    assert float(rows[1]["psnr"]) == report["per_image"]["I04.bmp"]["psnr"]


def test_entry_point_runs_as_a_script(tid, tmp_path):
    ref, dist, _ = tid
    (tmp_path / "gt").mkdir()
    shutil.copy(ref / "I08.bmp", tmp_path / "gt" / "I08.bmp")
    ok = subprocess.run([sys.executable, str(ROOT / "calculate_metrics.py"), "--gt_folder", str(tmp_path / "gt"),
                         "--pred_folder", str(dist.parent / "ref"), "--quiet"], capture_output=True, text=True)
    # ref has 3 images, gt only 1: the two extra predictions are reported, nothing is scored
    assert ok.returncode == 2 and ok.stdout == ""
    assert ok.stderr.count("\n") == 1 and ok.stderr.startswith("error: cannot pair") and "I03.bmp" in ok.stderr
    help_ = subprocess.run([sys.executable, str(ROOT / "calculate_metrics.py"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--test_y_channel" in help_.stdout and "lower is better" in help_.stdout


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    images = {}
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        noisy = np.clip(img.astype(int) + rng.integers(-9, 10, img.shape), 0, 255).astype(np.uint8)
        _png(gt / rel, img)
        images[rel] = (img, noisy)
    return gt, pred, images


def test_pairing_by_relative_path_and_across_extensions(folders):
    gt, pred, images = folders
    _png(pred / "a.png", images["a.png"][1])
    _png(pred / "sub/b.bmp", images["sub/b.png"][1])  # same stem, other extension
    _png(pred / "sub/deeper/c.png", images["sub/deeper/c.png"][1])
    pairs = pair_images(gt, pred)
    assert [(p.key, p.pred.relative_to(pred).as_posix()) for p in pairs] == [
        ("a.png", "a.png"), ("sub/b.png", "sub/b.bmp"), ("sub/deeper/c.png", "sub/deeper/c.png")]
    result = evaluate_folders(gt, pred, progress=False)
    for key, (img, noisy) in images.items():  # OpenCV files are BGR; RGB PSNR is order-free
        assert result.per_image[key]["psnr"] == pytest.approx(psnr_np(noisy, img), abs=1e-12)


def test_missing_ambiguous_and_unpaired_files_are_listed(folders):
    gt, pred, images = folders
    _png(pred / "a.png", images["a.png"][1])
    _png(pred / "sub/b.jpg", images["sub/b.png"][1])
    _png(pred / "sub/b.bmp", images["sub/b.png"][1])
    _png(pred / "extra.png", images["a.png"][1])
    with pytest.raises(DataError) as exc:
        pair_images(gt, pred)
    msg = str(exc.value)
    assert "sub/deeper/c.png" in msg and "ambiguous" in msg and "sub/b.bmp | sub/b.jpg" in msg and "extra.png" in msg
    assert "\n" not in msg


def test_bad_input_gives_one_line_and_exit_2(folders, tmp_path, capsys):
    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(pred / rel, noisy)
    out_dir = tmp_path / "out"
    cases = {
        "not found": ["--gt_folder", str(tmp_path / "missing"), "--pred_folder", str(pred)],
        "size mismatch": ["--gt_folder", str(gt), "--pred_folder", str(pred)],
        "cannot read": ["--gt_folder", str(gt), "--pred_folder", str(pred)],
        "did you mean 'lpips'": ["--gt_folder", str(gt), "--pred_folder", str(pred), "--metrics", "psnr,lpis"],
        "needs at least 11x11": ["--gt_folder", str(gt), "--pred_folder", str(pred), "--crop_border", "15"],
    }
    for expected, argv in cases.items():
        if expected == "size mismatch":
            _png(pred / "a.png", cv2.resize(images["a.png"][1], (47, 40)))
        if expected == "cannot read":
            _png(pred / "a.png", images["a.png"][1])
            (pred / "sub/b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        if expected.startswith("did you mean"):
            _png(pred / "sub/b.png", images["sub/b.png"][1])
        code, out, err = run_main(argv + ["--out", str(out_dir), "--quiet"], capsys)
        assert code == 2, (expected, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (expected, err)
        assert not out_dir.exists()  # nothing partial written


def test_image_size_resizes_both(folders):
    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(pred / rel, cv2.resize(noisy, (96, 80), interpolation=cv2.INTER_CUBIC))
    result = evaluate_folders(gt, pred, image_size=(32, 40), progress=False)
    assert result.convention["image_size"] == [32, 40]
    img, noisy = images["a.png"]
    a = cv2.resize(img.astype(np.float32) / 255, (40, 32), interpolation=cv2.INTER_AREA)
    b = cv2.resize(cv2.resize(noisy, (96, 80), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255, (40, 32),
                   interpolation=cv2.INTER_AREA)
    assert result.per_image["a.png"]["psnr"] == pytest.approx(psnr_np(np.clip(b, 0, 1), np.clip(a, 0, 1), round_to_uint8=True), abs=1e-9)


def test_identical_images_give_inf_and_json_stays_valid(folders, tmp_path, capsys):
    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(pred / rel, img if rel == "a.png" else noisy)
    code, out, _ = run_main(["--gt_folder", str(gt), "--pred_folder", str(pred), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0 and "1 image(s) identical" in out
    text = (tmp_path / "o" / "metrics.json").read_text()
    report = json.loads(text)  # strict JSON: no bare Infinity
    assert "Infinity" not in text
    assert report["per_image"]["a.png"]["psnr"] == "inf" and report["mean"]["psnr"] == "inf"
    assert report["inf_counts"] == {"psnr": 1} and report["per_image"]["a.png"]["ssim"] == 1.0
    rows = {r["image"]: r for r in csv.DictReader((tmp_path / "o" / "metrics.csv").open())}
    assert math.isinf(float(rows["a.png"]["psnr"]))


def test_16bit_images_need_no_round(folders):
    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(gt / rel, img.astype(np.uint16) * 257 + 3)
        _png(pred / rel, noisy.astype(np.uint16) * 257)
    with pytest.raises(DataError, match="--no_round"):
        evaluate_folders(gt, pred, progress=False)
    result = evaluate_folders(gt, pred, round_to_uint8=False, progress=False)
    img, noisy = images["a.png"]
    want = psnr_np(noisy.astype(np.uint16) * 257, img.astype(np.uint16) * 257 + 3)
    assert result.per_image["a.png"]["psnr"] == pytest.approx(want, abs=1e-6)  # files read as float32


def test_saved_validation_pngs_score_exactly_like_compute_metrics(tmp_path):
    """The trainer's validation numbers (torch, rounding) equal this tool's on the saved PNGs."""
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(4, 3, 33, 45, generator=g)
    pred = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(-0.1, 1.1)
    for i in range(4):
        write_image(tmp_path / "gt" / f"{i}.png", gt[i])
        write_image(tmp_path / "pred" / f"{i}.png", pred[i])
    for y in (False, True):
        torch_path = compute_metrics(pred, gt, ("psnr", "ssim"), crop_border=2, test_y_channel=y)
        files = evaluate_folders(tmp_path / "gt", tmp_path / "pred", "psnr,ssim", 2, y, progress=False)
        for i in range(4):
            assert abs(files.per_image[f"{i}.png"]["psnr"] - torch_path["psnr"][i].item()) < 1e-9
            assert abs(files.per_image[f"{i}.png"]["ssim"] - torch_path["ssim"][i].item()) < 1e-12


def test_lpips_batching_and_mixed_sizes(folders):
    gt, pred, images = folders
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)
    _png(gt / "z.png", big)
    _png(pred / "z.png", np.flip(big, 0))
    for rel, (img, noisy) in images.items():
        _png(pred / rel, noisy)
    one = evaluate_folders(gt, pred, "lpips", batch_size=1, progress=False)
    many = evaluate_folders(gt, pred, "lpips", batch_size=8, progress=False)
    assert sorted(one.per_image) == ["a.png", "sub/b.png", "sub/deeper/c.png", "z.png"]
    for key in one.per_image:
        assert many.per_image[key]["lpips"] == pytest.approx(one.per_image[key]["lpips"], abs=1e-6)


def test_fid_without_weights_fails_fast(folders, tmp_path, monkeypatch, capsys):
    import utils.metrics.fid as fid_mod

    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(pred / rel, noisy)
    monkeypatch.setattr(fid_mod.torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code, _, err = run_main(["--gt_folder", str(gt), "--pred_folder", str(pred), "--metrics", "psnr,fid", "--quiet"], capsys)
    assert code == 2 and "FID Inception weights not found" in err and err.count("\n") == 1


def test_fid_and_kid_with_given_weights(folders, tmp_path, monkeypatch):
    """The folder path wires features correctly: FID/KID equal the math on the network's features.

    A small stand-in network replaces the Inception (whose forward is tested in test_metrics_fid)."""
    import utils.metrics.fid as fid_mod
    from utils.image_io import image_to_tensor, read_image
    from utils.metrics.fid import fid_from_features, kid_from_features, resize_for_inception

    gt, pred, images = folders
    for rel, (img, noisy) in images.items():
        _png(pred / rel, noisy)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, stride=4), torch.nn.Tanh(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()).eval()
    seen = {}

    def fake_loader(weights, device):
        seen["weights"] = weights
        return net

    monkeypatch.setattr(fid_mod, "load_fid_inception", fake_loader)
    result = evaluate_folders(gt, pred, "psnr,fid,kid", fid_weights="given.pth", batch_size=2, progress=False)
    assert seen["weights"] == "given.pth"
    keys = sorted(images)
    with torch.no_grad():
        fg = net(torch.stack([resize_for_inception(image_to_tensor(read_image(gt / k))) for k in keys])).double()
        fp = net(torch.stack([resize_for_inception(image_to_tensor(read_image(pred / k))) for k in keys])).double()
    assert result.dataset["fid"] == pytest.approx(fid_from_features(fp, fg), rel=1e-6, abs=1e-9)
    assert result.dataset["kid"] == pytest.approx(kid_from_features(fp, fg)[0], rel=1e-6, abs=1e-9)
    assert result.dataset["fid"] > 0
    assert "fid" not in result.mean and set(result.mean) == {"psnr"}


def test_write_reports_is_atomic(tmp_path, tid):
    ref, dist, _ = tid
    result = evaluate_folders(ref, dist, "psnr", progress=False)
    csv_path, json_path = write_reports(result, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["metrics.csv", "metrics.json"]
    assert json.loads(json_path.read_text())["mean"]["psnr"] == pytest.approx(result.mean["psnr"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="must be a folder"):
        write_reports(result, tmp_path / "file")
