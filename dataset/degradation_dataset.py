"""``MultiTaskDegradationDataset``: sharp images degraded on the fly by per-task degradation
pipelines (``utils.degradations``): super-resolution ×s (lq really ``s``× smaller), JPEG artifact
removal, denoising, colorization, or any composed pipeline (e.g. Real-ESRGAN's second order), mixed
in one run with per-task sampling weights."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from dataset.base import PairedImageDataset, as_size
from dataset.sources import list_sources, load_source
from utils.errors import ConfigError, DataError
from utils.image_io import quantize

TASK_KINDS = ("sr", "jpeg", "denoise", "colorize", "restore")
_TASK_KEYS = ("kind", "weight", "scale", "degradations", "quantize")


def default_degradations(kind: str, scale: int) -> list[dict]:
    """The pipeline of a task kind when its YAML gives none."""
    if kind == "sr":
        return [{"op": "resize", "to_scale": 1.0 / scale, "modes": ["matlab"]}]
    if kind == "jpeg":
        return [{"op": "jpeg", "quality": [20, 40]}]
    if kind == "denoise":
        return [{"op": "noise", "kinds": ["gaussian"], "sigma": [5, 25]}]
    if kind == "colorize":
        return [{"op": "grayscale"}]
    raise ConfigError(f"task kind {kind!r} needs its degradations listed")


class Task:
    """One task: name, kind (how it is scored and which losses apply), sampling weight, scale, pipeline."""

    def __init__(self, name: str, spec: Mapping, where: str):
        from utils.degradations import DegradationPipeline
        from utils.registry import check_keywords

        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping like {{kind: sr, scale: 2, weight: 1}}")
        check_keywords(dict(spec), list(_TASK_KEYS), where, "a task")
        self.name = str(name)
        if "/" in self.name:
            raise ConfigError(f"{where}: a task name cannot contain '/' (it prefixes output names)")
        self.kind = spec.get("kind", "restore")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        self.weight = float(spec.get("weight", 1.0))
        if self.weight < 0:
            raise ConfigError(f"{where}.weight must be >= 0")
        self.scale = int(spec.get("scale", 1))
        if self.scale < 1 or (self.kind == "sr") != (self.scale > 1) and self.kind != "restore":
            raise ConfigError(f"{where}: scale must be > 1 for kind sr and 1 for jpeg/denoise/colorize, got {self.scale}")
        specs = spec.get("degradations")
        self.pipeline = DegradationPipeline(default_degradations(self.kind, self.scale) if specs is None else specs,
                                            f"{where}.degradations")
        self.quantize = bool(spec.get("quantize", True))

    @property
    def colorize(self) -> bool:
        return self.kind == "colorize"


class MultiTaskDegradationDataset(PairedImageDataset):
    """Per-task degraded crops of sharp images.

    YAML keys (constructor keywords)::

        type: MultiTaskDegradationDataset
        images: builtin            # "builtin" (skimage.data) or a folder of images
        names: null                # only these images
        exclude: [astronaut, camera, coffee]   # held out
        tasks:                     # name -> {kind, weight, scale, degradations, quantize}
          sr_x2: {kind: sr, scale: 2, weight: 1}          # default: MATLAB bicubic ×1/2
          jpeg: {kind: jpeg, weight: 1}                   # default: libjpeg q in [20, 40]
          denoise: {kind: denoise, weight: 1}             # default: Gaussian σ in [5, 25]/255
          color: {kind: colorize, weight: 1}              # default: BT.601 gray
          real: {kind: restore, scale: 4, degradations: {preset: realesrgan, scale: 4}}
        crop_size: 64              # gt pixels (a multiple of every task's scale); val/test: centre crop or null
        group_size: 16             # training: crops per item, all of one task (train.batch_size: 1)
        samples_per_epoch: 1000    # training items per epoch
        gt_usm: null               # {weight: 0.5, threshold: 10, radius: 50}: adds gt_usm (Real-ESRGAN)
        frames: null               # odd T: lq is a T-frame clip of the image moved by known integer shifts
        max_shift: 2               # clips: per-frame shift range in gt pixels (a multiple of the scale)
        phase: train
        use_flip: true
        use_rot: true
        seed: 0
        skip_bad_samples: false

    Training item ``i`` draws, from its (seed, epoch, i) generator: the task (by weight), then per
    crop: the source image, the crop position, flips/transpose, and the pipeline's parameters and
    noise. Items hold ``group_size`` crops of one task, so ``gt`` is K×C×H×W and ``lq`` K×C×h×w
    (``h = H / scale``); the model folds K into the batch. Validation/test: one sample per
    (task, image), keyed ``task/image``, parameters drawn once (epoch 0) and fixed.

    Each sample also carries ``task`` (name), ``kind``, ``scale`` (an integer tensor),
    ``colorize`` (0/1 tensor) and ``deg_params``: the JSON record of every draw (per crop).
    Images and lq are 8-bit levels (``quantize: false`` keeps a task's lq in float).
    """

    def __init__(self, tasks: Mapping, images: str = "builtin", names: list[str] | None = None,
                 exclude: list[str] | None = None, crop_size: int | None = 64, group_size: int = 16,
                 samples_per_epoch: int = 1000, gt_usm: Mapping | None = None, frames: int | None = None,
                 max_shift: int = 2, phase: str = "train", use_flip: bool = True, use_rot: bool = True, seed: int = 0,
                 skip_bad_samples: bool = False):
        super().__init__(phase=phase, crop_size=None, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples)
        if not isinstance(tasks, Mapping) or not tasks:
            raise ConfigError("tasks must be a mapping name -> {kind, weight, scale, degradations}")
        self.tasks = [Task(n, s, f"tasks.{n}") for n, s in tasks.items()]
        if sum(t.weight for t in self.tasks) <= 0:
            raise ConfigError("tasks: at least one task needs a weight > 0")
        self.crop = as_size(crop_size, "crop_size")
        if self.crop is None and self.random:
            raise ConfigError("crop_size is required for training")
        for t in self.tasks:
            if self.crop and (self.crop[0] % t.scale or self.crop[1] % t.scale):
                raise ConfigError(f"crop_size {list(self.crop)} must be a multiple of task {t.name}'s scale {t.scale}")
        if not isinstance(group_size, int) or group_size < 1:
            raise ConfigError(f"group_size must be a positive integer, got {group_size!r}")
        self.group_size = group_size if self.random else 1
        if not isinstance(samples_per_epoch, int) or samples_per_epoch < 1:
            raise ConfigError(f"samples_per_epoch must be a positive integer, got {samples_per_epoch!r}")
        self.samples_per_epoch = samples_per_epoch
        if frames is not None and (not isinstance(frames, int) or frames < 1 or frames % 2 == 0):
            raise ConfigError(f"frames must be an odd positive integer (the centre frame is the target), got {frames!r}")
        self.frames = frames
        self.max_shift = int(max_shift)
        if frames and any(self.max_shift % t.scale for t in self.tasks):
            raise ConfigError("max_shift must be a multiple of every task's scale (shifts stay on the lq grid)")
        self.usm = None
        if gt_usm is not None:
            from utils.degradations import USMSharp

            extra = set(gt_usm) - {"weight", "threshold", "radius"}
            if extra:
                raise ConfigError(f"gt_usm takes weight, threshold, radius; got {sorted(extra)}")
            self.usm = (USMSharp(int(gt_usm.get("radius", 50))), float(gt_usm.get("weight", 0.5)),
                        float(gt_usm.get("threshold", 10)))
        self.names: list[str] = []
        self.images: list[torch.Tensor] = []
        for name, path in list_sources(images, names, exclude):
            try:
                img = quantize(load_source(name, path))
            except DataError as exc:
                if not skip_bad_samples:
                    raise
                self.skipped[name] = str(exc)
                continue
            self.names.append(name)
            self.images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        if not self.images:
            raise DataError("no readable source image")
        margin = 2 * self.max_shift if frames else 0
        if self.crop:
            small = [n for n, im in zip(self.names, self.images)
                     if im.shape[1] < self.crop[0] + margin or im.shape[2] < self.crop[1] + margin]
            if small and self.random:
                raise DataError(f"images smaller than crop_size {list(self.crop)}: {small}")

    def __len__(self) -> int:
        return self.samples_per_epoch if self.random else len(self.tasks) * len(self.images)

    # -- drawing ----------------------------------------------------------------------------
    def task_of(self, generator: torch.Generator) -> Task:
        from utils.degradations import choice

        return choice(generator, self.tasks, [t.weight for t in self.tasks])

    def _gt_crop(self, img: torch.Tensor, scale: int, g: torch.Generator | None) -> tuple[torch.Tensor, int, int]:
        """The gt window (with the clip margin), top/left in the window."""
        _, h, w = img.shape
        margin = self.max_shift if self.frames else 0
        if self.crop is None:  # full image, trimmed to a multiple of the scale
            ch, cw = (h - 2 * margin) // scale * scale, (w - 2 * margin) // scale * scale
            top, left = (h - ch) // 2, (w - cw) // 2
        else:
            ch, cw = min(self.crop[0], h - 2 * margin) // scale * scale, min(self.crop[1], w - 2 * margin) // scale * scale
            if g is None:
                top, left = (h - ch) // 2, (w - cw) // 2
            else:
                top = margin + int(torch.randint(0, h - ch - 2 * margin + 1, (), generator=g))
                left = margin + int(torch.randint(0, w - cw - 2 * margin + 1, (), generator=g))
        return img, top, left, ch, cw

    def _orient(self, x: torch.Tensor, flips: tuple[bool, bool, bool]) -> torch.Tensor:
        hflip, vflip, transpose = flips
        if hflip:
            x = x.flip(-1)
        if vflip:
            x = x.flip(-2)
        if transpose:
            x = x.transpose(-1, -2)
        return x.contiguous()

    def one_crop(self, task: Task, img: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list]:
        """(gt, lq, record) of one crop of ``img`` for ``task`` (training draws from ``g``;
        validation: centre crop, no flips, same degradation draws for the same seed)."""
        random = self.random
        img, top, left, ch, cw = self._gt_crop(img, task.scale, g if random else None)
        flips = (False, False, False)
        if random:
            flips = (self.use_flip and bool(torch.rand((), generator=g) < 0.5),
                     self.use_flip and bool(torch.rand((), generator=g) < 0.5),
                     self.use_rot and ch == cw and bool(torch.rand((), generator=g) < 0.5))
        if not self.frames:
            gt = self._orient(img[:, top:top + ch, left:left + cw], flips)
            lq, record = task.pipeline(gt, g)
            return gt, (quantize(lq) if task.quantize else lq), record
        # a clip: frame t sees the window moved by shift_t (integer gt pixels, multiples of the scale);
        # the centre frame is unmoved and is the target
        s, m = task.scale, self.max_shift // task.scale
        shifts = torch.randint(-m, m + 1, (self.frames, 2), generator=g) * s
        shifts[self.frames // 2] = 0
        frames, records = [], []
        for dy, dx in shifts.tolist():
            f = self._orient(img[:, top + dy:top + dy + ch, left + dx:left + dx + cw], flips)
            lq, rec = task.pipeline(f, g)
            frames.append(quantize(lq) if task.quantize else lq)
            records.append({"shift": [dy, dx], "degradations": rec})
        gt = self._orient(img[:, top:top + ch, left:left + cw], flips)
        return gt, torch.stack(frames), records

    def make_sample(self, index: int, rng_index: int | None = None) -> dict:
        from utils.degradations import record_json

        g = self.generator(index if rng_index is None else rng_index)
        if self.random:
            task = self.task_of(g)
            gts, lqs, records = [], [], []
            for _ in range(self.group_size):
                i = int(torch.randint(0, len(self.images), (), generator=g))
                gt, lq, rec = self.one_crop(task, self.images[i], g)
                gts.append(gt)
                lqs.append(lq)
                records.append({"image": self.names[i], "degradations": rec})
            gt, lq = torch.stack(gts), torch.stack(lqs)
            key = f"{task.name}/{index}"
        else:
            task = self.tasks[index // len(self.images)]
            i = index % len(self.images)
            gt, lq, rec = self.one_crop(task, self.images[i], g)
            records = [{"image": self.names[i], "degradations": rec}]
            key = f"{task.name}/{self.names[i]}"
        if tuple(lq.shape[-2:]) != (gt.shape[-2] // task.scale, gt.shape[-1] // task.scale):
            raise DataError(f"sample '{key}': task {task.name}'s degradations give lq {tuple(lq.shape[-2:])} for gt "
                            f"{tuple(gt.shape[-2:])}; with scale {task.scale} lq must be gt / {task.scale}")
        sample = {"gt": gt, "lq": lq, "key": key, "task": task.name, "kind": task.kind,
                  "scale": torch.tensor(task.scale), "colorize": torch.tensor(int(task.colorize)),
                  "deg_params": record_json(records)}
        if self.usm is not None:
            usm, weight, threshold = self.usm
            with torch.no_grad():
                flat = gt.reshape(-1, *gt.shape[-3:])
                sample["gt_usm"] = usm(flat, weight, threshold).reshape(gt.shape)
        return sample

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        return self.make_sample(index)
