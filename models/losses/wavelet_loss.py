"""WF-VAE's wavelet (energy-flow) regulariser."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from models.losses.base import Loss
from utils.errors import ConfigError


class WaveletLoss(Loss):
    """``forward(encoder_coeffs, decoder_coeffs)``: L1 between the Haar coefficients the encoder
    computes at each level (shallow to deep) and the ones the decoder's energy-flow paths
    produce (deep to shallow, hence paired in reverse) (Li et al., WF-VAE, CVPR 2025, eq. 6;
    L1 works better than L2 there, weight 0.1).

    ``reduction``: ``mean`` (default) = the mean absolute difference of each level, summed over
    levels; ``sum`` = the official ``compute_wavelet_reg_loss``: the absolute differences summed
    over every level and element, divided by the batch size. 0 for identical coefficients.
    """

    def __init__(self, weight: float = 1.0, reduction: str = "mean"):
        super().__init__(weight)
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"Wavelet loss: reduction must be mean or sum, got {reduction!r}")
        self.reduction = reduction

    def forward(self, encoder_coeffs: Sequence[torch.Tensor], decoder_coeffs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(encoder_coeffs) != len(decoder_coeffs) or not encoder_coeffs:
            raise ValueError(f"Wavelet loss: {len(encoder_coeffs)} encoder levels vs {len(decoder_coeffs)} decoder levels")
        total = None
        with torch.autocast(encoder_coeffs[0].device.type, enabled=False):
            for enc, dec in zip(encoder_coeffs, reversed(list(decoder_coeffs))):
                if enc.shape != dec.shape:
                    raise ValueError(f"Wavelet loss: coefficients {tuple(enc.shape)} and {tuple(dec.shape)} differ")
                d = (enc.float() - dec.float()).abs()
                term = d.sum() / enc.shape[0] if self.reduction == "sum" else d.mean()
                total = term if total is None else total + term
        return self.weight * total
