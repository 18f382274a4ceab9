"""Folder-vs-folder evaluation behind ``calculate_metrics.py``: pairing, scoring, reports.

Pairing: a prediction pairs with the ground truth of the same relative path; when the exact path
is absent, the same relative path with another extension (``a/x.png`` ↔ ``a/x.jpg``) pairs too,
if it is the only one. Missing, ambiguous and unpaired files are all errors (listed), so no image
is silently left out. No preprocessing happens unless asked (``image_size`` resizes both).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.atomic import atomic_path
from utils.errors import DataError
from utils.image_io import image_to_tensor, list_images, read_image
from utils.metrics.common import DATA_RANGE, Y_COEFFS, Y_OFFSET, MetricInputError
from utils.metrics.compute import METRICS, parse_metric_names
from utils.metrics.psnr_ssim import psnr_np, ssim_np

_MAX_LISTED = 8


@dataclass(frozen=True)
class ImagePair:
    key: str  # relative path of the ground truth (posix)
    gt: Path
    pred: Path


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {title}: {shown}{more}"


def pair_images(gt_folder: str | os.PathLike, pred_folder: str | os.PathLike) -> list[ImagePair]:
    """Pairs by relative path (stem match across extensions allowed); any gap is a DataError."""
    gt_folder, pred_folder = Path(gt_folder), Path(pred_folder)
    for name, folder in (("ground-truth", gt_folder), ("prediction", pred_folder)):
        if not folder.is_dir():
            raise DataError(f"{name} folder not found: {folder}")
    gts = {p.relative_to(gt_folder).as_posix(): p for p in list_images(gt_folder)}
    preds = {p.relative_to(pred_folder).as_posix(): p for p in list_images(pred_folder)}
    if not gts:
        raise DataError(f"no images in ground-truth folder {gt_folder}")
    preds_by_stem: dict[str, list[str]] = defaultdict(list)
    for rel in preds:
        preds_by_stem[str(Path(rel).with_suffix(""))].append(rel)

    pairs, missing, ambiguous, used = [], [], [], set()
    for rel, gt_path in gts.items():
        if rel in preds:
            match = rel
        else:
            candidates = [c for c in preds_by_stem.get(str(Path(rel).with_suffix("")), []) if c not in gts]
            if len(candidates) > 1:
                ambiguous.append(f"{rel} -> {' | '.join(sorted(candidates))}")
                continue
            if not candidates:
                missing.append(rel)
                continue
            match = candidates[0]
        if match in used:
            ambiguous.append(f"{match} matches several ground truths")
            continue
        used.add(match)
        pairs.append(ImagePair(rel, gt_path, preds[match]))
    unpaired = sorted(set(preds) - used)
    problems = []
    if missing:
        problems.append(_listing(f"ground truth(s) without a prediction in {pred_folder}", missing))
    if ambiguous:
        problems.append(_listing("ambiguous match(es)", ambiguous))
    if unpaired:
        problems.append(_listing(f"prediction(s) without a ground truth in {gt_folder}", unpaired))
    if problems:
        raise DataError("cannot pair the folders: " + "; ".join(problems))
    return pairs


def _is_8bit(img: np.ndarray) -> bool:
    levels = img.astype(np.float64) * DATA_RANGE
    return bool(np.abs(levels - np.round(levels)).max() < 1e-3)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    shrink = h <= img.shape[0] and w <= img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    out = out[:, :, None] if out.ndim == 2 else out
    return np.clip(out, 0.0, 1.0)


@dataclass
class EvaluationResult:
    convention: dict
    per_image: dict[str, dict[str, float]]
    mean: dict[str, float]
    dataset: dict[str, float] = field(default_factory=dict)
    inf_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(json_safe({
            "convention": self.convention,
            "mean": self.mean,
            "dataset": self.dataset,
            "inf_counts": self.inf_counts,
            "per_image": self.per_image,
        }), indent=2, allow_nan=False, ensure_ascii=False)

    def to_csv(self) -> str:
        names = [n for n in self.convention["metrics"] if METRICS[n].per_image]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", *names])
        for key, values in self.per_image.items():
            writer.writerow([key, *(_fmt_csv(values[n]) for n in names)])
        return buf.getvalue()

    def table(self, per_image: bool = True) -> str:
        names = [n for n in self.convention["metrics"] if METRICS[n].per_image]
        rows = [(k, [v[n] for n in names]) for k, v in self.per_image.items()] if per_image else []
        if names:
            rows.append(("mean", [self.mean[n] for n in names]))
        width = max([len("image")] + [len(k) for k, _ in rows])
        lines = []
        if names:
            lines.append(f"{'image':<{width}}  " + "  ".join(f"{n:>12}" for n in names))
            for k, vals in rows:
                if k == "mean" and per_image:
                    lines.append("-" * len(lines[0]))
                lines.append(f"{k:<{width}}  " + "  ".join(f"{_fmt(n, v):>12}" for n, v in zip(names, vals)))
        for name, value in self.dataset.items():
            lines.append(f"{name}: {value:.6g}")
        for name, count in self.inf_counts.items():
            lines.append(f"note: {count} image(s) identical to the ground truth ({name} = inf), so the mean {name} is inf")
        return "\n".join(lines)


def _fmt(name: str, value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if name == "psnr" else f"{value:.6f}"


def _fmt_csv(value: float) -> str:
    return "inf" if math.isinf(value) else repr(float(value))


def json_safe(obj):
    """JSON has no infinity: +inf PSNR is written as the string "inf"."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def convention_record(names, crop_border, test_y_channel, round_to_uint8, image_size) -> dict:
    from utils import __version__

    return {
        "toolbox": f"restorelab {__version__} calculate_metrics.py (BasicSR convention)",
        "metrics": list(names),
        "input": "images read as RGB, scaled to [0, 1], clamped, then to 8-bit levels (data range 255)",
        "round_to_uint8": round_to_uint8,
        "crop_border": crop_border,
        "test_y_channel": test_y_channel,
        "y_channel": (
            f"BT.601 Y = {Y_OFFSET:g} + {Y_COEFFS[0]}R + {Y_COEFFS[1]}G + {Y_COEFFS[2]}B "
            "(R, G, B in [0, 1]), float64, not rounded; PSNR/SSIM only"
        ),
        "image_size": list(image_size) if image_size else None,
        "resize": "OpenCV INTER_AREA (shrink) / INTER_CUBIC (enlarge) of both images, clipped to [0, 1]" if image_size else "none",
        "definitions": {n: METRICS[n].convention for n in names},
        "mean": "arithmetic mean of the per-image values; an identical pair has PSNR = inf and makes the PSNR mean inf",
        "pairing": "same relative path, or same relative path with another extension",
    }


def evaluate_folders(
    gt_folder: str | os.PathLike,
    pred_folder: str | os.PathLike,
    metrics: str | Sequence[str] = ("psnr", "ssim"),
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_to_uint8: bool = True,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    lpips_weights=None,
    fid_weights=None,
    progress: bool = True,
) -> EvaluationResult:
    """Score every prediction against its ground truth; see calculate_metrics.py --help."""
    from tqdm import tqdm

    names = parse_metric_names(metrics)
    if crop_border < 0:
        raise MetricInputError(f"crop_border must be >= 0, got {crop_border}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise MetricInputError(f"image_size must be two positive integers (H W), got {image_size}")
    device = torch.device(device)
    pairs = pair_images(gt_folder, pred_folder)

    # Load the networks first: a missing weight file fails before any long work.
    lpips_models = {}
    for name, net in (("lpips", "alex"), ("lpips_vgg", "vgg")):
        if name in names:
            from utils.metrics.lpips import load_lpips

            lpips_models[name] = load_lpips(net, lpips_weights, device)
    distribution = [n for n in names if not METRICS[n].per_image]
    inception = None
    if distribution:
        from utils.metrics.fid import load_fid_inception

        inception = load_fid_inception(fid_weights, device)
        if len(pairs) < 2:
            raise DataError(f"{', '.join(distribution)} need at least 2 image pairs, found {len(pairs)}")

    per_image: dict[str, dict[str, float]] = {}
    lpips_queue: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor]]] = defaultdict(list)
    inception_batch: list[tuple[torch.Tensor, torch.Tensor]] = []
    features_gt, features_pred = [], []

    def flush_lpips(shape):
        items = lpips_queue.pop(shape)
        pred = torch.stack([p for _, p, _ in items]).to(device)
        gt = torch.stack([g for _, _, g in items]).to(device)
        for name, model in lpips_models.items():
            with torch.no_grad():
                values = model(pred, gt).double().cpu().tolist()
            for (key, _, _), value in zip(items, values):
                per_image[key][name] = value

    def flush_inception():
        from utils.metrics.fid import resize_for_inception

        pred = torch.stack([resize_for_inception(p) for p, _ in inception_batch]).to(device)
        gt = torch.stack([resize_for_inception(g) for _, g in inception_batch]).to(device)
        with torch.no_grad():
            features_pred.append(inception(pred).double().cpu())
            features_gt.append(inception(gt).double().cpu())
        inception_batch.clear()

    for pair in tqdm(pairs, desc="scoring", unit="img", disable=not progress):
        gt, pred = read_image(pair.gt), read_image(pair.pred)
        if round_to_uint8:
            for what, img, path in (("ground truth", gt, pair.gt), ("prediction", pred, pair.pred)):
                if not _is_8bit(img):
                    raise DataError(
                        f"{what} {path} holds more than 8-bit data; 8-bit rounding would change it "
                        "(pass --no_round to score at full precision)"
                    )
        if image_size is not None:
            gt, pred = _resize(gt, image_size), _resize(pred, image_size)
        elif gt.shape != pred.shape:
            raise DataError(
                f"size mismatch for {pair.key}: ground truth {gt.shape[0]}x{gt.shape[1]}, prediction "
                f"{pred.shape[0]}x{pred.shape[1]} {pair.pred} (resize both with --image_size H W)"
            )
        values: dict[str, float] = {}
        kw = dict(crop_border=crop_border, test_y_channel=test_y_channel, round_to_uint8=round_to_uint8)
        try:
            if "psnr" in names:
                values["psnr"] = psnr_np(pred, gt, **kw)
            if "ssim" in names:
                values["ssim"] = ssim_np(pred, gt, mode="2d", **kw)
            if "ssim_3d" in names:
                values["ssim_3d"] = ssim_np(pred, gt, mode="3d", **kw)
        except MetricInputError as exc:
            raise DataError(f"{pair.key}: {exc}") from None
        per_image[pair.key] = values
        if lpips_models or inception is not None:
            pt, gtt = image_to_tensor(pred), image_to_tensor(gt)
            if round_to_uint8:  # the same 8-bit levels the pixel metrics see
                pt, gtt = torch.round(pt.double() * 255).float() / 255, torch.round(gtt.double() * 255).float() / 255
        if lpips_models:
            lp, lg = pt, gtt
            if crop_border:
                lp = lp[:, crop_border:-crop_border, crop_border:-crop_border]
                lg = lg[:, crop_border:-crop_border, crop_border:-crop_border]
            if min(lp.shape[-2:]) < 32:
                raise DataError(f"{pair.key}: LPIPS needs at least 32x32 pixels after crop_border, got {lp.shape[-2]}x{lp.shape[-1]}")
            shape = tuple(lp.shape)
            lpips_queue[shape].append((pair.key, lp, lg))
            if len(lpips_queue[shape]) >= batch_size:
                flush_lpips(shape)
        if inception is not None:
            inception_batch.append((pt, gtt))
            if len(inception_batch) >= batch_size:
                flush_inception()
    for shape in list(lpips_queue):
        flush_lpips(shape)
    if inception_batch:
        flush_inception()

    per_image_names = [n for n in names if METRICS[n].per_image]
    mean = {n: float(np.mean([per_image[k][n] for k in per_image])) for n in per_image_names}
    inf_counts = {}
    for n in per_image_names:
        count = sum(math.isinf(per_image[k][n]) for k in per_image)
        if count:
            inf_counts[n] = count
    dataset = {}
    if distribution:
        from utils.metrics.fid import fid_from_features, kid_from_features

        fg, fp = torch.cat(features_gt), torch.cat(features_pred)
        if "fid" in names:
            dataset["fid"] = fid_from_features(fp, fg)
        if "kid" in names:
            dataset["kid"], dataset["kid_std"] = kid_from_features(fp, fg)
    convention = convention_record(names, crop_border, test_y_channel, round_to_uint8, image_size)
    convention.update({"gt_folder": str(gt_folder), "pred_folder": str(pred_folder), "n_images": len(per_image)})
    return EvaluationResult(convention, per_image, mean, dataset, inf_counts)


def write_reports(result: EvaluationResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``metrics.csv`` (one row per image) and ``metrics.json``: both written to temporary files
    first and renamed only when both are complete, so a failure leaves no partial report."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out must be a folder, {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "metrics.csv", out_dir / "metrics.json"
    with atomic_path(csv_path) as csv_tmp, atomic_path(json_path) as json_tmp:
        csv_tmp.write_text(result.to_csv(), encoding="utf-8")
        json_tmp.write_text(result.to_json() + "\n", encoding="utf-8")
    return out_dir / "metrics.csv", out_dir / "metrics.json"
