"""One evaluation pass: predictions -> scorable items -> per-item metrics -> means, files, grids.

Shared by the trainer (``Trainer.evaluate/validate/test``) and ``calculate_metrics.py``, so both
give the same numbers on the same outputs (docs/metrics.md, "Evaluation").

* A model turns a batch and its prediction into :class:`ScoreItem` s: :func:`default_items`
  (one item per image of a B×C×H×W prediction; one per frame of a B×T×C×H×W clip, named
  ``CLIP/FRAME.png`` and grouped by clip) unless the model defines
  ``evaluation_items(batch, pred) -> list[ScoreItem]`` (a masked region, a composite, ...).
* :func:`score_items` scores them with ``utils.metrics`` on 8-bit levels (exactly what the saved
  PNG holds); an item with a mask is scored on its masked pixels only (``utils.metrics.masked``).
* :func:`aggregate` averages per image, per clip (mean over each clip's frames, then over clips)
  or per frame.
* :class:`Evaluator` runs a dataset through a model: shards over processes, gathers without
  padding, writes the PNGs, ``metrics.json``/``metrics.csv`` (+ ``metrics_per_clip.csv``) and
  builds the tracker grids (lq | pred | gt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from utils.errors import DataError

AVERAGES = ("image", "clip", "frame")


@dataclass
class ScoreItem:
    """One scored output.

    ``name``: relative PNG path of the output (``img.png``; ``CLIP/00000003.png`` for a frame).
    ``pred``: C×H×W in [0, 1], quantised (``utils.image_io.quantize``: what the PNG holds).
    ``gt``: C×H×W ground truth (scored on its 8-bit levels).
    ``mask``: None (every pixel) or 1×H×W with 1 = scored pixel (e.g. an inpainting hole).
    ``group``: what ``average="clip"`` averages over first (the clip; an image is its own group).
    ``crop_border`` / ``test_y_channel``: this item's convention when it differs from the ``val``
    settings (None: use them), e.g. a multi-task set whose ×2 SR items are scored on Y with crop 2
    (the SR papers' convention) and its other items on RGB.
    """

    name: str
    pred: torch.Tensor
    gt: torch.Tensor
    mask: torch.Tensor | None = None
    group: str = ""
    crop_border: int | None = None
    test_y_channel: bool | None = None

    def __post_init__(self):
        if not self.group:
            self.group = self.name


class SharedEvaluationError(DataError):
    """An evaluation error met on one process, raised on every process at once."""


# ---------------------------------------------------------------------------------------------
# Names and items


def output_name(key: str) -> str:
    """Relative PNG path of a sample's output: ``"sub/img_01.jpg"`` -> ``"sub/img_01.png"``
    (never outside the results folder: absolute paths and ``..`` are dropped)."""
    from utils.image_io import IMAGE_EXTENSIONS

    path = Path(str(key))
    if path.is_absolute() or ".." in path.parts:
        path = Path(*[p for p in path.parts if p not in ("..", path.anchor)])
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        path = path.with_suffix("")
    return path.as_posix() + ".png"


def clip_folder(key: str) -> str:
    """Folder of a clip's frames: the clip key as a relative path (``"seq/001"`` -> ``"seq/001"``)."""
    return output_name(key)[: -len(".png")]


def frame_name(batch: dict, b: int, t: int) -> str:
    """File name of frame ``t`` of clip ``b``: from ``batch["frame_names"]`` when the dataset gives
    them (a sample's list of T names; after default collation T lists of B names), else the
    zero-padded index ``00000003.png``."""
    names = batch.get("frame_names")
    if names is None:
        return f"{t:08d}.png"
    entry = names[t]
    name = entry if isinstance(entry, str) else entry[b]
    return output_name(Path(str(name)).name)


def sample_keys(batch: dict, n: int) -> list[str]:
    return [str(k) for k in batch["key"]] if "key" in batch else [str(i) for i in range(n)]


def default_items(batch: dict, pred: torch.Tensor) -> list[ScoreItem]:
    """Scorable items of a batch: pred B×C×H×W -> one item per image (named by ``batch["key"]``,
    its own group); pred B×T×C×H×W -> one item per frame, named ``CLIP/FRAME.png`` (CLIP = the
    clip's key, FRAME from :func:`frame_name`), grouped by clip. Every pixel is scored (no mask)."""
    gt = batch["gt"]
    keys = sample_keys(batch, len(pred))
    if pred.ndim == 4:
        return [ScoreItem(output_name(k), pred[b], gt[b], None, output_name(k)) for b, k in enumerate(keys)]
    if pred.ndim == 5:
        if gt.ndim != 5 or gt.shape[:2] != pred.shape[:2]:
            raise DataError(f"a clip prediction {tuple(pred.shape)} needs a B×T×C×H×W gt of as many frames, "
                            f"got {tuple(gt.shape)}")
        items = []
        for b, k in enumerate(keys):
            clip = clip_folder(k)
            items += [ScoreItem(f"{clip}/{frame_name(batch, b, t)}", pred[b, t], gt[b, t], None, clip)
                      for t in range(pred.shape[1])]
        return items
    raise DataError(f"cannot score a prediction of shape {tuple(pred.shape)}: expected B×C×H×W images "
                    f"or B×T×C×H×W clips (define evaluation_items(batch, pred) in the model)")


# ---------------------------------------------------------------------------------------------
# Scoring and averaging


def score_items(items: Sequence[ScoreItem], metrics: Sequence[str], crop_border: int = 0,
                test_y_channel: bool = False) -> dict[str, dict[str, float]]:
    """``{item.name: {metric: value}}`` on 8-bit levels (clamped and rounded as the saved PNG).

    Items without a mask: ``utils.metrics.compute_metrics`` (runs of consecutive items of one
    shape are scored as one batch, so a batch of images gives the same numbers as before this
    module existed). Items with a mask: ``utils.metrics.masked_metrics`` — PSNR from the MSE over
    the masked pixels (and channels), L1 the mean absolute error there, SSIM the mean of the SSIM
    map over the masked map positions (the crop_border crop applies to the mask too; see
    ``utils.metrics.masked`` for the window-centre convention). LPIPS/FID take no mask (an error).
    """
    from utils.metrics import compute_metrics, masked_metrics

    names = tuple(metrics)
    out: dict[str, dict[str, float]] = {}
    run: list[ScoreItem] = []

    def convention(it: ScoreItem) -> tuple[int, bool]:
        return (crop_border if it.crop_border is None else int(it.crop_border),
                test_y_channel if it.test_y_channel is None else bool(it.test_y_channel))

    def flush():
        if not run:
            return
        pred = torch.stack([it.pred for it in run]).float()
        gt = torch.stack([it.gt for it in run]).to(pred.device)
        crop, y = convention(run[0])
        if run[0].mask is None:
            values = compute_metrics(pred, gt, names=names, crop_border=crop, test_y_channel=y, round_to_uint8=True)
        else:
            mask = torch.stack([it.mask for it in run]).to(pred.device)
            values = masked_metrics(pred, gt, mask, names, crop, y, round_to_uint8=True)
        for i, it in enumerate(run):
            if it.name in out:
                raise DataError(f"two evaluation items share the output name {it.name}; dataset keys must be unique")
            out[it.name] = {m: float(values[m][i]) for m in names}
        run.clear()

    for it in items:
        if run and (it.pred.shape != run[0].pred.shape or (it.mask is None) != (run[0].mask is None)
                    or convention(it) != convention(run[0])):
            flush()
        run.append(it)
    flush()
    return out


def clip_means(per_item: dict[str, dict[str, float]], groups: dict[str, str],
               names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per group (clip): ``{"frames": n, metric: mean over its items}``, sorted by group."""
    names = list(names) if names is not None else list(next(iter(per_item.values())))
    members: dict[str, list[str]] = {}
    for item in per_item:
        members.setdefault(groups.get(item, item), []).append(item)
    return {g: {"frames": len(its), **{n: float(np.mean([per_item[i][n] for i in its])) for n in names}}
            for g, its in sorted(members.items())}


def aggregate(per_item: dict[str, dict[str, float]], groups: dict[str, str] | None = None,
              average: str = "image", names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean per metric. ``image`` and ``frame``: arithmetic mean over all items (every image,
    or every frame of every clip); ``clip``: mean over each group's items (a clip's frames), then
    arithmetic mean over groups, so a long clip weighs as much as a short one. An infinite value
    (an identical pair's PSNR) makes the mean infinite. ``groups``: item name -> group (missing:
    the item is its own group)."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    if not per_item:
        raise DataError("nothing to average: no scored item")
    names = list(names) if names is not None else list(next(iter(per_item.values())))
    if average == "clip":
        clips = clip_means(per_item, groups or {}, names)
        return {n: float(np.mean([c[n] for c in clips.values()])) for n in names}
    return {n: float(np.mean([v[n] for v in per_item.values()])) for n in names}


MEAN_RULES = {
    "image": "arithmetic mean of the per-image values; an identical pair has PSNR = inf and makes the PSNR mean inf",
    "frame": "arithmetic mean over every frame of every clip; an identical pair has PSNR = inf and makes the PSNR mean inf",
    "clip": "mean over the frames of each clip (folder), then arithmetic mean over clips; an identical pair has "
            "PSNR = inf and makes the PSNR mean inf",
}


def is_clip_grouping(groups: dict[str, str]) -> bool:
    """Items are frames grouped into clips (some item's group is not the item itself)."""
    return any(g != name for name, g in groups.items())


def write_metrics_files(folder: Path, per_image: dict[str, dict[str, float]], names: Sequence[str],
                        crop_border: int, test_y_channel: bool, source: dict, *, groups: dict[str, str] | None = None,
                        average: str = "image", masked: int = 0) -> dict[str, float]:
    """``metrics.json`` ({"convention", "mean", "per_image", ...}) and ``metrics.csv`` through the
    writer calculate_metrics.py uses (utils.metrics.folders.write_reports: same shapes, same inf
    handling), plus ``metrics_per_clip.csv`` and ``per_clip`` when items are clip frames; returns
    the means (``average``)."""
    from utils.metrics.folders import EvaluationResult, convention_record, write_reports

    groups = groups or {}
    mean = aggregate(per_image, groups, average, names)
    inf_counts = {n: c for n in names if (c := sum(math.isinf(v[n]) for v in per_image.values()))}
    convention = convention_record(list(names), crop_border, test_y_channel, True, None, average=average)
    convention.update({"toolbox": "restorelab trainer.py (BasicSR convention, the code calculate_metrics.py runs)",
                       **source, "n_images": len(per_image)})
    if masked:
        convention["mask"] = {"masked_items": masked, "rule": MASK_RULE}
    per_clip = clip_means(per_image, groups, names) if is_clip_grouping(groups) else {}
    write_reports(EvaluationResult(convention, per_image, mean, {}, inf_counts, per_clip), folder)
    return mean


MASK_RULE = ("masked items: PSNR from the MSE over the masked pixels and channels; L1 the mean absolute error "
             "there / 255; SSIM the mean of the SSIM map over the map positions centred on masked pixels "
             "(crop_border crops the mask too; utils/metrics/masked.py)")


# ---------------------------------------------------------------------------------------------
# Grids


def image_grid(*images: torch.Tensor) -> np.ndarray:
    """C×H×W tensors side by side (input | output | ground truth) as an H×W×3 uint8 array.
    A panel smaller than the largest in both sides (an SR input) is enlarged to it by nearest
    neighbour; other height differences are padded with black at the bottom."""
    height = max(im.shape[-2] for im in images)
    width = max(im.shape[-1] for im in images)
    tiles = []
    for im in images:
        im = im.detach().float().cpu().clamp(0, 1)
        if im.shape[0] == 1:
            im = im.expand(3, -1, -1)
        im = im[:3]
        if im.shape[-2] < height and im.shape[-1] < width:
            im = torch.nn.functional.interpolate(im[None], size=(height, width), mode="nearest")[0]
        pad = height - im.shape[-2]
        tiles.append(torch.nn.functional.pad(im, (0, 0, 0, pad)))
    grid = torch.cat(tiles, dim=-1)
    return np.round(grid.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)


def _frame(x: torch.Tensor) -> torch.Tensor:
    """One sample's image (C×H×W) or the centre frame of its clip (T×C×H×W)."""
    return x[x.shape[0] // 2] if x.ndim == 4 else x


def grid_panels(batch: dict, pred: torch.Tensor, b: int) -> list[torch.Tensor]:
    """lq | pred | gt of sample ``b`` (centre frames for clips; lq left out when absent or not an image)."""
    panels = [_frame(pred[b]), _frame(batch["gt"][b])]
    lq = batch.get("lq")
    if isinstance(lq, torch.Tensor) and lq.ndim in (4, 5):
        panels.insert(0, _frame(lq[b]))
    return panels


# ---------------------------------------------------------------------------------------------
# One pass over a dataset


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Evaluation shard of one process: every ``world``-th image, no padding or duplicates."""
    return list(range(rank, n, world))


def collated(loader, batch_size: int):
    """Iterate ``loader``; images of different sizes in one batch become a clear DataError."""
    iterator = iter(loader)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            if "equal size" in str(exc) or "same size" in str(exc):
                raise DataError(f"val.batch_size={batch_size} needs images of one size; these differ "
                                f"(use val.batch_size=1)") from exc
            raise


def select(batch: dict, keep: list[int]) -> dict:
    """The samples ``keep`` of a collated batch (tensors along dim 0, lists of names by index,
    nested collated lists such as ``frame_names`` element-wise)."""

    def pick(v):
        if isinstance(v, torch.Tensor):
            return v[torch.as_tensor(keep, device=v.device)] if v.ndim else v
        if isinstance(v, (list, tuple)):
            if v and all(isinstance(e, (list, tuple, torch.Tensor)) for e in v):
                return [pick(e) for e in v]
            return [v[i] for i in keep]
        return v

    return {k: pick(v) for k, v in batch.items()}


@dataclass
class Evaluation:
    """Scores of one pass over an evaluation set (every process holds all of them)."""

    mean: dict[str, float]
    per_image: dict[str, dict[str, float]]   # output name -> metric -> value, sorted by name
    grids: dict[str, np.ndarray]             # tracker image grids (main process)
    skipped: list[str]                       # skip_bad_samples: errors of the images left out
    groups: dict[str, str] = field(default_factory=dict)   # output name -> clip (or itself)
    average: str = "image"
    masked: int = 0                          # items scored on a mask
    skip_events: list[str] = field(default_factory=list)   # every stand-in, with repeats
    group_means: dict[str, dict[str, float]] = field(default_factory=dict)  # model's metric groups (tasks)

    @property
    def clips(self) -> int:
        return len(set(self.groups.values())) if is_clip_grouping(self.groups) else 0

    def describe(self) -> str:
        """"3 images" or "12 frames of 3 clips"."""
        return f"{len(self.per_image)} frames of {self.clips} clips" if self.clips else f"{len(self.per_image)} images"


class Evaluator:
    """Scores a dataset with a model as the ``val`` settings say (metrics, tiling, crop border,
    Y channel, batch size, averaging) on every process of ``accelerator``.

    ``to_device``: moves a batch to the process's device; ``error_text``: the one-line text of a
    data error (the trainer passes its ``error_line``); ``num_workers``: DataLoader workers.
    """

    def __init__(self, val, accelerator, *, num_workers: int = 0, to_device: Callable[[dict], dict] | None = None,
                 error_text: Callable[[BaseException], str] = str):
        self.val = val
        self.accelerator = accelerator
        self.num_workers = num_workers
        self.to_device = to_device or (lambda batch: batch)
        self.error_text = error_text

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @torch.no_grad()
    def run(self, model, dataset, save_dir: Path | None = None, log_images: int = 0, desc: str = "val") -> Evaluation:
        """Score every sample of ``dataset`` (sharded over processes, gathered without padding).

        Predictions are clamped and rounded to 8 bits before scoring and saving, so the numbers
        equal calculate_metrics.py on the saved PNGs. An unreadable sample stops every process
        with its error (:class:`SharedEvaluationError`), or with ``skip_bad_samples: true`` is left
        out and listed in ``skipped``."""
        from accelerate.utils import gather_object
        from torch.utils.data import DataLoader
        from tqdm import tqdm

        from utils.image_io import quantize, write_image

        acc, v = self.accelerator, self.val
        indices = shard_indices(len(dataset), acc.process_index, acc.num_processes)
        batches = [indices[i: i + v.batch_size] for i in range(0, len(indices), v.batch_size)]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=self.num_workers)
        tile = (v.patch_size, v.overlap) if v.patched else None
        make_items = getattr(model, "evaluation_items", None) or default_items
        rows, skipped, grids, error = [], [], {}, None
        model.eval()
        try:
            for batch in tqdm(collated(loader, v.batch_size), desc=desc, leave=False, disable=not self.is_main,
                              dynamic_ncols=True):
                batch = self.to_device(batch)
                with acc.autocast():
                    pred = model.predict(batch, tile=tile)
                pred = quantize(pred.float())
                bad = list(batch.pop("bad_sample", None) or [""] * len(pred))
                keep = [b for b, reason in enumerate(bad) if not reason]
                skipped += [reason for reason in bad if reason]  # stand-ins for unreadable samples: scored nowhere
                if not keep:
                    continue
                if len(keep) < len(bad):
                    batch, pred = select(batch, keep), pred[torch.as_tensor(keep, device=pred.device)]
                items = make_items(batch, pred)
                values = score_items(items, v.metrics, v.crop_border, v.test_y_channel)
                for it in items:
                    rows.append((it.name, it.group, values[it.name], it.mask is not None))
                    if save_dir is not None:
                        write_image(save_dir / it.name, it.pred)
                if self.is_main:
                    for b in range(len(pred)):
                        if len(grids) >= log_images:
                            break
                        grids[f"{desc}/{len(grids)}"] = image_grid(*grid_panels(batch, pred, b))
        except DataError as exc:
            error = self.error_text(exc)  # told to every process below, so none waits for the others
        finally:
            model.train()
        if acc.num_processes > 1:
            shards = gather_object([(rows, skipped, error)])
            error = next((e for _, _, e in shards if e is not None), None)
            rows = [row for r, _, _ in shards for row in r]
            skipped = [reason for _, s, _ in shards for reason in s]
        if error is not None:
            raise SharedEvaluationError(f"{desc}: {error}")
        per_image, groups, masked = {}, {}, 0
        for name, group, values, has_mask in rows:
            if name in per_image:
                raise DataError(f"two {desc} samples share the output name {name}; dataset keys must be unique")
            per_image[name], groups[name] = values, group
            masked += has_mask
        per_image = dict(sorted(per_image.items()))
        if not per_image:
            raise DataError(f"{desc}: no image could be read ({len(skipped)} skipped, first: {skipped[0]})")
        mean = aggregate(per_image, groups, v.average, v.metrics)
        return Evaluation(mean, per_image, grids, sorted(set(skipped)), dict(sorted(groups.items())), v.average,
                          masked, skipped, metric_group_means(model, per_image, groups, v.average, v.metrics))

    def write(self, folder: Path, result: Evaluation, source: dict) -> dict[str, float]:
        """``metrics.json`` / ``metrics.csv`` (+ per-clip CSV) of ``result`` in ``folder``."""
        v = self.val
        if result.skipped:
            source = {**source, "skipped_bad_samples": result.skipped}
        return write_metrics_files(folder, result.per_image, v.metrics, v.crop_border, v.test_y_channel, source,
                                   groups=result.groups, average=result.average, masked=result.masked)


def metric_group_means(model, per_image: dict[str, dict[str, float]], groups: dict[str, str], average: str,
                       names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Means per metric group when the model names one per item (``model.metric_group(item_name)``
    -> e.g. a task name, or None for none): ``{group: {metric: mean}}``, each averaged like the
    whole set. Models without the hook get ``{}``."""
    group_of = getattr(model, "metric_group", None)
    if group_of is None:
        return {}
    members: dict[str, dict[str, dict[str, float]]] = {}
    for name, values in per_image.items():
        g = group_of(name)
        if g is not None:
            members.setdefault(str(g), {})[name] = values
    return {g: aggregate(items, groups, average, names) for g, items in sorted(members.items())}


def mean_text(mean: dict[str, float]) -> str:
    return ", ".join(f"{m} {x:.4f}" for m, x in mean.items())


def group_by_folder(names: Iterable[str]) -> dict[str, str]:
    """Clip-folder layout ``CLIP/FRAME.png``: each relative path's group is its parent folder."""
    out = {}
    for name in names:
        parent = Path(name).parent.as_posix()
        if parent in ("", "."):
            raise DataError(f"{name} is not inside a clip folder; clip layouts are gt/CLIP/FRAME.png")
        out[name] = parent
    return out
