#!/usr/bin/env python
"""Training speed with DataLoader workers sized to the CPUs (utils.workers) vs a fixed count.

Trains the same config (default: the quickstart) for a few steps per variant, alternating the
variants (A B A B ...) so that load from other jobs on a shared machine hits both alike, and
prints seconds per run, steps/s, the ratio and whether PyTorch warned about the worker count.

    python scripts/bench_workers.py                     # sized vs 4 workers, 100 steps, 2 rounds
    taskset -c 0,1 python scripts/bench_workers.py --fixed 4 --steps 100 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(config: str, overrides: list[str], fixed: int | None) -> tuple[float, list[str]]:
    """Seconds of ``Trainer.fit`` and PyTorch's worker-count warnings; ``fixed``: that many workers
    whatever the CPUs (the behaviour before utils.workers)."""
    import trainer
    import utils.workers
    from utils.config import load_config

    sized = utils.workers.default_num_workers
    if fixed is not None:
        utils.workers.default_num_workers = lambda configured: fixed
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = trainer.Trainer(load_config(config, overrides))
            try:
                start = time.perf_counter()
                code = job.fit()
                seconds = time.perf_counter() - start
            finally:
                job.release()
    finally:
        utils.workers.default_num_workers = sized
    if code != 0:
        raise SystemExit(f"training exited with {code}")
    return seconds, [str(w.message) for w in caught if "worker" in str(w.message)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "checkpoints" / "quickstart.yml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fixed", type=int, default=4, help="worker count of the comparison run")
    parser.add_argument("--configured", default="4", help="train.num_workers of the sized run")
    args = parser.parse_args()

    from utils.workers import default_num_workers, usable_cpus

    configured = args.configured if args.configured == "auto" else int(args.configured)
    sized = default_num_workers(configured)
    times: dict[str, list[float]] = {"sized": [], "fixed": []}
    warned: dict[str, list[str]] = {"sized": [], "fixed": []}
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for variant in ("sized", "fixed"):
                overrides = [f"name={variant}{r}", f"path.root={root}", f"train.max_steps={args.steps}",
                             "train.val_every=0", "train.checkpoint_every=0", "datasets.val=null", "report_to=[]",
                             f"train.num_workers={configured}"]
                seconds, messages = run(args.config, overrides, args.fixed if variant == "fixed" else None)
                times[variant].append(seconds)
                warned[variant].extend(messages)
                print(f"round {r}: {variant:5s} {seconds:6.2f} s ({args.steps / seconds:.2f} steps/s)", flush=True)
    ratio = statistics.mean(times["fixed"]) / statistics.mean(times["sized"])
    print(json.dumps({"usable_cpus": usable_cpus(), "sized_workers": sized, "fixed_workers": args.fixed,
                      "steps": args.steps, "seconds": times, "speed_ratio_sized_over_fixed": round(ratio, 3),
                      "worker_warnings": {k: len(v) for k, v in warned.items()},
                      "warning_text": sorted(set(warned["fixed"] + warned["sized"]))[:1]}, indent=1))


if __name__ == "__main__":
    main()
