"""Stand-in for trainer.py with the same process contract, for testing the Slurm job scripts.

    fake_trainer.py -opt RUN.json [--resume auto|PATH] [-test]

Like the trainer: runs under `accelerate launch` (torch.distributed, gloo) or as one process; a
global batch is split over the ranks and reassembled with all_gather, so the weights do not depend on
the number of processes; checkpoints are written to a temporary name and renamed when complete; on
SIGTERM/SIGUSR1 all ranks agree at the next step boundary, write a checkpoint and exit with 75;
`--resume auto` continues from the newest complete checkpoint (or starts fresh); `-test` scores
the final weights on a 'test set' split over the ranks and writes DIR/results/metrics.json.

RUN.json: {"run_dir": DIR, "total_steps": int, "step_time": seconds, "checkpoint_every": int,
           "batch_size": int, "dim": int}
Writes DIR/progress (last step), DIR/launches.jsonl (one line per start and per stop, rank 0),
DIR/final.json (weights as float64 hex strings, exact) and DIR/checkpoints/checkpoint-{step}/.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

EXIT_REQUEUE = 75
_stop_requested = False


def _request_stop(signum, frame):
    global _stop_requested
    _stop_requested = True


def sample_update(weights: torch.Tensor, step: int, sample: int) -> torch.Tensor:
    """A deterministic, nonlinear per-sample 'gradient' (float64)."""
    phase = torch.arange(weights.numel(), dtype=torch.float64) * 0.37 + step * 0.11 + sample * 0.53
    return torch.sin(weights * 1.7 + phase) * 0.05


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    steps = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return run_dir / "checkpoints" / f"checkpoint-{max(steps)}" if steps else None


def save_checkpoint(run_dir: Path, step: int, weights: torch.Tensor, rank: int, world: int) -> None:
    final = run_dir / "checkpoints" / f"checkpoint-{step}"
    tmp = run_dir / "checkpoints" / f"tmp-checkpoint-{step}"
    done = final.exists()  # a periodic checkpoint of this very step
    if rank == 0 and not done:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "state.json").write_text(json.dumps({"step": step, "weights": [w.hex() for w in weights.tolist()]}))
    if world > 1:
        dist.barrier()  # every rank's share written before the rename
    if rank == 0 and not done:
        os.replace(tmp, final)
    if world > 1:
        dist.barrier()


def log_event(run_dir: Path, **event) -> None:
    with open(run_dir / "launches.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")


def evaluate(run_dir: Path, rank: int, world: int, num_items: int = 10) -> int:
    """Score the final weights on items split over the ranks; the metric does not depend on world."""
    weights = torch.tensor([float.fromhex(h) for h in json.loads((run_dir / "final.json").read_text())["weights"]],
                           dtype=torch.float64)
    scores = torch.zeros(num_items, dtype=torch.float64)
    for item in range(rank, num_items, world):
        scores[item] = torch.cos(weights * (item + 1)).sum()
    if world > 1:
        dist.all_reduce(scores)  # each item is non-zero on exactly one rank
    if rank == 0:
        results = run_dir / "results"
        results.mkdir(exist_ok=True)
        write_atomic(results / "metrics.json", json.dumps({"score": scores.mean().item().hex(), "world_size": world}))
    if world > 1:
        dist.destroy_process_group()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-opt", required=True)
    parser.add_argument("--resume", default=None)
    parser.add_argument("-test", action="store_true")
    args = parser.parse_args()
    cfg = json.loads(Path(args.opt).read_text())
    run_dir = Path(cfg["run_dir"])

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGUSR1, _request_stop)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0

    weights = torch.linspace(-1.0, 1.0, cfg["dim"], dtype=torch.float64)
    step = 0
    ckpt = latest_checkpoint(run_dir) if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if ckpt is not None:
        state = json.loads((ckpt / "state.json").read_text())
        step = state["step"]
        weights = torch.tensor([float.fromhex(h) for h in state["weights"]], dtype=torch.float64)
    node = os.environ.get("SLURMD_NODENAME", "local")
    nodes = [None] * world
    if world > 1:
        dist.all_gather_object(nodes, node)
    else:
        nodes = [node]
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_event(run_dir, event="start", step=step, world_size=world, nodes=nodes,
                  job=os.environ.get("SLURM_JOB_ID"), restart=int(os.environ.get("SLURM_RESTART_COUNT", "0")))

    if args.test:
        return evaluate(run_dir, rank, world)

    batch = cfg["batch_size"]
    while step < cfg["total_steps"]:
        flag = torch.tensor([1.0 if _stop_requested else 0.0])
        if world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        if flag.item() > 0:
            save_checkpoint(run_dir, step, weights, rank, world)
            if rank == 0:
                log_event(run_dir, event="stop", step=step)
            if world > 1:
                dist.destroy_process_group()
            return EXIT_REQUEUE
        mine = [sample_update(weights, step, j) for j in range(rank, batch, world)]
        if world > 1:
            per_rank = -(-batch // world)
            local = torch.zeros(per_rank, weights.numel(), dtype=torch.float64)
            for i, u in enumerate(mine):
                local[i] = u
            gathered = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(gathered, local)
            updates = [gathered[j % world][j // world] for j in range(batch)]
        else:
            updates = mine
        total = torch.zeros_like(weights)
        for u in updates:  # fixed summation order: identical for any number of ranks
            total += u
        weights = weights - total / batch
        step += 1
        time.sleep(cfg["step_time"])
        if rank == 0:
            write_atomic(run_dir / "progress", str(step))
        if step % cfg["checkpoint_every"] == 0 and step < cfg["total_steps"]:
            save_checkpoint(run_dir, step, weights, rank, world)

    if rank == 0:
        write_atomic(run_dir / "final.json", json.dumps({"step": step, "weights": [w.hex() for w in weights.tolist()]}))
        log_event(run_dir, event="finish", step=step)
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
