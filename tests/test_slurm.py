"""The Slurm job scripts on a real two-node cluster (scripts/slurm/local_cluster.sh).

Most tests replace the trainer and dataset step 3 by stand-ins with the same process contract
(tests/slurm_standins/): they prove the job scripts' launch, signal, requeue, array and
dependency logic. The real programs run too: step 3 as a job array plus merge, and trainer.py
with two gloo processes preempted and requeued by Slurm.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from paired_data import write_pairs
from slurm_cluster import ROOT, LocalSlurm, wait_until

pytestmark = pytest.mark.slurm

SLURM_DIR = ROOT / "scripts" / "slurm"
STANDINS = Path(__file__).resolve().parent / "slurm_standins"
FAKE_TRAINER = STANDINS / "fake_trainer.py"
FAKE_DATASET = STANDINS / "fake_generate_dataset.py"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_task_job(slurm_cluster: LocalSlurm, tmp_path: Path):
    job = slurm_cluster.sbatch(
        "--ntasks=2", f"--chdir={tmp_path}", "--output=job.out",
        "--wrap", "srun bash -c 'echo $SLURM_PROCID $SLURM_NTASKS $SLURM_JOB_ID > task-$SLURM_PROCID.txt'",
    )
    info = slurm_cluster.wait_finished(job, timeout=60)
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), (tmp_path / "job.out").read_text()
    tasks = sorted((tmp_path / f"task-{i}.txt").read_text().split() for i in range(2))
    assert tasks == [["0", "2", job], ["1", "2", job]]


def test_job_array(slurm_cluster: LocalSlurm, tmp_path: Path):
    job = slurm_cluster.sbatch(
        "--array=3-5", f"--chdir={tmp_path}", "--output=array-%A_%a.out",
        "--wrap", "echo $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT > task-$SLURM_ARRAY_TASK_ID.txt",
    )
    wait_until(lambda: set(slurm_cluster.array_states(job).values()) == {"COMPLETED"}, 60, "array tasks to complete")
    assert sorted(slurm_cluster.array_states(job)) == ["3", "4", "5"]
    for task in (3, 4, 5):
        assert (tmp_path / f"task-{task}.txt").read_text().split() == [job, str(task), "3"]


# --- dataset generation: job array + dependent merge ---------------------------------------------

def submit_dataset(cluster: LocalSlurm, workdir: Path, out: Path, array: str, env: dict | None = None) -> tuple[str, str]:
    env = {"RESTORELAB_DATASET_SCRIPT": str(FAKE_DATASET), **(env or {})}
    common = ["--chdir", str(workdir), "--cpus-per-task=1"]
    shards = cluster.sbatch(*common, f"--array={array}", "--output=shard-%A_%a.out",
                            str(SLURM_DIR / "generate_dataset.sbatch"),
                            "--out", str(out), "--num_samples", "23", "--seed", "7", env=env)
    merge = cluster.sbatch(*common, f"--dependency=afterok:{shards}", "--kill-on-invalid-dep=yes",
                           "--output=merge-%j.out", str(SLURM_DIR / "generate_dataset.sbatch"),
                           "--merge", "--out", str(out), env=env)
    return shards, merge


def test_dataset_array_and_merge_equal_single_process(slurm_cluster: LocalSlurm, tmp_path: Path):
    out = tmp_path / "sharded"
    shards, merge = submit_dataset(slurm_cluster, tmp_path, out, array="2-4")  # offset ids: shards 0..2
    # the merge job waits for the array
    assert slurm_cluster.job(merge).state == "PENDING"
    info = slurm_cluster.wait_finished(merge, timeout=120)
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), (tmp_path / f"merge-{merge}.out").read_text()
    assert set(slurm_cluster.array_states(shards).values()) == {"COMPLETED"}

    written = sorted(json.loads(p.read_text())["array_task"] + ":" + str(json.loads(p.read_text())["task_index"])
                     for p in (out / "shards").glob("*.json"))
    assert written == ["2:0", "3:1", "4:2"]  # one shard per array task, numbered from 0

    single = tmp_path / "single"
    subprocess.run([sys.executable, str(FAKE_DATASET), "--out", str(single), "--num_samples", "23", "--seed", "7"], check=True)
    merged = json.loads((out / "data.json").read_text())
    assert len(merged["samples"]) == 23
    assert merged == json.loads((single / "data.json").read_text())


def test_dataset_failed_task_blocks_the_merge_and_can_be_rerun(slurm_cluster: LocalSlurm, tmp_path: Path):
    out = tmp_path / "sharded"
    # the site setup script fails on task 1 -> that task fails before rendering anything
    shards, merge = submit_dataset(slurm_cluster, tmp_path, out, array="0-2",
                                   env={"RESTORELAB_SETUP": str(write_failing_setup(tmp_path, task=1))})
    info = slurm_cluster.wait_finished(merge, timeout=120)
    assert info.state == "CANCELLED"  # afterok can never be satisfied: the merge never ran
    assert slurm_cluster.array_states(shards) == {"0": "COMPLETED", "1": "FAILED", "2": "COMPLETED"}
    assert not (out / "data.json").exists()

    # rerun only task 1 of 3 as a new one-task array, then merge
    rerun, merge = submit_dataset(slurm_cluster, tmp_path, out, array="1", env={"RESTORELAB_NUM_TASKS": "3"})
    info = slurm_cluster.wait_finished(merge, timeout=120)
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), (tmp_path / f"merge-{merge}.out").read_text()
    subprocess.run([sys.executable, str(FAKE_DATASET), "--out", str(tmp_path / "single"), "--num_samples", "23",
                    "--seed", "7"], check=True)
    assert json.loads((out / "data.json").read_text()) == json.loads((tmp_path / "single" / "data.json").read_text())


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_step3_array_and_merge_equal_a_single_run_byte_for_byte(slurm_cluster: LocalSlurm, tmp_path: Path):
    """The real data_gen/3.generate_dataset_synthetic.py (no stand-in): 3 array tasks started at the
    same time on two nodes render their shards of one folder, the dependent merge writes the card;
    every file equals a one-process run's. (The tasks race to create the folder and its manifest.)"""
    from psf.field import save_psf_field
    from psf.example_fields import elliptical_gaussian_field

    save_psf_field(elliptical_gaussian_field(grid_shape=(2, 2), psf_size=7, sensor_res=(32, 48), sigma_radial=1.5),
                   tmp_path / "psf")
    args = ["--psf_data_path", str(tmp_path / "psf"), "--images", "builtin", "--seed", "5", "--noise", "gaussian",
            "--samples_per_shard", "3", "--workers", "1"]  # 19 built-in images: 7 shards for 3 tasks
    out = tmp_path / "sharded"
    common = ["--chdir", str(tmp_path), "--cpus-per-task=1"]
    shards = slurm_cluster.sbatch(*common, "--array=0-2", "--output=step3-%A_%a.out",
                                  str(SLURM_DIR / "generate_dataset.sbatch"), "--out", str(out), *args)
    merge = slurm_cluster.sbatch(*common, f"--dependency=afterok:{shards}", "--kill-on-invalid-dep=yes",
                                 "--output=merge-%j.out", str(SLURM_DIR / "generate_dataset.sbatch"), "--merge",
                                 "--out", str(out))
    info = slurm_cluster.wait_finished(merge, timeout=300)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("*.out")))
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), logs
    assert slurm_cluster.array_states(shards) == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}, logs

    single = tmp_path / "single"
    subprocess.run([sys.executable, str(ROOT / "data_gen" / "3.generate_dataset_synthetic.py"), "--out", str(single),
                    *args], check=True, capture_output=True)
    sharded_files, single_files = tree(out), tree(single)
    assert sorted(sharded_files) == sorted(single_files)
    assert len([f for f in single_files if f.startswith("data/")]) == 7
    assert sharded_files == single_files


def write_failing_setup(tmp_path: Path, task: int) -> Path:
    setup = tmp_path / "site_setup.sh"
    setup.write_text(f'if [[ $SLURM_ARRAY_TASK_ID == {task} ]]; then echo "simulated failure" >&2; exit 3; fi\n')
    return setup


# --- training: preemption and requeue --------------------------------------------------------------

TOTAL_STEPS = 40


def train_config(path: Path, run_dir: Path, step_time: float) -> Path:
    path.write_text(json.dumps({"run_dir": str(run_dir), "total_steps": TOTAL_STEPS, "step_time": step_time,
                                "checkpoint_every": 15, "batch_size": 6, "dim": 8}))
    return path


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory) -> list[str]:
    """The uninterrupted run, one process, no Slurm."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = train_config(tmp / "run.json", tmp / "run", step_time=0.0)
    subprocess.run([sys.executable, str(FAKE_TRAINER), "-opt", str(cfg)], check=True)
    return json.loads((tmp / "run" / "final.json").read_text())["weights"]


def submit_training(cluster: LocalSlurm, tmp_path: Path, nodes: int, nproc_per_node: int) -> tuple[str, Path]:
    run_dir = tmp_path / "run"
    cfg = train_config(tmp_path / "run.json", run_dir, step_time=0.15)
    job = cluster.sbatch(
        "--chdir", str(tmp_path), f"--nodes={nodes}", "--cpus-per-task=2", "--output=train-%j.out",
        str(SLURM_DIR / "train.sbatch"), "-opt", str(cfg),
        env={"RESTORELAB_TRAIN_SCRIPT": str(FAKE_TRAINER), "NPROC_PER_NODE": str(nproc_per_node)},
    )
    # preempt mid-run: after a few steps, before the end
    wait_until(lambda: (run_dir / "progress").exists() and int((run_dir / "progress").read_text()) >= 6,
               timeout=120, what="training progress")
    return job, run_dir


def check_resumed_run(cluster: LocalSlurm, job: str, tmp_path: Path, run_dir: Path, reference: list[str],
                      world_size: int, num_nodes: int) -> str:
    info = cluster.wait_finished(job, timeout=240, release_requeued=True)
    log = (tmp_path / f"train-{job}.out").read_text()
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", "0:0", 1), log

    events = read_lines(run_dir / "launches.jsonl")
    assert [e["event"] for e in events] == ["start", "stop", "start", "finish"], events
    first, stop, second, finish = events
    assert (first["step"], first["world_size"], first["restart"]) == (0, world_size, 0)
    assert 6 <= stop["step"] < TOTAL_STEPS  # really interrupted mid-run
    assert (run_dir / "checkpoints" / f"checkpoint-{stop['step']}").is_dir()
    assert (second["step"], second["world_size"], second["restart"]) == (stop["step"], world_size, 1)  # resumed
    assert first["job"] == second["job"] == job
    for launch in (first, second):  # the ranks ran on the nodes Slurm allocated
        assert len(launch["nodes"]) == world_size and len(set(launch["nodes"])) == num_nodes, launch
    assert finish["step"] == TOTAL_STEPS

    final = json.loads((run_dir / "final.json").read_text())["weights"]
    assert final == reference  # bit-identical to the uninterrupted one-process run
    return log


def test_train_time_limit_warning_on_two_nodes_checkpoints_requeues_and_resumes(slurm_cluster: LocalSlurm,
                                                                              tmp_path: Path, reference_weights):
    """Two nodes, one process each (srun + accelerate launch --num_machines 2). The warning
    `#SBATCH --signal=B:USR1@300` sends before the time limit: SIGUSR1 to the batch shell only; the
    script passes it on, the stand-in checkpoints and exits 75, the script requeues the job."""
    job, run_dir = submit_training(slurm_cluster, tmp_path, nodes=2, nproc_per_node=1)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    log = check_resumed_run(slurm_cluster, job, tmp_path, run_dir, reference_weights, world_size=2, num_nodes=2)
    assert "requeueing job" in log
    assert "2 node(s) x 1 process(es)" in log
    # (preemption by Slurm, SIGTERM to every process, is tested with the real trainer below)


def test_train_crash_is_not_requeued(slurm_cluster: LocalSlurm, tmp_path: Path):
    """A failing trainer (no signal, exit != 75) fails the job: no requeue loop."""
    job = slurm_cluster.sbatch(
        "--chdir", str(tmp_path), "--cpus-per-task=1", "--output=train-%j.out", str(SLURM_DIR / "train.sbatch"),
        "-opt", str(tmp_path / "missing.json"), env={"RESTORELAB_TRAIN_SCRIPT": str(FAKE_TRAINER)},
    )
    info = slurm_cluster.wait_finished(job, timeout=120)
    log = (tmp_path / f"train-{job}.out").read_text()
    assert (info.state, info.exit_code, info.restarts) == ("FAILED", "1:0", 0), log
    assert "FileNotFoundError" in log and "requeueing" not in log


def test_eval_job_runs_test_mode_on_all_processes(slurm_cluster: LocalSlurm, tmp_path: Path):
    run_dir = tmp_path / "run"
    cfg = train_config(tmp_path / "run.json", run_dir, step_time=0.0)
    subprocess.run([sys.executable, str(FAKE_TRAINER), "-opt", str(cfg)], check=True)  # a finished run
    subprocess.run([sys.executable, str(FAKE_TRAINER), "-opt", str(cfg), "-test"], check=True)
    single = json.loads((run_dir / "results" / "metrics.json").read_text())
    (run_dir / "results" / "metrics.json").unlink()

    job = slurm_cluster.sbatch(
        "--chdir", str(tmp_path), "--cpus-per-task=2", "--output=eval-%j.out", str(SLURM_DIR / "eval.sbatch"),
        "-opt", str(cfg), env={"RESTORELAB_TRAIN_SCRIPT": str(FAKE_TRAINER), "NPROC_PER_NODE": "2"},
    )
    info = slurm_cluster.wait_finished(job, timeout=120)
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), (tmp_path / f"eval-{job}.out").read_text()
    distributed = json.loads((run_dir / "results" / "metrics.json").read_text())
    assert (single["world_size"], distributed["world_size"]) == (1, 2)
    assert distributed["score"] == single["score"]


# --- the real trainer ----------------------------------------------------------------------------

def test_trainer_preempted_on_slurm_resumes_to_the_uninterrupted_weights(slurm_cluster: LocalSlurm, tmp_path: Path):
    """trainer.py, 2 gloo processes, preempted mid-run the way PreemptMode=REQUEUE does it (SIGTERM
    to every process, KillWait, Slurm requeues) -> checkpoint, --resume auto -> the same weights as
    an uninterrupted 2-process job run beside it."""
    import torch
    from safetensors.torch import load_file

    write_pairs(tmp_path / "data", {"train": [(40, 40)] * 16, "val": [(40, 40)] * 2})
    max_steps = 300
    config = tmp_path / "exp.yml"
    config.write_text(f"""
name: run
seed: 3
network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
datasets:
  train: {{type: PairedFolderDataset, root: {tmp_path / 'data' / 'train'}, phase: train, crop_size: 32}}
  val: {{type: PairedFolderDataset, root: {tmp_path / 'data' / 'val'}, phase: val}}
path: {{root: {tmp_path / 'runs'}}}
train: {{max_steps: {max_steps}, batch_size: 2, lr: 2.0e-3, losses: [{{type: L1}}], val_every: 0,
        checkpoint_every: 0, log_every: 1, num_workers: 0}}
report_to: []
""")
    env = {"NPROC_PER_NODE": "2"}
    submit = ["--chdir", str(tmp_path), "--cpus-per-task=2", "--output=train-%j.out", str(SLURM_DIR / "train.sbatch"),
              "-opt", str(config)]
    preempted = slurm_cluster.sbatch(*submit, "name=preempted", env=env)
    reference = slurm_cluster.sbatch(*submit, "name=reference", env=env)  # on the other node, at the same time

    train_log = tmp_path / "runs" / "preempted" / "logs" / "train.log"
    wait_until(lambda: train_log.exists() and "step 2:" in train_log.read_text(), 240, "the first training steps")
    slurm_cluster.run("scontrol", "requeue", preempted)

    for job in (preempted, reference):
        info = slurm_cluster.wait_finished(job, timeout=300, release_requeued=True)
        assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), (tmp_path / f"train-{job}.out").read_text()[-3000:]
    assert slurm_cluster.job(preempted).restarts == 1
    assert slurm_cluster.job(reference).restarts == 0

    text = train_log.read_text()
    stop = re.search(r"step (\d+): stopped by SIGTERM", text)
    assert stop and 2 <= int(stop.group(1)) < max_steps, text[-2000:]  # interrupted mid-run ...
    assert re.search(rf"resumed from \S+checkpoint-{stop.group(1)} at step {stop.group(1)}", text)  # ... and resumed
    assert "terminated by Slurm" in (tmp_path / f"train-{preempted}.out").read_text()

    runs = tmp_path / "runs"
    for export in ("last", f"checkpoints/checkpoint-{max_steps}"):
        a = load_file(str(runs / "preempted" / export / "model.safetensors"))
        b = load_file(str(runs / "reference" / export / "model.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), export  # resume is exact on CPU/gloo
