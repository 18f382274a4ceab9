"""Inpainting_model: image inpainting on the task-general core (masks: 1 = known, 0 = hole).

The generator ``net`` (InpaintNet, MAT, RefInpaintNet, any arch with inputs ``lq`` + ``mask``
and optionally ``ref`` + ``ref_valid``) returns an output whose known pixels are the input's
exactly (each arch composites with ``where(mask > 0.5, lq, pred)``); the model checks it.

Losses (``model:`` options; the ``train.losses`` list applies to the whole composited output):

* ``hole_l1``: L1 over the hole pixels only (mean over hole pixels × channels);
* ``perceptual``: LPIPS with the lab's VGG16 weights (``models/losses`` LPIPS, ``net: vgg``).
  MAT uses the L1 of pre-ReLU VGG19 conv4_4/conv5_4 features; VGG19 weights are not in the lab,
  so this is a documented deviation;
* ``gan_weight`` > 0 (needs ``networks.discriminator``, e.g. PatchGAN with ``cond_channels: 1``,
  which sees [mask − 0.5, image] as MAT's critic does): MAT's non-saturating logistic GAN
  (generator softplus(−D(fake)); critic softplus(D(fake)) + softplus(−D(real))) from
  ``disc_start`` on, on the final output and, for a two-stage generator (MAT), on the stage-1
  output too (weight ``stage1_weight``, the same critic); lazy R1 on real images
  (γ/2·‖∇D(real)‖², every ``r1_every`` critic steps, scaled by ``r1_every``; Mescheder et al.,
  ICML 2018; Karras et al., StyleGAN2, CVPR 2020), ``r1_gamma`` = 10 as MAT.

Validation scores the hole region (``evaluation_items``: each output with mask = hole); whole-
image metrics, LPIPS, FID/KID, P-IDS/U-IDS and the per-hole-ratio table come from
``scripts/compare_inpainting.py``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from models.base_model import BaseModel
from models.losses import build_loss
from utils.config import ConfigError


@dataclass(frozen=True)
class InpaintingOptions:
    """``model:`` of Inpainting_model."""

    hole_l1: float = 1.0        # L1 over the hole pixels
    perceptual: float = 0.0     # LPIPS (VGG16) weight
    lpips_net: str = "vgg"
    gan_weight: float = 0.0     # 0: no critic
    disc_start: int = 0
    stage1_weight: float = 1.0  # two-stage generators: weight of the stage-1 terms (L1 and GAN)
    r1_gamma: float = 10.0
    r1_every: int = 16

    def __post_init__(self):
        if min(self.hole_l1, self.perceptual, self.gan_weight, self.stage1_weight, self.r1_gamma) < 0:
            raise ConfigError("model: loss weights must be >= 0")
        if self.disc_start < 0 or self.r1_every < 1:
            raise ConfigError("model.disc_start must be >= 0 and model.r1_every >= 1")


def hole_l1(pred, gt, mask) -> torch.Tensor:
    """Mean |pred − gt| over the hole pixels (mask < 0.5) and channels."""
    hole = (mask < 0.5).to(pred.dtype)
    n = hole.sum() * pred.shape[1]
    return ((pred - gt).abs() * hole).sum() / n.clamp_min(1.0)


def r1_penalty(logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖∇_real Σ logits‖² (per sample)."""
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


class Inpainting_model(BaseModel):
    Options = InpaintingOptions
    export_networks = ("net",)

    def __init__(self, opt):
        super().__init__(opt)
        if "net" not in self.networks:
            raise ConfigError("Inpainting_model needs networks.net")
        keys = self.input_keys("net")
        if "mask" not in keys:
            raise ConfigError(f"Inpainting_model: networks.net must take a mask (its inputs: {keys})")
        if self.options.gan_weight > 0 and "discriminator" not in self.networks:
            raise ConfigError("Inpainting_model: model.gan_weight > 0 needs networks.discriminator")
        self.two_stage = "return_stg1" in inspect.signature(self.networks["net"].forward).parameters
        self.critic_updates = 0
        self.generator_updates = 0

    def setup_training(self) -> None:
        super().setup_training()
        self.pixel_losses = [build_loss(o) for o in self.opt.train.losses]
        o = self.options
        self.lpips = build_loss({"type": "LPIPS", "net": o.lpips_net, "weight": o.perceptual}) if o.perceptual else None
        self.gan = build_loss({"type": "GAN", "gan_type": "vanilla", "weight": 1.0})

    def ddp_kwargs(self) -> dict:
        return {"find_unused_parameters": True} if self.options.gan_weight else {}

    def generate(self, batch: dict, with_stage1: bool = False):
        inputs = self.network_inputs("net", batch)
        net = self.networks["net"] if torch.is_grad_enabled() else self.network("net")
        if self.two_stage and with_stage1:
            return net(**inputs, return_stg1=True)
        return net(**inputs), None

    def predict(self, batch: dict, tile=None) -> torch.Tensor:
        return self.run_network("net", batch, tile)

    def critic(self, image, mask):
        return self.networks["discriminator"](image=image, lq=mask - 0.5)

    def gan_on(self, step: int) -> bool:
        return self.options.gan_weight > 0 and step >= self.options.disc_start

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        o = self.options
        gt, mask = batch["gt"], batch["mask"]
        pred, stg1 = self.generate(batch, with_stage1=True)
        outputs = [(pred, 1.0)] + ([(stg1, o.stage1_weight)] if stg1 is not None else [])
        total = pred.new_zeros(())
        logs = {}
        for out, w in outputs:
            if self.pixel_losses:
                total = total + w * torch.stack([loss(out, gt) for loss in self.pixel_losses]).sum()
            if o.hole_l1:
                total = total + w * o.hole_l1 * hole_l1(out, gt, mask)
        logs["loss_hole_l1"] = hole_l1(pred.detach(), gt, mask)
        if self.lpips is not None:
            lp = self.lpips(pred, gt)
            total = total + lp
            logs["loss_lpips"] = lp.detach()
        gan = self.gan_on(step)
        if gan:
            adv = sum(w * self.gan(self.critic(out, mask), target_is_real=True) for out, w in outputs)
            total = total + o.gan_weight * adv
            logs["loss_gan_g"] = adv.detach()
        self.backward(total)
        self.step_optimizer("net")
        self.generator_updates += int(self.accelerator.sync_gradients)
        logs["loss"] = total.detach()
        if gan:
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            fakes = [out.detach() for out, _ in outputs]
            n = gt.shape[0]
            lazy = self.critic_updates % o.r1_every == 0 and o.r1_gamma > 0
            real = gt.detach().requires_grad_(lazy)
            images = torch.cat([real] + fakes)
            logits = self.critic(images, mask.repeat(len(fakes) + 1, 1, 1, 1))
            d_loss = self.gan(logits[:n], target_is_real=True, for_discriminator=True)
            for k, (_, w) in enumerate(outputs):
                d_loss = d_loss + w * self.gan(logits[n * (k + 1): n * (k + 2)], target_is_real=False,
                                               for_discriminator=True)
            if lazy:
                r1 = r1_penalty(logits[:n], real)
                d_loss = d_loss + 0.5 * o.r1_gamma * o.r1_every * r1
                logs["r1"] = r1.detach()
            self.backward(d_loss, "critic loss")
            self.step_optimizer("discriminator")
            self.critic_updates += int(self.accelerator.sync_gradients)
            logs["loss_d"] = d_loss.detach()
        return logs

    def evaluation_items(self, batch: dict, pred: torch.Tensor):
        """One item per sample, scored over its hole (mask = 1 − known)."""
        from utils.evaluation import ScoreItem, output_name, sample_keys

        hole = (batch["mask"] < 0.5).to(pred.dtype)
        return [ScoreItem(output_name(k), pred[b], batch["gt"][b], hole[b]) for b, k in
                enumerate(sample_keys(batch, len(pred)))]

    def state_dict(self) -> dict:
        return {"critic_updates": self.critic_updates, "generator_updates": self.generator_updates}

    def load_state_dict(self, state: dict) -> None:
        self.critic_updates = int(state["critic_updates"])
        self.generator_updates = int(state["generator_updates"])


__all__ = ["InpaintingOptions", "Inpainting_model", "hole_l1", "r1_penalty"]
