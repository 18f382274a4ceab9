"""VAE_model: trains an image autoencoder (``networks.net``: any arch of kind ``autoencoder``,
e.g. ``WFVAE`` or ``AutoencoderKL``) with the WF-VAE / latent-diffusion recipe (Rombach et al.,
"High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, the
``LPIPSWithDiscriminator`` loss; Li et al., WF-VAE, CVPR 2025, its wavelet term):

    L_G = L_rec + kl_weight·KL + wavelet_weight·L_wav + λ·disc_weight·L_GAN      (from disc_start)
    L_rec = l1_weight·|x − x̂| + perceptual_weight·LPIPS(x, x̂)
    λ = ‖∇_w L_rec‖ / (‖∇_w L_GAN‖ + adaptive_eps), clamped to [0, adaptive_max], w = the
        decoder's last layer (``net.get_last_layer()``), computed in float32 with
        ``torch.autograd.grad`` and detached
    L_GAN = −mean D(x̂) (hinge generator loss); L_D = ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))

x is the batch's ``gt`` (in the network's ``io.sample_range``, [−1, 1] for WF-VAE: the official
loss units), x̂ the decoding of a posterior sample (``sample_posterior``), L_wav compares the
encoder's and decoder's energy-flow coefficients (only for networks that return them).

Loss reduction (``reduction``): ``mean`` (default) = per-pixel means (|x − x̂| and LPIPS
averaged over pixels, KL per latent element, L_wav per coefficient), so the values do not
depend on the image size; ``sum`` = the official one: summed over C·H·W (the LPIPS value of an
image counted once per pixel, as its broadcast in the official code), over latent elements for KL
and over coefficients for L_wav, then divided by the batch size, with which the official weights
(kl 1e-6, wavelet 0.1, disc 0.5) and its loss values (~1e5 for 256² images) are reproduced.

Schedule: before ``disc_start`` (optimiser steps) the critic is not run; from then on each step
updates the autoencoder, then the critic (``networks.discriminator``, a PatchGAN with
``cond_channels: 0``) on (x, x̂). The official code alternates (G on even steps, D on odd ones);
doing both per step keeps one optimiser step = one ``step`` for both (like Pix2Pix_model).
``disc_lr_ratio`` multiplies the critic's learning rate relative to the autoencoder's (the fork
uses 4); without it ``train.optimizers.discriminator`` applies as given. Without a
``discriminator`` network the GAN is off. Only ``net`` is exported (with its EMA when
``train.ema_decay`` is set). ``train.losses`` is not read: the terms above are the model's options.
Posterior samples come from a generator seeded by (seed, step, process), so a resumed run draws
the same noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from models.archs.arch_util import to_sample_range
from models.base_model import BaseModel
from models.losses import build_loss
from utils.errors import ConfigError


@dataclass(frozen=True)
class VAEOptions:
    """``model:`` of VAE_model (see the module docstring)."""

    reduction: Literal["mean", "sum"] = "mean"
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    lpips_net: Literal["alex", "vgg"] = "vgg"
    kl_weight: float = 1.0e-6
    wavelet_weight: float = 0.1
    disc_weight: float = 0.5
    disc_start: int = 0
    disc_lr_ratio: float | None = None
    adaptive_eps: float = 1.0e-6
    adaptive_max: float = 1.0e6
    sample_posterior: bool = True

    def __post_init__(self):
        for name in ("l1_weight", "perceptual_weight", "kl_weight", "wavelet_weight", "disc_weight", "disc_start"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0")
        if self.disc_lr_ratio is not None and self.disc_lr_ratio <= 0:
            raise ConfigError("model.disc_lr_ratio must be > 0")
        if self.adaptive_eps <= 0 or self.adaptive_max <= 0:
            raise ConfigError("model.adaptive_eps and model.adaptive_max must be > 0")


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    eps: float = 1e-6, max_value: float = 1e6) -> torch.Tensor:
    """λ = ‖∂rec_loss/∂last_layer‖ / (‖∂g_loss/∂last_layer‖ + eps), clamped to [0, max_value],
    in float32, detached (the graph is kept for the backward of the total loss)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    ratio = torch.linalg.vector_norm(rec_grad.float()) / (torch.linalg.vector_norm(g_grad.float()) + eps)
    return ratio.clamp(0.0, max_value).detach()


class VAE_model(BaseModel):
    Options = VAEOptions
    export_networks = ("net",)

    def __init__(self, opt):
        super().__init__(opt)
        if "net" not in self.networks:
            raise ConfigError("VAE_model needs networks.net (an autoencoder)")
        io = self.network("net").io
        if io.kind != "autoencoder":
            raise ConfigError(f"VAE_model: networks.net must be an autoencoder, got kind {io.kind!r}")
        self.gan_enabled = "discriminator" in self.networks
        self.critic_updates = 0
        self.generator_updates = 0

    # -- data: the autoencoder reconstructs gt --------------------------------------------------------
    def batch_keys(self) -> tuple[str, ...]:
        return ("gt",)

    def network_inputs(self, name: str, batch: dict) -> dict[str, torch.Tensor]:
        if name == "net":
            return {"lq": batch["gt"]}
        return super().network_inputs(name, batch)

    # -- training -------------------------------------------------------------------------------------
    def setup_training(self) -> None:
        super().setup_training()
        o = self.options
        self.perceptual = build_loss({"type": "LPIPS", "net": o.lpips_net}) if o.perceptual_weight > 0 else None
        self.kl = build_loss({"type": "KL", "reduction": o.reduction})
        self.wavelet = build_loss({"type": "Wavelet", "reduction": o.reduction})
        self.gan = build_loss({"type": "GAN", "gan_type": "hinge"})
        if self.gan_enabled and o.disc_lr_ratio is not None:
            self._scale_lr("discriminator", o.disc_lr_ratio * self.opt.train.optimizer_for("net").lr
                           / self.opt.train.optimizer_for("discriminator").lr)

    def _scale_lr(self, name: str, factor: float) -> None:
        """Multiply optimiser ``name``'s learning rates (and its schedule's base) by ``factor``."""
        optimizer, scheduler = self.optimizers[name], self.schedulers[name]
        for group in optimizer.param_groups:
            group["initial_lr"] *= factor
            group["lr"] *= factor
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]

    def phase(self, step: int) -> str:
        return "gan" if self.gan_enabled and step >= self.options.disc_start else "pretrain"

    def reconstruction_loss(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """l1·|x − x̂| + perceptual·LPIPS in the sample range, reduced as ``reduction`` says."""
        o = self.options
        io = self.network("net").io
        x32, r32 = x.float(), rec.float()
        l1 = (x32 - r32).abs().mean()
        loss = o.l1_weight * l1
        if self.perceptual is not None:
            lo, hi = io.sample_range
            lp = self.perceptual((r32 - lo) / (hi - lo), (x32 - lo) / (hi - lo))  # LPIPS takes [0, 1]
            loss = loss + o.perceptual_weight * lp
        if o.reduction == "sum":
            loss = loss * x[0].numel()  # per-pixel means -> sums over C·H·W per sample (÷ B)
        return loss

    def _generator(self, step: int) -> torch.Generator:
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        return torch.Generator().manual_seed((int(self.opt.seed) * 1_000_003 + step) * 1009 + rank)

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        o = self.options
        net = self.network("net")
        x = to_sample_range(batch["gt"], net.io)
        out = self.networks["net"](lq=batch["gt"], sample_posterior=self._generator(step) if o.sample_posterior else False,
                                   return_dict=True)
        rec = out.sample
        rec_loss = self.reconstruction_loss(x, rec)
        kl = self.kl(out.latent_dist)
        total = rec_loss + o.kl_weight * kl
        logs = {"loss_rec": rec_loss.detach(), "loss_kl": kl.detach()}
        if out.encoder_coeffs is not None and out.decoder_coeffs is not None and o.wavelet_weight > 0:
            wl = self.wavelet(out.encoder_coeffs, out.decoder_coeffs)
            total = total + o.wavelet_weight * wl
            logs["loss_wavelet"] = wl.detach()
        gan_on = self.phase(step) == "gan"
        if gan_on:
            g_loss = self.gan(self.networks["discriminator"](image=rec), target_is_real=True)
            if self.networks["net"].training:
                d_weight = adaptive_weight(rec_loss, g_loss, net.get_last_layer(), o.adaptive_eps, o.adaptive_max)
            else:
                d_weight = torch.zeros((), device=rec.device)
            total = total + d_weight * o.disc_weight * g_loss
            logs["loss_gan_g"] = g_loss.detach()
            logs["d_weight"] = d_weight
        self.backward(total)
        self.step_optimizer("net")
        self.generator_updates += int(self.accelerator.sync_gradients)
        logs["loss"] = total.detach()
        if gan_on:
            self.optimizers["discriminator"].zero_grad(set_to_none=True)  # the generator's term left grads here
            n = x.shape[0]
            logits = self.networks["discriminator"](image=torch.cat([x, rec.detach()]))
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
