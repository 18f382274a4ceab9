"""KL divergence of a VAE posterior to the standard normal prior."""
from __future__ import annotations

import torch

from models.losses.base import Loss
from utils.errors import ConfigError

REDUCTIONS = ("mean", "sum")


class KLLoss(Loss):
    """``forward(posterior)`` with ``posterior`` a diagonal Gaussian (``.mean``, ``.logvar``):
    KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) (Kingma & Welling, ICLR 2014, appendix B).

    ``reduction``: ``mean`` (default) = the sum over a sample's latent elements divided by their
    number, averaged over the batch (per latent element, independent of the image size);
    ``sum`` = summed over the latent elements of each sample and averaged over the batch, the
    official WF-VAE / LDM convention (used with weight 1e-6 there). Computed in float32.
    """

    def __init__(self, weight: float = 1.0, reduction: str = "mean"):
        super().__init__(weight)
        if reduction not in REDUCTIONS:
            raise ConfigError(f"KL loss: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, posterior) -> torch.Tensor:
        with torch.autocast(posterior.mean.device.type, enabled=False):
            mean, logvar = posterior.mean.float(), posterior.logvar.float()
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1)
            per_sample = kl.sum(1) if self.reduction == "sum" else kl.mean(1)
            return self.weight * per_sample.mean()
