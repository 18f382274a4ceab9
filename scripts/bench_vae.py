#!/usr/bin/env python
"""Measure trained image autoencoders side by side (docs/vae.md, BENCHMARKS.md).

``quality``: for each ``NAME=FOLDER`` (a ``save_pretrained`` folder, e.g. a run's ``last/``):
reconstruction from the posterior mean of the held-out built-in images (astronaut, camera,
coffee at 256², as the demo's validation set): PSNR / SSIM / LPIPS (the lab's metrics, 8-bit
levels), parameters, encode and decode time per image (interleaved repeats, medians), and for
networks with a tiling path PSNR(tiled, whole) with ``--tile``/``--overlap``. The baseline that
stores as many numbers as an f8c12 latent: area ↓4 + bicubic ↑4.

``memory``: peak resident memory (VmHWM, in a fresh subprocess per case) of decoding a
``--size``² image from a random latent with a network built from ``--config`` (a YAML
``networks.net`` mapping or a ``save_pretrained`` folder), whole vs tiled.

    python scripts/bench_vae.py quality WFVAE=runs/wfvae_demo/last AutoencoderKL=runs/vae_kl_demo/last
    python scripts/bench_vae.py memory --folder runs/wfvae_demo/last --size 2048 --tile 256 --overlap 32
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAMES = ["astronaut", "camera", "coffee"]
DELTA_PSF = {"psf_type": "gaussian", "grid_shape": [2, 2], "psf_size": 3, "sensor_res": [256, 256],
             "sigma_px": 0.05, "sigma_corner_radial_px": 0.05, "sigma_corner_tangential_px": 0.05}


def held_out():
    import torch

    from dataset.synthetic_dataset import SyntheticBlurDataset

    ds = SyntheticBlurDataset(names=NAMES, psf=DELTA_PSF, linear_light=False, noise={"kind": "none"}, phase="val")
    return torch.stack([ds[i]["gt"] for i in range(len(ds))]), [ds[i]["key"] for i in range(len(ds))]


def load(folder):
    from transformers import AutoModel

    import models.archs  # noqa: F401 (registers the lab's networks)

    return AutoModel.from_pretrained(folder).eval()


def baseline(gt):
    import torch.nn.functional as F

    from dataset.transforms import downscale

    small = downscale(gt, 4, "area")
    return F.interpolate(small, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)


def quality(args) -> dict:
    import torch

    from models.archs.arch_util import to_sample_range
    from utils.metrics.compute import compute_metrics
    from utils.tiling import tiled_predict

    torch.set_grad_enabled(False)
    gt, keys = held_out()
    metrics = ["psnr", "ssim", "lpips"]
    report = {"images": keys, "methods": {}}

    def score(pred):
        m = compute_metrics(pred, gt, metrics)
        out = {k: [round(float(v), 4) for v in m[k]] for k in metrics}
        out.update({f"mean_{k}": round(float(m[k].mean()), 4) for k in metrics})
        return out

    report["methods"]["area-4 + bicubic-4"] = score(baseline(gt)) | {"numbers_stored_per_image": 64 * 64 * 3}
    nets = {name: load(folder) for name, folder in (item.split("=", 1) for item in args.runs)}
    times = {name: {"encode": [], "decode": []} for name in nets}
    latents = {}
    for _ in range(args.repeats):  # interleaved, so load changes hit every network alike
        for name, net in nets.items():
            x = to_sample_range(gt[:1], net.io)
            t0 = time.perf_counter()
            z = net.encode(x).latent_dist.mean
            t1 = time.perf_counter()
            net.decode(z)
            t2 = time.perf_counter()
            times[name]["encode"].append(t1 - t0)
            times[name]["decode"].append(t2 - t1)
            latents[name] = tuple(z.shape[1:])
    for name, net in nets.items():
        pred = net(gt).clamp(0, 1)
        entry = score(pred)
        entry["parameters"] = sum(p.numel() for p in net.parameters())
        entry["latent_shape"] = list(latents[name])
        entry["numbers_stored_per_image"] = int(torch.tensor(latents[name]).prod())
        entry["encode_ms_256"] = round(1000 * statistics.median(times[name]["encode"]), 1)
        entry["decode_ms_256"] = round(1000 * statistics.median(times[name]["decode"]), 1)
        tiled = tiled_predict(net, {"lq": gt}, net.io, args.tile, args.overlap).clamp(0, 1)
        entry[f"psnr_tiled_vs_whole_tile{args.tile}_overlap{args.overlap}"] = [
            round(float(v), 2) for v in compute_metrics(tiled, pred, ["psnr"], round_to_uint8=False)["psnr"]]
        report["methods"][name] = entry
    return report


def _memory_child(args) -> None:
    import torch

    from scripts.restore import peak_rss_mb

    torch.set_grad_enabled(False)
    net = load(args.folder)
    f = net.io.scale
    z = torch.randn(1, net.latent_channels if hasattr(net, "latent_channels") else net.config.latent_channels,
                    args.size // f, args.size // f, generator=torch.Generator().manual_seed(0))
    before = peak_rss_mb()
    if args.tile:
        net.enable_tiling(tile_size=args.tile, overlap=args.overlap)
    t0 = time.perf_counter()
    out = net.decode(z).sample
    print(json.dumps({"tile": args.tile, "overlap": args.overlap, "size": args.size, "shape": list(out.shape),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "peak_rss_mb_before_decode": round(before, 1),
                      "seconds": round(time.perf_counter() - t0, 2)}))


def memory(args) -> dict:
    results = []
    for tile in (0, args.tile):
        cmd = [sys.executable, __file__, "_memory_child", "--folder", str(args.folder), "--size", str(args.size),
               "--tile", str(tile), "--overlap", str(args.overlap)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"decode": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("runs", nargs="+", metavar="NAME=FOLDER")
    q.add_argument("--repeats", type=int, default=5)
    q.add_argument("--tile", type=int, default=128)
    q.add_argument("--overlap", type=int, default=32)
    for name in ("memory", "_memory_child"):
        m = sub.add_parser(name)
        m.add_argument("--folder", required=True)
        m.add_argument("--size", type=int, default=2048)
        m.add_argument("--tile", type=int, default=256)
        m.add_argument("--overlap", type=int, default=32)
    args = p.parse_args(argv)
    if args.cmd == "_memory_child":
        _memory_child(args)
        return 0
    print(json.dumps(quality(args) if args.cmd == "quality" else memory(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
