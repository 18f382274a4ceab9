"""Small paired (gt, lq) image folders for the trainer tests: crops of built-in images, blurred
(Gaussian, sigma 1 px) and noisy (sigma 0.02), written as ``root/<split>/{gt,lq}/imNN.png``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# 16 training crops and 3 validation images of odd sizes (two processes score 2 and 1 of them)
DEFAULT_SIZES = {"train": [(40, 40)] * 16, "val": [(36, 44), (41, 33), (40, 40)]}


def write_pairs(root: Path, sizes: dict[str, list[tuple[int, int]]] = DEFAULT_SIZES, seed: int = 0) -> Path:
    """Write the pairs; ``sizes`` maps a split to its images' (height, width)."""
    from scipy.ndimage import gaussian_filter
    from skimage import data

    from utils.image_io import write_image

    rng = np.random.default_rng(seed)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for split, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            src = sources[i % len(sources)].astype(np.float32) / 255.0
            y, x = rng.integers(0, 250, 2)
            gt = src[y:y + h, x:x + w]
            lq = np.stack([gaussian_filter(gt[..., c], 1.0) for c in range(3)], -1)
            lq = np.clip(lq + rng.normal(0, 0.02, lq.shape), 0, 1)
            write_image(root / split / "gt" / f"im{i:02d}.png", gt)
            write_image(root / split / "lq" / f"im{i:02d}.png", lq)
    return root
