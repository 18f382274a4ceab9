"""Losses by name: closed forms, an independent PSNR, the registry's errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.losses import LOSSES, build_loss, check_loss_options, loss_names
from utils.errors import ConfigError, RegistryError


def pair(shape=(2, 3, 8, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_closed_forms_on_a_constant_difference():
    target = torch.zeros(1, 3, 4, 4)
    pred = torch.full_like(target, 0.25)
    assert build_loss({"type": "L1"})(pred, target).item() == pytest.approx(0.25)
    assert build_loss({"type": "MSE"})(pred, target).item() == pytest.approx(0.0625)
    # sqrt(d^2 + eps^2)
    assert build_loss({"type": "Charbonnier", "eps": 0.1})(pred, target).item() == pytest.approx(math.sqrt(0.0625 + 0.01))
    assert build_loss({"type": "Charbonnier"})(target, target).item() == pytest.approx(1e-3)
    # -PSNR: 10 log10(MSE + 1e-8)
    assert build_loss({"type": "PSNR"})(pred, target).item() == pytest.approx(10 * math.log10(0.0625 + 1e-8), rel=1e-6)


def test_weights_scale_every_loss():
    pred, target = pair()
    for name in loss_names():
        one = build_loss({"type": name})(pred, target)
        three = build_loss({"type": name, "weight": 3.0})(pred, target)
        assert three.item() == pytest.approx(3 * one.item(), rel=1e-6), name


def test_psnr_loss_is_minus_the_metric():
    """Against utils.metrics (a separate implementation), without 8-bit rounding."""
    from utils.metrics import psnr

    pred, target = pair(seed=3)
    per_image = psnr(pred, target, crop_border=0, test_y_channel=False, round_to_uint8=False)
    loss = build_loss({"type": "PSNR"})(pred, target)
    assert loss.item() == pytest.approx(-per_image.mean().item(), abs=1e-4)


def test_fft_loss_against_numpy():
    pred, target = pair(shape=(2, 3, 6, 9), seed=5)
    diff = np.fft.rfft2(pred.double().numpy()) - np.fft.rfft2(target.double().numpy())
    expected = np.mean(np.abs(np.stack([diff.real, diff.imag], axis=-1)))
    assert build_loss({"type": "FFT"})(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_losses_are_float32_differentiable_and_unclamped():
    pred, target = pair()
    pred = (pred * 1.5 - 0.25).requires_grad_(True)  # outside [0, 1]: never clamped inside a loss
    for name in loss_names():
        pred.grad = None
        loss = build_loss({"type": name})(pred.bfloat16(), target.bfloat16())
        assert loss.dtype == torch.float32 and loss.ndim == 0
        loss.backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0, name
    outside = torch.full((1, 3, 4, 4), 1.5)
    assert build_loss({"type": "L1"})(outside, torch.ones_like(outside)).item() == pytest.approx(0.5)


def test_registry_errors():
    with pytest.raises(RegistryError, match=r"unknown loss 'Charbonier'; did you mean 'Charbonnier'\?"):
        build_loss({"type": "Charbonier"})
    with pytest.raises(ConfigError, match=r"unknown key loss.epss for loss Charbonnier; did you mean loss.eps\?"):
        check_loss_options({"type": "Charbonnier", "epss": 1.0})
    with pytest.raises(ConfigError, match="loss.type is required"):
        check_loss_options({"weight": 1.0})
    with pytest.raises(ConfigError, match="eps must be > 0"):
        build_loss({"type": "Charbonnier", "eps": 0})
    with pytest.raises(ValueError, match="differ"):
        build_loss({"type": "L1"})(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    assert set(LOSSES) == {"L1", "MSE", "Charbonnier", "PSNR", "FFT"}
