"""Pix2Pix_model: conditional GAN restoration (Isola et al., "Image-to-Image Translation with
Conditional Adversarial Networks", CVPR 2017): a generator ``net`` trained with the pixel
losses of ``train.losses`` plus an adversarial term from a conditional critic
``discriminator`` that scores (lq, image) pairs patch by patch.

Schedule in optimiser steps: before ``model.disc_start`` the generator trains on the pixel
losses alone and the critic is not run; from ``disc_start`` on, each step updates the
generator (pixel + ``gan_weight`` × adversarial) and then the critic on (lq, gt) vs
(lq, generator output). Each network has its own optimiser (``train.optimizers.<name>``:
e.g. a critic lr of 4× or ¼× the generator's). Only ``net`` is exported, with its EMA when
``train.ema_decay`` is set; the model's own counters (critic updates, phase) are checkpointed.

The critic scores real and fake in one batched forward (one forward per backward keeps DDP's
reducer simple); gradients that the generator's adversarial term leaves in the critic are
cleared before the critic's own backward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from models.base_model import BaseModel
from models.losses import build_loss
from utils.config import ConfigError


@dataclass(frozen=True)
class Pix2PixOptions:
    """``model:`` of Pix2Pix_model."""

    disc_start: int = 0          # optimiser step from which the critic trains and the GAN term is on
    gan_type: Literal["vanilla", "lsgan", "hinge"] = "vanilla"
    gan_weight: float = 0.01     # the paper's λ = 100 on L1 is gan_weight = 1/100 relative to L1

    def __post_init__(self):
        if self.disc_start < 0 or self.gan_weight < 0:
            raise ConfigError("model.disc_start and model.gan_weight must be >= 0")


class Pix2Pix_model(BaseModel):
    Options = Pix2PixOptions
    export_networks = ("net",)

    def __init__(self, opt):
        super().__init__(opt)
        missing = [n for n in ("net", "discriminator") if n not in self.networks]
        if missing:
            raise ConfigError(f"Pix2Pix_model needs networks.net and networks.discriminator; missing {missing}")
        self.critic_updates = 0
        self.generator_updates = 0

    def setup_training(self) -> None:
        super().setup_training()
        self.pixel_losses = [build_loss(o) for o in self.opt.train.losses]
        o = self.options
        self.gan = build_loss({"type": "GAN", "gan_type": o.gan_type, "weight": 1.0})

    def phase(self, step: int) -> str:
        return "gan" if step >= self.options.disc_start else "pretrain"

    def critic(self, image: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        return self.networks["discriminator"](image=image, lq=lq)

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        lq, gt = batch["lq"], batch["gt"]
        pred = self.run_network("net", batch)
        pixel = torch.stack([loss(pred, gt) for loss in self.pixel_losses]).sum()
        logs = {"loss_pixel": pixel.detach()}
        gan_on = self.phase(step) == "gan"
        if gan_on:
            adversarial = self.gan(self.critic(pred, lq), target_is_real=True)
            total = pixel + self.options.gan_weight * adversarial
            logs["loss_gan_g"] = adversarial.detach()
        else:
            total = pixel
        self.backward(total)
        self.step_optimizer("net")
        self.generator_updates += int(self.accelerator.sync_gradients)
        logs["loss"] = total.detach()
        if gan_on:
            self.optimizers["discriminator"].zero_grad(set_to_none=True)  # the generator's term left grads here
            n = gt.shape[0]
            logits = self.critic(torch.cat([gt, pred.detach()]), torch.cat([lq, lq]))
            d_loss = self.gan.critic_loss(logits, n)
            self.backward(d_loss, "critic loss")
            self.step_optimizer("discriminator")
            self.critic_updates += int(self.accelerator.sync_gradients)
            logs["loss_d"] = d_loss.detach()
        return logs

    def state_dict(self) -> dict:
        return {"critic_updates": self.critic_updates, "generator_updates": self.generator_updates}

    def load_state_dict(self, state: dict) -> None:
        self.critic_updates = int(state["critic_updates"])
        self.generator_updates = int(state["generator_updates"])
