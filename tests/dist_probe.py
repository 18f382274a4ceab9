#!/usr/bin/env python
"""trainer.py's own entry point with test probes, for launching under torchrun / accelerate launch.

    torchrun --standalone --nproc_per_node 2 tests/dist_probe.py -opt EXP.yml [trainer options]

The trainer runs unchanged (same argument parsing, same shutdown, same exit codes); the probes
only watch it, steered by environment variables:

* ``PROBE_DIR``: at the end of training/testing every process writes ``rank{r}.safetensors``
  (its own copy of the exported networks' weights, ``net.*``, and EMA averages, ``ema.net.*``)
  and ``rank{r}.json`` (rank, world size, a draw from its global RNG right after setup, and
  the per-image scores every evaluation returned on that process).
* ``PROBE_KILL_AT_STEP=s[@r]``: process r (default: every process) kills itself with SIGKILL
  when it starts optimiser step s + 1, i.e. after s steps and before anything of step s + 1
  (with ``PROBE_DIR``, ``killed-{rank}.json`` records when).
* ``PROBE_KILL_IN_SAVE=s[@r]``: process r kills itself with SIGKILL while checkpoint-s is being
  written: after Accelerate has written its state into the temporary folder, before the
  folder is completed and renamed.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import trainer as T  # noqa: E402


def _target(variable: str) -> tuple[int, int | None] | None:
    value = os.environ.get(variable)
    if not value:
        return None
    step, _, rank = value.partition("@")
    return int(step), (int(rank) if rank else None)


def _hits(target, step: int, rank: int) -> bool:
    return target is not None and target[0] == step and target[1] in (None, rank)


def _kill_self() -> None:
    if os.environ.get("PROBE_DIR"):  # when it happened, for the test to time the others' exit
        folder = Path(os.environ["PROBE_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"killed-{os.environ.get('RANK', '0')}.json").write_text(json.dumps({"time": time.time()}))
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


_init, _fit, _test, _evaluate = T.Trainer.__init__, T.Trainer.fit, T.Trainer.test, T.Trainer.evaluate


def __init__(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    state = torch.get_rng_state()  # peek at the global RNG without moving it
    draw = torch.rand(2).tolist()
    torch.set_rng_state(state)
    self.probe = {"rank": self.accelerator.process_index, "world": self.accelerator.num_processes,
                  "rng_after_setup": draw, "evaluations": []}
    rank = self.accelerator.process_index
    kill_step, kill_save = _target("PROBE_KILL_AT_STEP"), _target("PROBE_KILL_IN_SAVE")
    if kill_step is not None:
        training_step = self.model.training_step

        def probed_training_step(batch, step):
            if _hits(kill_step, self.step, rank):
                _kill_self()
            return training_step(batch, step)

        self.model.training_step = probed_training_step
    if kill_save is not None:
        save_state = self.accelerator.save_state

        def probed_save_state(*a, **k):
            out = save_state(*a, **k)
            if _hits(kill_save, self.step, rank):
                _kill_self()
            return out

        self.accelerator.save_state = probed_save_state


def evaluate(self, *args, **kwargs):
    result = _evaluate(self, *args, **kwargs)
    self.probe["evaluations"].append({"step": self.step, "per_image": result.per_image})
    return result


def _dump(trainer) -> None:
    folder = os.environ.get("PROBE_DIR")
    if not folder:
        return
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rank = trainer.probe["rank"]
    tensors = {}
    for name in trainer.model.networks:  # every network (a critic too), keyed by its name
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous()
                        for k, v in trainer.model.network(name).state_dict().items()})
    trainer.probe["model_state"] = trainer.model.state_dict()
    for name, ema in trainer.emas.items():
        tensors.update({f"ema.{name}.{k}": v.detach().cpu().contiguous() for k, v in ema.shadow.items()})
    save_file(tensors, str(folder / f"rank{rank}.safetensors"))
    (folder / f"rank{rank}.json").write_text(json.dumps(trainer.probe, indent=1))


def fit(self):
    code = _fit(self)
    _dump(self)
    return code


def test(self):
    mean = _test(self)
    _dump(self)
    return mean


T.Trainer.__init__, T.Trainer.fit, T.Trainer.test, T.Trainer.evaluate = __init__, fit, test, evaluate

if __name__ == "__main__":
    T.run_and_exit()
