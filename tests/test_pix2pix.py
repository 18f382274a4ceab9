"""The pix2pix toy (checkpoints/pix2pix_toy.yml, models/pix2pix_model.py): a task added in its own
three files on the core's contract. Two networks with their own optimisers, the critic switched
on at step 20, the model's own counters checkpointed, only the EMA generator exported; kill -9 +
``--resume auto`` bitwise, two gloo processes vs one within float noise (floor measured in the
same test: the same one-process run with 1 vs 2 threads)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_distributed import assert_clean, bitwise_equal, launch, max_diff, rank_copy, rank_record, weights

ROOT = Path(__file__).resolve().parent.parent
STEPS, EVERY, DISC_START = 30, 10, 20


def overrides(folder: Path, name: str, nproc: int = 1) -> list[str]:
    return [f"name={name}", f"path.root={folder / 'runs'}", f"train.max_steps={STEPS}",
            f"train.checkpoint_every={EVERY}", "train.val_every=0", "train.log_every=1",
            f"train.batch_size={4 // nproc}", "datasets.train.crop_size=48", "report_to=[]", "train.num_workers=0",
            f"model.disc_start={DISC_START}", "val.log_images=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pix2pix")
    config = ROOT / "checkpoints" / "pix2pix_toy.yml"
    one = launch("python", 1, config, *overrides(folder, "one"), log=folder / "one.log", probe=folder / "probe-one")
    assert_clean(one, "one-process run")
    return folder, config


def ckpt_weights(run: Path, step: int, index: int) -> dict:
    name = "model.safetensors" if index == 0 else f"model_{index}.safetensors"
    return weights(run / "checkpoints" / f"checkpoint-{step}" / name)


@pytest.mark.slow
def test_critic_moves_only_from_disc_start_and_only_the_ema_generator_is_exported(runs):
    folder, _ = runs
    run = folder / "runs" / "one"
    # keep_checkpoints (1 in quickstart.yml) may have pruned the early ones: read the probe record
    record = rank_record(folder / "probe-one", 0)
    assert record["model_state"] == {"critic_updates": STEPS - DISC_START, "generator_updates": STEPS}
    log = (run / "logs" / "train.log").read_text()
    # The critic's loss is logged from step DISC_START + 1 (1-based) on, never before.
    assert f"step {DISC_START}: " in log and "loss_d" not in log.split(f"step {DISC_START + 1}: ")[0]
    assert "loss_d" in log.split(f"step {DISC_START + 1}: ")[1].splitlines()[0]
    # last/ is one save_pretrained folder: the generator's EMA weights, no critic.
    exported = weights(run / "last")
    config = json.loads((run / "last" / "config.json").read_text())
    assert config["model_type"].endswith("unet")
    assert bitwise_equal(exported, rank_copy(folder / "probe-one", 0, "ema.net."))
    assert not bitwise_equal(exported, rank_copy(folder / "probe-one", 0, "net."))
    assert not (run / "last" / "discriminator").exists()


@pytest.mark.slow
def test_critic_weights_frozen_before_disc_start(tmp_path):
    """Checkpoints at 10 and 20 hold the critic's initial weights bitwise; at 30 it has moved."""
    config = ROOT / "checkpoints" / "pix2pix_toy.yml"
    args = overrides(tmp_path, "frozen") + ["train.keep_checkpoints=5"]
    result = launch("python", 1, config, *args, log=tmp_path / "frozen.log")
    assert_clean(result, "run")
    run = tmp_path / "runs" / "frozen"
    d10, d20, d30 = (ckpt_weights(run, s, 1) for s in (10, 20, 30))
    g10, g20 = ckpt_weights(run, 10, 0), ckpt_weights(run, 20, 0)
    assert bitwise_equal(d10, d20) and not bitwise_equal(d20, d30)
    assert not bitwise_equal(g10, g20)


@pytest.mark.slow
def test_kill9_then_resume_auto_equals_the_uninterrupted_run(runs):
    folder, config = runs
    step = int(np.random.default_rng([2026, 7]).integers(EVERY + 1, STEPS))  # a random step between checkpoints
    probe = folder / "probe-killed"
    killed = launch("python", 1, config, *overrides(folder, "killed"), log=folder / "killed.log", probe=probe,
                    env={"PROBE_KILL_AT_STEP": f"{step}@0"})
    assert killed.returncode != 0, killed.tail()
    resumed = launch("python", 1, config, *overrides(folder, "killed"), "--resume", "auto",
                     log=folder / "killed-2.log", probe=probe)
    assert_clean(resumed, "resumed run")
    run, ref = folder / "runs" / "killed", folder / "runs" / "one"
    for index in (0, 1):  # generator and critic
        assert bitwise_equal(ckpt_weights(run, STEPS, index), ckpt_weights(ref, STEPS, index)), (index, step)
    assert bitwise_equal(weights(run / "last"), weights(ref / "last"))  # the EMA generator
    # The model's own counters came back from the checkpoint (not recounted from zero).
    assert rank_record(probe, 0)["model_state"] == rank_record(folder / "probe-one", 0)["model_state"]
    assert json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "model_state.json").read_text()) == \
        {"critic_updates": STEPS - DISC_START, "generator_updates": STEPS}


@pytest.mark.slow
def test_two_gloo_processes_match_one_within_the_float_noise_floor(runs):
    folder, config = runs
    two = launch("torchrun", 2, config, *overrides(folder, "two", nproc=2), log=folder / "two.log",
                 probe=folder / "probe-two")
    assert_clean(two, "two-process run")
    threads = launch("python", 1, config, *overrides(folder, "threads"), log=folder / "threads.log",
                     env={"OMP_NUM_THREADS": "2"})
    assert_clean(threads, "two-thread run")
    one, two_run, thr = (folder / "runs" / n for n in ("one", "two", "threads"))
    floor = max(max_diff(ckpt_weights(one, STEPS, i), ckpt_weights(thr, STEPS, i)) for i in (0, 1))
    diff = max(max_diff(ckpt_weights(one, STEPS, i), ckpt_weights(two_run, STEPS, i)) for i in (0, 1))
    print(f"pix2pix {STEPS} steps: 2 processes vs 1: {diff:.3g}; 1 process, 2 vs 1 threads: {floor:.3g}")
    assert diff <= max(10 * floor, 1e-5), (diff, floor)
    for prefix in ("net.", "discriminator.", "ema.net."):  # both ranks hold the same weights
        assert bitwise_equal(rank_copy(folder / "probe-two", 0, prefix), rank_copy(folder / "probe-two", 1, prefix))
    assert rank_record(folder / "probe-two", 0)["model_state"] == rank_record(folder / "probe-one", 0)["model_state"]
