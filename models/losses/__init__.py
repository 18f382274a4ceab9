"""Losses by name: ``train.losses: [{type: L1, weight: 1.0}, {type: LPIPS, weight: 0.1}]``.

An open registry like the networks: a loss ``X`` is the class ``XLoss`` in a file
``models/losses/*_loss.py`` (found by ``utils.registry.LOSSES`` from the syntax tree; its module
is imported only when ``X`` is built). Its constructor keywords are its YAML keys; ``weight``,
common to all, comes from the config and multiplies the returned scalar. Shared base classes
live in ``models/losses/base.py`` (outside the file pattern, so never a loss name).

Losses are computed in float32 (also under mixed precision) and never clamp their inputs
(DESIGN.md). Built in:

* pixel losses ``forward(pred, target)``: ``L1``, ``MSE``, ``Charbonnier``, ``PSNR``, ``FFT``,
  ``LPIPS`` (frozen published network, inputs in [0, 1]);
* ``GAN`` ``forward(logits, target_is_real, for_discriminator=False)`` (vanilla | lsgan | hinge);
* VAE terms: ``KL`` ``forward(posterior)``, ``Wavelet`` ``forward(encoder_coeffs, decoder_coeffs)``.
"""
from __future__ import annotations

from collections.abc import Mapping

from models.losses.base import Loss
from utils.errors import ConfigError
from utils.registry import LOSSES, check_keywords, keyword_names

__all__ = ["LOSSES", "build_loss", "check_loss_options", "loss_class", "loss_names"]


def loss_names() -> list[str]:
    """Every registered loss type, sorted."""
    return LOSSES.names()


def loss_class(name: str) -> type[Loss]:
    """The class of loss type ``name`` (RegistryError with the closest name if unknown)."""
    return LOSSES.get(name)


def check_loss_options(opt: Mapping, prefix: str = "loss") -> None:
    """ConfigError for a missing ``type`` or a keyword the loss does not take."""
    if "type" not in opt:
        raise ConfigError(f"{prefix}.type is required (one of: {', '.join(loss_names())})")
    check_keywords(opt, keyword_names(loss_class(opt["type"]).__init__), prefix, f"loss {opt['type']}")


def build_loss(opt: Mapping) -> Loss:
    """``{"type": "Charbonnier", "weight": 1.0, "eps": 1e-3}`` -> a loss module. ``opt`` is not modified."""
    opt = dict(opt)
    check_loss_options(opt)
    return loss_class(opt.pop("type"))(**opt)
