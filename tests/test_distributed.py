"""Several processes and fault tolerance: trainer.py under torchrun and `accelerate launch` (gloo on
CPU), kill -9 and resume, kill -9 while a checkpoint is written, unreadable samples.

Runs that must be separate processes go through tests/dist_probe.py: trainer.py's own entry
point with probes that dump every process's copy of the weights and scores, and kill a chosen
process at a chosen step or inside a checkpoint write. Every launched run uses one thread per
process (OMP_NUM_THREADS=1), so runs of the same world size are bitwise comparable.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "dist_probe.py"
LAUNCH_TIMEOUT = 600  # s per launch: CI machines are slow, a hang must still end with its log

STEPS, CHECKPOINT_EVERY = 20, 10


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from paired_data import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs"))


def experiment(folder: Path, data: Path, extra: str = "") -> Path:
    """20 steps of a tiny UNet with EMA, clipping, warm-up + cosine, two losses, random crops and
    flips; validation on 3 images of odd sizes and a checkpoint every 10 steps."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yml").write_text(textwrap.dedent(f"""
        name: run
        seed: 3
        network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
        datasets:
          train: {{type: PairedFolderDataset, root: {data / 'train'}, phase: train, crop_size: 32}}
          val: {{type: PairedFolderDataset, root: {data / 'val'}, phase: val}}
          test: {{type: PairedFolderDataset, root: {data / 'val'}, phase: test}}
        path: {{root: {folder / 'runs'}}}
        train:
          max_steps: {STEPS}
          batch_size: 4
          lr: 2.0e-3
          scheduler: {{type: cosine, warmup_steps: 3}}
          losses: [{{type: L1}}, {{type: FFT, weight: 0.05}}]
          clip_grad_norm: 1.0
          ema_decay: 0.9
          val_every: 10
          checkpoint_every: {CHECKPOINT_EVERY}
          log_every: 5
        val: {{log_images: 1, save_images: true}}
        report_to: []
    """))
    (folder / "exp.yml").write_text("base: base.yml\n" + textwrap.dedent(extra))
    return folder / "exp.yml"


@dataclass
class Launch:
    returncode: int
    output: str
    seconds: float
    ended: float  # time.time() when the launcher had exited

    def tail(self, n: int = 3000) -> str:
        return self.output[-n:]


def launch(how: str, nproc: int, config: Path, *args: str, log: Path, probe: Path | None = None,
           env: dict | None = None) -> Launch:
    """Run tests/dist_probe.py (= trainer.py) as ``python`` (one process), under ``torchrun`` or
    under ``accelerate launch --multi_gpu``; output (both streams) goes to ``log``."""
    if how == "python":
        assert nproc == 1
        cmd = [sys.executable, str(PROBE)]
    elif how == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(PROBE)]
    elif how == "accelerate":
        # every default given, so accelerate prints no "values were not passed" notice; port 0: a free one
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               str(PROBE)]
    else:
        raise ValueError(how)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROBE_", "RESTORELAB_DEBUG"))}
    full_env.update({"OMP_NUM_THREADS": "1", **({"PROBE_DIR": str(probe)} if probe else {}), **(env or {})})
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd + ["-opt", str(config), *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=full_env, start_new_session=True)
        try:
            proc.wait(timeout=LAUNCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
            pytest.fail(f"{how} run did not finish in {LAUNCH_TIMEOUT} s (hang?); log tail:\n"
                        + log.read_text(errors="replace")[-3000:])
    return Launch(proc.returncode, log.read_text(errors="replace"), time.monotonic() - start, time.time())


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in new sessions)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def console_lines(output: str) -> list[str]:
    """Output lines without progress-bar redraws."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    return [line for line in lines if line and "it/s]" not in line and "s/it]" not in line and "?it/s" not in line
            and not re.fullmatch(r"(\x1b\[A)+", line)]


def assert_clean(result: Launch, what: str) -> None:
    """Exit code 0 and nothing alarming printed: no traceback, error or warning at start or at exit
    (e.g. a process group left undestroyed, a leaked semaphore, a rendezvous error)."""
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.tail()}"
    bad = [line for line in console_lines(result.output)
           if re.search(r"traceback|error|warn|leak|destroy_process_group|exception", line, re.IGNORECASE)]
    assert not bad, f"{what}: unexpected output lines: {bad}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path if path.suffix == ".safetensors" else path / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rank_copy(probe: Path, rank: int, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """One process's own weights (``net.``) or EMA (``ema.net.``) at the end, keyed like model.safetensors."""
    every = weights(probe / f"rank{rank}.safetensors")
    return {k[len(prefix):]: v for k, v in every.items() if k.startswith(prefix)}


def rank_record(probe: Path, rank: int) -> dict:
    return json.loads((probe / f"rank{rank}.json").read_text())


def per_image(run: Path, step: int | None = None) -> dict:
    folder = run / "results" / ("test" if step is None else f"val/step-{step}")
    return json.loads((folder / "metrics.json").read_text())["per_image"]


@dataclass
class Reference:
    folder: Path
    config: Path
    one: Path            # run directory: 1 process x batch 4
    two: Path            # run directory: torchrun, 2 processes x batch 2
    one_probe: Path
    two_probe: Path
    two_launch: Launch


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Reference:
    """The uninterrupted runs the others are compared with (same seed, same global batch 4)."""
    folder = tmp_path_factory.mktemp("reference")
    config = experiment(folder, data)
    one = launch("python", 1, config, "name=one", log=folder / "one.log", probe=folder / "probe-one")
    assert_clean(one, "1-process run")
    two = launch("torchrun", 2, config, "name=two", "train.batch_size=2", log=folder / "two.log",
                 probe=folder / "probe-two")
    return Reference(folder, config, folder / "runs" / "one", folder / "runs" / "two", folder / "probe-one",
                     folder / "probe-two", two)


# -- several processes ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(reference: Reference):
    ref = reference
    assert_clean(ref.two_launch, "torchrun, 2 processes")   # also: a clean shutdown, no exit crash
    ckpt = f"checkpoints/checkpoint-{STEPS}"

    # Both processes hold bitwise the same weights and EMA, and that is what was saved.
    for prefix in ("net.", "ema.net."):
        assert bitwise_equal(rank_copy(ref.two_probe, 0, prefix), rank_copy(ref.two_probe, 1, prefix)), prefix
    assert bitwise_equal(rank_copy(ref.two_probe, 1), weights(ref.two / ckpt))
    assert bitwise_equal(rank_copy(ref.two_probe, 1, "ema.net."), weights(ref.two / "last"))
    assert sorted(p.name for p in (ref.two / ckpt).glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]                        # every process saved its RNG

    # 2 x batch 2 == 1 x batch 4 after 20 steps (measured: 3e-8), raw weights and EMA.
    assert max_diff(weights(ref.two / ckpt), weights(ref.one / ckpt)) <= 1e-5
    assert max_diff(weights(ref.two / "last"), weights(ref.one / "last")) <= 1e-5
    assert max_diff(weights(ref.one / ckpt), weights(ref.one / "checkpoints/checkpoint-10")) > 1e-3  # it trained

    # Validation: every image scored once (3 images: 2 on process 0, 1 on process 1), every process
    # got all per-image scores, and they match the 1-process run per image.
    for step in (10, STEPS):
        two, one = per_image(ref.two, step), per_image(ref.one, step)
        assert sorted(two) == sorted(one) == ["im00.png", "im01.png", "im02.png"]
        for image in one:
            for metric in ("psnr", "ssim"):
                assert two[image][metric] == pytest.approx(one[image][metric], abs=1e-3), (step, image, metric)
        for rank in (0, 1):
            seen = {e["step"]: e["per_image"] for e in rank_record(ref.two_probe, rank)["evaluations"]}
            assert seen[step] == two, f"process {rank}'s gathered scores differ from metrics.json"
        saved = sorted(p.name for p in (ref.two / "results" / "val" / f"step-{step}").glob("*.png"))
        assert saved == ["im00.png", "im01.png", "im02.png"]

    # Per-process seeding: each process's global RNG is its own stream, fixed by (seed, rank).
    draws = [rank_record(ref.two_probe, r)["rng_after_setup"] for r in (0, 1)]
    assert draws[0] != draws[1]
    assert draws[0] == rank_record(ref.one_probe, 0)["rng_after_setup"]


@pytest.mark.slow
def test_accelerate_launch_trains_like_torchrun_and_shards_the_test_set(reference: Reference, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (the Slurm scripts' launcher; on CPU it
    runs gloo) gives bitwise the torchrun run; -test on 2 processes scores exactly like 1."""
    ref = reference
    trained = launch("accelerate", 2, ref.config, "name=acc", "train.batch_size=2", log=tmp_path / "acc.log",
                     probe=tmp_path / "probe-acc")
    assert_clean(trained, "accelerate launch, 2 processes")
    acc = ref.folder / "runs" / "acc"
    for item in (f"checkpoints/checkpoint-{STEPS}", "last", "best"):
        assert bitwise_equal(weights(acc / item), weights(ref.two / item)), item
    assert bitwise_equal(rank_copy(tmp_path / "probe-acc", 0), rank_copy(tmp_path / "probe-acc", 1))

    # -test of the same weights: 2 processes (2 + 1 images) == 1 process, per image, exactly.
    weights_dir = str(ref.one / "last")
    sharded = launch("accelerate", 2, ref.config, "name=acc", "-test", "--weights", weights_dir,
                     log=tmp_path / "acc-test.log")
    assert_clean(sharded, "accelerate launch -test")
    single = launch("python", 1, ref.config, "name=one", "-test", "--weights", weights_dir,
                    log=tmp_path / "one-test.log")
    assert_clean(single, "1-process -test")
    assert per_image(acc) == per_image(ref.one)
    assert sorted(per_image(acc)) == ["im00.png", "im01.png", "im02.png"]
    for name in per_image(acc):
        assert (acc / "results" / "test" / name).read_bytes() == (ref.one / "results" / "test" / name).read_bytes()


# -- kill -9 and resume -----------------------------------------------------------------------


def random_step(salt: int) -> int:
    """A seeded random step strictly between the two checkpoints (so the resume replays steps)."""
    return int(np.random.default_rng([2026, salt]).integers(CHECKPOINT_EVERY + 1, STEPS))


@pytest.mark.slow
@pytest.mark.parametrize("how, nproc", [("python", 1), ("torchrun", 2)], ids=["1-process", "torchrun-2"])
def test_kill9_at_a_random_step_then_resume_auto_equals_the_uninterrupted_run(reference: Reference, how, nproc):
    ref = reference
    step = random_step(nproc)
    name = f"killed-{how}"
    victim = f"{step}@{nproc - 1}"  # with 2 processes only process 1 dies; the launcher stops the other
    batch = f"train.batch_size={4 // nproc}"
    marks = ref.folder / f"{name}-probe"
    killed = launch(how, nproc, ref.config, f"name={name}", batch, "train.log_every=1", log=ref.folder / f"{name}.log",
                    probe=marks, env={"PROBE_KILL_AT_STEP": victim})
    assert killed.returncode != 0, killed.tail()
    kill_time = json.loads((marks / f"killed-{nproc - 1}.json").read_text())["time"]
    assert killed.ended - kill_time < 60, f"the other process took {killed.ended - kill_time:.0f} s to stop"
    run = ref.folder / "runs" / name
    log = (run / "logs" / "train.log").read_text()
    assert f"step {step}: loss" in log and f"step {step + 1}: loss" not in log, (step, log[-1500:])
    from trainer import list_checkpoints

    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [CHECKPOINT_EVERY]
    assert not (run / "last").exists()

    resumed = launch(how, nproc, ref.config, f"name={name}", batch, "train.log_every=1", "--resume", "auto",
                     log=ref.folder / f"{name}-2.log")
    assert_clean(resumed, "resumed run")
    assert re.search(rf"resumed from \S+checkpoint-{CHECKPOINT_EVERY} at step {CHECKPOINT_EVERY}",
                     (run / "logs" / "train.log").read_text())
    uninterrupted = ref.one if nproc == 1 else ref.two
    for item in (f"checkpoints/checkpoint-{STEPS}", "last", "best"):
        assert bitwise_equal(weights(run / item), weights(uninterrupted / item)), f"{item} (killed at step {step})"
    assert per_image(run, STEPS) == per_image(uninterrupted, STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("how, nproc", [("python", 1), ("torchrun", 2)], ids=["1-process", "torchrun-2"])
def test_kill9_during_a_checkpoint_write_keeps_the_previous_checkpoint(reference: Reference, how, nproc):
    """SIGKILL after Accelerate wrote checkpoint-20's state into its temporary folder (with 2
    processes: process 1 only): checkpoint-10 stays the newest complete one, and --resume auto
    continues from it, ignores and removes the partial folder, and ends at the uninterrupted weights."""
    ref = reference
    name, batch = f"killed-in-save-{how}", f"train.batch_size={4 // nproc}"
    killed = launch(how, nproc, ref.config, f"name={name}", batch, log=ref.folder / f"{name}.log",
                    env={"PROBE_KILL_IN_SAVE": f"{STEPS}@{nproc - 1}"})
    assert killed.returncode != 0, killed.tail()
    ckpts = ref.folder / "runs" / name / "checkpoints"
    partial = ckpts / f".tmp-checkpoint-{STEPS}"
    from trainer import STATE_FILE, list_checkpoints

    if nproc == 1:  # the writer itself died: its partial folder stays behind
        assert partial.is_dir() and (partial / "model.safetensors").is_file(), sorted(p.name for p in ckpts.iterdir())
    # (with 2 processes the main one, left waiting for the dead one, may fail and remove it itself)
    assert not (partial / STATE_FILE).exists()
    assert [s for s, _ in list_checkpoints(ckpts)] == [CHECKPOINT_EVERY]

    resumed = launch(how, nproc, ref.config, f"name={name}", batch, "--resume", "auto", log=ref.folder / f"{name}-2.log")
    assert_clean(resumed, "resumed run")
    assert f"resumed from {ckpts / f'checkpoint-{CHECKPOINT_EVERY}'} at step {CHECKPOINT_EVERY}" in \
        (ckpts.parent / "logs" / "train.log").read_text()
    assert not partial.exists()
    uninterrupted = ref.one if nproc == 1 else ref.two
    assert bitwise_equal(weights(ckpts / f"checkpoint-{STEPS}"), weights(uninterrupted / f"checkpoints/checkpoint-{STEPS}"))
    assert bitwise_equal(weights(ckpts.parent / "last"), weights(uninterrupted / "last"))


# -- unreadable samples ------------------------------------------------------------------------


def corrupt_copy(data: Path, dest: Path, *files: str) -> Path:
    """A copy of the pairs with ``files`` (e.g. "train/gt/im05.png") replaced by garbage."""
    import shutil

    shutil.copytree(data, dest)
    for f in files:
        (dest / f).write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG any more")
    return dest


def cli(capsys, *argv: str) -> tuple[int, str]:
    """trainer.py's command line in this process (as `python trainer.py ...` runs it)."""
    from trainer import main
    from utils.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(list(argv)))
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_training_image_stops_with_one_line_naming_it(data, tmp_path, capsys, workers):
    bad = corrupt_copy(data, tmp_path / "bad", "train/lq/im05.png")  # not sample 0: found during training
    config = experiment(tmp_path, bad, f"train: {{max_steps: 8, checkpoint_every: 2, val_every: 0, num_workers: {workers}}}\n")
    code, err = cli(capsys, "-opt", str(config))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert str(bad / "train" / "lq" / "im05.png") in errors[0]
    assert re.search(r"datasets\.train, step \d+: ", errors[0]) and "skip_bad_samples: true" in errors[0]
    assert "DataLoader worker" not in errors[0]


def test_skip_bad_samples_skips_counts_and_logs_them(data, tmp_path):
    from trainer import main

    bad = corrupt_copy(data, tmp_path / "bad", "train/gt/im05.png", "val/lq/im01.png")
    config = experiment(tmp_path, bad, """
        train: {max_steps: 8, checkpoint_every: 4, val_every: 4, num_workers: 2}
        datasets:
          train: {skip_bad_samples: true}
          val: {skip_bad_samples: true}
    """)
    assert main(["-opt", str(config)]) == 0  # 8 steps x 4 samples: every training sample is drawn twice
    run = tmp_path / "runs" / "run"
    log = (run / "logs" / "train.log").read_text()
    train_file, val_file = bad / "train" / "gt" / "im05.png", bad / "val" / "lq" / "im01.png"
    assert len(re.findall(rf"skipped a bad training sample \(\d so far\): .*{re.escape(str(train_file))}", log)) == 1
    assert len(re.findall(rf"skipped a bad val sample \(\d so far\): .*{re.escape(str(val_file))}", log)) == 1
    assert "validation over 2 images (1 unreadable left out)" in log
    assert re.search(r"2 bad sample\(s\) were skipped \(skip_bad_samples\), 4 time\(s\) in all", log), log[-2000:]
    state = json.loads((run / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    counts = sorted(state["bad_samples"].values())
    assert counts == [2, 2]              # the training image: 2 epochs; the validation image: 2 validations
    metrics = json.loads((run / "results" / "val" / "step-8" / "metrics.json").read_text())
    assert sorted(metrics["per_image"]) == ["im00.png", "im02.png"]
    assert any(str(val_file) in reason for reason in metrics["convention"]["skipped_bad_samples"])


@pytest.mark.slow
def test_two_processes_stop_together_on_an_unreadable_image(data, tmp_path):
    """Only one process reads the bad sample; both stop at once (no waiting for a collective that
    never comes) and the error, naming the file, is printed once."""
    bad = corrupt_copy(data, tmp_path / "bad", "train/gt/im05.png")
    config = experiment(tmp_path, bad, "train: {max_steps: 8, checkpoint_every: 0, val_every: 0}\n")
    result = launch("torchrun", 2, config, "train.batch_size=2", log=tmp_path / "bad.log")
    assert result.returncode != 0, result.tail()   # (a hang would end at LAUNCH_TIMEOUT and fail)
    errors = [line for line in console_lines(result.output) if line.startswith("error:")]
    assert len(errors) == 1 and str(bad / "train" / "gt" / "im05.png") in errors[0], result.tail()
    # The main process reported and exited with 2; the other one stopped too, without a traceback
    # (the only one printed is torchrun's own, ending in its ChildFailedError report).
    assert re.search(r"rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*: 2 ", result.output), result.tail()
    assert result.output.count("Traceback (most recent call last)") == 1, result.tail()


# -- helpers ----------------------------------------------------------------------------------


def test_error_line_unwraps_dataloader_worker_errors():
    from trainer import error_line
    from utils.errors import DataError

    wrapped = DataError("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
                        '  File "x.py", line 3, in f\n    raise DataError(...)\n'
                        "utils.errors.DataError: cannot read image (corrupt or unsupported format): /d/im05.png\n")
    assert error_line(wrapped) == "cannot read image (corrupt or unsupported format): /d/im05.png"
    assert error_line(DataError("plain message")) == "plain message"
    assert error_line(ValueError()) == "ValueError"


def test_process_seeds_differ_per_process_and_are_fixed():
    from trainer import process_seed

    seeds = [process_seed(3, r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds == [process_seed(3, r) for r in range(8)]
    assert process_seed(4, 0) != seeds[0] and all(0 <= s < 2**32 for s in seeds)
