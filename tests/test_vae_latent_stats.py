"""scripts/compute_latent_stats.py: fitted per-channel shift/scale normalise held-out latents and
are stored in the model config (encode(x, normalize=True) uses them after a reload)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from compute_latent_stats import fit_latent_stats, store_stats

from models.archs.wfvae_arch import WFVAE_arch, WFVAE_config


def images(n, seed, size=64):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n // 4):  # i.i.d. textures with a slight random tint per image
        yield (torch.rand(4, 3, size, size, generator=g) * 0.9 + torch.rand(4, 3, 1, 1, generator=g) * 0.1)


def test_fitted_stats_normalise_held_out_latents(tmp_path):
    torch.manual_seed(0)
    cfg = WFVAE_config(latent_dim=4, base_channels=[8, 16, 16], encoder_energy_flow_size=8, decoder_energy_flow_size=8,
                       encoder_num_resblocks=1, decoder_num_resblocks=2)
    net = WFVAE_arch(cfg).eval()
    with torch.no_grad():  # a latent far from N(0, 1), so the fit has something to do
        net.encoder.conv_out.bias[:4].copy_(torch.tensor([3.0, -2.0, 0.5, 8.0]))
        net.encoder.conv_out.weight[:4].mul_(5.0)
    shift, scale = fit_latent_stats(net, images(256, seed=1), sample=True, seed=0)
    assert max(abs(s) for s in shift) > 1.0 and min(scale) < 0.8  # not already normalised
    net.save_pretrained(tmp_path)
    config = store_stats(tmp_path, shift, scale)
    assert config["shift"] == shift and config["scale"] == scale
    from transformers import AutoModel

    import models.archs  # noqa: F401

    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.shift == shift
    g = torch.Generator().manual_seed(5)
    zs = []
    with torch.no_grad():
        for x in images(256, seed=2):  # held out: other images
            zs.append(reloaded.encode(x * 2 - 1, normalize=True).latent_dist.sample(generator=g))
    z = torch.cat(zs).double()
    mean, std = z.mean((0, 2, 3)), z.std((0, 2, 3))
    assert (mean.abs() < 0.05).all(), mean
    assert ((std - 1).abs() < 0.05).all(), std
