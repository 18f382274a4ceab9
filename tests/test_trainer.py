"""trainer.py end to end on a small on-disk dataset (tiny UNet, 32 px crops, a few steps).

Most runs happen in this process (one import of torch/transformers); the runs that must be
separate processes (kill -9, a signal, torchrun, the CLI entry point) are subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """16 training pairs (40×40) and 3 validation pairs of odd sizes: blurred + noisy inputs."""
    from scipy.ndimage import gaussian_filter
    from skimage import data

    from utils.image_io import write_image

    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    shapes = {"train": [(40, 40)] * 16, "val": [(36, 44), (41, 33), (40, 40)]}
    for split, sizes in shapes.items():
        for i, (h, w) in enumerate(sizes):
            src = sources[i % len(sources)].astype(np.float32) / 255.0
            y, x = rng.integers(0, 250, 2)
            gt = src[y:y + h, x:x + w]
            lq = np.stack([gaussian_filter(gt[..., c], 1.0) for c in range(3)], -1)
            lq = np.clip(lq + rng.normal(0, 0.02, lq.shape), 0, 1)
            write_image(root / split / "gt" / f"im{i:02d}.png", gt)
            write_image(root / split / "lq" / f"im{i:02d}.png", lq)
    return root


def experiment(folder: Path, data: Path, extra: str = "") -> Path:
    """A small experiment YAML (UNet width 4, crops 32, EMA, random flips/rotations)."""
    text = f"""
        name: run
        seed: 3
        network: {{type: UNet, width: 4, depth: 1, blocks_per_level: 1}}
        datasets:
          train: {{type: PairedFolderDataset, root: {data / 'train'}, phase: train, crop_size: 32}}
          val: {{type: PairedFolderDataset, root: {data / 'val'}, phase: val}}
          test: {{type: PairedFolderDataset, root: {data / 'val'}, phase: test}}
        path: {{root: {folder / 'runs'}}}
        train:
          max_steps: 40
          batch_size: 4
          lr: 2.0e-3
          scheduler: {{type: cosine, warmup_steps: 3}}
          losses: [{{type: L1}}, {{type: FFT, weight: 0.05}}]
          clip_grad_norm: 1.0
          ema_decay: 0.9
          val_every: 20
          checkpoint_every: 20
          log_every: 5
        val: {{log_images: 1}}
        report_to: []
    """
    path = folder / "exp.yml"
    base = folder / "base_test.yml"
    base.write_text(textwrap.dedent(text))
    path.write_text("base: base_test.yml\n" + textwrap.dedent(extra))
    return path


def train(config: Path, *args: str) -> int:
    from trainer import main

    return main(["-opt", str(config), *args])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def run_dir(folder: Path, name: str = "run") -> Path:
    return folder / "runs" / name


def trainer_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "trainer.py"), "-opt", str(config), *args]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.pop("RESTORELAB_DEBUG", None)
    return env


# -- resume ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_after_checkpoint_then_resume_equals_uninterrupted(data_root, tmp_path):
    config = experiment(tmp_path, data_root)
    assert train(config, "name=reference") == 0

    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(trainer_cmd(config, "name=killed"), cwd=ROOT, stdout=log, stderr=log, env=subprocess_env())
    ckpt20 = run_dir(tmp_path, "killed") / "checkpoints" / "checkpoint-20"
    deadline = time.time() + 600
    while not ckpt20.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert ckpt20.is_dir()
    assert not (run_dir(tmp_path, "killed") / "last").exists()          # it really was interrupted
    assert not (run_dir(tmp_path, "killed") / "checkpoints" / "checkpoint-40").exists()

    assert train(config, "name=killed", "--resume", "auto") == 0
    ref, resumed = run_dir(tmp_path, "reference"), run_dir(tmp_path, "killed")
    assert max_diff(weights(resumed / "last"), weights(ref / "last")) <= 1e-6          # EMA weights (exported)
    raw = lambda d: weights(d / "checkpoints" / "checkpoint-40")
    assert max_diff(raw(resumed), raw(ref)) <= 1e-6                                     # raw weights
    assert "resumed from" in (resumed / "logs" / "train.log").read_text()
    # Sanity: training moved the weights, so equality is not trivial.
    assert max_diff(raw(ref), load_file(str(ref / "checkpoints" / "checkpoint-20" / "model.safetensors"))) > 1e-4


def test_rng_state_is_restored_with_a_checkpoint(data_root, tmp_path):
    from trainer import Trainer
    from utils.config import load_config

    cfg = load_config(experiment(tmp_path, data_root))
    trainer = Trainer(cfg)
    ckpt = trainer.save_checkpoint()
    after_save = (torch.rand(4), np.random.rand(2))
    trainer._load_checkpoint(ckpt)
    again = (torch.rand(4), np.random.rand(2))
    assert torch.equal(after_save[0], again[0]) and np.array_equal(after_save[1], again[1])
    trainer.accelerator.end_training()


@pytest.mark.slow
def test_signal_writes_checkpoint_exits_75_and_resumes_exactly(data_root, tmp_path):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 1000, checkpoint_every: 0, val_every: 0, log_every: 1, scheduler: {type: constant}}
        datasets: {val: null}
    """)
    log = (tmp_path / "preempted.log").open("w")
    proc = subprocess.Popen(trainer_cmd(config, "name=preempted"), cwd=ROOT, stdout=log, stderr=log, env=subprocess_env())
    text_log = run_dir(tmp_path, "preempted") / "logs" / "train.log"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if text_log.is_file() and "step 3:" in text_log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=300) == 75, (tmp_path / "preempted.log").read_text()[-2000:]
    from trainer import list_checkpoints

    found = list_checkpoints(run_dir(tmp_path, "preempted") / "checkpoints")
    assert len(found) == 1
    step = found[0][0]
    assert 3 <= step < 1000
    assert "stopped by SIGUSR1" in text_log.read_text()

    target = str(step + 3)
    assert train(config, "name=preempted", "--resume", "auto", f"train.max_steps={target}") == 0
    assert train(config, "name=straight", f"train.max_steps={target}") == 0
    assert max_diff(weights(run_dir(tmp_path, "preempted") / "last"), weights(run_dir(tmp_path, "straight") / "last")) <= 1e-6


# -- outputs, trackers, test mode --------------------------------------------------------------


def comet_records(logs: Path) -> list[dict]:
    archives = sorted((logs / "comet").glob("*.zip"))
    assert len(archives) == 1
    with zipfile.ZipFile(archives[0]) as z:
        lines = z.read("messages.json").decode().splitlines()
        names = z.namelist()
    return [json.loads(line) for line in lines if line.strip()], names


def test_run_directory_trackers_and_test_mode(data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = experiment(tmp_path, data_root, """
        train: {max_steps: 4, val_every: 2, checkpoint_every: 2, log_every: 1, keep_checkpoints: 1}
        val: {log_images: 2, save_images: true}
        report_to: [tensorboard, comet_ml]
    """)
    assert train(config) == 0
    run = run_dir(tmp_path)
    for item in ("config.yaml", "best/model.safetensors", "best/config.json", "last/model.safetensors",
                 "logs/train.log", "results/val/step-4/metrics.json", "results/val/step-2/im00.png"):
        assert (run / item).is_file(), item
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-4"]   # keep_checkpoints: 1
    assert not list(run.glob(".tmp-*")) and not list((run / "checkpoints").glob(".tmp-*"))

    # last/ is a save_pretrained folder holding the EMA weights.
    from models.archs import get_network_classes

    _, arch = get_network_classes("UNet")
    net = arch.from_pretrained(run / "last")
    ema = load_file(str(run / "checkpoints" / "checkpoint-4" / "ema.safetensors"))
    assert max_diff({k: v for k, v in net.state_dict().items()}, {k[len("net."):]: v for k, v in ema.items()}) == 0

    val_metrics = json.loads((run / "results" / "val" / "step-4" / "metrics.json").read_text())
    assert {"convention", "mean", "per_image"} <= set(val_metrics)
    assert sorted(val_metrics["per_image"]) == ["im00.png", "im01.png", "im02.png"]

    # TensorBoard: scalars and image grids.
    events = EventAccumulator(str(run / "logs" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val/psnr")] == [2, 4]
    assert events.Scalars("val/psnr")[-1].value == pytest.approx(val_metrics["mean"]["psnr"], abs=1e-4)
    assert {"train/lr", "train/loss_L1", "train/loss_FFT", "val/ssim"} <= set(tags["scalars"])
    grids = events.Images("val/0")
    assert [g.step for g in grids] == [2, 4] and "val/1" in tags["images"]
    assert grids[0].width == 3 * 44 and grids[0].height == 36          # input | output | ground truth

    # Comet offline archive: the same scalars and images.
    records, names = comet_records(run / "logs")
    metrics = [r["payload"]["metric"] for r in records if r["type"] == "metric_msg"]
    loss_steps = [m["step"] for m in metrics if m["metricName"] == "train/loss"]
    psnr = [m for m in metrics if m["metricName"] == "val/psnr"]
    assert loss_steps == [1, 2, 3, 4] and [m["step"] for m in psnr] == [2, 4]
    assert float(psnr[-1]["metricValue"]) == pytest.approx(val_metrics["mean"]["psnr"], abs=1e-4)
    uploads = [r for r in records if r["type"] == "file_upload"]
    assert len(uploads) == 4 and all(r["payload"]["file_path"] in names for r in uploads)

    # -test with the final (EMA) weights reproduces the last validation exactly.
    assert train(config, "-test", "--weights", str(run / "last")) == 0
    test_metrics = json.loads((run / "results" / "test" / "metrics.json").read_text())
    assert test_metrics["per_image"] == val_metrics["per_image"]
    assert sorted(p.name for p in (run / "results" / "test").glob("*.png")) == ["im00.png", "im01.png", "im02.png"]
    csv_rows = (run / "results" / "test" / "metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "image,psnr,ssim" and len(csv_rows) == 4

    # calculate_metrics.py on the saved PNGs gives the trainer's validation numbers.
    import calculate_metrics

    assert calculate_metrics.main(["--gt_folder", str(data_root / "val" / "gt"), "--pred_folder",
                                   str(run / "results" / "test"), "--out", str(tmp_path / "cm"), "--quiet"]) == 0
    files = json.loads((tmp_path / "cm" / "metrics.json").read_text())
    assert sorted(files["per_image"]) == sorted(val_metrics["per_image"])
    for image, values in val_metrics["per_image"].items():
        assert abs(files["per_image"][image]["psnr"] - values["psnr"]) <= 1e-3
        assert abs(files["per_image"][image]["ssim"] - values["ssim"]) <= 1e-6
    assert abs(files["mean"]["psnr"] - val_metrics["mean"]["psnr"]) <= 1e-3


def test_grad_accumulation_equals_a_larger_batch(data_root, tmp_path):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 3, ema_decay: null, checkpoint_every: 0, val_every: 0}
        datasets: {val: null}
    """)
    assert train(config, "name=accum", "train.batch_size=4", "train.grad_accum=2") == 0
    assert train(config, "name=big", "train.batch_size=8") == 0
    diff = max_diff(weights(run_dir(tmp_path, "accum") / "last"), weights(run_dir(tmp_path, "big") / "last"))
    assert diff <= 1e-5
    assert train(config, "name=small", "train.batch_size=4") == 0  # the comparison can fail
    assert max_diff(weights(run_dir(tmp_path, "small") / "last"), weights(run_dir(tmp_path, "big") / "last")) > 1e-4


def test_dataloader_workers_do_not_change_the_samples(data_root, tmp_path):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 5, checkpoint_every: 0, val_every: 0, ema_decay: null}
        datasets: {val: null}
    """)  # 16 samples, batch 4: 5 steps cross an epoch boundary (set_epoch in the workers' copies)
    assert train(config, "name=w0", "train.num_workers=0") == 0
    assert train(config, "name=w2", "train.num_workers=2") == 0
    assert max_diff(weights(run_dir(tmp_path, "w0") / "last"), weights(run_dir(tmp_path, "w2") / "last")) == 0


def test_bf16_mixed_precision_on_cpu(data_root, tmp_path):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 2, mixed_precision: bf16, val_every: 2, checkpoint_every: 2}
    """)
    assert train(config) == 0
    saved = weights(run_dir(tmp_path) / "last")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in saved.values())
    metrics = json.loads((run_dir(tmp_path) / "results" / "val" / "step-2" / "metrics.json").read_text())
    assert np.isfinite(metrics["mean"]["psnr"])


# -- errors ---------------------------------------------------------------------------------


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI entry point in this process, as `python trainer.py ...` would."""
    from trainer import main
    from utils.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(list(argv)))
    return exit_info.value.code, capsys.readouterr().err


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(data_root, tmp_path, capsys):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 4, checkpoint_every: 2, val_every: 0}
        datasets: {val: null}
    """)
    assert train(config) == 0
    ckpts = run_dir(tmp_path) / "checkpoints"
    before = weights(ckpts / "checkpoint-4")
    code, err = cli(capsys, "-opt", str(config), "--resume", "auto", "train.max_steps=8",
                    "train.losses=[{type: L1, weight: .inf}]")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "loss is inf at step 5" in lines[0] and "checkpoint-4 (kept)" in lines[0]
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert max_diff(weights(ckpts / "checkpoint-4"), before) == 0
    # The kept checkpoint still resumes (named explicitly this time); the change is logged.
    assert train(config, "--resume", "checkpoint-4", "train.max_steps=5") == 0
    log = (run_dir(tmp_path) / "logs" / "train.log").read_text()
    assert "config changed since the previous run: train.max_steps: 8 -> 5" in log


@pytest.mark.parametrize("override, expected", [
    ("train.max_stepz=3", "unknown key train.max_stepz; did you mean train.max_steps?"),
    ("network.type=UNte", "network.type: unknown network 'UNte'; did you mean 'UNet'?"),
    ("push_to_hub=true", "push_to_hub: true needs hub_model_id"),
])
def test_bad_config_is_one_line_and_writes_nothing(data_root, tmp_path, capsys, override, expected):
    config = experiment(tmp_path, data_root)
    code, err = cli(capsys, "-opt", str(config), override)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_data_is_one_line_and_writes_nothing(data_root, tmp_path, capsys):
    import shutil

    empty = tmp_path / "empty"
    (empty / "gt").mkdir(parents=True)
    (empty / "lq").mkdir()
    config = experiment(tmp_path, data_root)
    code, err = cli(capsys, "-opt", str(config), f"datasets.train.root={empty}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no images in" in err

    broken = tmp_path / "broken"
    shutil.copytree(data_root / "train", broken)
    (broken / "gt" / "im00.png").write_bytes(b"not a png")
    code, err = cli(capsys, "-opt", str(config), f"datasets.train.root={broken}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "im00.png" in err

    code, err = cli(capsys, "-opt", str(config), "push_to_hub=true", "hub_model_id=someone/model")
    assert code == 2 and "the Hugging Face Hub is offline" in err and len(err.strip().splitlines()) == 1

    code, err = cli(capsys, "-opt", str(config), "train.mixed_precision=fp16")
    assert code == 2 and "fp16 needs a GPU" in err
    assert not (tmp_path / "runs").exists()


def test_existing_run_needs_resume(data_root, tmp_path, capsys):
    config = experiment(tmp_path, data_root, "train: {max_steps: 1, val_every: 0}\n")
    assert train(config) == 0
    code, err = cli(capsys, "-opt", str(config))
    assert code == 2 and "already holds checkpoints; pass --resume auto" in err
    code, err = cli(capsys, "-opt", str(config), "--resume", str(tmp_path / "nowhere"))
    assert code == 2 and "not a complete checkpoint folder" in err


def test_cli_entry_point_subprocess(tmp_path):
    """The real command line: --help, and a missing config as one line with exit code 2."""
    help_text = subprocess.run(trainer_cmd(tmp_path / "x.yml", "--help")[:2] + ["--help"], cwd=ROOT,
                               capture_output=True, text=True, env=subprocess_env())
    assert help_text.returncode == 0 and "--resume" in help_text.stdout and "-test" in help_text.stdout
    result = subprocess.run(trainer_cmd(tmp_path / "missing.yml"), cwd=ROOT, capture_output=True, text=True,
                            env=subprocess_env())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config file not found: {tmp_path / 'missing.yml'}"]


# -- several processes ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(data_root, tmp_path):
    config = experiment(tmp_path, data_root, """
        train: {max_steps: 4, val_every: 4, checkpoint_every: 2}
        val: {save_images: true}
    """)
    env = subprocess_env()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(ROOT / "trainer.py"), "-opt", str(config), "name=ddp", "train.batch_size=2"],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, "\n".join(l for l in result.stderr.splitlines() if "Error" in l or "error" in l)[-3000:]
    assert train(config, "name=single", "train.batch_size=4") == 0
    ddp, single = run_dir(tmp_path, "ddp"), run_dir(tmp_path, "single")
    assert max_diff(weights(ddp / "last"), weights(single / "last")) <= 1e-5
    m_ddp = json.loads((ddp / "results" / "val" / "step-4" / "metrics.json").read_text())
    m_one = json.loads((single / "results" / "val" / "step-4" / "metrics.json").read_text())
    assert sorted(m_ddp["per_image"]) == ["im00.png", "im01.png", "im02.png"]   # every image once, none padded
    for image, values in m_one["per_image"].items():
        assert m_ddp["per_image"][image]["psnr"] == pytest.approx(values["psnr"], abs=1e-3)
    assert sorted(p.name for p in (ddp / "results" / "val" / "step-4").glob("*.png")) == ["im00.png", "im01.png", "im02.png"]
    assert sorted(p.name for p in (ddp / "checkpoints" / "checkpoint-4").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]


def test_tiled_validation_goes_through_utils_tiling(data_root, tmp_path, monkeypatch):
    import utils.tiling

    config = experiment(tmp_path, data_root, """
        train: {max_steps: 2, val_every: 0, checkpoint_every: 0}
        datasets: {val: null}
    """)
    assert train(config) == 0
    assert train(config, "-test") == 0
    whole = json.loads((run_dir(tmp_path) / "results" / "test" / "metrics.json").read_text())
    calls = []
    real = utils.tiling.tiled_forward

    def spy(fn, x, patch_size, overlap, **kw):
        calls.append((tuple(x.shape), patch_size, overlap))
        return real(fn, x, patch_size, overlap, **kw)

    monkeypatch.setattr(utils.tiling, "tiled_forward", spy)
    assert train(config, "-test", "val.patched=true", "val.patch_size=16", "val.overlap=8") == 0
    tiled = json.loads((run_dir(tmp_path) / "results" / "test" / "metrics.json").read_text())
    assert sorted(c[0] for c in calls) == [(1, 3, 36, 44), (1, 3, 40, 40), (1, 3, 41, 33)]
    assert all(c[1:] == (16, 8) for c in calls)
    for image, values in whole["per_image"].items():  # seamless blending: scores stay close
        assert abs(tiled["per_image"][image]["psnr"] - values["psnr"]) < 0.5


def test_validation_batch_of_unequal_images_is_one_line(data_root, tmp_path, capsys):
    config = experiment(tmp_path, data_root, "train: {max_steps: 1, val_every: 1}\nval: {batch_size: 2}\n")
    code, err = cli(capsys, "-opt", str(config))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err   # progress/log lines aside
    assert "val.batch_size=2 needs images of one size" in errors[0]


def hf_folder_from_pairs(pairs: Path, out: Path) -> Path:
    """A dataset folder laid out like data_gen/3's output (data/{split}-*.parquet, Image columns)."""
    import datasets

    features = datasets.Features({"gt": datasets.Image(), "lq": datasets.Image(), "key": datasets.Value("string")})
    for split, folder in (("train", "train"), ("validation", "val")):
        names = sorted(p.name for p in (pairs / folder / "gt").iterdir())
        rows = {"gt": [], "lq": [], "key": []}
        for name in names:
            rows["gt"].append({"bytes": (pairs / folder / "gt" / name).read_bytes(), "path": None})
            rows["lq"].append({"bytes": (pairs / folder / "lq" / name).read_bytes(), "path": None})
            rows["key"].append(f"{split}/{name[:-4]}")
        (out / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


@pytest.mark.parametrize("name, small", [
    ("NAFNet", ["network.width=8", "network.enc_blk_nums=[1,1]", "network.dec_blk_nums=[1,1]"]),
    ("UNet", ["network.width=8", "network.depth=2"]),
])
def test_shipped_configs_train_on_a_dataset_folder(data_root, tmp_path, name, small):
    folder = hf_folder_from_pairs(data_root, tmp_path / "seidel")
    overrides = [f"datasets.{s}.path={folder}" for s in ("train", "val", "test")] + small + [
        f"path.root={tmp_path / 'runs'}", "train.max_steps=2", "train.batch_size=2", "datasets.train.crop_size=32",
        "train.val_every=2", "train.checkpoint_every=2", "train.num_workers=0", "report_to=[]"]
    config = ROOT / "checkpoints" / f"{name}.yml"
    assert train(config, *overrides) == 0
    run = tmp_path / "runs" / f"{name}_seidel"
    metrics = json.loads((run / "results" / "val" / "step-2" / "metrics.json").read_text())
    assert sorted(metrics["per_image"]) == ["validation/im00.png", "validation/im01.png", "validation/im02.png"]
    assert (run / "best" / "model.safetensors").is_file() and (run / "last" / "config.json").is_file()
