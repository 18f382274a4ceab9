"""How many DataLoader worker processes fit the CPUs a training process is given.

A process may run on the CPUs of its affinity mask (``taskset``, cgroup cpusets, Slurm's task
binding), which can be far fewer than the machine has (``os.cpu_count()``). In a Slurm job
``SLURM_CPUS_PER_TASK`` is the allocation even where Slurm does not bind the task to it. The
processes a launcher (``torchrun``/``accelerate launch``, ``LOCAL_WORLD_SIZE``) starts on a
node share those CPUs. Each training process keeps one CPU for itself; its workers take the
rest, never more than configured (``train.num_workers``; ``auto``: as many as fit).

PyTorch warns when a DataLoader has more workers than the process's affinity mask holds
CPUs (``torch.utils.data.DataLoader._check_worker_number_rationality``); a count from
``default_num_workers`` never exceeds ``usable_cpus() - 1``, so it never warns.
"""
from __future__ import annotations

import logging
import os

AUTO = "auto"


def _env_int(name: str) -> int | None:
    """A positive integer environment variable, else None (unset or malformed)."""
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, at most ``SLURM_CPUS_PER_TASK`` when set,
    shared evenly among the ``LOCAL_WORLD_SIZE`` processes of a launcher on this node; >= 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        cpus = os.cpu_count() or 1
    slurm = _env_int("SLURM_CPUS_PER_TASK")
    if slurm is not None:
        cpus = min(cpus, slurm)
    return max(1, cpus // (_env_int("LOCAL_WORLD_SIZE") or 1))


def default_num_workers(configured: int | str | None, log: logging.Logger | None = None) -> int:
    """DataLoader workers for ``train.num_workers = configured``: ``min(configured,
    usable_cpus() - 1)``, or ``usable_cpus() - 1`` for ``"auto"``/None; >= 0 (0: load in the
    training process). A count lowered below ``configured`` is said on ``log`` when given."""
    cpus = usable_cpus()
    if configured is None or configured == AUTO:
        return cpus - 1
    if not isinstance(configured, int) or isinstance(configured, bool) or configured < 0:
        raise ValueError(f"num_workers must be an integer >= 0 or {AUTO!r}, got {configured!r}")
    chosen = min(configured, cpus - 1)
    if log is not None and chosen < configured:
        log.info(f"DataLoader workers: {chosen} instead of train.num_workers={configured} "
                 f"({cpus} CPU(s) for this process, one of them for the process itself)")
    return chosen
