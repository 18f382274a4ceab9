#!/usr/bin/env python
"""Training speed with DataLoader workers sized to the CPUs (utils.workers) vs a fixed count.

Trains the same config (default: the quickstart) for a few steps per variant, alternating the
variants (A B B A A B ...) so that load from other jobs on a shared machine hits both alike, and
prints the seconds of each run, the steady time per step, the ratios and whether PyTorch warned
about the worker count. The dataset is built once and shared by all runs.

    python scripts/bench_workers.py                     # sized vs 4 workers, 100 steps, 2 rounds
    taskset -c 0,1 python scripts/bench_workers.py --fixed 4 --steps 100 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


_datasets: dict = {}  # (config, split) -> dataset: built once, shared by every run (the same samples)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def run(config: str, overrides: list[str], fixed: int | None) -> tuple[float, float, float, list[str]]:
    """Seconds of ``Trainer.fit``, steady seconds per step (from the third step on), CPU seconds of
    the run (workers included) and PyTorch's worker-count warnings; ``fixed``: that many workers
    whatever the CPUs (the behaviour before utils.workers)."""
    import trainer
    import utils.workers
    from utils.config import load_config

    sized, build, next_batches = utils.workers.default_num_workers, trainer.Trainer._dataset, trainer.Trainer._next_batches
    stamps: list[float] = []

    def cached_dataset(self, split):
        if (config, split) not in _datasets:
            _datasets[config, split] = build(self, split)
        return _datasets[config, split]

    def timed_next_batches(self, stream):
        batches = next_batches(self, stream)
        stamps.append(time.perf_counter())
        return batches

    if fixed is not None:
        utils.workers.default_num_workers = lambda configured, log=None: fixed
    trainer.Trainer._dataset, trainer.Trainer._next_batches = cached_dataset, timed_next_batches
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = trainer.Trainer(load_config(config, overrides))
            try:
                start, cpu_start = time.perf_counter(), cpu_seconds()
                code = job.fit()
                seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
            finally:
                job.release()
    finally:
        utils.workers.default_num_workers = sized
        trainer.Trainer._dataset, trainer.Trainer._next_batches = build, next_batches
    if code != 0:
        raise SystemExit(f"training exited with {code}")
    steady = (stamps[-1] - stamps[2]) / (len(stamps) - 3) if len(stamps) > 3 else float("nan")
    return seconds, steady, cpu, [str(w.message) for w in caught if "worker" in str(w.message)]


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
    steady: dict[str, list[float]] = {"sized": [], "fixed": []}
    cpu: dict[str, list[float]] = {"sized": [], "fixed": []}
    warned: dict[str, list[str]] = {"sized": [], "fixed": []}
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for variant in (("sized", "fixed") if r % 2 == 0 else ("fixed", "sized")):  # A B B A A B ...
                overrides = [f"name={variant}{r}", f"path.root={root}", f"train.max_steps={args.steps}",
                             "train.val_every=0", "train.checkpoint_every=0", "datasets.val=null", "report_to=[]",
                             f"train.num_workers={configured}"]
                seconds, per_step, cpu_s, messages = run(args.config, overrides, args.fixed if variant == "fixed" else None)
                times[variant].append(round(seconds, 2))
                steady[variant].append(round(per_step, 4))
                cpu[variant].append(round(cpu_s, 2))
                warned[variant].extend(messages)
                print(f"round {r}: {variant:5s} {seconds:7.2f} s in fit, {per_step:.3f} s/step from step 3, {cpu_s:.1f} CPU s, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(json.dumps({
        "usable_cpus": usable_cpus(), "sized_workers": sized, "fixed_workers": args.fixed, "steps": args.steps,
        "fit_seconds": times, "steady_seconds_per_step": steady, "cpu_seconds": cpu,
        "cpu_ratio_fixed_over_sized": round(sum(cpu["fixed"]) / sum(cpu["sized"]), 3),
        "fit_time_ratio_fixed_over_sized": round(sum(times["fixed"]) / sum(times["sized"]), 3),
        "per_round_ratio_fixed_over_sized": [round(f / s, 3) for f, s in zip(times["fixed"], times["sized"])],
        "median_round_ratio_fixed_over_sized": round(statistics.median(f / s for f, s in zip(times["fixed"], times["sized"])), 3),
        "median_steady_ratio_fixed_over_sized": round(statistics.median(steady["fixed"]) / statistics.median(steady["sized"]), 3),
        "worker_warnings": {k: len(v) for k, v in warned.items()},
        "warning_text": sorted(set(warned["fixed"] + warned["sized"]))[:1]}, indent=1))

if __name__ == "__main__":
    main()
