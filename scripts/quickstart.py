#!/usr/bin/env python
"""Quickstart: train a small NAFNet to undo a spatially varying blur, compare with Wiener.

Runs the lab's real pipeline on built-in images (scikit-image), on CPU, in minutes:

1. ``trainer.py -opt checkpoints/quickstart.yml`` trains a small NAFNet on random crops of
   built-in images, degraded on the fly (SyntheticBlurDataset: a field-varying elliptical
   Gaussian PSF field + Gaussian noise). Three images (astronaut, camera, coffee) are held out.
2. On the held-out images it scores, with utils.metrics (PSNR/SSIM, 8-bit like saved PNGs):
   the blurred input; Wiener deconvolution with the PSF at the image centre; the "oracle"
   Wiener that knows the true spatially varying PSFs (deconvolve with every node PSF, blend
   with the bilinear node weights); the trained network. Each Wiener's noise-to-signal ratio
   is tuned on training images (never on the held-out ones).
3. Prints a table, writes ``<run dir>/results/summary.json`` and a comparison figure
   ``<run dir>/results/quickstart_comparison.png``.

Usage::

    python scripts/quickstart.py                        # what `make quickstart` runs
    python scripts/quickstart.py train.max_steps=200    # any config override, passed to trainer.py
    python scripts/quickstart.py --skip_train           # re-score an existing run
    OMP_NUM_THREADS=1 python scripts/quickstart.py      # on a machine busy with other jobs
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.atomic import atomic_path, atomic_write_text  # noqa: E402
from utils.errors import ConfigError, RestorelabError, run_cli  # noqa: E402

DEFAULT_CONFIG = ROOT / "checkpoints" / "quickstart.yml"
NSR_GRID = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2)
CLS_NSR_GRID = (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
# Natural photographs from the training set tune the Wiener NSRs (as the held-out images are).
TUNING_IMAGES = ("chelsea", "motorcycle", "rocket")
# The Wiener baselines of the acceptance use the textbook filter (flat NSR); the constrained
# least-squares variant (Laplacian regularizer, docs/models.md) is reported beside them.
WIENERS = {"wiener": ("center", "identity", NSR_GRID), "wiener_oracle": ("components", "identity", NSR_GRID),
           "wiener_cls_oracle": ("components", "laplacian", CLS_NSR_GRID)}
METHODS = (("input", "blurred input"), ("wiener", "Wiener, centre PSF"),
           ("wiener_oracle", "Wiener, true SV PSFs"), ("wiener_cls_oracle", "Wiener-CLS, true SV PSFs"),
           ("model", "NAFNet (trained)"))
# Acceptance margins (mean over held-out images, PSNR dB).
TARGETS = {"model - input": 1.5, "model - wiener": 1.0, "model - wiener_oracle": -0.3}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/quickstart.py",
        description="Train a small NAFNet on built-in images with a spatially varying blur (through trainer.py) "
                    "and compare it with Wiener deconvolution on held-out images.",
        epilog="Writes <path.root>/<name>/results/summary.json and quickstart_comparison.png "
               "(default experiments/quickstart/). On a machine busy with other jobs, run it as "
               "OMP_NUM_THREADS=1 python scripts/quickstart.py: torch's threads then never wait on each "
               "other for a core (on 2 busy cores this was 10-20x faster).",
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default checkpoints/quickstart.yml)")
    parser.add_argument("--skip_train", action="store_true", help="score the existing run's last/ weights, do not train")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an acceptance margin is missed")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, passed to trainer.py")
    return parser


def train(config: Path, overrides: list[str], run_dir: Path, steps: int, log_every: int) -> float:
    """Run trainer.py in a subprocess (the command users run); returns its wall time."""
    if (run_dir / "config.yaml").is_file():
        print(f"replacing the previous run in {run_dir}")
        shutil.rmtree(run_dir)
    cmd = [sys.executable, str(ROOT / "trainer.py"), "-opt", str(config), *overrides]
    print(f"training {steps} steps; from step {log_every} on, every log line gives the measured speed (steps/s) and "
          f"the time left; the Wiener baselines and the figure add about half a minute on a quiet machine", flush=True)
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.call(cmd)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RestorelabError(f"training failed (trainer.py exit code {code}); see {run_dir / 'logs' / 'train.log'}")
    return seconds


def make_dataset(options, **changes):
    from dataset import create_dataset

    return create_dataset({**dict(options), **changes})


def as_batch(sample: dict) -> dict:
    return {k: v[None] for k, v in sample.items() if hasattr(v, "ndim")}


def score(pred, gt) -> tuple[float, float]:
    """PSNR/SSIM of one image, clamped and rounded to 8 bits like a saved PNG (utils.metrics)."""
    from utils.metrics import psnr, ssim

    pred = pred.clamp(0, 1)
    return (psnr(pred, gt, round_to_uint8=True).item(), ssim(pred, gt, round_to_uint8=True).item())


def wiener(mode: str, nsr: float, regularizer: str = "identity"):
    from models.archs import define_network

    return define_network({"type": "Wiener", "mode": mode, "nsr": nsr, "regularizer": regularizer}).eval()


def tune_nsr(mode: str, regularizer: str, grid: tuple, samples: list[dict]) -> tuple[float, dict]:
    """The NSR of ``grid`` with the best mean PSNR on ``samples`` (training images)."""
    import torch

    results = {}
    with torch.no_grad():
        for nsr in grid:
            net = wiener(mode, nsr, regularizer)
            results[nsr] = sum(score(net(**{k: as_batch(s)[k] for k in net.input_keys}), s["gt"][None])[0]
                               for s in samples) / len(samples)
    return max(results, key=results.get), results


def evaluate(cfg, run_dir: Path) -> dict:
    import torch

    from models.archs import get_network_classes

    from dataset.sources import list_sources

    # As trainer.py builds them: the experiment seed unless the YAML sets one.
    train_opts = {"seed": cfg.seed, **cfg.datasets.train.to_dict()}
    val_opts = {"seed": cfg.seed, **cfg.datasets.val.to_dict()}
    if train_opts["type"] != "SyntheticBlurDataset":
        raise ConfigError("the quickstart compares against Wiener with the true PSFs: datasets.train must be "
                          "a SyntheticBlurDataset")
    psf_keys = ["psf", "basis_psfs", "basis_coef"]
    held_out = make_dataset(val_opts, phase="test", crop_size=None, psf_keys=psf_keys)
    # Wiener NSRs are tuned on training images, full size, with their (fixed) validation noise.
    train_names = [name for name, _ in list_sources(train_opts.get("images", "builtin"), train_opts.get("names"),
                                                    train_opts.get("exclude"))]
    tuning_names = [n for n in TUNING_IMAGES if n in train_names] or train_names[:len(TUNING_IMAGES)]
    tuning = make_dataset(train_opts, names=tuning_names, exclude=None, phase="val", crop_size=None,
                          samples_per_image=1, psf_keys=psf_keys)
    tuning_samples = [tuning[i] for i in range(len(tuning))]
    nsr = {}
    for key, (mode, regularizer, candidates) in WIENERS.items():
        nsr[key], grid = tune_nsr(mode, regularizer, candidates, tuning_samples)
        print(f"{key}: NSR {nsr[key]:g} (mean PSNR on {', '.join(tuning_names)}: "
              + ", ".join(f"{k:g}: {v:.2f}" for k, v in grid.items()) + ")", flush=True)

    _, arch_cls = get_network_classes(cfg.network["type"])
    weights = run_dir / "last"
    if not weights.is_dir():
        raise RestorelabError(f"no trained weights in {weights} (run without --skip_train first)")
    net = arch_cls.from_pretrained(weights).eval()
    nets = {key: wiener(mode, nsr[key], regularizer) for key, (mode, regularizer, _) in WIENERS.items()}

    per_image, outputs = {}, {}
    with torch.no_grad():
        for i in range(len(held_out)):
            sample = held_out[i]
            batch, gt = as_batch(sample), sample["gt"][None]
            preds = {"input": batch["lq"], "model": net(**{k: batch[k] for k in net.input_keys})}
            for key, w in nets.items():
                preds[key] = w(**{k: batch[k] for k in w.input_keys})
            per_image[sample["key"]] = {}
            for key, pred in preds.items():
                p, s = score(pred, gt)
                per_image[sample["key"]][f"{key}_psnr"], per_image[sample["key"]][f"{key}_ssim"] = p, s
            outputs[sample["key"]] = {k: v[0].clamp(0, 1) for k, v in preds.items()} | {"gt": sample["gt"]}
    return {"per_image": per_image, "nsr": nsr, "tuning_images": tuning_names, "outputs": outputs}


def save_figure(outputs: dict, per_image: dict, path: Path) -> Path:
    """Rows: held-out images; columns: input, both Wieners, network, ground truth (corner crops,
    where the blur is strongest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("input", "input"), ("wiener", "Wiener (centre PSF)"), ("wiener_oracle", "Wiener (true PSFs)"),
               ("wiener_cls_oracle", "Wiener-CLS (true PSFs)"),
               ("model", "NAFNet"), ("gt", "ground truth")]
    keys = list(outputs)
    fig, axes = plt.subplots(len(keys), len(columns), figsize=(2.6 * len(columns), 3.1 * len(keys)), squeeze=False)
    for r, key in enumerate(keys):
        h, w = outputs[key]["gt"].shape[-2:]
        size = min(h, w) * 3 // 8
        top, left = h // 16, w // 16
        for c, (name, title) in enumerate(columns):
            img = outputs[key][name][:, top:top + size, left:left + size].permute(1, 2, 0).numpy()
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            label = title if name == "gt" else f"{title}\n{per_image[key][f'{name}_psnr']:.2f} dB"
            ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(key, fontsize=9)
    fig.suptitle("held-out images: top-left corner crops (strongest blur); PSNR over the whole image", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def summarize(result: dict, train_steps: int, train_seconds: float | None) -> dict:
    per_image = result["per_image"]
    mean = {m: sum(v[m] for v in per_image.values()) / len(per_image) for m in next(iter(per_image.values()))}
    summary = {
        **{k: mean[k] for k in sorted(mean)},
        "train_steps": train_steps,
        "train_seconds": train_seconds,
        "per_image": per_image,
        **{f"{key}_nsr": value for key, value in result["nsr"].items()},
        "nsr_tuning_images": result["tuning_images"],
    }
    summary["margins_db"] = {name: mean[f"{name.split(' - ')[0]}_psnr"] - mean[f"{name.split(' - ')[1]}_psnr"]
                             for name in TARGETS}
    summary["acceptance"] = {name: summary["margins_db"][name] >= target for name, target in TARGETS.items()}
    return summary


def print_table(summary: dict) -> None:
    per_image = summary["per_image"]
    names = list(per_image)
    header = f"{'method':<24}" + "".join(f"{n:>14}" for n in names) + f"{'mean PSNR':>12}{'mean SSIM':>11}"
    print("\n" + header + "\n" + "-" * len(header))
    for key, label in METHODS:
        row = f"{label:<24}" + "".join(f"{per_image[n][f'{key}_psnr']:>11.2f} dB" for n in names)
        print(row + f"{summary[f'{key}_psnr']:>9.2f} dB{summary[f'{key}_ssim']:>11.4f}")
    print()
    for name, target in TARGETS.items():
        margin = summary["margins_db"][name]
        print(f"{name:<24}{margin:+7.2f} dB  (target {target:+.1f} dB: {'ok' if margin >= target else 'MISSED'})")


def main() -> int:
    args = build_parser().parse_args()
    from utils.config import load_config

    config = Path(args.config)
    cfg = load_config(config, args.overrides)  # fails fast, before any training, on a bad config
    run_dir = cfg.run_dir
    start = time.perf_counter()
    train_seconds = None if args.skip_train else train(config, args.overrides, run_dir, cfg.train.max_steps,
                                                       cfg.train.log_every)
    result = evaluate(cfg, run_dir)
    summary = summarize(result, cfg.train.max_steps, train_seconds)
    figure = save_figure(result["outputs"], result["per_image"], run_dir / "results" / "quickstart_comparison.png")
    summary["figure"] = str(figure)
    summary["total_seconds"] = time.perf_counter() - start
    out = run_dir / "results" / "summary.json"
    atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
    print_table(summary)
    if train_seconds is not None:
        print(f"\ntrained {cfg.train.max_steps} steps in {train_seconds / 60:.1f} min "
              f"({cfg.train.max_steps / train_seconds:.2f} steps/s with start-up and validation); "
              f"total {summary['total_seconds'] / 60:.1f} min")
    print(f"summary: {out}\nfigure:  {figure}")
    return 1 if args.strict and not all(summary["acceptance"].values()) else 0


if __name__ == "__main__":
    run_cli(main)
