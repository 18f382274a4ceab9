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
from contextlib import ExitStack
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
from utils.metrics.psnr_ssim import l1_np, psnr_np, ssim_np

_MAX_LISTED = 8
PER_CLIP_CSV = "metrics_per_clip.csv"


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
    per_clip: dict[str, dict[str, float]] = field(default_factory=dict)  # clip -> {"frames": n, metric: mean}

    def to_json(self) -> str:
        record = {
            "convention": self.convention,
            "mean": self.mean,
            "dataset": self.dataset,
            "inf_counts": self.inf_counts,
            "per_image": self.per_image,
        }
        if self.per_clip:
            record["per_clip"] = self.per_clip
        return json.dumps(json_safe(record), indent=2, allow_nan=False, ensure_ascii=False)

    def per_clip_csv(self) -> str:
        """One row per clip: its frame count and the mean of each metric over its frames."""
        names = [n for n in self.convention["metrics"] if METRICS[n].per_image]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["clip", "frames", *names])
        for clip, values in self.per_clip.items():
            writer.writerow([clip, int(values["frames"]), *(_fmt_csv(values[n]) for n in names)])
        return buf.getvalue()

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
        if per_image and self.per_clip:  # clip means after the frames
            rows += [(f"{k} (clip, {int(v['frames'])} frames)", [v[n] for n in names]) for k, v in self.per_clip.items()]
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


def convention_record(names, crop_border, test_y_channel, round_to_uint8, image_size, average: str = "image") -> dict:
    from utils import __version__
    from utils.evaluation import MEAN_RULES

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
        "average": average,
        "mean": MEAN_RULES[average],
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
    mask_folder: str | os.PathLike | None = None,
    mask_region: str = "hole",
    average: str = "image",
) -> EvaluationResult:
    """Score every prediction against its ground truth; see calculate_metrics.py --help.

    ``mask_folder``: one mask per ground truth (same relative path, any image extension), in the
    convention of DESIGN.md: white (1) = known pixel, black (0) = hole (a pixel is known when the
    mean of its channels is > 0.5). ``mask_region``: which pixels are scored, ``hole`` (default)
    or ``known``; scored with utils.evaluation.score_items, the code of the trainer.
    ``average``: ``image`` (every file its own item), or ``clip``/``frame`` for clip folders
    ``CLIP/FRAME.png`` (clip = the parent folder; per-clip means in ``per_clip``).
    """
    from tqdm import tqdm

    from utils.evaluation import AVERAGES, ScoreItem, aggregate, clip_means, group_by_folder, score_items
    from utils.metrics.masked import MASKED_METRICS

    names = parse_metric_names(metrics)
    if average not in AVERAGES:
        raise MetricInputError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    if mask_region not in MASK_REGIONS:
        raise MetricInputError(f"mask_region must be one of {', '.join(MASK_REGIONS)}, got {mask_region!r}")
    if mask_folder is not None:
        unmaskable = [n for n in names if n not in MASKED_METRICS]
        if unmaskable:
            raise MetricInputError(f"{', '.join(unmaskable)} cannot be restricted to a mask "
                                   f"(with --mask_folder: {', '.join(MASKED_METRICS)})")
        if image_size is not None:
            raise MetricInputError("--mask_folder and --image_size cannot be combined (masks are not resized)")
        if not round_to_uint8:
            raise MetricInputError("--mask_folder scores 8-bit levels, as the trainer; --no_round cannot be combined with it")
    if crop_border < 0:
        raise MetricInputError(f"crop_border must be >= 0, got {crop_border}")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise MetricInputError(f"image_size must be two positive integers (H W), got {image_size}")
    device = torch.device(device)
    pairs = pair_images(gt_folder, pred_folder)
    groups = group_by_folder(p.key for p in pairs) if average != "image" else {}
    masks = pair_masks(pairs, mask_folder) if mask_folder is not None else {}

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
            if masks:
                mask = read_mask(masks[pair.key], gt.shape[:2], mask_region)
                item = ScoreItem(pair.key, image_to_tensor(pred), image_to_tensor(gt), mask)
                values.update(score_items([item], names, crop_border, test_y_channel)[pair.key])
                names_done = names
            else:
                names_done = ()
            if "psnr" in names and "psnr" not in names_done:
                values["psnr"] = psnr_np(pred, gt, **kw)
            if "ssim" in names and "ssim" not in names_done:
                values["ssim"] = ssim_np(pred, gt, mode="2d", **kw)
            if "ssim_3d" in names and "ssim_3d" not in names_done:
                values["ssim_3d"] = ssim_np(pred, gt, mode="3d", **kw)
            if "l1" in names and "l1" not in names_done:
                values["l1"] = l1_np(pred, gt, **kw)
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
    mean = aggregate(per_image, groups, average, per_image_names)
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
    convention = convention_record(names, crop_border, test_y_channel, round_to_uint8, image_size, average=average)
    convention.update({"gt_folder": str(gt_folder), "pred_folder": str(pred_folder), "n_images": len(per_image)})
    if mask_folder is not None:
        from utils.evaluation import MASK_RULE

        convention["mask"] = {
            "folder": str(mask_folder),
            "file_convention": "DESIGN.md: white (1) = known pixel, black (0) = hole; known when the channel mean > 0.5",
            "region": mask_region,
            "scored": "the hole (black) pixels" if mask_region == "hole" else "the known (white) pixels",
            "rule": MASK_RULE,
        }
    per_clip = clip_means(per_image, groups, per_image_names) if groups else {}
    return EvaluationResult(convention, per_image, mean, dataset, inf_counts, per_clip)


MASK_REGIONS = ("hole", "known")


def pair_masks(pairs: list[ImagePair], mask_folder: str | os.PathLike) -> dict[str, Path]:
    """The mask of each ground truth: same relative path, or the same path with another extension."""
    mask_folder = Path(mask_folder)
    if not mask_folder.is_dir():
        raise DataError(f"mask folder not found: {mask_folder}")
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in list_images(mask_folder):
        by_stem[p.relative_to(mask_folder).with_suffix("").as_posix()].append(p)
    found, missing, ambiguous = {}, [], []
    for pair in pairs:
        exact = mask_folder / pair.key
        candidates = [exact] if exact.is_file() else by_stem.get(Path(pair.key).with_suffix("").as_posix(), [])
        if not candidates:
            missing.append(pair.key)
        elif len(candidates) > 1:
            ambiguous.append(pair.key)
        else:
            found[pair.key] = candidates[0]
    problems = []
    if missing:
        problems.append(_listing(f"ground truth(s) without a mask in {mask_folder}", missing))
    if ambiguous:
        problems.append(_listing("ground truth(s) with several masks", ambiguous))
    if problems:
        raise DataError("cannot pair the masks: " + "; ".join(problems))
    return found


def read_mask(path: Path, size: tuple[int, int], region: str) -> torch.Tensor:
    """1×H×W float tensor, 1 = scored pixel, from a DESIGN.md mask file (white = known, black = hole)."""
    img = read_image(path)
    if img.shape[:2] != tuple(size):
        raise DataError(f"mask {path} is {img.shape[0]}x{img.shape[1]}, its ground truth {size[0]}x{size[1]}")
    known = img.astype(np.float64).mean(axis=2) > 0.5
    scored = ~known if region == "hole" else known
    return torch.from_numpy(scored[None].astype(np.float32))


def write_reports(result: EvaluationResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``metrics.csv`` (one row per image), ``metrics.json`` and, for clips, ``metrics_per_clip.csv``
    (one row per clip: frames and mean per metric): all written to temporary files
    first and renamed only when all are complete, so a failure leaves no partial report."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out must be a folder, {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "metrics.csv", out_dir / "metrics.json"
    clip_path = out_dir / PER_CLIP_CSV
    texts = {csv_path: result.to_csv(), json_path: result.to_json() + "\n"}
    if result.per_clip:
        texts[clip_path] = result.per_clip_csv()
    with ExitStack() as stack:  # every file renamed into place only when all are written
        for path, text in texts.items():
            stack.enter_context(atomic_path(path)).write_text(text, encoding="utf-8")
    if not result.per_clip and clip_path.exists():
        clip_path.unlink()  # the table of an earlier clip evaluation into this folder
    return out_dir / "metrics.csv", out_dir / "metrics.json"
