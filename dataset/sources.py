"""Sharp source images: ``skimage.data`` built-ins or any folder, for the on-the-fly datasets
(dataset/synthetic_dataset.py) and step 3 (data_gen/step3_writer.py)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from utils.errors import ConfigError, DataError
from utils.image_io import IMAGE_EXTENSIONS, list_images, read_image
from utils.registry import unknown_name_message

# Natural/scientific images shipped with scikit-image that load offline. Left out: `cat`
# (a duplicate of `chelsea`), synthetic patterns (checkerboard, binary_blobs, horse, logo),
# 3-D stacks, and images that need a download. "motorcycle" is the left view of
# skimage.data.stereo_motorcycle (the name step 3 uses too).
BUILTIN_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle", "page", "retina", "rocket",
    "text",
)


def load_builtin(name: str) -> np.ndarray:
    """A ``skimage.data`` image as float32 H×W×3 RGB in [0, 1] (grey images -> 3 equal channels)."""
    import skimage.data

    if name not in BUILTIN_IMAGES:
        raise ConfigError(unknown_name_message("built-in image", name, BUILTIN_IMAGES))
    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if img.dtype != np.uint8:
        raise DataError(f"built-in image {name} has unexpected pixel type {img.dtype}")
    img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def fit_to_size(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect ratio of ``size`` (h, w), then resize (area filter when shrinking)."""
    h, w = img.shape[:2]
    th, tw = size
    if h * tw > w * th:  # too tall
        ch, cw = max(1, round(w * th / tw)), w
    else:
        ch, cw = h, max(1, round(h * tw / th))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = img[top:top + ch, left:left + cw]
    if (ch, cw) == (th, tw):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if ch >= th and cw >= tw else cv2.INTER_CUBIC
    out = cv2.resize(img, (tw, th), interpolation=interp)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def list_sources(images: str, names: list[str] | None = None,
                 exclude: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """``(name, file)`` of the images to use, sorted by name: every built-in (file None) or every
    image of the folder, or only ``names``, minus ``exclude``. A folder image's name is its path
    relative to the folder without the extension, with it when two files share that stem
    (``a.png`` and ``a.jpg``), so no file is ever hidden by another."""
    if images == "builtin":
        available: dict[str, Path | None] = {name: None for name in BUILTIN_IMAGES}
        kind = "built-in image"
    else:
        folder = Path(images)
        files = list_images(folder)
        if not files:
            raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")
        stems = [p.relative_to(folder).with_suffix("").as_posix() for p in files]
        count = Counter(stems)
        available = {(stem if count[stem] == 1 else p.relative_to(folder).as_posix()): p
                     for stem, p in zip(stems, files)}
        kind = f"image in {folder}"
    for listed in list(names or []) + list(exclude or []):
        if listed not in available:
            raise ConfigError(unknown_name_message(kind, listed, list(available)))
    chosen = sorted(set(names) if names else set(available))
    chosen = [n for n in chosen if n not in set(exclude or [])]
    if not chosen:
        raise DataError(f"no source images left (images={images}, names={names}, exclude={exclude})")
    return [(name, available[name]) for name in chosen]


def load_source(name: str, path: Path | None) -> np.ndarray:
    """One entry of :func:`list_sources` as float32 H×W×3 RGB in [0, 1]."""
    return load_builtin(name) if path is None else read_image(path)
