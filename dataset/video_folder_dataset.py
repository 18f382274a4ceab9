"""``VideoFolderDataset``: LQ/GT clips from the folder layouts people download, or from video files.

Clips are the leaf folders of ``gt_folder`` that hold frames, keyed by their relative path, with
frames in natural order:

* REDS: ``train_sharp/000/00000000.png`` (gt_folder ``train_sharp``, lq_folder
  ``train_sharp_bicubic/X4``), optionally restricted/ordered by a BasicSR meta-info file
  (``000 100 (720,1280,3)`` per line); REDS4 = ``clips: ['000', '011', '015', '020']``;
* Vimeo-90K septuplets: ``sequences/00001/0001/im1.png … im7.png`` (clip key ``00001/0001``;
  meta info ``sep_testlist.txt`` lines ``00001/0266``); score the centre frame only with
  ``model.center_frame_only`` (models/vsr_model.py);
* Vid4, UDM10: ``GT/calendar/*.png``, ``BIx4/calendar/*.png`` (or ``BDx4``);
* video files: a ``gt_folder`` of ``.mp4/.mkv/.avi`` files, each one clip (``fps`` resamples to a
  constant rate, utils/video_io.py).

``lq_folder: null`` makes the LQ from the GT with ``degradation`` (BI or BD ×``scale``,
utils/degradations_video.py). The GT and LQ clip sets must match clip for clip and frame for
frame (names and counts): any difference is one DataError naming the clip (IART's test scripts
``zip`` the two lists unchecked). Clips may have different lengths.

Training samples are random windows of ``num_frames`` frames (random clip per index, random start),
with crops, flips, transposes and time reversal (``time_reverse``) consistent across frames;
``mirror: true`` appends the time-reversed window (Vimeo: 7 → 14 frames, as IART trains).
Validation/test samples are whole clips (one forward pass each, the field's convention), with
``frame_names`` so outputs keep the input file names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataset.base import PairedImageDataset
from utils.degradations_video import DEGRADATIONS, degrade
from utils.errors import ConfigError, DataError
from utils.image_io import IMAGE_EXTENSIONS, quantize, read_image
from utils.video_io import VIDEO_EXTENSIONS, list_frames, natural_key, read_video, video_to_tensor


def find_clips(root: Path) -> dict[str, list[str] | Path]:
    """Clip key → frame file names (frame folders) or the file itself (videos), naturally sorted."""
    if not root.is_dir():
        raise DataError(f"clip folder not found: {root}")
    clips: dict[str, list[str] | Path] = {}
    for path in sorted(root.rglob("*"), key=lambda p: natural_key(p.as_posix())):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            clips[path.relative_to(root).with_suffix("").as_posix()] = path
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS},
                         key=lambda p: natural_key(p.as_posix())):
        clips[folder.relative_to(root).as_posix() or "."] = [p.name for p in list_frames(folder)]
    if not clips:
        raise DataError(f"no clip (frame folder or video file) under {root}")
    return clips


def read_meta_info(path: str | Path) -> list[str]:
    """Clip keys of a BasicSR/IART meta-info file: the first token of each non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"meta_info file not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class VideoFolderDataset(PairedImageDataset):
    """YAML keys (constructor keywords)::

        type: VideoFolderDataset
        gt_folder: data/REDS/train_sharp
        lq_folder: data/REDS/train_sharp_bicubic/X4   # null: made from gt with `degradation`
        degradation: BI          # BI | BD, when lq_folder is null
        meta_info: null          # BasicSR/IART meta-info file: which clips, in which order
        clips: null              # explicit clip keys (e.g. REDS4 ['000', '011', '015', '020'])
        exclude_clips: []        # e.g. REDS4 left out of training
        num_frames: 7            # training window (null: whole clips); eval always uses whole clips
        mirror: false            # append the reversed window (Vimeo: 7 -> 14 frames)
        fps: null                # video files: resample to this frame rate
        scale: 4
        samples_per_epoch: null  # training: samples per epoch (default: one per clip)
        phase: train
        crop_size: 64            # LR pixels
        use_flip: true
        use_rot: true
        time_reverse: true
        seed: 0
    """

    def __init__(self, gt_folder: str, lq_folder: str | None = None, degradation: str = "BI",
                 meta_info: str | None = None, clips: list[str] | None = None, exclude_clips: list[str] | None = None,
                 num_frames: int | None = 7, mirror: bool = False, fps: float | None = None, scale: int = 4,
                 samples_per_epoch: int | None = None, phase: str = "train", crop_size=None, use_flip: bool = True,
                 use_rot: bool = True, time_reverse: bool = True, seed: int = 0, skip_bad_samples: bool = False):
        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot, seed=seed,
                         skip_bad_samples=skip_bad_samples, scale=scale, time_reverse=time_reverse)
        if degradation not in DEGRADATIONS:
            raise ConfigError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {degradation!r}")
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise ConfigError(f"num_frames must be a positive integer or null, got {num_frames!r}")
        self.gt_root = Path(gt_folder)
        self.lq_root = Path(lq_folder) if lq_folder else None
        self.degradation, self.num_frames, self.mirror, self.fps = degradation, num_frames, bool(mirror), fps
        gt_clips = find_clips(self.gt_root)
        wanted = list(clips) if clips else (read_meta_info(meta_info) if meta_info else list(gt_clips))
        wanted = [c for c in wanted if c not in set(exclude_clips or [])]
        missing = [c for c in wanted if c not in gt_clips]
        if missing:
            raise DataError(f"clip '{missing[0]}' is not under {self.gt_root} ({len(missing)} missing clip(s))")
        self.clips = {c: gt_clips[c] for c in wanted}
        if self.lq_root is not None:
            self._check_lq(find_clips(self.lq_root))
        if not self.clips:
            raise DataError(f"no clip selected under {self.gt_root}")
        self.keys_ = list(self.clips)
        self.samples_per_epoch = samples_per_epoch

    def _check_lq(self, lq_clips: dict) -> None:
        for clip, frames in self.clips.items():
            if clip not in lq_clips:
                raise DataError(f"clip '{clip}' has GT frames under {self.gt_root} but no LQ clip under {self.lq_root}")
            lq = lq_clips[clip]
            if isinstance(frames, list) != isinstance(lq, list):
                raise DataError(f"clip '{clip}': GT and LQ are not both frame folders (or both videos)")
            if isinstance(frames, list) and frames != lq:
                extra = sorted(set(frames) ^ set(lq))
                detail = f"e.g. {extra[0]}" if extra else "frames in a different order"
                raise DataError(f"clip '{clip}': GT has {len(frames)} frames, LQ has {len(lq)} ({detail}); "
                                f"the two clip sets must match frame for frame")

    def __len__(self) -> int:
        if self.random and self.samples_per_epoch:
            return int(self.samples_per_epoch)
        return len(self.keys_)

    # -- reading -----------------------------------------------------------------------------
    def _frames(self, root: Path, clip: str, entry, start: int, count: int | None) -> tuple[torch.Tensor, list[str]]:
        if isinstance(entry, list):
            names = entry[start:None if count is None else start + count]
            frames = [torch.from_numpy(np.ascontiguousarray(read_image(root / clip / n).transpose(2, 0, 1)))
                      for n in names]
            return torch.stack(frames), names
        path = entry if root == self.gt_root else next(
            (p for p in (root / clip).parent.glob(Path(clip).name + ".*") if p.suffix.lower() in VIDEO_EXTENSIONS), None)
        if path is None:
            raise DataError(f"clip '{clip}': no LQ video under {root}")
        arr, _ = read_video(path, fps=self.fps, max_frames=None if count is None else start + count)
        arr = arr[start:]
        return video_to_tensor(arr), [f"{start + i:08d}.png" for i in range(len(arr))]

    def clip_length(self, clip: str) -> int:
        entry = self.clips[clip]
        if isinstance(entry, list):
            return len(entry)
        return len(read_video(entry, fps=self.fps)[0])

    def load_sample(self, index: int, generator: torch.Generator) -> dict:
        if self.random:
            clip = self.keys_[int(torch.randint(len(self.keys_), (1,), generator=generator))] \
                if self.samples_per_epoch else self.keys_[index]
        else:
            clip = self.keys_[index]
        entry = self.clips[clip]
        length = self.clip_length(clip)
        count = None
        start = 0
        if self.random and self.num_frames is not None:
            if length < self.num_frames:
                raise DataError(f"clip '{clip}' has {length} frames, fewer than num_frames {self.num_frames}")
            count = self.num_frames
            start = int(torch.randint(length - count + 1, (1,), generator=generator))
        gt, names = self._frames(self.gt_root, clip, entry, start, count)
        if self.lq_root is not None:
            lq, _ = self._frames(self.lq_root, clip, entry, start, count)
            if lq.shape[0] != gt.shape[0]:
                raise DataError(f"clip '{clip}': GT has {gt.shape[0]} frames, LQ has {lq.shape[0]}")
        else:
            lq = quantize(degrade(gt, self.degradation, self.scale), 8)
        if self.mirror:
            gt, lq, names = torch.cat([gt, gt.flip(0)]), torch.cat([lq, lq.flip(0)]), names + names[::-1]
        sample = {"gt": gt.contiguous(), "lq": lq.contiguous(), "key": clip}
        if not self.random:
            sample["frame_names"] = names
        return sample
