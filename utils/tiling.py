"""Seamless tiled inference for images (and clips) larger than a network (or the GPU) can take at once.

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

Generalisations, all built on one grid-based core so the guarantees above carry over:

* ``scale``: ``fn`` returns ``scale``× its tile (super-resolution); output tiles are stitched at
  ``scale``× the input positions, the cross-fades are ``scale``× as wide. Output pixel ``o``
  comes from input pixel ``o // scale``, so the unused margin in input pixels is unchanged.
* ``tiled_clip_forward``: ``B×T×C×H×W`` clips cut into windows of ``window`` frames overlapping
  by ``overlap`` frames (the last window ends at the last frame), blended over time with the
  same ramp, each window tiled in space as above.
* ``tiled_encode`` / ``tiled_decode``: encoders that downsample by ``factor`` and decoders that
  upsample by it. Tiles are laid out on the latent grid, so every input tile starts at a
  multiple of ``factor`` (a strided encoder is shift-equivariant only for such shifts).
* ``tiled_predict(net, inputs, io, ...)`` picks the right one from the network's ``ArchIO``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

import torch
import torch.nn.functional as F

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


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2:
        raise ConfigError(f"tiled inference: {name} must be an int or (h, w), got {value!r}")
    return int(value[0]), int(value[1])


def _check(patch: int, overlap: int, blend: int, name: str) -> None:
    if patch < 1 or overlap < 0 or 2 * overlap > patch:
        raise ConfigError(f"tiled inference: the overlap must be between 0 and half the patch size ({name}: "
                          f"patch {patch}, overlap {overlap})")
    if not 0 <= blend <= overlap:
        raise ConfigError(f"tiled inference: blend must be between 0 and the overlap ({name}: blend {blend}, overlap {overlap})")


def _grid_tiles(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    grid: tuple[int, int],
    patch: tuple[int, int],
    overlap: tuple[int, int],
    blend: tuple[int, int],
    unit_in: int,
    unit_out: int,
    tiled_keys: Collection[str],
    conditioning: dict,
    what: str,
) -> torch.Tensor:
    """The core: tiles of ``patch`` grid cells (``unit_in`` input / ``unit_out`` output pixels per
    cell) laid out by ``tile_starts`` on a ``grid`` of cells, stitched on the output grid."""
    (gh, gw), (ph, pw) = grid, (min(patch[0], grid[0]), min(patch[1], grid[1]))
    ys, xs = tile_starts(gh, ph, overlap[0]), tile_starts(gw, pw, overlap[1])
    ys_out, xs_out = [y * unit_out for y in ys], [x0 * unit_out for x0 in xs]
    zy = _zones(ys_out, ph * unit_out, blend[0] * unit_out)
    zx = _zones(xs_out, pw * unit_out, blend[1] * unit_out)
    want = (ph * unit_out, pw * unit_out)
    rows = []
    for y0 in ys:
        row = []
        for x0 in xs:
            sl = (..., slice(y0 * unit_in, (y0 + ph) * unit_in), slice(x0 * unit_in, (x0 + pw) * unit_in))
            tile_cond = {k: (v[sl] if k in tiled_keys else v) for k, v in conditioning.items()}
            out = fn(x[sl], **tile_cond)
            if tuple(out.shape[-2:]) != want:
                raise ValueError(f"tiled inference needs {what}: tile {tuple(x[sl].shape[-2:])} gave "
                                 f"{tuple(out.shape[-2:])}, expected {want}")
            row.append(out)
        rows.append(_stitch(row, xs_out, zx, -1, gw * unit_out))
    return _stitch(rows, ys_out, zy, -2, gh * unit_out)


def _detect_tiled_keys(conditioning: dict, hw: tuple[int, int], tiled_keys) -> list[str]:
    if tiled_keys is None:
        return [k for k, v in conditioning.items()
                if isinstance(v, torch.Tensor) and v.dim() >= 2 and tuple(v.shape[-2:]) == tuple(hw)]
    unknown = set(tiled_keys) - set(conditioning)
    if unknown:
        raise KeyError(f"tiled_keys not among the conditioning inputs: {sorted(unknown)}")
    return list(tiled_keys)


def tiled_forward(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    /,
    patch_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    *,
    scale: int = 1,
    blend: int | tuple[int, int] | None = None,
    tiled_keys: Collection[str] | None = None,
    **conditioning,
) -> torch.Tensor:
    """``fn(x, **conditioning)`` computed tile by tile (see the module docstring).

    Args:
        fn: maps a ``...×h×w`` tile (and its conditioning) to a ``...×C'×(scale·h)×(scale·w)`` output.
        x: ``B×C×H×W`` input (any leading dimensions: tiling is over the last two).
        patch_size: tile size in input pixels, ``int`` or ``(h, w)``.
        overlap: minimum overlap of neighbouring tiles (input pixels), at most half the tile size.
        scale: output pixels per input pixel (``fn`` returns ``scale``× its tile).
        blend: width of the cross-fade inside each overlap, in input pixels (default
            ``overlap // 2``; 0 = hard cut in the middle of the overlap).
        tiled_keys: names of the conditioning entries to tile (default: every tensor whose last
            two dimensions are ``H, W``).
    """
    ph, pw = _pair(patch_size, "patch_size")
    oh, ow = _pair(overlap, "overlap")
    bh, bw = (oh // 2, ow // 2) if blend is None else _pair(blend, "blend")
    _check(ph, oh, bh, "height")
    _check(pw, ow, bw, "width")
    if int(scale) < 1:
        raise ConfigError(f"tiled inference: scale must be a positive integer, got {scale}")
    H, W = x.shape[-2:]
    keys = _detect_tiled_keys(conditioning, (H, W), tiled_keys)
    what = "a size-preserving fn" if scale == 1 else f"fn to return {scale}x its tile"
    return _grid_tiles(fn, x, (H, W), (ph, pw), (oh, ow), (bh, bw), 1, int(scale), keys, conditioning, what)


def _latent_geometry(x: torch.Tensor, patch_size, overlap, blend, factor: int, name: str):
    """Patch/overlap/blend in latent cells: input sizes rounded up to multiples of ``factor``."""
    if int(factor) < 1:
        raise ConfigError(f"tiled inference: the downsampling factor must be a positive integer, got {factor}")
    H, W = x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(f"{name}: the input ({H}x{W}) must be a multiple of the downsampling factor {factor}")
    cells = [tuple(-(-v // factor) for v in _pair(patch_size, "patch_size"))]
    cells.append(tuple(-(-v // factor) for v in _pair(overlap, "overlap")))
    cells.append(tuple(o // 2 for o in cells[1]) if blend is None else tuple(-(-v // factor) for v in _pair(blend, "blend")))
    (ph, pw), (oh, ow), (bh, bw) = cells
    _check(ph, oh, bh, "height (latent cells)")
    _check(pw, ow, bw, "width (latent cells)")
    return (H // factor, W // factor), (ph, pw), (oh, ow), (bh, bw)


def tiled_encode(
    encode_fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    /,
    patch_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    factor: int,
    *,
    blend: int | tuple[int, int] | None = None,
    tiled_keys: Collection[str] | None = None,
    **conditioning,
) -> torch.Tensor:
    """``encode_fn(x)`` (a ``B×C×H×W`` → ``B×L×H/f×W/f`` encoder, e.g. the latent mean) by tiles.

    ``patch_size``, ``overlap`` and ``blend`` are in input pixels, rounded up to multiples of
    ``factor``; tiles start at multiples of ``factor`` and the latent tiles are blended on the
    latent grid. ``H`` and ``W`` must be multiples of ``factor``."""
    grid, patch, ov, bl = _latent_geometry(x, patch_size, overlap, blend, factor, "tiled_encode")
    keys = _detect_tiled_keys(conditioning, x.shape[-2:], tiled_keys)
    return _grid_tiles(encode_fn, x, grid, patch, ov, bl, int(factor), 1, keys, conditioning,
                       f"an encoder that downsamples by {factor}")


def tiled_decode(
    decode_fn: Callable[..., torch.Tensor],
    z: torch.Tensor,
    /,
    patch_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    factor: int,
    *,
    blend: int | tuple[int, int] | None = None,
    **conditioning,
) -> torch.Tensor:
    """``decode_fn(z)`` (latent ``B×L×h×w`` → ``B×C×f·h×f·w``) by tiles of ``patch_size`` latent
    cells: ``tiled_forward`` with ``scale=factor``."""
    return tiled_forward(decode_fn, z, patch_size, overlap, scale=factor, blend=blend, **conditioning)


def tiled_clip_forward(
    fn: Callable[..., torch.Tensor],
    x: torch.Tensor,
    /,
    window: int | None,
    overlap: int,
    *,
    blend: int | None = None,
    patch_size: int | tuple[int, int] | None = None,
    spatial_overlap: int | tuple[int, int] = 0,
    spatial_blend: int | tuple[int, int] | None = None,
    scale: int = 1,
    tiled_keys: Collection[str] | None = None,
    **conditioning,
) -> torch.Tensor:
    """``fn(x)`` for a clip→clip network on windows of frames (and, with ``patch_size``, tiles).

    Args:
        fn: maps ``B×t×C×h×w`` to ``B×t×C'×(scale·h)×(scale·w)``.
        x: ``B×T×C×H×W``.
        window: frames per window (None or ``>= T``: the whole clip at once).
        overlap: minimum number of frames shared by consecutive windows (at most half the window).
        blend: frames over which consecutive windows are cross-faded (default ``overlap // 2``;
            0 = hard cut in the middle of the overlap). A network whose output frame depends on
            at most ``r`` frames either side is reproduced exactly when ``(overlap - blend) // 2 >= r``.
        patch_size, spatial_overlap, spatial_blend, scale: spatial tiling of each window
            (``tiled_forward``); None = whole frames.
        Conditioning with a time axis at dim 1 of length T and the image's H, W (e.g. per-frame
        masks ``B×T×1×H×W``) is cut into the same windows; other values are passed whole.
    """
    if x.dim() != 5:
        raise ValueError(f"tiled_clip_forward expects a B×T×C×H×W clip, got shape {tuple(x.shape)}")
    T = x.shape[1]
    window = T if window is None else int(window)
    blend_t = overlap // 2 if blend is None else int(blend)
    if window < T:  # (a clip shorter than a window is processed whole: no overlap to check)
        _check(window, overlap, blend_t, "time")
    window = min(window, T)
    timed = [k for k, v in conditioning.items()
             if isinstance(v, torch.Tensor) and v.dim() >= 4 and v.shape[1] == T and tuple(v.shape[-2:]) == tuple(x.shape[-2:])]
    starts = tile_starts(T, window, overlap)

    def run(clip, **cond):
        if patch_size is None:
            out = fn(clip, **cond)
            if tuple(out.shape[-2:]) != (clip.shape[-2] * scale, clip.shape[-1] * scale):
                raise ValueError(f"tiled inference needs fn to return {scale}x its input, got {tuple(out.shape)}")
            return out
        return tiled_forward(fn, clip, patch_size, spatial_overlap, scale=scale, blend=spatial_blend,
                             tiled_keys=tiled_keys, **cond)

    pieces = []
    for t0 in starts:
        cond = {k: (v[:, t0:t0 + window] if k in timed else v) for k, v in conditioning.items()}
        out = run(x[:, t0:t0 + window], **cond)
        if out.dim() != 5 or out.shape[1] != window:
            raise ValueError(f"tiled_clip_forward needs a clip→clip fn ({window} frames in, {window} out), "
                             f"got output shape {tuple(out.shape)}")
        pieces.append(out)
    return _stitch(pieces, starts, _zones(starts, window, blend_t), 1, T)


def sliding_frames(fn: Callable, clip: torch.Tensor, frames: int, /, **cond) -> torch.Tensor:
    """Every frame of ``clip`` (B×T×C×H×W) restored by a clip→centre-frame function ``fn`` that
    takes ``frames`` (odd) frames: frame t comes from frames t−r..t+r (r = frames // 2), indices
    clamped to the clip (the first and last frames repeated at the ends, the usual sliding-window
    VSR test protocol). Returns B×T×C'×H'×W'. Per-frame conditioning tensors (B×T×...) are windowed
    alike; others are passed whole."""
    if frames % 2 != 1:
        raise ValueError(f"sliding_frames: a clip→centre-frame network needs an odd number of frames, got {frames}")
    T, r = clip.shape[1], frames // 2
    out = []
    for t in range(T):
        index = torch.arange(t - r, t + r + 1, device=clip.device).clamp(0, T - 1)
        window = {k: (v.index_select(1, index) if isinstance(v, torch.Tensor) and v.dim() >= 2
                      and v.shape[:2] == clip.shape[:2] else v) for k, v in cond.items()}
        out.append(fn(clip.index_select(1, index), **window))
    return torch.stack(out, dim=1)


def tiled_predict(
    net: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    io,
    patch_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    frames_window: int | None = None,
    *,
    blend: int | tuple[int, int] | None = None,
    frames_overlap: int | None = None,
) -> torch.Tensor:
    """The network's prediction for ``inputs`` computed by tiles, chosen by ``io.kind``
    (``io``: the network's ``ArchIO``; what ``BaseModel.run_network`` calls with ``tile=...``).

    * ``image``, ``denoiser``: ``tiled_forward`` of the main input at ``io.scale``; maps aligned
      with it are tiled alongside, everything else (kernels, ``t``) is passed whole.
    * ``clip2clip``: ``tiled_clip_forward`` with windows of ``frames_window`` frames (default
      ``io.frames``, else the whole clip) overlapping by ``frames_overlap`` (default
      ``2 * io.temporal_radius`` when known, else ``window // 4``), each tiled in space.
    * ``clip2frame``: the clip (``io.frames`` frames) tiled in space; returns the centre frame.
    * ``autoencoder``: reconstruction = ``tiled_decode(tiled_encode(x))`` through
      ``encode(x).latent_dist.mean`` and ``decode(z).sample``, tiles on the latent grid
      (``io.scale`` = the downsampling); the image is reflect-padded to a multiple of it and
      mapped to ``io.sample_range`` for ``encode`` (and back from it after ``decode``).
    * ``critic``: not tiled (a score map is not an image to stitch): ValueError.

    For a network with ``io.receptive_radius`` = r, ``overlap >= 2 * r`` with ``blend=0``
    reproduces the whole-input output up to float error.
    """
    main = io.main_input
    if main not in inputs:
        raise KeyError(f"tiled_predict: the main input '{main}' is missing (have: {', '.join(inputs)})")
    x = inputs[main]
    cond = {k: v for k, v in inputs.items() if k != main}

    def call(tile, /, **c):
        return net(**{main: tile}, **c)

    kind = io.kind
    if kind in ("image", "denoiser"):
        return tiled_forward(call, x, patch_size, overlap, scale=io.scale, blend=blend, **cond)
    if kind == "clip2frame":
        def spatial(window, /, **c):
            return tiled_forward(call, window, patch_size, overlap, scale=io.scale, blend=blend, **c)

        if io.frames is not None and x.shape[1] > io.frames:  # a longer clip: every frame from its window
            return sliding_frames(spatial, x, io.frames, **cond)
        if io.frames is not None and x.shape[1] != io.frames:
            raise ValueError(f"tiled_predict: this clip→frame network takes {io.frames} frames, got {x.shape[1]}")
        return spatial(x, **cond)
    if kind == "clip2clip":
        window = frames_window or io.frames
        if frames_overlap is None:
            radius = getattr(io, "temporal_radius", None)
            w = window or x.shape[1]
            frames_overlap = min(2 * radius, w // 2) if radius is not None else w // 4
        return tiled_clip_forward(call, x, window, frames_overlap, blend=0 if blend == 0 else None,
                                  patch_size=patch_size, spatial_overlap=overlap, spatial_blend=blend,
                                  scale=io.scale, **cond)
    if kind == "autoencoder":
        f = io.scale
        H, W = x.shape[-2:]
        pad_h, pad_w = (-H) % f, (-W) % f
        xp = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
        from models.archs.arch_util import from_sample_range, to_sample_range

        z = tiled_encode(lambda t: net.encode(to_sample_range(t, io)).latent_dist.mean, xp, patch_size, overlap, f,
                         blend=blend)
        ov_lat = tuple(-(-v // f) for v in _pair(overlap, "overlap"))
        patch_lat = tuple(-(-v // f) for v in _pair(patch_size, "patch_size"))
        bl_lat = None if blend is None else tuple(-(-v // f) for v in _pair(blend, "blend"))
        out = tiled_decode(lambda t: net.decode(t).sample, z, patch_lat, ov_lat, f, blend=bl_lat)
        return from_sample_range(out, io)[..., :H, :W]
    if kind == "critic":
        raise ValueError("tiled_predict: a critic's score map is not tiled; call the network on the whole input")
    raise ValueError(f"tiled_predict: unknown network kind {kind!r}")
