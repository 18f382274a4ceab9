"""PSF fields from captured point-source images (``data_gen/generate_psfs_real.py``).

A capture folder holds one image per grid node, named by its position: the last two integers of
the file name are the node's row and column (0-based), e.g. ``psf_03_07.png`` or ``r3_c7.tif``.
Every grid position must be present. For each capture, per channel:

1. background = median of the frame, noise sigma = 1.4826 * MAD (robust, the spot is small);
2. the spot is found as the maximum of the smoothed background-subtracted luminance, then its
   intensity centroid is refined on a ``k x k`` window (a few iterations);
3. the window is shifted so the centroid of the luminance lands on ``[k//2, k//2]`` (sub-pixel,
   Fourier shift; channels move together, so lateral colour is kept);
4. pixels outside the spot's support (the connected region above ``threshold_sigma`` noise in
   the smoothed luminance, dilated by ``dilate_px``) are zeroed, negatives clipped, and each
   channel normalised to sum 1.

Node positions: when the captures are full sensor frames (the default) the grid index -> pixel
homography ``H_img`` is fitted to the measured spot centroids (DLT with Hartley normalisation;
Hartley & Zisserman, "Multiple View Geometry", 2nd ed., alg. 4.2); ``node_positions="corners"``
uses the default corner-to-corner grid instead. ``H_obj`` is the grid spacing of the point source
in the object plane (``object_spacing_mm``), centred on the grid.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from psf.field import PSFField, default_H_img, grid_positions
from utils import __version__
from utils.errors import ConfigError, DataError
from utils.image_io import list_images, read_image, write_image

NAME_PATTERN = re.compile(r"(\d+)\D+(\d+)\D*$")


def find_captures(folder: str | Path) -> tuple[dict[tuple[int, int], Path], tuple[int, int]]:
    """{(row, col): path} and the grid shape; every position of the grid must be present."""
    folder = Path(folder)
    files = list_images(folder)  # DataError if the folder is missing
    if not files:
        raise DataError(f"no capture images in {folder}")
    captures: dict[tuple[int, int], Path] = {}
    for path in files:
        match = NAME_PATTERN.search(path.stem)
        if match is None:
            raise DataError(f"capture name '{path.name}' does not end with the node's row and column "
                            "(e.g. psf_03_07.png = row 3, column 7)")
        key = (int(match.group(1)), int(match.group(2)))
        if key in captures:
            raise DataError(f"two captures for node {key}: {captures[key].name} and {path.name}")
        captures[key] = path
    gh = max(r for r, _ in captures) + 1
    gw = max(c for _, c in captures) + 1
    missing = [(r, c) for r in range(gh) for c in range(gw) if (r, c) not in captures]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{folder}: the {gh}x{gw} grid misses captures for node(s) {shown}")
    return captures, (gh, gw)


def robust_background(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median and MAD-based noise sigma of an H x W x C frame."""
    flat = img.reshape(-1, img.shape[-1])
    med = np.median(flat, axis=0)
    mad = np.median(np.abs(flat - med), axis=0)
    return med, 1.4826 * mad


def fourier_shift(window: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift [..., h, w] by (dx, dy) pixels (band-limited interpolation; exactly invertible for odd
    sizes, which have no Nyquist bin)."""
    h, w = window.shape[-2:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (fx * dx + fy * dy))
    return np.fft.irfft2(np.fft.rfft2(window) * ramp, s=(h, w))


def _smooth(img2d: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img2d.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def extract_psf(img: np.ndarray, psf_size: int, threshold_sigma: float = 3.0, dilate_px: int = 2,
                subpixel: bool = True, name: str = "capture") -> dict:
    """One node: ``psf`` [C, k, k] (each channel sums to 1), ``centroid`` (x, y) in the frame,
    ``background`` [C], ``noise`` [C], ``edge_energy`` (fraction on the window's border)."""
    from scipy import ndimage

    k = psf_size
    half = k // 2
    pad = 4
    h, w, c = img.shape
    bg, noise = robust_background(img)
    signal = img.astype(np.float64) - bg
    lum = signal.mean(axis=2)
    lum_noise = float(np.sqrt(np.mean(noise ** 2) / c)) or 1e-12
    # White noise of sigma s has sigma s / (2 sqrt(pi)) after a sigma = 1 px Gaussian blur.
    level = threshold_sigma * lum_noise / (2.0 * math.sqrt(math.pi))
    smooth = _smooth(lum)
    y0, x0 = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    if smooth[y0, x0] < level:
        raise DataError(f"{name}: no point source found above the noise")
    cx, cy = float(x0), float(y0)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    for _ in range(8):  # cut, shift, mask; move until the result's own centroid is at [k//2, k//2]
        ix, iy = int(round(cx)), int(round(cy))
        if ix - half - pad < 0 or iy - half - pad < 0 or ix + half + pad >= w or iy + half + pad >= h:
            raise DataError(f"{name}: the {k} px window around the spot at ({cx:.1f}, {cy:.1f}) runs off the "
                            f"{w}x{h} frame; use a smaller --psf_size or recapture")
        big = signal[iy - half - pad:iy + half + pad + 1, ix - half - pad:ix + half + pad + 1].transpose(2, 0, 1)
        if subpixel:
            big = fourier_shift(big, ix - cx, iy - cy)
        win = big[:, pad:pad + k, pad:pad + k]
        # Support: connected region of the smoothed luminance above the noise threshold, dilated.
        above = _smooth(win.mean(axis=0)) > level
        labels, _ = ndimage.label(above)
        core = labels[half, half]
        if core == 0 and labels.max() > 0:
            core = int(np.bincount(labels.ravel())[1:].argmax()) + 1
        support = ndimage.binary_dilation(labels == core if core else above, iterations=dilate_px)
        psf = np.clip(win * support[None], 0.0, None)
        lum_psf = psf.mean(axis=0)
        if lum_psf.sum() <= 0:
            break
        dx, dy = (lum_psf * xx).sum() / lum_psf.sum(), (lum_psf * yy).sum() / lum_psf.sum()
        if subpixel:
            cx, cy = cx + dx, cy + dy
            if abs(dx) < 1e-3 and abs(dy) < 1e-3:
                break
        else:  # integer steps only: stop once the centroid is within half a pixel
            if abs(dx) <= 0.5 and abs(dy) <= 0.5:
                cx, cy = ix + dx, iy + dy
                break
            cx, cy = ix + round(dx), iy + round(dy)
    sums = psf.sum(axis=(1, 2))
    if np.any(sums <= 0):
        raise DataError(f"{name}: a channel has no signal above the background")
    psf = psf / sums[:, None, None]
    border = psf.copy()
    border[:, 1:-1, 1:-1] = 0
    return {"psf": psf, "centroid": (cx, cy), "background": bg, "noise": noise,
            "edge_energy": float(border.sum(axis=(1, 2)).max())}


def _capture_channels(path: Path) -> int:
    """1 for single-channel (mono sensor) captures, else 3 (RGB)."""
    try:
        read_image(path, channels=1)
        return 1
    except DataError as exc:
        if "single-channel" in str(exc):
            return 3
        raise


def fit_homography(grid_idx: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Least-squares H with pixels ~ H (col, row, 1): normalised DLT (Hartley & Zisserman alg. 4.2).
    Falls back to an affine fit when the points cannot constrain a homography (< 4 or collinear)."""

    def normaliser(pts):
        mean = pts.mean(axis=0)
        scale = math.sqrt(2) / max(np.mean(np.hypot(*(pts - mean).T)), 1e-12)
        return np.array([[scale, 0, -scale * mean[0]], [0, scale, -scale * mean[1]], [0, 0, 1.0]])

    src, dst = np.asarray(grid_idx, np.float64), np.asarray(pixels, np.float64)
    n = len(src)
    if n == 1:
        return np.array([[1.0, 0, dst[0, 0] - src[0, 0]], [0, 1.0, dst[0, 1] - src[0, 1]], [0, 0, 1.0]])
    t_src, t_dst = normaliser(src), normaliser(dst)
    s = (t_src @ np.c_[src, np.ones(n)].T).T
    d = (t_dst @ np.c_[dst, np.ones(n)].T).T
    if n >= 4 and np.linalg.matrix_rank(s - s.mean(axis=0), tol=1e-9) >= 2:
        rows = []
        for (x, y, _), (u, v, _) in zip(s, d):
            rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        _, _, vt = np.linalg.svd(np.asarray(rows))
        h_norm = vt[-1].reshape(3, 3)
    else:  # affine least squares (a single row/column of nodes constrains only part of it)
        sol, *_ = np.linalg.lstsq(s, d[:, :2], rcond=None)
        h_norm = np.vstack([sol.T, [0, 0, 1.0]])
    h = np.linalg.inv(t_dst) @ h_norm @ t_src
    return h / h[2, 2]


def psf_field_from_captures(folder: str | Path, psf_size: int = 33, threshold_sigma: float = 3.0,
                            dilate_px: int = 2, subpixel: bool = True, node_positions: str = "fit",
                            sensor_res: tuple[int, int] | None = None, wavelengths_nm=None,
                            pixel_pitch_um: float | None = None, object_spacing_mm: float = 1.0,
                            progress: bool = False) -> PSFField:
    """Build a PSFField (axis order [C, 1, N, k, k], node order row-major) from a capture folder."""
    from tqdm import tqdm

    if psf_size < 3 or psf_size % 2 == 0:
        raise ConfigError(f"psf_size must be an odd number >= 3, got {psf_size}")
    if node_positions not in ("fit", "corners"):
        raise ConfigError(f"node_positions must be 'fit' or 'corners', got '{node_positions}'")
    captures, grid = find_captures(folder)
    gh, gw = grid
    psfs, centroids, frame = [], [], None
    edge, noise_levels = 0.0, []
    channels = _capture_channels(captures[(0, 0)])
    for n in tqdm(range(gh * gw), desc="captures", unit="img", disable=not progress):
        path = captures[divmod(n, gw)]
        img = read_image(path, channels=channels)  # DataError for unreadable files
        if frame is None:
            frame = img.shape[:2]
        elif img.shape[:2] != frame:
            raise DataError(f"{path.name} is {img.shape[1]}x{img.shape[0]} but the other captures are "
                            f"{frame[1]}x{frame[0]}: all captures must be the same size")
        out = extract_psf(img, psf_size, threshold_sigma, dilate_px, subpixel, name=path.name)
        psfs.append(out["psf"])
        centroids.append(out["centroid"])
        edge = max(edge, out["edge_energy"])
        noise_levels.append(out["noise"])
    sensor = tuple(int(v) for v in (sensor_res or frame))
    n_ch = psfs[0].shape[0]
    idx = np.stack(np.meshgrid(np.arange(gw), np.arange(gh), indexing="xy"), axis=-1).reshape(-1, 2)  # (col, row)
    measured = np.asarray(centroids)
    if node_positions == "fit":
        H_img = fit_homography(idx.astype(np.float64), measured)
    else:
        H_img = default_H_img(grid, sensor)
    residual = float(np.sqrt(np.mean(np.sum((grid_positions(H_img, grid) - measured) ** 2, axis=1))))
    s = float(object_spacing_mm)
    H_obj = np.array([[s, 0, -s * (gw - 1) / 2], [0, s, -s * (gh - 1) / 2], [0, 0, 1.0]])
    channel_order = "RGB" if n_ch == 3 else "L"
    attrs = {"seed": 0, "generator": f"restorelab {__version__}", "source": "captures",
             "position_rms_px": residual, "edge_energy_max": edge,
             "noise_sigma": [float(v) for v in np.mean(noise_levels, axis=0)]}
    if wavelengths_nm is not None:
        attrs["wavelengths_nm"] = [float(v) for v in wavelengths_nm]
        if len(attrs["wavelengths_nm"]) != n_ch:
            raise ConfigError(f"{len(attrs['wavelengths_nm'])} wavelengths given for {n_ch}-channel captures")
    if pixel_pitch_um is not None:
        attrs["pixel_pitch_um"] = float(pixel_pitch_um)
    field = PSFField(psfs=torch.from_numpy(np.stack(psfs, axis=1)[:, None]).float().contiguous(),
                     grid_shape=grid, sensor_res=sensor, H_img=H_img, H_obj=H_obj, psf_type="real",
                     channel_order=channel_order, normalized=True, attrs=attrs)
    field.validate()
    return field


def write_synthetic_captures(field: PSFField, folder: str | Path, background=(0.05, 0.04, 0.06),
                             noise_sigma: float = 0.002, peak: float = 0.8, seed: int = 0, bits: int = 16,
                             frame: tuple[int, int] | None = None) -> list[Path]:
    """Simulate a capture session of ``field``: per node a frame with the node's PSF at its pixel
    position (rounded), scaled to ``peak``, on a background plus Gaussian noise, written as
    ``psf_{row:02d}_{col:02d}.png``. For testing the real-capture pipeline against a known truth."""
    rng = np.random.default_rng(seed)
    h, w = frame or field.sensor_res
    k = field.psf_size
    half = k // 2
    gw = field.grid_shape[1]
    psfs = field.psfs[:, 0].double().numpy()  # [C, N, k, k]
    bg = np.broadcast_to(np.asarray(background, np.float64), (field.c_out,))
    paths = []
    for n, (x, y) in enumerate(field.positions):
        ix, iy = int(round(x)), int(round(y))
        if ix - half < 0 or iy - half < 0 or ix + half >= w or iy + half >= h:
            raise DataError(f"node {n} at ({x:.1f}, {y:.1f}) is too close to the frame edge for a {k} px PSF")
        img = np.empty((h, w, field.c_out))
        img[:] = bg
        scale = peak / psfs[:, n].max()
        img[iy - half:iy + half + 1, ix - half:ix + half + 1] += (scale * psfs[:, n]).transpose(1, 2, 0)
        img += rng.normal(0.0, noise_sigma, img.shape)
        row, col = divmod(n, gw)
        paths.append(write_image(Path(folder) / f"psf_{row:02d}_{col:02d}.png", img.astype(np.float32), bits=bits))
    return paths
