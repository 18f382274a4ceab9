"""Adversarial loss on discriminator logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.losses.base import Loss
from utils.errors import ConfigError

GAN_TYPES = ("vanilla", "lsgan", "hinge")


class GANLoss(Loss):
    """``forward(logits, target_is_real, for_discriminator=False)`` -> scalar, mean over every logit.

    * ``vanilla``: binary cross-entropy with logits against 1 (real) / 0 (fake)
      (Goodfellow et al., NeurIPS 2014; the non-saturating generator loss = target real);
    * ``lsgan``: mean squared distance to 1 / 0 (Mao et al., ICCV 2017);
    * ``hinge``: discriminator mean(relu(1 - x)) on real, mean(relu(1 + x)) on fake; generator
      -mean(x) (Lim & Ye 2017; Miyato et al., ICLR 2018), defined for ``target_is_real=True`` only.

    ``weight`` scales the generator's loss only; the discriminator's loss is returned unweighted
    (BasicSR's ``GANLoss`` convention: the weight balances the adversarial term against the
    generator's other losses and means nothing for the discriminator trained on it alone).
    Computed in float32 with autocast off.
    """

    def __init__(self, weight: float = 1.0, gan_type: str = "vanilla"):
        super().__init__(weight)
        if gan_type not in GAN_TYPES:
            from utils.registry import unknown_name_message

            raise ConfigError(unknown_name_message("gan_type", str(gan_type), GAN_TYPES))
        self.gan_type = gan_type

    def forward(self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = False) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            x = logits.float()
            if self.gan_type == "vanilla":
                target = torch.ones_like(x) if target_is_real else torch.zeros_like(x)
                loss = F.binary_cross_entropy_with_logits(x, target)
            elif self.gan_type == "lsgan":
                loss = (x - 1.0).square().mean() if target_is_real else x.square().mean()
            elif for_discriminator:
                loss = F.relu(1.0 - x).mean() if target_is_real else F.relu(1.0 + x).mean()
            else:
                if not target_is_real:
                    raise ValueError("hinge GAN loss: the generator's loss is defined for target_is_real=True only")
                loss = -x.mean()
        return loss if for_discriminator else self.weight * loss

    def critic_loss(self, logits: torch.Tensor, n_real: int) -> torch.Tensor:
        """The critic's loss on one batched forward of real then fake inputs: the mean of its loss
        on ``logits[:n_real]`` (real) and ``logits[n_real:]`` (fake)."""
        return 0.5 * (self(logits[:n_real], target_is_real=True, for_discriminator=True)
                      + self(logits[n_real:], target_is_real=False, for_discriminator=True))
