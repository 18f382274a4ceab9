"""Time ``compute_metrics`` per metric: ``python -m utils.metrics.bench [--size 256] [--batch 8] [--device cpu]``.

Prints milliseconds per image (minimum over repeats, after one warm-up call) for random
B×3×S×S batches; run it on a quiet machine, the figures depend heavily on load.
"""
from __future__ import annotations

import argparse
import time

import torch

from utils.metrics.compute import compute_metrics, parse_metric_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--metrics", default="psnr,ssim,ssim_3d,lpips,lpips_vgg")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    x, y = torch.rand(shape, generator=g).to(args.device), torch.rand(shape, generator=g).to(args.device)
    print(f"device {args.device}, batch {args.batch}x3x{args.size}x{args.size}, torch threads {torch.get_num_threads()}")
    for name in parse_metric_names(args.metrics):
        compute_metrics(x[:1], y[:1], (name,))
        times = []
        for _ in range(args.repeats):
            if x.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            compute_metrics(x, y, (name,))
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        print(f"{name:>10}: {min(times) * 1000 / args.batch:9.2f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
