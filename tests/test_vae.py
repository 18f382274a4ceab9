"""VAE training (models/vae_model.py), its loss units, and the AutoencoderKL side-by-side arch."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.losses import build_loss
from models.vae_model import adaptive_weight

ROOT = Path(__file__).resolve().parent.parent


# -- loss units -------------------------------------------------------------------------------------
class Posterior:
    def __init__(self, mean, logvar):
        self.mean, self.logvar = mean, logvar


def test_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    q = torch.distributions.Normal(mean.double(), (0.5 * logvar.double()).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))  # per element
    summed = build_loss({"type": "KL", "reduction": "sum"})(Posterior(mean, logvar))
    averaged = build_loss({"type": "KL", "reduction": "mean", "weight": 2.0})(Posterior(mean, logvar))
    assert math.isclose(summed.item(), ref.flatten(1).sum(1).mean().item(), rel_tol=1e-5)
    assert math.isclose(averaged.item(), 2.0 * ref.mean().item(), rel_tol=1e-5)


def test_wavelet_loss_zero_for_identical_and_official_sum():
    g = torch.Generator().manual_seed(1)
    enc = [torch.randn(2, 12, 8, 8, generator=g), torch.randn(2, 12, 4, 4, generator=g)]
    dec = list(reversed(enc))  # the decoder lists deepest first
    for red in ("mean", "sum"):
        assert build_loss({"type": "Wavelet", "reduction": red})(enc, dec).item() == 0.0
    other = [enc[1] + 1.0, enc[0] - 0.5]
    total = build_loss({"type": "Wavelet", "reduction": "sum"})(enc, other).item()
    assert math.isclose(total, (12 * 64 * 0.5 * 2 + 12 * 16 * 1.0 * 2) / 2, rel_tol=1e-6)
    mean = build_loss({"type": "Wavelet", "reduction": "mean"})(enc, other).item()
    assert math.isclose(mean, 0.5 + 1.0, rel_tol=1e-6)


def test_adaptive_weight_is_the_hand_computed_gradient_norm_ratio():
    """rec = Σ(w·a)², g = −Σ w·b for a 'last layer' w: ∂rec/∂w = 2(w·a)a, ∂g/∂w = −b."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 4, generator=g, requires_grad=True)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    rec = ((w * a) ** 2).sum()
    gl = -(w * b).sum()
    lam = adaptive_weight(rec, gl, w, eps=1e-6, max_value=1e6)
    hand = np.linalg.norm((2 * w * a * a).detach().double().numpy()) / (np.linalg.norm(b.double().numpy()) + 1e-6)
    assert math.isclose(lam.item(), hand, rel_tol=1e-6)
    assert not lam.requires_grad and lam.dtype == torch.float32
    (rec + lam * gl).backward()  # the graph is still there for the total loss
    assert w.grad is not None
    tiny = adaptive_weight(((w * a) ** 2).sum(), -(w * b).sum() * 1e-12, w, max_value=10.0)
    assert tiny.item() == 10.0  # clamped


# -- AutoencoderKL (diffusers) as a lab arch ------------------------------------------------------------
def test_autoencoder_kl_wraps_diffusers_exactly():
    diffusers = pytest.importorskip("diffusers")
    from models.archs.autoencoder_kl_arch import (
        AutoencoderKL_arch,
        AutoencoderKL_config,
    )

    cfg = AutoencoderKL_config.tiny()
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**cfg.diffusers_kwargs()).eval()
    net = AutoencoderKL_arch(cfg).eval()
    net.load_official_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mean = ref.encode(x * 2 - 1).latent_dist.mean
        assert torch.equal(net.encode(x * 2 - 1).latent_dist.mean, mean)
        assert torch.equal(net(x), (ref.decode(mean).sample + 1) / 2)
    assert net.io.scale == 2 and net.io.sample_range == (-1.0, 1.0)


# -- training through the trainer ---------------------------------------------------------------------------
def overrides(folder: Path, name: str) -> list[str]:
    return [f"name={name}", f"path.root={folder / 'runs'}", "report_to=[]", "train.num_workers=0",
            "val.log_images=0", "train.checkpoint_every=10", "train.max_steps=20"]


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory):
    from test_distributed import assert_clean, launch

    folder = tmp_path_factory.mktemp("wfvae_gan")
    config = ROOT / "checkpoints" / "wfvae_gan_toy.yml"
    one = launch("python", 1, config, *overrides(folder, "one"), log=folder / "one.log", probe=folder / "probe-one")
    assert_clean(one, "one-process run")
    return folder, config


@pytest.mark.slow
def test_gan_twenty_steps_from_disc_start_0_with_finite_adaptive_weight(gan_runs):
    from test_distributed import rank_record

    folder, _ = gan_runs
    log = (folder / "runs" / "one" / "logs" / "train.log").read_text()
    weights = [float(line.split("d_weight ")[1].split(",")[0]) for line in log.splitlines() if "d_weight " in line]
    assert len(weights) == 20 and all(math.isfinite(w) and w >= 0 for w in weights)
    assert "loss_d" in log.split("step 1: ")[1].splitlines()[0]
    assert rank_record(folder / "probe-one", 0)["model_state"] == {"critic_updates": 20, "generator_updates": 20}


@pytest.mark.slow
def test_gan_kill9_then_resume_auto_is_bitwise(gan_runs):
    from test_distributed import assert_clean, bitwise_equal, launch, weights

    folder, config = gan_runs
    step = int(np.random.default_rng([2026, 14]).integers(11, 20))
    probe = folder / "probe-killed"
    killed = launch("python", 1, config, *overrides(folder, "killed"), log=folder / "killed.log", probe=probe,
                    env={"PROBE_KILL_AT_STEP": f"{step}@0"})
    assert killed.returncode != 0, killed.tail()
    resumed = launch("python", 1, config, *overrides(folder, "killed"), "--resume", "auto",
                     log=folder / "killed-2.log", probe=probe)
    assert_clean(resumed, "resumed run")
    run, ref = folder / "runs" / "killed", folder / "runs" / "one"
    for name in ("model.safetensors", "model_1.safetensors"):  # autoencoder and critic
        assert bitwise_equal(weights(run / "checkpoints" / "checkpoint-20" / name),
                             weights(ref / "checkpoints" / "checkpoint-20" / name)), (name, step)
    assert bitwise_equal(weights(run / "last"), weights(ref / "last"))  # the exported EMA autoencoder
    assert not (run / "last" / "discriminator").exists()
