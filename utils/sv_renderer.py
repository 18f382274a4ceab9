"""Spatially varying blur: the exact scatter-form renderer of a PSF field (DESIGN.md, "PSF file").

Image formation (incoherent imaging, scatter form). A source pixel p spreads its value over
``p + (dy, dx)`` with weight ``P_p[k//2 + dy, k//2 + dx]``, where ``P_p`` is the PSF at p:
the bilinear interpolation, in grid-index space, of the four surrounding node PSFs (the grid
index of p is ``H_img⁻¹ · (x, y, 1)``, clamped to the node hull, so outside the hull the
nearest node is used). Writing ``w_n(p)`` for the bilinear weight of node n at p::

    out = Σ_n psf_n ∗ (w_n ⊙ x)                        (full rank, exact)
        ≈ Σ_k B_k ∗ (a_k ⊙ x),  a_k = Σ_n coef[k, n] w_n (basis of K PSFs; exact for K = N)

a linear convolution per term (Nagy & O'Leary, SIAM J. Sci. Comput. 19(4), 1998, eq. 2.5;
Flicker & Rigaut, JOSA A 22(3), 2005 for the low-rank basis form). ``∗`` is evaluated with
real FFTs on a zero-extended domain, so nothing ever wraps around.

Methods (``render(..., method=...)``):

* ``basis``  (default when the field carries a basis): dense coefficient maps, one FFT per
  basis component and input channel; for large K the same sum is evaluated on the node
  supports instead (identical by linearity, less work; ``SVRenderer(basis_strategy=...)``).
* ``full``   (default without a basis): the node PSFs themselves with their bilinear weights.
  Each node's weight map is non-zero only on the cells around it, so every node is
  convolved on its own support only (one small FFT pair per node): exact and fast.
* ``tiles``  fixed tiles: every source pixel takes the PSF of its nearest node (piecewise
  constant field, overlap-add across tile borders). An approximation, for comparison.
* ``brute_force`` the reference: the interpolated PSF of every source pixel, scattered
  tap by tap over all pixels. O(H·W·k²); for tests and benchmarks.

Boundaries: ``reflect`` (default) extends the image by mirror reflection (no edge repeat)
before blurring, the padded source pixels taking the coefficients of the nearest image pixel;
``zero`` treats everything outside the image as black. The output has the input's size.

Image size vs sensor. Image pixel (x, y) is sensor pixel ``(x + x0, y + y0)`` with
``origin = (y0, x0)`` (default (0, 0)): the image is assumed to be sampled at the sensor's
pixel pitch, so the PSFs (sized in sensor pixels) apply as they are. An image (or crop)
smaller than the sensor sees the part of the field it covers; pixels beyond the node hull
(e.g. an image larger than the sensor) take the nearest node's PSF. To put an image of
another resolution on the full sensor, resize it to ``sensor_res`` first (step 3 does).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from psf.field import PSFField, load_psf_field

BOUNDARIES = ("reflect", "zero")
METHODS = ("auto", "basis", "full", "tiles", "brute_force")

__all__ = [
    "BOUNDARIES", "METHODS", "SVRenderer", "render", "render_brute_force", "coef_maps", "node_weights",
    "node_weight_maps", "grid_index", "interpolated_psf", "simulate_capture",
    "BasisBlur", "sv_blur", "sv_blur_adjoint",
]


# -- pixel -> grid index -> node weights -------------------------------------------------------
def _as_field(psf) -> PSFField:
    if isinstance(psf, PSFField):
        return psf
    if isinstance(psf, (str, os.PathLike)):
        return load_psf_field(psf)
    raise TypeError(f"psf must be a PSFField or a path to a PSF file, got {type(psf).__name__}")


def grid_index(field: PSFField, height: int, width: int, origin=(0, 0), device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid coordinates ``(col, row)`` [H, W] float64 of every image pixel: ``H_img⁻¹ · (x+x0, y+y0, 1)``."""
    h_inv = torch.as_tensor(np.linalg.inv(np.asarray(field.H_img, dtype=np.float64)), device=device)
    y = torch.arange(height, dtype=torch.float64, device=device) + origin[0]
    x = torch.arange(width, dtype=torch.float64, device=device) + origin[1]
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    u = h_inv[0, 0] * xx + h_inv[0, 1] * yy + h_inv[0, 2]
    v = h_inv[1, 0] * xx + h_inv[1, 1] * yy + h_inv[1, 2]
    s = h_inv[2, 0] * xx + h_inv[2, 1] * yy + h_inv[2, 2]
    return u / s, v / s


def _axis_interp(t: torch.Tensor, n: int, nearest: bool):
    """Lower node index, upper node index and upper weight along one grid axis (clamped to the hull)."""
    if n == 1:
        zero = torch.zeros_like(t, dtype=torch.long)
        return zero, zero, torch.zeros_like(t)
    t = t.clamp(0, n - 1)
    if nearest:
        i = torch.floor(t + 0.5).long().clamp(max=n - 1)
        return i, i, torch.zeros_like(t)
    i0 = torch.floor(t).long().clamp(max=n - 2)
    return i0, i0 + 1, t - i0


def node_weights(field: PSFField, height: int, width: int, origin=(0, 0), device=None,
                 nearest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The (at most) four nodes each pixel interpolates between.

    Returns ``index`` [4, H, W] (long, row-major node index) and ``weight`` [4, H, W]
    (float64, bilinear, summing to 1) for the corners (r0,c0), (r0,c0+1), (r0+1,c0),
    (r0+1,c0+1). ``nearest=True`` gives the fixed-tile assignment instead (weight 1 on the
    nearest node).
    """
    gh, gw = field.grid_shape
    col, row = grid_index(field, height, width, origin, device)
    c0, c1, fc = _axis_interp(col, gw, nearest)
    r0, r1, fr = _axis_interp(row, gh, nearest)
    index = torch.stack([r0 * gw + c0, r0 * gw + c1, r1 * gw + c0, r1 * gw + c1])
    weight = torch.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    return index, weight


def node_weight_maps(field: PSFField, height: int, width: int, origin=(0, 0), device=None,
                     nearest: bool = False, dtype=torch.float32) -> torch.Tensor:
    """Dense per-node weights [N, H, W] (each pixel's weights sum to 1; at most 4 non-zero)."""
    index, weight = node_weights(field, height, width, origin, device, nearest)
    maps = torch.zeros(field.n_nodes, height, width, dtype=torch.float64, device=device)
    maps.scatter_add_(0, index, weight)
    return maps.to(dtype)


def coef_maps(field: PSFField, height: int, width: int, origin=(0, 0), n_basis: int | None = None,
              device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-pixel basis coefficients ``[C_out, C_in, K, H, W]``: ``a_k(p) = Σ_n basis_coef[..., k, n] w_n(p)``.

    Without a basis this is the full-rank case (K = N, one-hot coefficients): the node
    weight maps, expanded (not copied) over the channels. ``n_basis`` keeps the first K
    basis components.
    """
    field = _as_field(field)
    if not field.has_basis:
        maps = node_weight_maps(field, height, width, origin, device, dtype=dtype)
        return maps.expand(field.c_out, field.c_in, *maps.shape)
    index, weight = node_weights(field, height, width, origin, device)
    coef = _basis(field, n_basis)[1].to(device=device, dtype=torch.float64)
    out = torch.zeros(*coef.shape[:3], height, width, dtype=torch.float64, device=device)
    for j in range(4):
        out += coef[..., index[j]] * weight[j]
    return out.to(dtype)


def interpolated_psf(field: PSFField, x: float, y: float) -> torch.Tensor:
    """The PSF [C_out, C_in, k, k] at sensor pixel (x, y) (bilinear between nodes)."""
    h_inv = np.linalg.inv(np.asarray(field.H_img, dtype=np.float64))
    u, v, s = h_inv @ np.array([x, y, 1.0])
    gh, gw = field.grid_shape
    c0, c1, fc = _axis_interp(torch.tensor([u / s], dtype=torch.float64), gw, False)
    r0, r1, fr = _axis_interp(torch.tensor([v / s], dtype=torch.float64), gh, False)
    psfs = field.psfs.double()
    out = 0
    for r, c, w in ((r0, c0, (1 - fr) * (1 - fc)), (r0, c1, (1 - fr) * fc), (r1, c0, fr * (1 - fc)), (r1, c1, fr * fc)):
        out = out + w.item() * psfs[:, :, int(r) * gw + int(c)]
    return out.to(field.psfs.dtype)


def _basis(field: PSFField, n_basis: int | None):
    k = field.n_basis if n_basis is None else n_basis
    if not 1 <= k <= field.n_basis:
        raise ValueError(f"n_basis={n_basis} but the field has {field.n_basis} basis PSFs")
    return field.basis_psfs[:, :, :k], field.basis_coef[:, :, :k]


# -- padding -------------------------------------------------------------------------------------
def _reflect_index(n: int, r: int, device=None) -> torch.Tensor:
    """Indices of a mirror extension by r on both sides (no edge repeat, any r; numpy 'reflect')."""
    i = torch.arange(-r, n + r, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def _clamp_index(n: int, r: int, device=None) -> torch.Tensor:
    return torch.arange(-r, n + r, device=device).clamp(0, n - 1)


def _pad_image(x: torch.Tensor, r: int, boundary: str) -> torch.Tensor:
    if boundary == "zero":
        return F.pad(x, (r, r, r, r))
    if r < min(x.shape[-2:]):
        return F.pad(x, (r, r, r, r), mode="reflect")
    iy = _reflect_index(x.shape[-2], r, x.device)
    ix = _reflect_index(x.shape[-1], r, x.device)
    return x[..., iy, :][..., ix]


def _pad_maps(maps: torch.Tensor, r: int) -> torch.Tensor:
    """Replicate-pad the last two dims (padded source pixels take the nearest pixel's coefficients)."""
    iy = _clamp_index(maps.shape[-2], r, maps.device)
    ix = _clamp_index(maps.shape[-1], r, maps.device)
    return maps[..., iy, :][..., ix]


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (a fast FFT length)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


# -- the renderer -------------------------------------------------------------------------------
@dataclass
class _NodeSupport:
    """Where one node's weight is non-zero (padded coordinates) and its PSF's spectrum."""

    y0: int
    x0: int
    weights: torch.Tensor  # [h, w] bilinear (or nearest-node) weights of the node on its support
    kernel_ft: torch.Tensor  # [C_out, C_in, Lh, Lw//2+1], Lh >= h + k - 1: a full linear convolution
    fft_size: tuple[int, int]


class SVRenderer:
    """A PSF field prepared for one image size: call it on ``x`` [B, C, H, W] to blur.

    Preparing (coefficient maps, kernel spectra) costs about one render; reuse the object
    for many images of the same size (datasets, benchmarks). Differentiable in ``x``.

    ``basis_strategy`` (method ``basis``): ``dense`` evaluates Σ_k B_k ∗ (a_k ⊙ x) with K
    full-image FFTs per channel; ``nodes`` evaluates the identical sum on the node supports
    with the node PSFs the basis reconstructs (linearity); ``auto`` (default) takes the one
    with less FFT work (dense for small K). ``self.strategy`` says which was used.
    """

    def __init__(self, psf, image_size: tuple[int, int], boundary: str = "reflect", method: str = "auto",
                 origin=(0, 0), n_basis: int | None = None, device=None, dtype=torch.float32,
                 basis_strategy: str = "auto"):
        field = _as_field(psf)
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "auto":
            method = "basis" if field.has_basis else "full"
        if method == "basis" and not field.has_basis:
            raise ValueError("method='basis' needs a field with basis_psfs/basis_coef (run step 2), or use method='full'")
        self.field, self.method, self.boundary = field, method, boundary
        self.height, self.width = (int(s) for s in image_size)
        self.origin = (int(origin[0]), int(origin[1]))
        self.n_basis = n_basis
        self.device, self.dtype = torch.device(device) if device is not None else torch.device("cpu"), dtype
        self.radius = field.psf_size // 2
        if basis_strategy not in ("auto", "dense", "nodes"):
            raise ValueError(f"basis_strategy must be auto, dense or nodes, got {basis_strategy!r}")
        self.strategy = {"basis": "dense", "full": "nodes", "tiles": "nodes", "brute_force": "brute_force"}[method]
        if method in ("full", "tiles"):
            self._prepare_nodes(self.field.psfs, self._node_supports(nearest=method == "tiles"))
        elif method == "basis":
            supports = self._node_supports(nearest=False) if basis_strategy != "dense" else None
            if basis_strategy == "nodes" or (basis_strategy == "auto" and self._nodes_cheaper(supports)):
                # a_k = Σ_n coef[k, n] w_n, so Σ_k B_k ∗ (a_k ⊙ x) = Σ_n (Σ_k coef[k, n] B_k) ∗ (w_n ⊙ x):
                # the same render, from the node PSFs as the basis reconstructs them.
                basis_psfs, basis_coef = _basis(field, n_basis)
                node_psfs = torch.einsum("oikn,oikyx->oinyx", basis_coef.double(), basis_psfs.double())
                self.strategy = "nodes"
                self._prepare_nodes(node_psfs, supports)
            else:
                self._prepare_basis()

    # -- preparation ------------------------------------------------------------------------
    def _padded_size(self):
        return self.height + 2 * self.radius, self.width + 2 * self.radius

    def _prepare_basis(self):
        f, r = self.field, self.radius
        basis_psfs, _ = _basis(f, self.n_basis)
        maps = coef_maps(f, self.height, self.width, self.origin, self.n_basis, self.device, torch.float64)
        self.maps = _pad_maps(maps, r).to(self.dtype)  # [C_out, C_in, K, Hp, Wp]
        hp, wp = self._padded_size()
        # Valid outputs need source indices [0, Hp) only, so an FFT length >= Hp never wraps into them.
        self.fft_size = (_fast_len(hp), _fast_len(wp))
        self.kernel_ft = torch.fft.rfft2(basis_psfs.to(self.device, torch.float64), s=self.fft_size).to(_complex(self.dtype))

    def _node_supports(self, nearest: bool) -> list[tuple[int, int, int, torch.Tensor]]:
        """(node, y0, x0, weights [h, w]) where each node's weight is non-zero, padded coordinates."""
        f, r = self.field, self.radius
        index, weight = node_weights(f, self.height, self.width, self.origin, self.device, nearest)
        index, weight = _pad_maps(index, r), _pad_maps(weight, r)
        supports = []
        for n in range(f.n_nodes):
            mine = (index == n) & (weight > 0)  # [4, Hp, Wp]: where node n has weight
            support = mine.any(dim=0)
            ys, xs = torch.nonzero(support.any(dim=1)).flatten(), torch.nonzero(support.any(dim=0)).flatten()
            if len(ys) == 0:
                continue  # this node influences no pixel of this image
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            supports.append((n, y0, x0, (weight[:, y0:y1, x0:x1] * mine[:, y0:y1, x0:x1]).sum(0)))
        return supports

    def _nodes_cheaper(self, supports) -> bool:
        """FFT work (n log n per transform) of the node-support form vs K dense transforms per channel."""
        f, k = self.field, self.field.psf_size
        cost = lambda h, w: h * w * math.log2(max(h * w, 2))  # noqa: E731
        channels_in = f.c_in if f.c_in > 1 else f.c_out
        n_dense = (f.c_out * f.c_in if f.c_in > 1 else f.c_out) * _basis(f, self.n_basis)[0].shape[2] + f.c_out
        dense = n_dense * cost(*(_fast_len(s) for s in self._padded_size()))
        nodes = sum((channels_in + f.c_out) * cost(_fast_len(w.shape[0] + k - 1), _fast_len(w.shape[1] + k - 1))
                    for _, _, _, w in supports)
        # Per-node overheads (crops, many small transforms) weigh ~30% more than the count says:
        # measured break-even K ≈ 8-10 for 512² images on 9×9 nodes.
        return 1.3 * nodes < dense

    def _prepare_nodes(self, node_psfs: torch.Tensor, supports):
        k = self.field.psf_size
        psfs = node_psfs.to(self.device, torch.float64)
        self.supports = []
        for n, y0, x0, w_n in supports:
            fft_size = (_fast_len(w_n.shape[0] + k - 1), _fast_len(w_n.shape[1] + k - 1))
            kernel_ft = torch.fft.rfft2(psfs[:, :, n], s=fft_size).to(_complex(self.dtype))
            self.supports.append(_NodeSupport(y0, x0, w_n.to(self.dtype), kernel_ft, fft_size))

    # -- application ------------------------------------------------------------------------
    def _check(self, x: torch.Tensor):
        f = self.field
        if x.ndim != 4:
            raise ValueError(f"expected x of shape [B, C, H, W], got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"renderer prepared for {self.height}x{self.width} images, got {tuple(x.shape[-2:])}")
        want = f.c_in if f.c_in > 1 else f.c_out
        if x.shape[1] != want and not (f.c_out == 1 and f.c_in == 1):
            kind = "cross-talk PSFs need" if f.c_in > 1 else "per-channel PSFs need"
            raise ValueError(f"{kind} {want} image channels ({f.channel_order}), got {x.shape[1]}")

    def to(self, device) -> "SVRenderer":
        """Move the prepared maps and spectra (done automatically on the first call with x elsewhere)."""
        device = torch.device(device)
        if device != self.device:
            if self.strategy == "dense":
                self.maps, self.kernel_ft = self.maps.to(device), self.kernel_ft.to(device)
            elif self.strategy == "nodes":
                for sup in self.supports:
                    sup.weights, sup.kernel_ft = sup.weights.to(device), sup.kernel_ft.to(device)
            self.device = device
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        self.to(x.device)
        x = x.to(self.dtype)
        if self.method == "brute_force":
            return render_brute_force(x, self.field, self.boundary, self.origin)
        xp = _pad_image(x, self.radius, self.boundary)
        return self._apply_basis(xp) if self.strategy == "dense" else self._apply_nodes(xp)

    def _apply_basis(self, xp: torch.Tensor) -> torch.Tensor:
        # The field's maps and spectra serve every image of the batch (leading batch dim of 1).
        return _basis_forward(xp, self.maps[None], self.kernel_ft[None], self.fft_size, self.field.c_in,
                              self.radius, (self.height, self.width))

    def _apply_nodes(self, xp: torch.Tensor) -> torch.Tensor:
        f, k = self.field, self.field.psf_size
        b = xp.shape[0]
        c_out = xp.shape[1] if f.c_in == 1 else f.c_out
        hp, wp = xp.shape[-2:]
        full = xp.new_zeros(b, c_out, hp + k - 1, wp + k - 1)
        # Node by node (small FFTs that stay in cache): each node convolves its own support.
        for s in self.supports:
            h, w = s.weights.shape
            spec = torch.fft.rfft2(xp[:, :, s.y0:s.y0 + h, s.x0:s.x0 + w] * s.weights, s=s.fft_size)  # [B, C, ...]
            if f.c_in == 1:
                spec = spec * s.kernel_ft[:, 0]
            else:
                spec = (spec.unsqueeze(1) * s.kernel_ft).sum(2)  # out_o = Σ_i psf[o, i] ∗ x_i
            blurred = torch.fft.irfft2(spec, s=s.fft_size)[..., : h + k - 1, : w + k - 1]  # full linear convolution
            full[:, :, s.y0:s.y0 + h + k - 1, s.x0:s.x0 + w + k - 1] += blurred
        c = 2 * self.radius
        return full[..., c:c + self.height, c:c + self.width]


# -- the basis blur on padded images (shared by SVRenderer and BasisBlur) --------------------------
def _basis_forward(xp: torch.Tensor, maps: torch.Tensor, kernel_ft: torch.Tensor, fft_size, c_in: int, radius: int,
                   out_size) -> torch.Tensor:
    """``Σ_k B_k ∗ (a_k ⊙ x)`` of a padded batch ``xp`` [B, C, Hp, Wp], cropped to ``out_size``.

    ``maps`` [Bm, C_out, C_in, K, Hp, Wp] and ``kernel_ft`` [Bm, C_out, C_in, K, F1, F2] (rfft2 of
    the kernels at ``fft_size`` >= (Hp, Wp)), with Bm = 1 (one field for the batch) or B (one
    per sample). ``C_in == 1``: per-channel blur (C_out == 1 serves every image channel);
    else out_o = Σ_i psf[o, i] ∗ x_i.
    """
    c, (h, w) = 2 * radius, out_size
    c_out = xp.shape[1] if c_in == 1 else maps.shape[1]
    out = []
    # One modulated image at a time, accumulated in the Fourier domain: the working set stays
    # in cache, which is several times faster than one batched FFT over all K (and bounded in memory).
    for o in range(c_out):
        spec = None
        mo = o if maps.shape[1] > 1 else 0  # a single-channel field serves every channel
        for i in range(c_in):
            src = xp[:, o if c_in == 1 else i]  # [B, Hp, Wp]
            for k in range(maps.shape[3]):
                term = torch.fft.rfft2(maps[:, mo, i, k] * src, s=fft_size)
                kft = kernel_ft[:, mo, i, k]
                spec = term * kft if spec is None else spec.addcmul_(term, kft)
        out.append(torch.fft.irfft2(spec, s=fft_size)[..., c:c + h, c:c + w])
    return torch.stack(out, dim=1)


def _basis_adjoint(y: torch.Tensor, maps: torch.Tensor, kernel_ft: torch.Tensor, fft_size, c_in: int,
                   radius: int, channels: int) -> torch.Tensor:
    """Adjoint of :func:`_basis_forward`: ``Σ_k a_k ⊙ (B̃_k ⋆ y)`` on the padded grid [B, channels, Hp, Wp].

    The forward keeps outputs ``2r .. 2r+H-1`` of the full linear convolution, so ``y`` is put
    back at that offset and correlated with each kernel (conjugate spectrum); an FFT length
    >= Hp never wraps a correlation lag into the kept source range.
    """
    c, (h, w) = 2 * radius, y.shape[-2:]
    hp, wp = h + c, w + c
    ypad = F.pad(y, (c, fft_size[1] - c - w, c, fft_size[0] - c - h))
    spec = torch.fft.rfft2(ypad)  # [B, C_out, F1, F2]
    per_channel = c_in == 1
    out = []
    for i in range(channels):
        acc = None
        for o in ([i] if per_channel else range(maps.shape[1])):
            mo = o if maps.shape[1] > 1 else 0
            mi = 0 if per_channel else i
            for k in range(maps.shape[3]):
                corr = torch.fft.irfft2(spec[:, o] * kernel_ft[:, mo, mi, k].conj(), s=fft_size)[..., :hp, :wp]
                term = maps[:, mo, mi, k] * corr
                acc = term if acc is None else acc + term
        out.append(acc)
    return torch.stack(out, dim=1)


def _pad_image_adjoint(xp: torch.Tensor, radius: int, boundary: str) -> torch.Tensor:
    """Adjoint of ``_pad_image``: the padded margin folded back onto the pixels it copied."""
    r = radius
    h, w = xp.shape[-2] - 2 * r, xp.shape[-1] - 2 * r
    if boundary == "zero":
        return xp[..., r:r + h, r:r + w]
    iy, ix = _reflect_index(h, r, xp.device), _reflect_index(w, r, xp.device)
    rows = xp.new_zeros(*xp.shape[:-2], h, xp.shape[-1]).index_add(-2, iy, xp)
    return xp.new_zeros(*xp.shape[:-2], h, w).index_add(-1, ix, rows)


class BasisBlur:
    """The spatially varying blur of a batch, ``H x = Σ_k B_k ∗ (a_k ⊙ x)``, and its adjoint.

    Built from the batch keys of a PSF-aware dataset (docs/datasets.md) rather than a
    ``PSFField``, so every sample can have its own field: ``basis_psfs`` [B, C_out, C_in, K, k, k]
    and ``basis_coef`` [B, C_out, C_in, K, H, W] (B may be 1 to serve the whole batch). The
    scatter form and boundaries are those of ``SVRenderer`` (same padding and FFT core): with a
    field's ``basis_psfs`` and ``coef_maps`` it equals ``render(x, field, method="basis")``.

    ``H x`` (``blur(x)`` or ``op(x)``) and ``Hᵀ y`` (``adjoint(y)``: Σ_k a_k ⊙ (B̃_k ⋆ y), then
    the boundary extension folded back) are exact adjoints, <Hx, y> = <x, Hᵀy>: what
    Richardson–Lucy and gradient methods need. Differentiable in x, y, kernels and maps.
    The kernel spectra are computed once, so many applications (iterative solvers) are cheap.
    Arithmetic is in ``basis_coef``'s floating dtype.
    """

    def __init__(self, basis_psfs: torch.Tensor, basis_coef: torch.Tensor, boundary: str = "reflect"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if basis_psfs.ndim != 6 or basis_coef.ndim != 6:
            raise ValueError(f"expected basis_psfs [B, C_out, C_in, K, k, k] and basis_coef [B, C_out, C_in, K, H, W], "
                             f"got {tuple(basis_psfs.shape)} and {tuple(basis_coef.shape)}")
        k = basis_psfs.shape[-1]
        if basis_psfs.shape[-2] != k or k % 2 == 0:
            raise ValueError(f"basis PSFs must be square with an odd size, got {tuple(basis_psfs.shape[-2:])}")
        if basis_psfs.shape[1:4] != basis_coef.shape[1:4]:
            raise ValueError(f"basis_psfs {tuple(basis_psfs.shape)} and basis_coef {tuple(basis_coef.shape)} "
                             "disagree on [C_out, C_in, K]")
        self.boundary, self.radius = boundary, k // 2
        self.c_out, self.c_in = basis_psfs.shape[1], basis_psfs.shape[2]
        self.height, self.width = basis_coef.shape[-2:]
        self.fft_size = (_fast_len(self.height + 2 * self.radius), _fast_len(self.width + 2 * self.radius))
        self.dtype = basis_coef.dtype if basis_coef.dtype in (torch.float32, torch.float64) else torch.float32
        self.kernels = basis_psfs.to(self.dtype)
        self.maps = _pad_maps(basis_coef.to(self.dtype), self.radius)  # padded source pixels: nearest pixel's coefficients
        self.kernel_ft = torch.fft.rfft2(self.kernels, s=self.fft_size)

    def _channels(self, x: torch.Tensor, what: str, side: str) -> int:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"{what} must be [B, C, {self.height}, {self.width}] (the basis_coef size), got {tuple(x.shape)}")
        if self.c_in > 1:  # cross-talk: x has C_in channels, H x has C_out
            want = self.c_in if side == "in" else self.c_out
        else:  # per channel: C_out channels (a single-channel field blurs any number alike)
            want = self.c_out if self.c_out > 1 else x.shape[1]
        if x.shape[1] != want:
            raise ValueError(f"{what} has {x.shape[1]} channels; PSFs [C_out={self.c_out}, C_in={self.c_in}] need {want}")
        return x.shape[1]

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """``H x`` for ``x`` [B, C, H, W]."""
        self._channels(x, "x", "in")
        xp = _pad_image(x.to(self.dtype), self.radius, self.boundary)
        return _basis_forward(xp, self.maps, self.kernel_ft, self.fft_size, self.c_in, self.radius,
                              (self.height, self.width))

    __call__ = blur

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Hᵀ y`` for ``y`` [B, C, H, W] (the channels ``blur`` returns)."""
        channels = self._channels(y, "y", "out")
        zp = _basis_adjoint(y.to(self.dtype), self.maps, self.kernel_ft, self.fft_size, self.c_in, self.radius,
                            channels if self.c_in == 1 else self.c_in)
        return _pad_image_adjoint(zp, self.radius, self.boundary)

    def norm_bound(self) -> torch.Tensor:
        """Per-sample upper bound [B] of the spectral norm ||H||₂.

        Schur test: ||H||₂² ≤ (max row sum of |H|)·(max column sum of |H|), and |H| is bounded
        entry-wise by the operator built from |B_k| and |a_k|, whose row and column sums are
        that operator applied to ones (and its adjoint to ones)."""
        absolute = BasisBlur(self.kernels.abs(), self.maps.abs()[..., self.radius:self.radius + self.height,
                                                                    self.radius:self.radius + self.width],
                             self.boundary)
        b = max(self.maps.shape[0], self.kernels.shape[0])
        c_x = self.c_in if self.c_in > 1 else self.c_out
        c_y = self.c_out
        rows = absolute.blur(self.maps.new_ones(b, c_x, self.height, self.width)).amax(dim=(1, 2, 3))
        cols = absolute.adjoint(self.maps.new_ones(b, c_y, self.height, self.width)).amax(dim=(1, 2, 3))
        return (rows * cols).sqrt()


def sv_blur(x: torch.Tensor, basis_psfs: torch.Tensor, basis_coef: torch.Tensor, boundary: str = "reflect") -> torch.Tensor:
    """``H x = Σ_k B_k ∗ (a_k ⊙ x)`` with per-sample ``basis_psfs``/``basis_coef`` (see ``BasisBlur``)."""
    return BasisBlur(basis_psfs, basis_coef, boundary).blur(x)


def sv_blur_adjoint(y: torch.Tensor, basis_psfs: torch.Tensor, basis_coef: torch.Tensor,
                    boundary: str = "reflect") -> torch.Tensor:
    """``Hᵀ y = Σ_k a_k ⊙ (B̃_k ⋆ y)`` (boundary folded back): the adjoint of :func:`sv_blur`."""
    return BasisBlur(basis_psfs, basis_coef, boundary).adjoint(y)


def _complex(dtype):
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def render(x: torch.Tensor, psf, boundary: str = "reflect", method: str = "auto", origin=(0, 0),
           n_basis: int | None = None) -> torch.Tensor:
    """Blur ``x`` [B, C, H, W] with a spatially varying PSF field (a ``PSFField`` or a PSF file path).

    Uses the field's basis when it has one, else the exact full-rank form (see module doc).
    Output has x's shape, dtype and device. For many images of one size, build an
    ``SVRenderer`` once instead.
    """
    renderer = SVRenderer(psf, x.shape[-2:], boundary, method, origin, n_basis, x.device,
                          x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32)
    return renderer(x)


def render_brute_force(x: torch.Tensor, psf, boundary: str = "reflect", origin=(0, 0)) -> torch.Tensor:
    """Reference renderer: every source pixel scatters its own bilinearly interpolated PSF.

    The straightforward per-pixel scatter, vectorised over pixels: for each of the k×k PSF
    taps, every source pixel's own tap value (interpolated from its four nodes) times the
    pixel is added at the tap's offset. Shares nothing with the FFT paths except the node
    weights, which tests check against closed forms. O(H·W·k²); for tests and benchmarks.
    """
    field = _as_field(psf)
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    k, r = field.psf_size, field.psf_size // 2
    b, _, h, w = x.shape
    xp = _pad_image(x, r, boundary)
    hp, wp = xp.shape[-2:]
    index, weight = node_weights(field, h, w, origin, x.device)
    index, weight = _pad_maps(index, r), _pad_maps(weight, r).to(x.dtype)
    taps = field.psfs.to(x.device, x.dtype)  # [C_out, C_in, N, k, k]
    c_out = xp.shape[1] if field.c_in == 1 else field.c_out
    full = x.new_zeros(b, c_out, hp + k - 1, wp + k - 1)
    for ty in range(k):
        for tx in range(k):
            tap = taps[..., ty, tx]  # [C_out, C_in, N]
            # This tap of every source pixel's own PSF: bilinear mix of its four nodes' taps.
            pixel_tap = tap[..., index[0]] * weight[0]  # [C_out, C_in, Hp, Wp]
            for j in range(1, 4):
                pixel_tap.addcmul_(tap[..., index[j]], weight[j])
            # Source q with tap (ty, tx) = offset (ty - r, tx - r) lands at q + offset (+ r in `full`).
            target = full[:, :, ty:ty + hp, tx:tx + wp]
            if field.c_in == 1:
                target.addcmul_(pixel_tap[:, 0], xp)
            else:
                target.add_((pixel_tap.unsqueeze(0) * xp[:, None]).sum(2))  # out_o = Σ_i psf[o, i] x_i
    c = 2 * r
    return full[..., c:c + h, c:c + w]


# -- forward model of a capture -------------------------------------------------------------------
def simulate_capture(gt: torch.Tensor, renderer: SVRenderer, noise=None, generator: torch.Generator | None = None,
                     linear_light: bool = True, bits: int | None = 8) -> torch.Tensor:
    """Degrade sRGB ``gt`` [B, C, H, W] as a camera would: blur (in linear light by default),
    noise (``utils.noise.NoiseModel``: Poisson-Gaussian in linear light, Gaussian in sRGB),
    back to sRGB, and quantise to ``bits`` (None: keep floats, unclipped)."""
    from utils.image_io import quantize
    from utils.noise import NoiseModel, srgb_to_linear

    noise = noise or NoiseModel()
    if linear_light:
        y = noise.apply_linear(renderer(srgb_to_linear(gt)), generator)
    else:
        y = noise(renderer(gt), generator)
    return y if bits is None else quantize(y, bits)
