"""Losses by name: closed forms, an independent PSNR, LPIPS against the metric and its published
values, GAN losses against hand formulas, the open registry and its errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.losses import LOSSES, build_loss, check_loss_options, loss_class, loss_names
from models.losses.base import WeightedLoss
from utils.errors import ConfigError, RegistryError

# Pixel losses: forward(pred, target). LPIPS needs images of at least 32x32 pixels.
PIXEL_LOSSES = [n for n in loss_names() if issubclass(loss_class(n), WeightedLoss)]


def pair(shape=(2, 3, 32, 36), seed=0):
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
    for name in PIXEL_LOSSES:
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
    for name in PIXEL_LOSSES:
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
    assert set(LOSSES) == {"L1", "MSE", "Charbonnier", "PSNR", "FFT", "LPIPS", "GAN", "KL", "Wavelet"}
    assert set(PIXEL_LOSSES) == set(LOSSES) - {"GAN", "KL", "Wavelet"}  # the VAE terms take posteriors / coefficients
    with pytest.raises(RegistryError, match="unknown loss 'Weighted'"):  # base classes are not losses
        build_loss({"type": "Weighted"})
    with pytest.raises(ConfigError, match=r"unknown key loss.gan_typ for loss GAN; did you mean loss.gan_type\?"):
        check_loss_options({"type": "GAN", "gan_typ": "hinge"})
    with pytest.raises(ConfigError, match=r"unknown gan_type 'lsgna'; did you mean 'lsgan'\?"):
        build_loss({"type": "GAN", "gan_type": "lsgna"})
    with pytest.raises(ConfigError, match="unknown LPIPS network 'squeeze'"):
        build_loss({"type": "LPIPS", "net": "squeeze"})
    with pytest.raises(ConfigError, match="loss weight must be a number"):
        build_loss({"type": "GAN", "weight": "1"})


def test_a_new_loss_file_is_found_by_name(tmp_path, monkeypatch):
    """Open registry: a ``*_loss.py`` file dropped into the package is a loss type, imported lazily."""
    import sys

    import models.losses as package
    from utils.registry import Registry

    folder = tmp_path / "models" / "losses"
    folder.mkdir(parents=True)
    for name in ("base.py", "pixel_loss.py"):
        (folder / name).write_text((package.LOSSES.root / name).read_text())
    (folder / "__init__.py").write_text("")
    (tmp_path / "models" / "__init__.py").write_text("")
    (folder / "tv_loss.py").write_text(
        "from models.losses.base import WeightedLoss\n"
        "class _HelperLoss(WeightedLoss):\n    pass\n"
        "class TVLoss(WeightedLoss):\n"
        "    def compute(self, pred, target):\n"
        "        return (pred[..., 1:] - pred[..., :-1]).abs().mean()\n")
    import utils.registry as reg

    monkeypatch.setattr(reg, "PROJECT_ROOT", tmp_path)
    registry = Registry("loss", "models/losses", "**/*_loss.py", suffix="Loss", base="models.losses.base.Loss")
    assert registry.names() == ["Charbonnier", "L1", "MSE", "TV"]
    assert "models.losses.tv_loss" not in sys.modules


# -- LPIPS ---------------------------------------------------------------------------------------
# Official LPIPS v0.1 (AlexNet) on the TID2013 fixture pairs, as published by IQA-PyTorch
# (ResultsCalibra/ResultsCalibra.md, row "LPIPS(org)", 4 decimals); same values as test_metrics_lpips.
OFFICIAL_ALEX_TID = {"I03.bmp": 0.7237, "I04.bmp": 0.2572, "I08.bmp": 0.0521}


@pytest.fixture(scope="module")
def lpips_loss():
    return build_loss({"type": "LPIPS"})


def test_lpips_loss_is_the_metric_and_its_published_values(fixtures_dir, lpips_loss):
    from utils.image_io import image_to_tensor, read_image
    from utils.metrics.lpips import lpips

    folder = fixtures_dir / "metrics"
    names = sorted(OFFICIAL_ALEX_TID)
    dist = torch.stack([image_to_tensor(read_image(folder / "dist" / n)) for n in names])
    ref = torch.stack([image_to_tensor(read_image(folder / "ref" / n)) for n in names])
    official = sum(OFFICIAL_ALEX_TID.values()) / len(names)
    assert lpips_loss(dist, ref).item() == pytest.approx(official, abs=1e-4)
    for i, n in enumerate(names):
        one = lpips_loss(dist[i:i + 1], ref[i:i + 1]).item()
        assert one == pytest.approx(OFFICIAL_ALEX_TID[n], abs=1e-4)
        assert one == pytest.approx(lpips(dist[i:i + 1], ref[i:i + 1]).item(), abs=1e-6)
    pred, target = pair(seed=7)
    vgg = build_loss({"type": "LPIPS", "net": "vgg", "weight": 0.5})
    assert vgg(pred, target).item() == pytest.approx(0.5 * lpips(pred, target, net="vgg").mean().item(), rel=1e-5)


def test_lpips_loss_gradient_reaches_the_prediction_and_nothing_else(lpips_loss):
    pred, target = pair(shape=(1, 3, 40, 48), seed=9)
    pred.requires_grad_(True)
    loss = lpips_loss(pred, target)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # the gradient is the loss's derivative: central difference along a random direction (a step
    # small enough to cross no ReLU/max-pool kink: 1e-3 does, the difference is then 17% off)
    direction = torch.randn(pred.shape, generator=torch.Generator().manual_seed(1))
    h = 1e-4
    with torch.no_grad():
        slope = (lpips_loss(pred + h * direction, target) - lpips_loss(pred - h * direction, target)) / (2 * h)
    assert slope.item() == pytest.approx((pred.grad * direction).sum().item(), rel=0.01)
    # frozen: no parameter of the loss, none with a gradient, nothing for an optimiser or a checkpoint
    assert list(lpips_loss.parameters()) == [] and lpips_loss.state_dict() == {}
    assert all(not p.requires_grad and p.grad is None for p in lpips_loss.lpips.parameters())
    holder = torch.nn.ModuleDict({"net": torch.nn.Conv2d(3, 3, 1), "loss": lpips_loss})
    assert sum(p.numel() for p in holder.parameters()) == 12
    holder.train()
    assert not lpips_loss.lpips.training


# -- GAN ------------------------------------------------------------------------------------------
def softplus(x):
    return np.log1p(np.exp(x))


GAN_FORMULAS = {
    # (gan_type, target_is_real, for_discriminator) -> loss of logits x, before the weight
    ("vanilla", True, True): lambda x: np.mean(softplus(-x)),   # -log sigmoid(x)
    ("vanilla", False, True): lambda x: np.mean(softplus(x)),   # -log(1 - sigmoid(x))
    ("vanilla", True, False): lambda x: np.mean(softplus(-x)),
    ("lsgan", True, True): lambda x: np.mean((x - 1) ** 2),
    ("lsgan", False, True): lambda x: np.mean(x ** 2),
    ("lsgan", True, False): lambda x: np.mean((x - 1) ** 2),
    ("hinge", True, True): lambda x: np.mean(np.maximum(0, 1 - x)),
    ("hinge", False, True): lambda x: np.mean(np.maximum(0, 1 + x)),
    ("hinge", True, False): lambda x: -np.mean(x),
}


@pytest.mark.parametrize("case", sorted(GAN_FORMULAS))
def test_gan_loss_against_hand_formulas(case):
    gan_type, real, for_d = case
    logits = torch.randn(2, 1, 6, 7, generator=torch.Generator().manual_seed(4)) * 3
    x = logits.double().numpy()
    loss = build_loss({"type": "GAN", "gan_type": gan_type, "weight": 0.1})
    got = loss(logits, real, for_discriminator=for_d)
    weight = 1.0 if for_d else 0.1  # the weight scales the generator's loss only
    assert got.item() == pytest.approx(weight * GAN_FORMULAS[case](x), rel=1e-5)
    assert got.ndim == 0 and got.dtype == torch.float32
    half = loss(logits.bfloat16().requires_grad_(True), real, for_discriminator=for_d)
    assert half.dtype == torch.float32


def test_gan_loss_gradients_and_hinge_generator_misuse():
    x = torch.tensor([[-2.0, 0.5, 3.0]], requires_grad=True)
    build_loss({"type": "GAN", "gan_type": "hinge"})(x, True, for_discriminator=True).backward()
    # d/dx mean(relu(1 - x)) = -1/n where x < 1, else 0
    torch.testing.assert_close(x.grad, torch.tensor([[-1 / 3, -1 / 3, 0.0]]))
    assert build_loss({"type": "GAN"}).gan_type == "vanilla"
    with pytest.raises(ValueError, match="target_is_real=True only"):
        build_loss({"type": "GAN", "gan_type": "hinge"})(x, False)


def test_losses_take_their_weights_and_keywords_from_the_config(tmp_path):
    from tests.test_config import MINIMAL, load_text

    cfg = load_text(tmp_path, MINIMAL + "train: {max_steps: 10, losses: [{type: L1, weight: 0.5}, "
                                        "{type: LPIPS, weight: 0.1, net: vgg}]}\n", ["train.losses.1.weight=0.2"])
    losses = [build_loss(o) for o in cfg.train.losses]
    assert [loss.weight for loss in losses] == [0.5, 0.2] and losses[1].network == "vgg"
    with pytest.raises(ConfigError, match=r"unknown key train.losses\[0\].nett for loss LPIPS; did you mean train.losses\[0\].net\?"):
        load_text(tmp_path, MINIMAL + "train: {max_steps: 10, losses: [{type: LPIPS, nett: vgg}]}\n")
