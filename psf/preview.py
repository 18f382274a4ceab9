"""PNG figures of PSF fields and bases (matplotlib, Agg backend, imported only here)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from psf.field import PSFField
from utils.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def psf_mosaic(field: PSFField, gamma: float = 0.5, gap: int = 1) -> np.ndarray:
    """[G_h*(k+gap), G_w*(k+gap), C] image of all node PSFs, each node scaled by its own peak
    (over channels, so colour fringes stay visible) with a display gamma to show the wings."""
    gh, gw = field.grid_shape
    k = field.psf_size
    psfs = field.psfs[:, 0].double()  # [C, N, k, k]
    if field.c_in > 1:
        psfs = field.psfs.double().sum(dim=1)  # cross-talk: total response per output channel
    peak = psfs.amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)
    img = (psfs / peak).clamp(0, 1) ** gamma
    c = img.shape[0]
    out = np.ones((gh * (k + gap) - gap, gw * (k + gap) - gap, c))
    for n in range(gh * gw):
        r, col = divmod(n, gw)
        out[r * (k + gap):r * (k + gap) + k, col * (k + gap):col * (k + gap) + k] = img[:, n].permute(1, 2, 0).numpy()
    return out


def save_psf_grid(field: PSFField, path: str | os.PathLike, title: str | None = None) -> Path:
    """PSF of every node laid out as on the sensor (node (0, 0) top left)."""
    plt = _pyplot()
    mosaic = psf_mosaic(field)
    gh, gw = field.grid_shape
    fig, ax = plt.subplots(figsize=(min(12, 1.0 + 0.9 * gw), min(12, 1.0 + 0.9 * gh)), dpi=100)
    if mosaic.shape[2] == 3 and field.channel_order == "RGB":
        ax.imshow(mosaic, interpolation="nearest")
    else:
        ax.imshow(mosaic[..., 0], cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"{field.psf_type} PSFs, {gh}x{gw} nodes, {field.psf_size} px (peak-normalised, gamma 0.5)",
                 fontsize=9)
    return _save(fig, path)


def save_basis_psfs(basis_psfs: torch.Tensor, path: str | os.PathLike, channel_order: str = "RGB",
                    max_shown: int = 8) -> Path:
    """Basis elements per channel (rows) -- signed, so a diverging colour map."""
    plt = _pyplot()
    b = basis_psfs[:, 0].double().numpy()  # [C, K, k, k]
    c, k_basis = b.shape[:2]
    shown = min(k_basis, max_shown)
    fig, axes = plt.subplots(c, shown, figsize=(1.3 * shown + 0.5, 1.4 * c + 0.4), squeeze=False, dpi=100)
    for ch in range(c):
        for i in range(shown):
            v = np.abs(b[ch, i]).max() or 1.0
            ax = axes[ch, i]
            ax.imshow(b[ch, i], cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if ch == 0:
                ax.set_title(f"K={i}", fontsize=8)
            if i == 0:
                ax.set_ylabel(channel_order[ch] if ch < len(channel_order) else str(ch), fontsize=9)
    fig.suptitle(f"basis PSFs ({k_basis} elements{', first %d shown' % shown if shown < k_basis else ''})",
                 fontsize=9)
    return _save(fig, path)


def save_coef_maps(field: PSFField, path: str | os.PathLike, max_shown: int = 8) -> Path:
    """Coefficient of every basis element at every node, drawn over the sensor (node cells)."""
    plt = _pyplot()
    gh, gw = field.grid_shape
    coef = field.basis_coef[:, 0].double().numpy().reshape(field.c_out, -1, gh, gw)  # [C, K, G_h, G_w]
    c, k_basis = coef.shape[:2]
    shown = min(k_basis, max_shown)
    pos = field.positions
    xs, ys = pos[:, 0].reshape(gh, gw), pos[:, 1].reshape(gh, gw)
    dx = (xs.max() - xs.min()) / max(gw - 1, 1) or 1.0
    dy = (ys.max() - ys.min()) / max(gh - 1, 1) or 1.0
    extent = [xs.min() - dx / 2, xs.max() + dx / 2, ys.max() + dy / 2, ys.min() - dy / 2]
    fig, axes = plt.subplots(c, shown, figsize=(1.5 * shown + 0.5, 1.5 * c + 0.4), squeeze=False, dpi=100)
    for ch in range(c):
        for i in range(shown):
            ax = axes[ch, i]
            m = coef[ch, i]
            im = ax.imshow(m, extent=extent, interpolation="nearest", cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if ch == 0:
                ax.set_title(f"K={i}", fontsize=8)
            if i == 0:
                ax.set_ylabel(field.channel_order[ch], fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
    more = f", first {shown} of {k_basis}" if shown < k_basis else ""
    fig.suptitle(f"basis coefficients per node (over the sensor{more})", fontsize=9)
    return _save(fig, path)


def save_energy_curve(curve: torch.Tensor, n_basis: int, path: str | os.PathLike, channel_order: str = "RGB") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    cur = curve[:, 0].double().numpy()
    ks = np.arange(1, cur.shape[-1] + 1)
    colours = {"R": "tab:red", "G": "tab:green", "B": "tab:blue"}
    for ch in range(cur.shape[0]):
        name = channel_order[ch] if ch < len(channel_order) else str(ch)
        ax.semilogy(ks, np.clip(1 - cur[ch], 1e-16, None), marker=".", label=name, color=colours.get(name))
    ax.axvline(n_basis, color="k", lw=0.8, ls="--")
    ax.set_xlabel("K (basis elements)")
    ax.set_ylabel("1 - explained energy")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    return _save(fig, path)


def _save(fig, path) -> Path:
    """Write atomically (temp name in the same folder, then rename)."""
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.tight_layout()
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
