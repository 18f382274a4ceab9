"""Shared parts of the PSF-aware networks: their batch inputs, linear light, and the
local-PSF conditioning of the semi-blind networks.

Batch inputs (docs/datasets.md, "PSF keys"): ``basis_psfs`` [B, C_out, C_in, K, k, k] and
``basis_coef`` [B, C_out, C_in, K, H, W] with ``lq ≈ Σ_k basis_psfs[k] ∗ (basis_coef[k] ⊙ gt)``
(scatter form), or ``psf`` [B, C_out, C_in, k, k]. A dataset mixing PSF fields pads K with zero
basis elements and k with a zero border.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import DataError


# -- inputs ----------------------------------------------------------------------------------
def example_psf_inputs(batch_size: int, size: int, channels: int = 3, psf_size: int = 7,
                       generator: torch.Generator | None = None, keys=("lq", "basis_psfs", "basis_coef")) -> dict:
    """Random ``lq`` and a valid spatially varying field for it: elliptical Gaussian PSFs on a
    2×2 node grid spanning the image (full rank: node PSFs + bilinear node weights)."""
    from psf.example_fields import elliptical_gaussian_field
    from utils.sv_renderer import coef_maps

    lq = torch.rand(batch_size, channels, size, size, generator=generator)
    field = elliptical_gaussian_field(grid_shape=(2, 2), psf_size=psf_size, sensor_res=(size, size), sigma_center=0.7,
                                      sigma_radial=1.6, sigma_tangential=1.0, coma_shift=0.5,
                                      channel_scale=torch.linspace(1.1, 0.9, channels).tolist(),
                                      channel_order="RGB" if channels == 3 else "C" * channels)
    out = {"lq": lq}
    if "psf" in keys:
        centre = field.psfs[:, :, 0]  # any node: a valid normalised PSF
        out["psf"] = centre.expand(batch_size, *centre.shape).clone()
    if "basis_psfs" in keys:
        out["basis_psfs"] = field.psfs.expand(batch_size, *field.psfs.shape).clone()
    if "basis_coef" in keys:
        maps = coef_maps(field, size, size)
        out["basis_coef"] = maps.expand(batch_size, *maps.shape).clone()
    return out


def check_basis_inputs(lq: torch.Tensor, basis_psfs, basis_coef, who: str) -> None:
    """One clear error for missing or mis-shaped basis inputs."""
    if basis_psfs is None or basis_coef is None:
        raise ValueError(f"{who} needs the batch keys 'basis_psfs' and 'basis_coef' (dataset psf_keys)")
    if basis_psfs.ndim != 6 or basis_coef.ndim != 6:
        raise ValueError(f"{who}: basis_psfs must be [B, C_out, C_in, K, k, k] and basis_coef [B, C_out, C_in, K, H, W], "
                         f"got {tuple(basis_psfs.shape)} and {tuple(basis_coef.shape)}")
    if tuple(basis_coef.shape[-2:]) != tuple(lq.shape[-2:]):
        raise ValueError(f"{who}: basis_coef maps are {tuple(basis_coef.shape[-2:])}, lq is {tuple(lq.shape[-2:])}")


def fit_basis(basis_psfs: torch.Tensor, basis_coef: torch.Tensor, n_basis: int, psf_size: int, who: str):
    """Pad a batch's basis to a network's fixed K = ``n_basis`` (zero elements) and k = ``psf_size``
    (zero border). Zero elements change nothing: their coefficient maps are zero."""
    k, K = basis_psfs.shape[-1], basis_psfs.shape[3]
    if K > n_basis or k > psf_size:
        raise DataError(f"{who} is configured for at most n_basis={n_basis} basis PSFs of psf_size={psf_size}, "
                        f"the batch has K={K} of size {k}; set n_basis/psf_size in the network config")
    if (psf_size - k) % 2:
        raise DataError(f"{who}: psf_size={psf_size} and the batch's PSF size {k} must both be odd")
    p = (psf_size - k) // 2
    basis_psfs = F.pad(basis_psfs, (p, p, p, p, 0, n_basis - K))
    basis_coef = F.pad(basis_coef, (0, 0, 0, 0, 0, n_basis - K))
    return basis_psfs, basis_coef


def decode_srgb(x: torch.Tensor, linear_light: bool) -> torch.Tensor:
    """sRGB values -> linear light (IEC 61966-2-1) when the blur happened in linear light."""
    from utils.noise import srgb_to_linear

    return srgb_to_linear(x) if linear_light else x


def encode_srgb(x: torch.Tensor, linear_light: bool) -> torch.Tensor:
    """Back to sRGB values (unclipped: the curve's linear segment continues below zero)."""
    from utils.noise import linear_to_srgb

    return linear_to_srgb(x) if linear_light else x


# -- conditioning on the local PSF -------------------------------------------------------------
class LocalPSFEncoder(nn.Module):
    """Per-pixel features of the local PSF ``P(p) = Σ_k a_k(p) B_k``, computed from the basis.

    A bank of ``dim`` learned probe kernels W_d [C_out, C_in, s, s] gives the linear features
    ``f_d(p) = <W_d, P(p)> = Σ_k a_k(p) <W_d, B_k>``: one inner product per basis element, then
    a K-term blend per pixel (never the K·k² local PSFs themselves). Because the map is linear,
    the features depend only on the field, not on how it is decomposed: any basis of the same
    field (nodal, PCA, SVD, any order) gives the same features, and zero basis elements (K padded
    for datasets mixing fields) contribute exactly nothing. A per-pixel MLP (1×1 convolutions)
    follows. PSFs smaller than the probes are zero-padded; single-channel fields are broadcast
    to every output channel.
    """

    def __init__(self, dim: int = 32, psf_size: int = 33, channels: int = 3, psf_in_channels: int = 1,
                 hidden: int | None = None):
        super().__init__()
        self.psf_size, self.channels, self.psf_in_channels = psf_size, channels, psf_in_channels
        # Stored 4-D [dim, C_out·C_in, s, s] so the network can be moved to channels-last.
        probes = torch.randn(dim, channels * psf_in_channels, psf_size, psf_size, generator=torch.Generator().manual_seed(0))
        self.probes = nn.Parameter(probes)
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1), nn.GELU())

    def forward(self, basis_psfs: torch.Tensor, basis_coef: torch.Tensor) -> torch.Tensor:
        """[B, C_out, C_in, K, k, k] + [B, C_out, C_in, K, H, W] -> features [B, dim, H, W]."""
        b, c_out, c_in, k_basis, k = basis_psfs.shape[:5]
        if c_in != self.psf_in_channels or c_out not in (1, self.channels):
            raise DataError(f"PSF encoder built for [C_out={self.channels}, C_in={self.psf_in_channels}] PSFs, "
                            f"got [C_out={c_out}, C_in={c_in}] (set psf_in_channels for cross-talk fields)")
        if k > self.psf_size:
            raise DataError(f"PSFs of size {k} exceed the encoder's psf_size={self.psf_size}; raise psf_size")
        p = (self.psf_size - k) // 2
        probes = self.probes.unflatten(1, (self.channels, self.psf_in_channels))
        probes = probes[..., p:p + k, p:p + k] if p else probes  # = zero-padding the PSFs
        if c_out == 1:
            probes = probes.sum(1, keepdim=True)  # the one kernel stands for every channel
        dtype = probes.dtype
        inner = torch.einsum("doiyx,boikyx->boikd", probes, basis_psfs.to(dtype))  # <W_d, B_k>
        feats = torch.einsum("boikhw,boikd->bdhw", basis_coef.to(dtype), inner)
        return self.mlp(feats)


class SpatialFiLM(nn.Module):
    """Spatially varying feature-wise modulation ``x ⊙ (1 + γ(c)) + β(c)`` (SFT, Wang et al.,
    CVPR 2018; FiLM, Perez et al., AAAI 2018), with γ, β from 1×1 convolutions of the
    conditioning features average-pooled to x's resolution. Initialised to zero: a conditioned
    network starts as exactly its unconditioned twin."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(cond_dim, 2 * channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.adaptive_avg_pool2d(cond, x.shape[-2:])
        gamma, beta = self.proj(cond).chunk(2, dim=1)
        return x * (1 + gamma) + beta


def pad_conditioning(cond: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad per-pixel features right/bottom like the backbone pads the image."""
    h, w = cond.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(cond, (0, pw, 0, ph), mode="replicate") if ph or pw else cond


def load_official_backbone(model: nn.Module, state_dict, param_key: str | None, conditioning: tuple[str, ...],
                           source: str) -> None:
    """Official backbone weights into a PSF-conditioned network, strictly; the ``conditioning``
    modules keep their (identity) initialisation, so the network starts as the official model."""
    from models.archs.layers import load_strict, unwrap_state_dict

    keep = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in conditioning}
    state = model.map_official_keys(unwrap_state_dict(state_dict, param_key))
    load_strict(model, {**keep, **state}, source)
