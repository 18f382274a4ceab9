"""Inpainting masks: 1 = known pixel, 0 = hole (DESIGN.md), uint8 H×W arrays.

* ``mat_mask(kind, rng)``: MAT's free-form generator (Li et al., "MAT: Mask-Aware Transformer
  for Large Hole Image Inpainting", CVPR 2022; ``datasets/mask_generator_{256,512}[_small].py``)
  reproduced draw for draw: for the same legacy numpy state (``np.random.seed(k)`` or
  ``np.random.RandomState(k)``) the masks are bit-identical to the official ones (the strokes
  are rasterised by Pillow, so this holds for the Pillow version the fixture was made with).
  Draw order per attempt: ``randint(A·c)`` boxes of side < s/2, ``randint(B·c)`` boxes of side
  < s (each may hang half outside the image), then ``randint(C·c)`` brush strokes of 4–17
  vertices, with c = min(lo + hi, 1); attempts repeat until the hole ratio lies in the open
  interval (lo, hi). The (A, B, C) of the four generators are in ``MAT_GENERATORS``.
* ``lama_mask(kind, rng, size)``: LaMa-style (Suvorov et al., WACV 2022,
  ``saicinpainting/training/data/masks.py``) irregular thick/thin strokes and boxes; LaMa's
  own masks are 1 = hole, these are inverted to the project convention. Not bit-exact with
  LaMa (its RNG calls differ), same distributions of strokes and boxes.
* ``hole_ratio``, ``hole_bucket``/``HOLE_BUCKETS`` (MMagic's per-area table: 0–10 %, …,
  50–60 %, plus 60–100 %), and ``write_mask_set`` / ``read_mask_folder`` for fixed evaluation
  masks on disk (PNG 0/255 + ``masks.json`` with each file's seed and hole ratio).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from utils.errors import ConfigError, DataError

# name -> (image side, max box tries of side < s/2, max box tries of side < s, max brush tries)
MAT_GENERATORS: dict[str, tuple[int, int, int, int]] = {
    "mat_256": (256, 4, 2, 8),
    "mat_512": (512, 5, 3, 9),
    "mat_256_small": (256, 2, 2, 3),
    "mat_512_small": (512, 3, 2, 4),
}
LAMA_KINDS = ("lama_thick", "lama_thin", "lama_box")
MASK_KINDS = tuple(MAT_GENERATORS) + LAMA_KINDS

# MMagic's AOT-GAN table buckets of the hole ratio (upper bound exclusive), plus the rest
HOLE_BUCKETS: tuple[tuple[float, float], ...] = (
    (0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 1.0001))


def as_rng(rng) -> np.random.RandomState:
    """A legacy numpy RandomState from a seed, a RandomState, or None (numpy's global one)."""
    if rng is None:
        return np.random.mtrand._rand
    if isinstance(rng, np.random.RandomState):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.RandomState(int(rng))
    raise ConfigError(f"masks: rng must be a seed, a numpy RandomState or None, got {type(rng).__name__}")


def _mat_strokes(rng: np.random.RandomState, tries: int, s: int) -> np.ndarray:
    """MAT's RandomBrush: uint8 s×s, 1 = stroke."""
    from PIL import Image, ImageDraw

    radius_mean = math.sqrt(2 * s * s) / 8
    canvas = Image.new("L", (s, s), 0)
    pen = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(tries)):
        n = rng.randint(4, 18)
        lo = 2 * math.pi / 5 - rng.uniform(0, 2 * math.pi / 15)
        hi = 2 * math.pi / 5 + rng.uniform(0, 2 * math.pi / 15)
        turns = [(2 * math.pi - rng.uniform(lo, hi)) if i % 2 == 0 else rng.uniform(lo, hi) for i in range(n)]
        points = [(int(rng.randint(0, s)), int(rng.randint(0, s)))]
        for theta in turns:
            step = np.clip(rng.normal(loc=radius_mean, scale=radius_mean // 2), 0, 2 * radius_mean)
            px = np.clip(points[-1][0] + step * math.cos(theta), 0, s)
            py = np.clip(points[-1][1] + step * math.sin(theta), 0, s)
            points.append((int(px), int(py)))
        width = int(rng.uniform(12, 48))
        pen.line(points, fill=1, width=width)
        half = width // 2
        for px, py in points:
            pen.ellipse((px - half, py - half, px + half, py + half), fill=1)
        rng.random_sample()  # the official code draws two image flips here and discards them
        rng.random_sample()
    strokes = np.asarray(canvas, np.uint8)
    if rng.random_sample() > 0.5:
        strokes = strokes[::-1]
    if rng.random_sample() > 0.5:
        strokes = strokes[:, ::-1]
    return strokes


def mat_mask(kind: str = "mat_256", rng=None, hole_range=(0.0, 1.0)) -> np.ndarray:
    """One MAT free-form mask, uint8 s×s, 1 = known (module docstring)."""
    if kind not in MAT_GENERATORS:
        raise ConfigError(f"mat_mask: unknown generator '{kind}' (known: {', '.join(MAT_GENERATORS)})")
    s, n_small, n_large, n_brush = MAT_GENERATORS[kind]
    lo, hi = float(hole_range[0]), float(hole_range[1])
    coef = min(lo + hi, 1.0)
    rng = as_rng(rng)
    while True:
        known = np.ones((s, s), np.uint8)
        for tries, side in ((int(n_small * coef), s // 2), (int(n_large * coef), s)):
            for _ in range(rng.randint(tries)):
                w, h = rng.randint(side), rng.randint(side)
                x = rng.randint(-(w // 2), s - w + w // 2)
                y = rng.randint(-(h // 2), s - h + h // 2)
                known[max(y, 0):min(y + h, s), max(x, 0):min(x + w, s)] = 0
        known &= (1 - _mat_strokes(rng, int(n_brush * coef), s)).astype(np.uint8)
        ratio = 1.0 - known.mean()
        if lo < ratio < hi:
            return known


def _lama_strokes(rng: np.random.RandomState, h: int, w: int, max_angle: int, max_len: int, max_width: int,
                  min_times: int, max_times: int) -> np.ndarray:
    import cv2

    hole = np.zeros((h, w), np.float32)
    for _ in range(rng.randint(min_times, max_times + 1)):
        x, y = rng.randint(w), rng.randint(h)
        for _ in range(1 + rng.randint(5)):
            angle = 0.01 + rng.randint(max_angle)
            if rng.randint(2):
                angle = 2 * np.pi - angle
            length = 10 + rng.randint(max_len)
            width = 5 + rng.randint(max_width)
            ex = int(np.clip(x + length * np.sin(angle), 0, w))
            ey = int(np.clip(y + length * np.cos(angle), 0, h))
            cv2.line(hole, (x, y), (ex, ey), 1.0, width)
            x, y = ex, ey
    return hole


def _lama_boxes(rng: np.random.RandomState, h: int, w: int, margin: int, min_size: int, max_size: int,
                min_times: int, max_times: int) -> np.ndarray:
    hole = np.zeros((h, w), np.float32)
    max_size = min(max_size, h - 2 * margin, w - 2 * margin)
    for _ in range(rng.randint(min_times, max_times + 1)):
        bw, bh = rng.randint(min_size, max_size), rng.randint(min_size, max_size)
        x = rng.randint(margin, w - margin - bw + 1)
        y = rng.randint(margin, h - margin - bh + 1)
        hole[y:y + bh, x:x + bw] = 1
    return hole


def lama_mask(kind: str = "lama_thick", rng=None, size: int | tuple[int, int] = 256) -> np.ndarray:
    """A LaMa-style mask, uint8 H×W, 1 = known. Parameters follow LaMa's evaluation configs
    ``random_{thick,thin}_256.yaml`` (strokes, boxes with probability 0.3 for thick) and its
    box generator, scaled to ``size`` from 256."""
    rng = as_rng(rng)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    f = min(h, w) / 256.0
    if kind == "lama_thick":
        hole = _lama_strokes(rng, h, w, 4, int(200 * f), max(int(100 * f), 1), 1, 5)
        if rng.random_sample() < 0.3:
            hole = np.maximum(hole, _lama_boxes(rng, h, w, int(10 * f), int(30 * f), int(150 * f), 1, 3))
    elif kind == "lama_thin":
        hole = _lama_strokes(rng, h, w, 4, int(100 * f), max(int(10 * f), 1), 4, 50)
    elif kind == "lama_box":
        hole = _lama_boxes(rng, h, w, int(10 * f), int(30 * f), int(150 * f), 1, 3)
    else:
        raise ConfigError(f"lama_mask: unknown kind '{kind}' (known: {', '.join(LAMA_KINDS)})")
    return (hole < 0.5).astype(np.uint8)


def make_mask(kind: str, rng=None, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A mask of any kind in ``MASK_KINDS``; MAT masks are resized (nearest) when ``size``
    differs from the generator's own side."""
    if kind in MAT_GENERATORS:
        m = mat_mask(kind, rng)
        if size is not None:
            hw = (size, size) if isinstance(size, int) else tuple(size)
            if hw != m.shape:
                import cv2

                m = cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        return m
    if kind in LAMA_KINDS:
        return lama_mask(kind, rng, 256 if size is None else size)
    raise ConfigError(f"unknown mask kind '{kind}' (known: {', '.join(MASK_KINDS)})")


def hole_ratio(mask) -> float:
    """Fraction of hole pixels (mask value < 0.5) of one H×W (or 1×H×W) mask."""
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    return float((m < 0.5).mean())


def hole_bucket(ratio: float) -> str:
    """MMagic-style bucket label of a hole ratio: '0-10%', …, '50-60%', '60-100%'."""
    for lo, hi in HOLE_BUCKETS:
        if lo <= ratio < hi:
            return f"{round(lo * 100)}-{min(round(hi * 100), 100)}%"
    raise ValueError(f"hole ratio {ratio} outside [0, 1]")


def bucket_labels() -> list[str]:
    return [hole_bucket(lo) for lo, _ in HOLE_BUCKETS]


def write_mask_set(folder: str | Path, kind: str, seeds, size=None) -> dict:
    """Fixed evaluation masks: ``folder/<kind>_<seed:05d>.png`` (255 = known, 0 = hole) and
    ``folder/masks.json`` {file: {seed, kind, hole_ratio, bucket}}. Returns that index."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for seed in seeds:
        m = make_mask(kind, int(seed), size)
        name = f"{kind}_{int(seed):05d}.png"
        Image.fromarray(m * 255).save(folder / name)
        r = hole_ratio(m)
        index[name] = {"seed": int(seed), "kind": kind, "hole_ratio": r, "bucket": hole_bucket(r)}
    (folder / "masks.json").write_text(json.dumps(index, indent=1))
    return index


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image (any 8-bit grey/RGB; > 127 = known) as uint8 H×W 0/1."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"))
    return (a > 127).astype(np.uint8)


def read_mask_folder(folder: str | Path) -> list[Path]:
    """The mask images of a folder, sorted by name."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"))
    if not files:
        raise DataError(f"no mask images (.png/.bmp/.tif) in {folder}")
    return files
