"""The job scripts' logic without a cluster: launch commands and the requeue decision.

Slurm's commands are replaced by recording stubs on PATH; the end-to-end behaviour on a real
cluster is in tests/test_slurm.py.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLURM_DIR = ROOT / "scripts" / "slurm"
SCRIPTS = sorted(SLURM_DIR.glob("*.sbatch")) + sorted(SLURM_DIR.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script: Path):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def stub_bin(tmp_path: Path) -> Path:
    """`scontrol` and `srun` stand-ins: scontrol records its arguments; srun runs its command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/scontrol.calls\n')
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def bash(snippet: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "OMP_", "MASTER_", "NPROC"))}
    clean["PATH"] = f"{stub_bin(tmp_path)}:{clean['PATH']}"
    script = f"source {shlex.quote(str(SLURM_DIR / 'common.sh'))}\nPYTHON=python\n{snippet}"
    return subprocess.run(["bash", "-c", script], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def launch_command(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], str]:
    result = bash('rl_build_launch trainer.py -opt x.yml\nprintf "%s\\n" "${RL_CMD[@]}"\necho "OMP=$OMP_NUM_THREADS"',
                  tmp_path, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return lines[:-1], lines[-1]


def test_launch_two_gpu_nodes(tmp_path: Path):
    cmd, omp = launch_command(tmp_path, {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4",
                                         "SLURM_CPUS_PER_TASK": "32", "MASTER_ADDR": "gpu17"})
    assert cmd[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--cpus-per-task=32"]
    # one launcher per node; the node's rank is expanded by the shell inside each srun task
    assert cmd[6:8] == ["bash", "-c"] and '--machine_rank "$SLURM_NODEID"' in cmd[8]
    launcher = cmd[10:]
    assert launcher[0] == "python"
    opts = dict(zip(launcher[2::2], launcher[3::2]))
    assert launcher[1] == "--multi_gpu"
    assert (opts["--num_processes"], opts["--num_machines"]) == ("8", "2")          # 4 GPUs x 2 nodes
    assert (opts["--main_process_ip"], opts["--main_process_port"]) == ("gpu17", str(20000 + 4242 % 20000))
    assert launcher[-3:] == ["trainer.py", "-opt", "x.yml"]
    assert omp == "OMP=8"                                                           # 32 CPUs / 4 processes


def test_launch_cpu_processes_on_one_node(tmp_path: Path):
    cmd, omp = launch_command(tmp_path, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1", "NPROC_PER_NODE": "2",
                                         "SLURM_CPUS_PER_TASK": "4", "MASTER_ADDR": "127.0.0.1",
                                         "ACCELERATE_ARGS": "--mixed_precision bf16"})
    launcher = cmd[cmd.index("python"):]
    assert "--multi_gpu" in launcher  # the torchrun path: N real processes (gloo on CPU), not --cpu
    assert launcher[launcher.index("--num_processes") + 1] == "2"
    assert launcher[launcher.index("--mixed_precision") + 1] == "bf16"
    assert omp == "OMP=2"


def test_launch_one_process_is_plain_python(tmp_path: Path):
    cmd, _ = launch_command(tmp_path, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"})
    assert cmd[cmd.index("python"):] == ["python", "trainer.py", "-opt", "x.yml"]  # keeps the trainer's exit code


def test_launch_outside_slurm_runs_locally(tmp_path: Path):
    cmd, _ = launch_command(tmp_path, {"NPROC_PER_NODE": "3"})
    assert cmd[:3] == ["python", "-m", "accelerate.commands.launch"] and "srun" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "3" and cmd[cmd.index("--machine_rank") + 1] == "0"


def test_bad_nproc_is_one_line(tmp_path: Path):
    result = bash("rl_build_launch trainer.py", tmp_path, {"NPROC_PER_NODE": "two"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: NPROC_PER_NODE must be a positive integer")


# The requeue decision: (what the job command does, the signal the batch shell gets) -> outcome.
# `signal` is sent to the batch shell while the command runs; the command's exit code follows.
@pytest.mark.parametrize("rc, signal, restarts, requeued, script_rc", [
    (0, None, 0, False, 0),        # finished
    (1, None, 0, False, 1),        # crashed: fail the job, no requeue loop
    (75, None, 0, True, 0),        # the trainer stopped on a signal it got directly
    (1, "USR1", 0, True, 0),       # time-limit warning; accelerate launch reports the workers' 75 as 1
    (75, "USR1", 0, True, 0),
    (0, "USR1", 0, False, 0),      # finished anyway
    (75, "TERM", 0, False, 75),    # Slurm is ending the job (scancel/preemption): Slurm decides
    (75, "USR1", 50, False, 75),   # RESTORELAB_MAX_RESTARTS reached
])
def test_requeue_decision(tmp_path: Path, rc, signal, restarts, requeued, script_rc):
    # the job command notes the signal and exits with `rc` a moment later, like a trainer finishing its step
    command = f"""RL_CMD=(bash -c 'trap "" USR1 TERM; sleep {1.0 if signal else 0}; exit {rc}')"""
    send = f"(sleep 0.3; kill -{signal} $$) &" if signal else ""
    result = bash(f"{command}\n{send}\nrl_run_requeueable\necho \"rc=$?\"", tmp_path,
                  {"SLURM_JOB_ID": "99", "SLURM_RESTART_COUNT": str(restarts)})
    assert result.stdout.strip().splitlines()[-1] == f"rc={script_rc}", result.stderr
    calls = (tmp_path / "scontrol.calls").read_text().splitlines() if (tmp_path / "scontrol.calls").exists() else []
    assert calls == (["requeue 99"] if requeued else []), result.stderr


def test_warning_is_passed_to_the_job_command(tmp_path: Path):
    """SIGUSR1 to the batch shell reaches the running command (srun forwards it to every process)."""
    marker = tmp_path / "got_usr1"
    command = f"""RL_CMD=(bash -c 'trap "touch {marker}; exit 75" USR1; for i in $(seq 100); do sleep 0.1; done; exit 1')"""
    result = bash(f"{command}\n(sleep 0.5; kill -USR1 $$) &\nrl_run_requeueable\necho \"rc=$?\"", tmp_path,
                  {"SLURM_JOB_ID": "99"})
    assert marker.exists(), result.stderr
    assert result.stdout.strip().splitlines()[-1] == "rc=0"
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "99"]


def test_step3_array_task_joins_the_folder_another_task_created_meanwhile(tmp_path: Path, monkeypatch):
    """Job array tasks start together. While task 1 checks the source images, task 0 creates the
    manifest and starts its shards; task 1 must join that folder (same arguments), not reject it
    as "not empty". An unrelated folder is still rejected. (Step 3's own race; tests/test_slurm.py
    runs the real array on Slurm.)"""
    import cv2
    import skimage.data

    import data_gen.step3_writer as step3
    from psf.field import save_psf_field
    from utils.errors import DataError
    from psf.example_fields import elliptical_gaussian_field

    save_psf_field(elliptical_gaussian_field(grid_shape=(2, 2), psf_size=5, sensor_res=(16, 24), sigma_radial=1.0),
                   tmp_path / "psf")
    (tmp_path / "images").mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), getattr(skimage.data, name)()[::8, ::8, ::-1])
    cfg = step3.GenerationConfig(psf_data_path=str(tmp_path / "psf"), images=str(tmp_path / "images"), samples_per_shard=1)
    out = tmp_path / "ds"

    probe = step3._probe_sizes
    def other_task_wins_meanwhile(*args):  # task 0 runs its whole prepare() and writes a shard meanwhile
        monkeypatch.setattr(step3, "_probe_sizes", probe)
        step3.prepare(cfg, out, workers=1)
        (out / "data").mkdir()
        (out / "data" / "train-00000-of-00002.parquet").write_bytes(b"shard of task 0")
        return probe(*args)

    monkeypatch.setattr(step3, "_probe_sizes", other_task_wins_meanwhile)
    joined = step3.prepare(cfg, out, workers=1)
    assert joined == step3._read_manifest(out)

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("someone else's folder")
    with pytest.raises(DataError, match="exists and is not empty"):
        step3.prepare(cfg, tmp_path / "other", workers=1)
