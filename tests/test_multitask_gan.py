"""The multi-task NoGAN task through the trainer (checkpoints/multitask_toy.yml): phase lines at
the configured steps, weight hashes per phase (critic frozen in pretrain, generator and its EMA
frozen in the critic phase, both moving in GAN), kill -9 in the middle of the critic phase +
``--resume auto`` bitwise equal to the uninterrupted run, best/ with ONNX and a
best_model_info.json whose hashes and metrics reproduce from the files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from test_distributed import assert_clean, bitwise_equal, launch, rank_record, weights

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "checkpoints" / "multitask_toy.yml"
PRE, CRIT, GAN = 6, 6, 6
STEPS = PRE + CRIT + GAN


def overrides(folder: Path, name: str, *extra: str) -> list[str]:
    return [f"name={name}", f"path.root={folder / 'runs'}", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multitask")
    one = launch("python", 1, CONFIG, *overrides(folder, "one"), log=folder / "one.log", probe=folder / "probe-one")
    assert_clean(one, "one-process run")
    return folder


def ckpt(run: Path, step: int, index: int) -> dict:
    name = "model.safetensors" if index == 0 else f"model_{index}.safetensors"
    return weights(run / "checkpoints" / f"checkpoint-{step}" / name)


def ema(run: Path, step: int) -> dict:
    folder = run / "checkpoints" / f"checkpoint-{step}"
    files = [p for p in folder.iterdir() if "ema" in p.name and p.suffix == ".safetensors"]
    assert len(files) == 1, sorted(p.name for p in folder.iterdir())
    return weights(files[0])


@pytest.mark.slow
def test_phase_lines_and_weight_hashes_per_phase(runs):
    run = runs / "runs" / "one"
    log = (run / "logs" / "train.log").read_text()
    assert f"step {PRE}: phase pretrain -> critic (cycle 1)" in log
    assert f"step {PRE + CRIT}: phase critic -> gan (cycle 1)" in log
    assert log.count("phase ") == 3  # the start line + the two changes
    # checkpoints every 3 steps: 3, 6 (pretrain), 9, 12 (critic), 15, 18 (GAN)
    g = {s: ckpt(run, s, 0) for s in (3, 6, 9, 12, 15, 18)}
    d = {s: ckpt(run, s, 1) for s in (3, 6, 9, 12, 15, 18)}
    e = {s: ema(run, s) for s in (3, 6, 9, 12, 15, 18)}
    assert bitwise_equal(d[3], d[6])                                      # critic frozen in pretrain
    assert not bitwise_equal(g[3], g[6]) and not bitwise_equal(e[3], e[6])
    assert bitwise_equal(g[6], g[9]) and bitwise_equal(g[9], g[12])       # generator frozen in critic phase
    assert bitwise_equal(e[6], e[9]) and bitwise_equal(e[9], e[12])       # ... and its EMA
    assert not bitwise_equal(d[6], d[9]) and not bitwise_equal(d[9], d[12])
    assert not bitwise_equal(g[12], g[15]) and not bitwise_equal(d[15], d[18]) and not bitwise_equal(e[12], e[15])
    state = json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "model_state.json").read_text())
    assert [c["step"] for c in state["phase_changes"]] == [PRE, PRE + CRIT]
    assert state["generator_updates"] == PRE + GAN
    assert state["critic_updates"] + state["d_skips"] == CRIT + GAN


@pytest.mark.slow
def test_kill9_in_the_critic_phase_then_resume_auto_is_bitwise_equal(runs):
    folder = runs
    step = PRE + CRIT // 2 + 1  # between the checkpoints at 9 and 12, in the critic phase
    probe = folder / "probe-killed"
    killed = launch("python", 1, CONFIG, *overrides(folder, "killed"), log=folder / "killed.log", probe=probe,
                    env={"PROBE_KILL_AT_STEP": f"{step}@0"})
    assert killed.returncode != 0, killed.tail()
    resumed = launch("python", 1, CONFIG, *overrides(folder, "killed"), "--resume", "auto",
                     log=folder / "killed-2.log", probe=probe)
    assert_clean(resumed, "resumed run")
    assert "resumed from" in resumed.output
    run, ref = folder / "runs" / "killed", folder / "runs" / "one"
    for index in (0, 1):
        assert bitwise_equal(ckpt(run, STEPS, index), ckpt(ref, STEPS, index)), index
    assert bitwise_equal(weights(run / "last" / "model.safetensors"), weights(ref / "last" / "model.safetensors"))
    assert rank_record(probe, 0)["model_state"] == rank_record(folder / "probe-one", 0)["model_state"]


@pytest.mark.slow
def test_best_has_onnx_and_info_that_reproduce(tmp_path):
    """best/ written at a validation: sha256 of every file and the metrics reproduce from best/'s weights."""
    import torch

    from models.multitask_model import load_exported, sha256
    result = launch("python", 1, CONFIG, *overrides(tmp_path, "best", "train.max_steps=4", "train.val_every=4",
                                                   "model.pretrain_steps=2", "model.critic_steps=1",
                                                   "model.gan_steps=1", "datasets.val.names=[camera]"),
                    log=tmp_path / "best.log")
    assert_clean(result, "run")
    best = tmp_path / "runs" / "best" / "best"
    info = json.loads((best / "best_model_info.json").read_text())
    assert info["step"] == 4
    assert set(info["files"]) >= {"model.safetensors", "model.onnx", "config.json"}
    for name, digest in info["files"].items():
        assert hashlib.sha256((best / name).read_bytes()).hexdigest() == digest == sha256(best / name)
    assert all(v < 1e-4 for v in info["onnx"]["max_abs_diff_vs_pytorch"].values())
    assert set(info["onnx"]["max_abs_diff_vs_pytorch"]) == {"1x64x64", "1x96x128", "2x64x64"}
    # the metrics are those of exactly these weights: re-score best/ on the validation set
    from dataset import create_dataset
    from models.multitask_model import MultiTaskGAN_model
    from utils.config import load_config
    from utils.evaluation import score_items
    from utils.image_io import quantize

    cfg = load_config(str(CONFIG), ["datasets.val.names=[camera]"])
    val = create_dataset({**cfg.datasets.val, "phase": "val", "seed": cfg.seed})
    net = load_exported(best)
    model = MultiTaskGAN_model.__new__(MultiTaskGAN_model)
    model.networks, model.accelerator, model.options = {"net": net}, None, cfg.model
    per = {}
    for i in range(len(val)):
        s = val[i]
        batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in s.items()}
        with torch.no_grad():
            pred = quantize(model.predict(batch))
        items = model.evaluation_items(batch, pred)
        per.update(score_items(items, ["psnr", "ssim"]))
    for task in ("sr_x2", "jpeg", "denoise", "color"):
        got = [v["psnr"] for k, v in per.items() if k.startswith(task + "/")]
        assert abs(got[0] - info["metrics"][f"{task}/psnr"]) < 1e-6, task
