"""Image files <-> float32 RGB arrays in [0, 1] (the lab's only image reader/writer).

Files are read with OpenCV (8/16-bit PNG, JPEG, BMP, TIFF, WebP) and converted from OpenCV's
BGR order to RGB once, here, so no other module ever sees BGR. Saving rounds to the nearest
integer level after clipping to [0, 1] (the BasicSR ``tensor2img`` convention).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.atomic import atomic_path
from utils.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (sorted relative paths -> deterministic order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Read an image as float32 H×W×C RGB in [0, 1].

    ``channels=3`` turns grayscale into 3 equal channels and drops alpha; ``channels=1``
    returns luminance-free single channel only for single-channel files (colour files raise).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"cannot read image (corrupt or unsupported format): {path}")
    return _to_float_rgb(raw, channels, str(path))


def decode_image(data: bytes, name: str, channels: int = 3) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, TIFF, ...) -> float32 H×W×C RGB in [0, 1], as ``read_image``.

    OpenCV keeps the 16 bits of 16-bit PNGs (PIL, the ``datasets`` Image decoder, reduces them to 8).
    """
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"cannot decode image {name} (corrupt or unsupported format)")
    return _to_float_rgb(raw, channels, name)


def _to_float_rgb(raw: np.ndarray, channels: int, name: str) -> np.ndarray:
    """OpenCV pixels (BGR[A] or gray; uint8/uint16/float) -> float32 RGB in [0, 1] with ``channels``."""
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    elif raw.dtype in (np.float32, np.float64):
        img = raw.astype(np.float32)
    else:
        raise DataError(f"unsupported pixel type {raw.dtype} in {name}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == 3:
        img = img[:, :, ::-1]  # OpenCV BGR -> RGB
    if channels == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 1 and img.shape[2] != 1:
        raise DataError(f"expected a single-channel image, got {img.shape[2]} channels: {name}")
    return np.ascontiguousarray(img)


def quantize_levels(x: np.ndarray | torch.Tensor, bits: int = 8) -> np.ndarray | torch.Tensor:
    """Integer levels of :func:`quantize`: clamp to [0, 1], scale by 2**bits − 1 in float64 and
    round half to even (numpy and torch alike); numpy -> uint8/uint16, torch -> float64 levels."""
    top = _top(bits)
    if isinstance(x, torch.Tensor):
        return torch.round(x.detach().to(torch.float64).clamp(0.0, 1.0) * top)
    levels = np.round(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * top)
    return levels.astype(np.uint8 if bits == 8 else np.uint16)


def quantize(x: np.ndarray | torch.Tensor, bits: int = 8) -> np.ndarray | torch.Tensor:
    """The lab's one quantiser: exactly what an image saved with ``bits`` bits holds.

    Clamp to [0, 1], round to the nearest of the 2**bits levels in float64 (half to even, as
    numpy, torch and the PNG writer below), and return float32 values k / (2**bits − 1) of the
    input's type (numpy array -> array, torch tensor -> tensor on the same device).
    """
    top = _top(bits)
    levels = quantize_levels(x, bits)
    if isinstance(levels, torch.Tensor):
        return (levels / top).to(torch.float32)
    return (levels.astype(np.float64) / top).astype(np.float32)


def _top(bits: int) -> float:
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return float(2 ** bits - 1)


def write_image(path: str | os.PathLike, img: np.ndarray | torch.Tensor, bits: int = 8) -> Path:
    """Write float RGB [0, 1] (H×W×C array or C×H×W tensor) atomically (temp file + rename)."""
    path = Path(path)
    if isinstance(img, torch.Tensor):
        img = tensor_to_image(img)
    if img.ndim == 2:
        img = img[:, :, None]
    data = quantize_levels(img, bits)
    if data.shape[2] == 3:
        data = data[:, :, ::-1]  # RGB -> OpenCV BGR
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(data)):
            raise DataError(f"cannot write image: {path}")
    return path


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×C float array -> C×H×W float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """C×H×W (or 1×C×H×W) tensor -> H×W×C float32 array (no clipping)."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    return t.detach().float().cpu().numpy().transpose(1, 2, 0)
