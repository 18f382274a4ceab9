#!/usr/bin/env python
"""Forward time per frame of the published video SR networks on CPU: LR 64×64 → HR 256×256.

    python scripts/bench_vsr.py [--frames 3] [--repeats 1] [--threads 1]

IART (REDS-N16 network, 13.4 M parameters) and BasicVSR++ (default, 7.3 M) with random weights
(the time does not depend on the values), ``eval()`` under ``torch.inference_mode``, a clip of
``--frames`` frames; per-frame time = clip time / frames (both networks run SpyNet on T-1 pairs
in each direction and four propagation branches over every frame). Reports wall-clock and
process CPU seconds (on a shared machine the CPU time is the steadier figure), best of
``--repeats`` after one warm-up clip of 2 frames.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def build(name: str):
    if name == "IART":
        from models.archs.iart_arch import IART_arch, IART_config

        return IART_arch(IART_config.official_reds())
    from models.archs.basicvsrpp_arch import BasicVSRPlusPlus_arch, BasicVSRPlusPlus_config

    return BasicVSRPlusPlus_arch(BasicVSRPlusPlus_config())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", default="BasicVSRPlusPlus,IART")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), clip 1×{args.frames}×3×64×64")
    print("| network | params | wall s/frame | CPU s/frame |")
    print("|---|---|---|---|")
    for name in args.archs.split(","):
        net = build(name).eval()
        params = sum(q.numel() for q in net.parameters())
        x = torch.rand(1, args.frames, 3, 64, 64)
        with torch.inference_mode():
            net(x[:, :2])  # warm-up
            best = None
            for _ in range(args.repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                y = net(x)
                w, c = time.perf_counter() - w0, time.process_time() - c0
                best = (w, c) if best is None or w < best[0] else best
        assert y.shape == (1, args.frames, 3, 256, 256)
        print(f"| {name} | {params:,} | {best[0] / args.frames:.2f} | {best[1] / args.frames:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
