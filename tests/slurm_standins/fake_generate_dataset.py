"""Stand-in for data_gen/3.generate_dataset_synthetic.py's sharding CLI, for testing the job array.

    fake_generate_dataset.py --out DIR --num_samples N [--seed S]                       # one process
    fake_generate_dataset.py --out DIR --num_samples N [--seed S] --task_index i --num_tasks n
    fake_generate_dataset.py --out DIR --merge

Like step 3: sample j depends only on (seed, j), so any sharding gives the same dataset; shard i
holds samples i, i+n, i+2n, ... and is written to a temporary name then renamed; --merge checks
that shards 0..n-1 are all there and writes DIR/data.json, the same file a one-process run writes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
from pathlib import Path


def render_sample(seed: int, index: int) -> dict:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
    return {"key": f"{index:06d}", "gt": digest[:16], "lq": digest[16:32]}


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--num_samples", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task_index", type=int)
    parser.add_argument("--num_tasks", type=int)
    parser.add_argument("--merge", action="store_true")
    args = parser.parse_args()

    if args.merge:
        shard_files = sorted((args.out / "shards").glob("shard-*.json"))
        if not shard_files:
            print(f"error: no shards in {args.out / 'shards'}", file=sys.stderr)
            return 2
        shards = [json.loads(p.read_text()) for p in shard_files]
        n = shards[0]["num_tasks"]
        if sorted(s["task_index"] for s in shards) != list(range(n)):
            print(f"error: incomplete shards: {[p.name for p in shard_files]}", file=sys.stderr)
            return 2
        samples = sorted((x for s in shards for x in s["samples"]), key=lambda x: x["key"])
        write_json_atomic(args.out / "data.json", {"seed": shards[0]["seed"], "samples": samples})
        return 0

    indices = range(args.num_samples)
    if args.num_tasks is not None:
        indices = indices[args.task_index :: args.num_tasks]
    samples = [render_sample(args.seed, j) for j in indices]
    if args.num_tasks is None:
        write_json_atomic(args.out / "data.json", {"seed": args.seed, "samples": samples})
    else:
        name = f"shard-{args.task_index:05d}-of-{args.num_tasks:05d}.json"
        write_json_atomic(args.out / "shards" / name, {
            "task_index": args.task_index, "num_tasks": args.num_tasks, "seed": args.seed,
            "samples": samples, "host": socket.gethostname(), "job": os.environ.get("SLURM_JOB_ID"),
            "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
