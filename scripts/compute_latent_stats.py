#!/usr/bin/env python
"""Fit per-channel latent statistics of a trained autoencoder and store them in its config.

Latent diffusion wants latents of zero mean and unit variance per channel. WF-VAE's official
configs copy Stable Diffusion's 0.18215 (and shift 0) instead of measuring them; this script
encodes a dataset, takes posterior samples (the latents a diffusion model is trained on; ``--mode``
for the posterior means) and writes, per channel c,

    shift_c = mean(z_c),   scale_c = 1 / std(z_c)          (z_dm = (z − shift)·scale)

into the model folder's ``config.json`` (WFVAE: ``shift``/``scale``; AutoencoderKL: diffusers'
``latents_mean``/``latents_std``, its convention z_dm = (z − mean)·scaling_factor / std, with
``scaling_factor`` set to 1), so ``encode(x, normalize=True)`` (WFVAE) returns normalised latents.
Statistics are accumulated in float64 over every latent pixel of every image.

    python scripts/compute_latent_stats.py runs/wfvae_demo/last --images builtin \\
        --exclude astronaut camera coffee --size 256 --crops 8
    python scripts/compute_latent_stats.py FOLDER --images path/to/images --out FOLDER_WITH_STATS
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fit_latent_stats(net, batches, sample: bool = True, seed: int = 0) -> tuple[list[float], list[float]]:
    """``(shift, scale)`` per latent channel over ``batches`` (iterable of B×C×H×W images in [0, 1])."""
    import torch

    from models.archs.arch_util import to_sample_range

    g = torch.Generator().manual_seed(seed)
    total = sq = None
    count = 0
    with torch.no_grad():
        for x in batches:
            dist = net.encode(to_sample_range(x, net.io)).latent_dist
            z = (dist.sample(generator=g) if sample else dist.mean).double()
            s, q = z.sum((0, 2, 3)), z.square().sum((0, 2, 3))
            total, sq = (s, q) if total is None else (total + s, sq + q)
            count += z.shape[0] * z.shape[2] * z.shape[3]
    if not count:
        raise ValueError("compute_latent_stats: no images")
    mean = total / count
    std = (sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return [float(v) for v in mean], [float(v) for v in 1.0 / std]


def store_stats(folder: Path, shift: list[float], scale: list[float]) -> dict:
    """Write the statistics into ``folder/config.json`` in the network's own convention."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    if "latents_mean" in config or config.get("model_type", "").endswith("autoencoder_kl"):
        config["latents_mean"] = shift
        config["latents_std"] = [1.0 / s for s in scale]
        config["scaling_factor"] = 1.0
    else:
        config["shift"], config["scale"] = shift, scale
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def image_batches(images: str, exclude, size: int, crops: int, seed: int, batch: int = 4):
    """Each source image fitted to ``size``² (centre crop + resize), plus ``crops`` random
    ``size``² crops at its own resolution when it is larger (more content per image)."""
    import numpy as np
    import torch

    from dataset.sources import fit_to_size, list_sources, load_source

    rng = np.random.default_rng(seed)
    pending = []
    for name, path in list_sources(images, None, exclude):
        img = load_source(name, path)
        views = [fit_to_size(img, (size, size))]
        h, w = img.shape[:2]
        for _ in range(crops if h >= size and w >= size else 0):
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            views.append(img[y:y + size, x:x + size])
        for v in views:
            pending.append(torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))).float())
            if len(pending) == batch:
                yield torch.stack(pending)
                pending = []
    if pending:
        yield torch.stack(pending)


def check_normalised(net, images: str, names, size: int, seed: int) -> dict:
    """Per-channel mean and std of the normalised latents (posterior samples, z_dm) of ``names``
    (each fitted to ``size``²): what a diffusion model trained on them would see."""
    import numpy as np
    import torch

    from dataset.sources import fit_to_size, list_sources, load_source
    from models.archs.arch_util import to_sample_range

    g = torch.Generator().manual_seed(seed + 1)
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(fit_to_size(load_source(n, p), (size, size)).transpose(2, 0, 1)))
                     for n, p in list_sources(images, list(names))]).float()
    z = net.encode(to_sample_range(x, net.io)).latent_dist.sample(generator=g)
    z = net.normalize_latents(z) if hasattr(net, "normalize_latents") else (
        (z - torch.tensor(net.config.latents_mean).view(1, -1, 1, 1)) / torch.tensor(net.config.latents_std).view(1, -1, 1, 1))
    z = z.double()
    return {"images": list(names), "mean": [round(float(v), 4) for v in z.mean((0, 2, 3))],
            "std": [round(float(v), 4) for v in z.std((0, 2, 3))]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Fit per-channel latent shift/scale and store them in the model config")
    p.add_argument("folder", help="save_pretrained folder of the autoencoder (e.g. a run's last/)")
    p.add_argument("--images", default="builtin", help="'builtin' (skimage.data) or a folder of images")
    p.add_argument("--exclude", nargs="*", default=["astronaut", "camera", "coffee"], help="images left out")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--crops", type=int, default=8, help="random size² crops per image besides the fitted view")
    p.add_argument("--mode", action="store_true", help="posterior means instead of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write a copy of the folder with the statistics here (default: in place)")
    p.add_argument("--check", nargs="*", default=[], metavar="NAME",
                   help="held-out images (of --images) whose normalised latents to report per channel")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModel

    import models.archs  # noqa: F401 (registers the lab's networks)

    torch.set_grad_enabled(False)
    folder = Path(args.folder)
    if args.out:
        shutil.copytree(folder, args.out, dirs_exist_ok=True)
        folder = Path(args.out)
    net = AutoModel.from_pretrained(folder).eval()
    shift, scale = fit_latent_stats(net, image_batches(args.images, args.exclude, args.size, args.crops, args.seed),
                                    sample=not args.mode, seed=args.seed)
    store_stats(folder, shift, scale)
    report = {"folder": str(folder), "shift": shift, "scale": scale}
    if args.check:
        report["held_out"] = check_normalised(AutoModel.from_pretrained(folder).eval(), args.images, args.check,
                                              args.size, args.seed)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
