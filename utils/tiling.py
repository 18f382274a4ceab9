"""Seamless tiled inference for images larger than a network (or the GPU) can take at once.

``tiled_forward(fn, x, patch_size, overlap)`` runs ``fn`` on overlapping tiles and stitches
the outputs:

* Tiles are ``patch_size`` apart by ``patch_size - overlap`` and the last tile of each row and
  column ends exactly at the image border, so every pixel is covered. An image smaller than a
  tile along an axis is processed whole along that axis.
* Neighbouring tiles are cross-faded with a raised-cosine ramp of width ``blend`` placed in the
  middle of their overlap; the ``(overlap - blend) / 2`` pixels nearest each tile's inner edge
  are never used. (Where two ramps would run into each other, which can happen next to the
  last tile or when ``blend`` exceeds ``overlap / 2``, both are narrowed just enough.) Stitching is separable (rows, then columns) and every blended pixel is
  ``lerp(a, b, w)``, i.e. weights ``1 - w`` and ``w`` that sum to one exactly: if two tiles agree
  on a pixel the output is that value bit for bit (identity → exact, constant → constant).
* Consequently, for a network whose receptive-field radius is at most
  ``(overlap - blend) // 2`` (e.g. ``overlap // 2`` with ``blend=0``), the tiled output equals
  the full-image forward up to float error; networks with global context (NAFNet's channel
  attention, Restormer's attention) see per-tile statistics and the ramp hides the seams.

Conditioning tensors passed as keywords are tiled alongside when they are per-pixel maps (the
last two dimensions equal the image's H, W, e.g. ``mask``, per-pixel PSF coefficients); any
other value (``basis_psfs``, scalars) is passed through unchanged. ``tiled_keys`` overrides the
detection.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection

import torch

from utils.errors import ConfigError


def tile_starts(length: int, patch: int, overlap: int) -> list[int]:
    """Start offsets along one axis: stride ``patch - overlap``, the last tile ends at ``length``."""
    if length <= patch:
        return [0]
    stride = patch - overlap
    starts = list(range(0, length - patch, stride))
    return starts + [length - patch]


def _zones(starts: list[int], patch: int, blend: int) -> list[tuple[int, int]]:
    """``(first pixel, width)`` of the cross-fade between each pair of consecutive tiles, centred
    in their overlap; a width is reduced only where it would run into the next zone."""
    overlaps = [left + patch - right for left, right in zip(starts, starts[1:])]
    widths = [blend] * len(overlaps)
    while True:
        zones = [right + (ov - w) // 2 for right, ov, w in zip(starts[1:], overlaps, widths)]
        clash = next((k for k in range(len(zones) - 1) if zones[k] + widths[k] > zones[k + 1]), None)
        if clash is None:
            return list(zip(zones, widths))
        widths[clash] = max(widths[clash] - 1, 0)
        widths[clash + 1] = max(widths[clash + 1] - 1, 0)


def _ramp(blend: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Raised-cosine weights of the right-hand tile across a zone: symmetric, strictly in (0, 1)."""
    t = (torch.arange(blend, dtype=torch.float64) + 0.5) / blend
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype=dtype, device=device)


def _stitch(pieces: list[torch.Tensor], starts: list[int], zones: list[tuple[int, int]], dim: int, length: int) -> torch.Tensor:
    """Stitch ``pieces`` (equal size along ``dim``, placed at ``starts``) into ``length`` along ``dim``."""
    if len(pieces) == 1:
        return pieces[0]
    dim = dim % pieces[0].dim()
    segments = []
    pos = 0
    for k, piece in enumerate(pieces):
        end = zones[k][0] if k < len(zones) else length
        segments.append(piece.narrow(dim, pos - starts[k], end - pos))  # this tile alone
        if k < len(zones):
            z, width = zones[k]
            if width:
                a = piece.narrow(dim, z - starts[k], width)
                b = pieces[k + 1].narrow(dim, z - starts[k + 1], width)
                shape = [1] * piece.dim()
                shape[dim] = width
                segments.append(torch.lerp(a, b, _ramp(width, piece.dtype, piece.device).view(shape)))
            pos = z + width
    out = torch.cat(segments, dim=dim)
    assert out.shape[dim] == length
    return out


def tiled_forward(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    patch_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    *,
    blend: int | tuple[int, int] | None = None,
    tiled_keys: Collection[str] | None = None,
    **conditioning,
) -> torch.Tensor:
    """``fn(x, **conditioning)`` computed tile by tile (see the module docstring).

    Args:
        fn: maps a ``B×C×h×w`` tile (and its conditioning) to a ``B×C'×h×w`` output.
        x: ``B×C×H×W`` input.
        patch_size: tile size, ``int`` or ``(h, w)``.
        overlap: minimum overlap of neighbouring tiles, at most half the tile size.
        blend: width of the cross-fade inside each overlap (default ``overlap // 2``; 0 = hard
            cut in the middle of the overlap).
        tiled_keys: names of the conditioning entries to tile (default: every tensor whose last
            two dimensions are ``H, W``).
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    oh, ow = (overlap, overlap) if isinstance(overlap, int) else overlap
    if blend is None:
        bh, bw = oh // 2, ow // 2
    else:
        bh, bw = (blend, blend) if isinstance(blend, int) else blend
    for name, p, o, b in (("height", ph, oh, bh), ("width", pw, ow, bw)):
        if p < 1 or o < 0 or 2 * o > p:
            raise ConfigError(f"tiled inference: the overlap must be between 0 and half the patch size ({name}: "
                              f"patch {p}, overlap {o})")
        if not 0 <= b <= o:
            raise ConfigError(f"tiled inference: blend must be between 0 and the overlap ({name}: blend {b}, overlap {o})")
    H, W = x.shape[-2:]
    ph, pw = min(ph, H), min(pw, W)
    ys, xs = tile_starts(H, ph, oh), tile_starts(W, pw, ow)
    zy, zx = _zones(ys, ph, bh), _zones(xs, pw, bw)
    if tiled_keys is None:
        tiled_keys = [k for k, v in conditioning.items()
                      if isinstance(v, torch.Tensor) and v.dim() >= 2 and tuple(v.shape[-2:]) == (H, W)]
    unknown = set(tiled_keys) - set(conditioning)
    if unknown:
        raise KeyError(f"tiled_keys not among the conditioning inputs: {sorted(unknown)}")

    rows = []
    for y0 in ys:
        row = []
        for x0 in xs:
            tile_cond = {k: (v[..., y0:y0 + ph, x0:x0 + pw] if k in tiled_keys else v) for k, v in conditioning.items()}
            out = fn(x[..., y0:y0 + ph, x0:x0 + pw], **tile_cond)
            if tuple(out.shape[-2:]) != (ph, pw):
                raise ValueError(f"tiled inference needs a size-preserving fn: tile {(ph, pw)} gave {tuple(out.shape[-2:])}")
            row.append(out)
        rows.append(_stitch(row, xs, zx, -1, W))
    return _stitch(rows, ys, zy, -2, H)
