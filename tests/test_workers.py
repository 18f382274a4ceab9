"""DataLoader worker sizing (utils.workers) under a restricted CPU affinity, checked against
PyTorch's own worker-count warning (``DataLoader._check_worker_number_rationality``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_affinity = pytest.mark.skipif(not CPUS, reason="no CPU affinity API on this platform")

PROBE = textwrap.dedent("""
    import json, sys, warnings
    sys.path.insert(0, sys.argv[1])
    import torch
    from utils.workers import default_num_workers, usable_cpus

    def warnings_of(workers):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            list(torch.utils.data.DataLoader(list(range(8)), batch_size=4, num_workers=workers))
        return [str(w.message) for w in caught if "worker" in str(w.message)]

    sized = default_num_workers(4)
    print(json.dumps({"usable": usable_cpus(), "sized": sized, "auto": default_num_workers("auto"),
                      "sized_warnings": warnings_of(sized), "four_warnings": warnings_of(4)}))
""")


def probe(cpus: set[int], **env: str) -> dict:
    """The probe in a child process whose affinity mask is ``cpus`` (set before it starts)."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE")}
    child_env.update(env, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], env=child_env, capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@needs_affinity
def test_one_cpu_means_no_workers_and_no_warning():
    result = probe({CPUS[0]})
    assert result["usable"] == 1 and result["sized"] == 0 and result["auto"] == 0
    assert result["sized_warnings"] == []
    # PyTorch itself counts one CPU: four workers draw its warning.
    assert result["four_warnings"] and "suggested max number of worker in current system is 1" in result["four_warnings"][0]


@needs_affinity
@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs")
def test_two_cpus_give_one_worker_without_warning():
    result = probe(set(CPUS[:2]))
    assert result["usable"] == 2 and result["sized"] == 1 and result["auto"] == 1
    assert result["sized_warnings"] == []
    assert "suggested max number of worker in current system is 2" in result["four_warnings"][0]


@needs_affinity
@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs")
@pytest.mark.parametrize("env", [{"SLURM_CPUS_PER_TASK": "1"}, {"LOCAL_WORLD_SIZE": "2"}])
def test_slurm_allocation_and_launcher_processes_share_the_cpus(env):
    # Two CPUs in the mask, but Slurm gave the task one / two processes of a launcher share them.
    result = probe(set(CPUS[:2]), **env)
    assert result["usable"] == 1 and result["sized"] == 0 and result["sized_warnings"] == []


def test_configured_count_caps_what_fits(monkeypatch):
    import utils.workers as workers

    monkeypatch.setattr(workers, "usable_cpus", lambda: 16)
    assert [workers.default_num_workers(n) for n in (0, 1, 4, 15, 32)] == [0, 1, 4, 15, 15]
    assert workers.default_num_workers("auto") == workers.default_num_workers(None) == 15
    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)
    assert workers.default_num_workers(4) == workers.default_num_workers("auto") == 0
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0 or 'auto'"):
        workers.default_num_workers(-1)


def test_malformed_slurm_and_launcher_variables_are_ignored(monkeypatch):
    from utils.workers import usable_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2(x3)")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")
    expected = len(os.sched_getaffinity(0)) if CPUS else (os.cpu_count() or 1)
    assert usable_cpus() == expected


def test_num_workers_config_accepts_auto_and_rejects_negative_counts(tmp_path):
    from utils.config import load_config
    from utils.errors import ConfigError

    path = tmp_path / "exp.yml"
    path.write_text("name: run\nnetwork: {type: UNet, width: 4}\ntrain: {max_steps: 1}\n")
    assert load_config(path, ["train.num_workers=auto"]).train.num_workers == "auto"
    assert load_config(path, ["train.num_workers=3"]).train.num_workers == 3
    with pytest.raises(ConfigError, match="train.num_workers must be >= 0 or auto, got -1"):
        load_config(path, ["train.num_workers=-1"])
    with pytest.raises(ConfigError, match="train.num_workers must be an integer or one of 'auto'"):
        load_config(path, ["train.num_workers=many"])


@needs_affinity
@pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 CPUs")
def test_trainer_on_two_cpus_sizes_its_workers_without_warning(tmp_path):
    from paired_data import write_pairs

    data = write_pairs(tmp_path / "pairs")
    config = tmp_path / "exp.yml"
    config.write_text(textwrap.dedent(f"""
        name: run
        network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
        datasets:
          train: {{type: PairedFolderDataset, root: {data / 'train'}, phase: train, crop_size: 32}}
          val: {{type: PairedFolderDataset, root: {data / 'val'}, phase: val}}
        path: {{root: {tmp_path / 'runs'}}}
        train: {{max_steps: 2, batch_size: 4, val_every: 0, checkpoint_every: 0, num_workers: 4}}
        report_to: []
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-W", "always", str(ROOT / "trainer.py"), "-opt", str(config)],
                          env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.sched_setaffinity(0, set(CPUS[:2])))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "suggested max number of worker" not in done.stderr
    log = (tmp_path / "runs" / "run" / "logs" / "train.log").read_text()
    assert log.count("DataLoader workers: 1 instead of train.num_workers=4 (2 CPU(s) for this process") == 1, log
