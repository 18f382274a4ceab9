#!/usr/bin/env python
"""Compare the restoration methods of the zoo on equal terms, end to end, with the project's tools.

1. Data (skipped when already there): PSF fields by data_gen/1.generate_psfs_synthetic.py
   (``seidel``), low-rank bases by data_gen/2.generate_basis_psfs.py, paired datasets of the
   built-in images by data_gen/3.generate_dataset_synthetic.py: one lens (``seidel``) and a
   dataset mixing three lenses (``mixed``).
2. Classical non-blind methods (Wiener, Richardson–Lucy, FISTA-TV, with the true spatially
   varying PSFs) have no weights; their one hyper-parameter (NSR, iterations, TV weight) is
   chosen on training images, never on the validation split.
3. Learned methods are trained by trainer.py with one budget for all: the same steps, batch,
   crop, learning rate, schedule and loss (``--steps``, ``--batch``, ``--crop``, ``--lr``).
4. Every method runs ``trainer.py -test`` on the validation split (PNG outputs), and
   calculate_metrics.py scores the PNGs against the stored ground truth (PSNR, SSIM, LPIPS),
   as it scores the blurred input itself.
5. On the mixed dataset the PSF-conditioned NAFNetPSF and its unconditioned twin NAFNet
   (same backbone) are trained at every budget of ``--mixed_steps``.

Writes ``OUT/results.md`` (tables) and ``OUT/results.json`` (every number, command, timing and
the machine state). Re-running reuses the datasets and recomputes the runs (``--keep_runs``
reuses finished runs too).

Examples:
    python scripts/compare_methods.py --out compare_out                                # defaults (CPU, ~1 h)
    python scripts/compare_methods.py --out compare_out --steps 2000 --mixed_steps 500,2000 --threads 2
    python scripts/compare_methods.py --out smoke_out --quick                         # minutes: plumbing only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.atomic import atomic_write_text  # noqa: E402
from utils.errors import ConfigError, DataError, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Lenses (Seidel wavefront coefficients in waves, docs/optics.md). "seidel" is the single-lens
# dataset; the mixed dataset adds a defocus-dominated and a coma/field-curvature lens.
LENSES = {
    "seidel": ["W040=1.0", "W020=-1.0", "W131=1.5", "W222=1.0", "W220=0.5"],
    "defocus": ["W020=1.5", "W222=0.5"],
    "coma": ["W131=2.5", "W220=1.0"],
}


@dataclass
class Method:
    label: str
    config: str  # checkpoints/<config>.yml
    network: dict  # overrides of the network mapping (small sizes for CPU)
    classical: bool = False
    tune: tuple | None = None  # (key, candidate values) chosen on training images
    notes: str = ""


@dataclass
class Setup:
    out: Path
    size: tuple
    grid: int
    psf_size: int
    n_basis: int
    steps: int
    mixed_steps: list
    batch: int
    crop: int
    lr: float
    seed: int
    threads: int
    tune_images: int
    methods: list
    keep_runs: bool
    log: list = field(default_factory=list)


def methods_for(psf_size: int, n_basis: int, quick: bool) -> dict[str, Method]:
    w = 8 if quick else 16
    nafnet = {"type": "NAFNet", "width": w, "enc_blk_nums": [1, 1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1]}
    return {
        "Wiener": Method("Wiener (regions 5x5, true SV PSFs)", "Wiener",
                         {"type": "Wiener", "mode": "regions", "regions": [5, 5], "linear_light": True}, True,
                         ("nsr", [1e-2, 3e-2, 1e-1, 3e-1])),
        "WienerCLS": Method("Wiener-CLS (Laplacian regularizer, regions 5x5, true SV PSFs)", "Wiener",
                            {"type": "Wiener", "mode": "regions", "regions": [5, 5], "linear_light": True,
                             "regularizer": "laplacian"}, True, ("nsr", [1e-1, 3e-1, 1.0, 3.0, 10.0])),
        "RichardsonLucy": Method("Richardson-Lucy (true SV PSFs)", "RichardsonLucy",
                                 {"type": "RichardsonLucy", "linear_light": True}, True,
                                 ("iterations", [2, 3, 5, 10, 20])),
        "FISTATV": Method("FISTA-TV (true SV PSFs)", "FISTATV",
                          {"type": "FISTATV", "iterations": 10 if quick else 40, "linear_light": True}, True,
                          ("tv_weight", [1e-3, 3e-3, 1e-2, 3e-2])),
        "UNet": Method("UNet", "UNet", {"type": "UNet", "width": w, "depth": 3, "blocks_per_level": 2}),
        "NAFNet": Method("NAFNet", "NAFNet", nafnet),
        "Restormer": Method("Restormer", "Restormer",
                            {"type": "Restormer", "dim": w, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                             "heads": [1, 2, 4, 8]}),
        "MultiWienerNet": Method("MultiWienerNet (regions 3x3)", "MultiWienerNet",
                                 {"type": "MultiWienerNet", "mode": "regions", "regions": [3, 3], "n_basis": n_basis,
                                  "psf_size": psf_size, "linear_light": True, "regularizer": "laplacian",
                                  "refiner": {"width": w, "depth": 3, "blocks_per_level": 2}}),
        "NAFNetPSF": Method("NAFNetPSF (PSF-conditioned)", "NAFNet_psf",
                            {**nafnet, "type": "NAFNetPSF", "cond_dim": w, "psf_size": psf_size}),
    }


# -- running the project's tools -----------------------------------------------------------------
def run_tool(setup: Setup, argv: list[str], what: str) -> float:
    """Run a project script in a subprocess (one clear error with its last stderr lines)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS=str(setup.threads), MKL_NUM_THREADS=str(setup.threads))
    env.pop("RESTORELAB_DEBUG", None)
    start = time.time()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.time() - start
    setup.log.append({"what": what, "command": " ".join(["python", *[str(a) for a in argv]]), "seconds": round(elapsed, 1),
                      "returncode": proc.returncode})
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DataError(f"{what} failed (exit {proc.returncode}): {tail}")
    return elapsed


def make_data(setup: Setup, progress) -> dict[str, Path]:
    """PSF fields (steps 1-2) and the two datasets (step 3), unless already complete."""
    h, w = setup.size
    psf_root, data_root = setup.out / "psf", setup.out / "data"
    for lens, coefficients in LENSES.items():
        folder = psf_root / lens
        if not (folder / "psfs.h5").is_file():
            progress(f"step 1: PSF field '{lens}'")
            run_tool(setup, ["data_gen/1.generate_psfs_synthetic.py", "--psf_type", "seidel", "--save_dir", str(folder),
                             "--grid", str(setup.grid), str(setup.grid), "--psf_size", str(setup.psf_size),
                             "--sensor_res", str(h), str(w), "--f_number", "4", "--pixel_pitch_um", "2",
                             "--overwrite", "--no_previews", "--seidel", *coefficients], f"step 1 ({lens})")
            progress(f"step 2: basis of '{lens}'")
            run_tool(setup, ["data_gen/2.generate_basis_psfs.py", "--psf_data_path", str(folder), "--n_basis",
                             str(setup.n_basis), "--no_figures"], f"step 2 ({lens})")
    datasets = {"seidel": [psf_root / "seidel"], "mixed": [psf_root / lens for lens in LENSES]}
    out = {}
    for name, paths in datasets.items():
        folder = data_root / name
        if not (folder / "README.md").is_file():
            progress(f"step 3: dataset '{name}'")
            run_tool(setup, ["data_gen/3.generate_dataset_synthetic.py", "--psf_data_path", *map(str, paths),
                             "--images", "builtin", "--out", str(folder), "--seed", str(setup.seed),
                             "--splits", "train=0.8,validation=0.2", "--samples_per_image", "4",
                             "--noise", "poisson_gaussian", "--photons", "500", "2000", "--read_noise", "2",
                             "--workers", str(max(1, setup.threads))], f"step 3 ({name})")
        out[name] = folder
    return out


def export_split(dataset: Path, split: str, target: Path) -> Path:
    """The stored gt/lq PNG bytes of a split as files named by key (what -test writes for outputs)."""
    import pyarrow.parquet as pq

    if (target / "gt").is_dir() and (target / "lq").is_dir():
        return target
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for shard in sorted((dataset / "data").glob(f"{split}-*.parquet")):
        for row in pq.read_table(shard, columns=["gt", "lq", "key"]).to_pylist():
            for column in ("gt", "lq"):
                path = tmp / column / f"{row['key']}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(row[column]["bytes"])
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def score(setup: Setup, gt: Path, pred: Path, out: Path, what: str) -> dict:
    run_tool(setup, ["calculate_metrics.py", "--gt_folder", str(gt), "--pred_folder", str(pred),
                     "--metrics", "psnr,ssim,lpips", "--out", str(out), "--summary_only", "--quiet"], f"metrics ({what})")
    return json.loads((out / "metrics.json").read_text())["mean"]


# -- methods -------------------------------------------------------------------------------------------
def tune_classical(method: Method, dataset: Path, setup: Setup) -> tuple[object, dict]:
    """The candidate with the best mean PSNR on (up to) ``tune_images`` training images."""
    import torch

    from dataset import create_dataset
    from models.archs import define_network
    from utils.metrics import compute_metrics

    key, candidates = method.tune
    data = create_dataset({"type": "HFDataset", "path": str(dataset), "split": "train", "phase": "val",
                           "psf_keys": ["basis_psfs", "basis_coef"]})
    picks = range(0, len(data), max(1, len(data) // setup.tune_images))[: setup.tune_images]
    samples = [data[i] for i in picks]
    scores = {}
    with torch.no_grad():
        for value in candidates:
            net = define_network({**method.network, key: value}).eval()
            values = []
            for s in samples:
                pred = net(s["lq"][None], basis_psfs=s["basis_psfs"][None], basis_coef=s["basis_coef"][None])
                values.append(float(compute_metrics(pred, s["gt"][None], names=("psnr",), round_to_uint8=True)["psnr"][0]))
            scores[str(value)] = sum(values) / len(values)
    best = max(candidates, key=lambda v: scores[str(v)])
    return best, scores


def trainer_overrides(setup: Setup, name: str, dataset: Path, network: dict, steps: int | None) -> list[str]:
    net = json.dumps(network, separators=(", ", ": "))
    out = [f"name={name}", f"path.root={setup.out / 'runs'}", f"network={net}", "report_to=[]", f"seed={setup.seed}",
           "val.metrics=[psnr,ssim]", "train.num_workers=0"]
    for split, phase in (("train", "train"), ("val", "val"), ("test", "test")):
        out.append(f"datasets.{split}={{type: HFDataset, path: {dataset}, split: "
                   f"{'train' if split == 'train' else 'validation'}, phase: {phase}"
                   + (f", crop_size: {setup.crop}" if split == "train" else "") + "}")
    if steps is not None:
        out += [f"train.max_steps={steps}", f"train.batch_size={setup.batch}", f"train.lr={setup.lr}",
                "train.scheduler={type: cosine, warmup_steps: 0, min_lr: 0.0}", "train.losses=[{type: L1, weight: 1.0}]",
                "train.val_every=0", "train.checkpoint_every=0", "train.keep_checkpoints=1",
                f"train.log_every={max(1, steps // 10)}", "train.ema_decay=null", "train.grad_accum=1"]
    return out


def run_method(setup: Setup, key: str, method: Method, dataset_name: str, dataset: Path, eval_dir: Path,
               steps: int | None, progress) -> dict:
    name = f"{dataset_name}_{key}" + (f"_{steps}" if steps is not None and not method.classical else "")
    run_dir = setup.out / "runs" / name
    record = {"method": method.label, "network": key, "dataset": dataset_name, "run": str(run_dir)}
    network = dict(method.network)
    if method.classical and method.tune:
        progress(f"{dataset_name}: tuning {key} on training images")
        best, grid = tune_classical(method, dataset, setup)
        network[method.tune[0]] = best
        record.update(tuned={method.tune[0]: best}, tuning_psnr=grid)
    done = (run_dir / "results" / "test" / "metrics.json").is_file()
    if not (setup.keep_runs and done):
        shutil.rmtree(run_dir, ignore_errors=True)
        config = f"checkpoints/{method.config}.yml"
        if not method.classical:
            progress(f"{dataset_name}: training {key} for {steps} steps")
            record["train_seconds"] = round(run_tool(
                setup, ["trainer.py", "-opt", config, *trainer_overrides(setup, name, dataset, network, steps)],
                f"training {name}"), 1)
        progress(f"{dataset_name}: testing {key}")
        record["test_seconds"] = round(run_tool(
            setup, ["trainer.py", "-opt", config, "-test", *trainer_overrides(setup, name, dataset, network, steps)],
            f"testing {name}"), 1)
    record["steps"] = 0 if method.classical else steps
    if not method.classical:
        from utils.flops import count_params
        from models.archs import define_network

        record["params"] = count_params(define_network(network))
    record["scores"] = score(setup, eval_dir / "gt", run_dir / "results" / "test", run_dir / "calculate_metrics", name)
    return record


# -- report ----------------------------------------------------------------------------------------------
def table(rows: list[dict], with_steps: bool) -> list[str]:
    head = "| method | " + ("steps | " if with_steps else "") + "params | PSNR (dB) | SSIM | LPIPS |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = r["scores"]
        params = f"{r['params'] / 1e6:.3f} M" if r.get("params") else "-"
        tuned = "".join(f" ({k}={v:g})" for k, v in r.get("tuned", {}).items())
        lines.append(f"| {r['method']}{tuned} | " + (f"{r['steps']} | " if with_steps else "")
                     + f"{params} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['lpips']:.4f} |")
    return lines


def write_report(setup: Setup, results: dict, env: dict) -> None:
    s = setup
    lines = ["# Method comparison", "",
             f"Datasets: data_gen steps 1-3 on scikit-image's built-in images, {s.size[0]}x{s.size[1]} sensor, Seidel "
             f"PSFs ({s.grid}x{s.grid} nodes, {s.psf_size} px, PCA basis K={s.n_basis}), blur in linear light, "
             "Poisson-Gaussian noise (500-2000 e- at white, 2 e- read noise), 4 samples per image, split by image "
             "(80/20). Scores: calculate_metrics.py on the validation split's saved PNGs (BasicSR convention, RGB, "
             "no border crop; LPIPS AlexNet).",
             f"Budget of every learned method: {s.steps} steps, batch {s.batch}, {s.crop} px crops, AdamW lr {s.lr:g} "
             "cosine to 0, L1 loss, no EMA. Classical methods: one hyper-parameter chosen on "
             f"{s.tune_images} training images.", "",
             "## One lens (`seidel`)", ""]
    lines += table([results["blurred"]["seidel"], *results["seidel"]], False)
    lines += ["", "## Dataset mixing three lenses (`mixed`): PSF-conditioned vs unconditioned twin", ""]
    lines += table([results["blurred"]["mixed"], *results["mixed"]], True)
    if results.get("mixed_difference"):
        lines += ["", "NAFNetPSF minus NAFNet (same backbone, same budget), validation means:", "",
                  "| steps | ΔPSNR (dB) | ΔSSIM | ΔLPIPS |", "|---|---|---|---|"]
        for d in results["mixed_difference"]:
            lines.append(f"| {d['steps']} | {d['psnr']:+.2f} | {d['ssim']:+.4f} | {d['lpips']:+.4f} |")
    lines += ["", f"Machine: {env['machine']}; torch {env['torch']}, {s.threads} thread(s) per process; load average "
              f"at start {env['load_start']}, at end {env['load_end']}; total {env['total_minutes']:.1f} min.",
              f"Command: `{env['command']}`", ""]
    atomic_write_text(s.out / "results.md", "\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--out", required=True, type=Path, help="working folder (datasets, runs, results.md/json)")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"), help="sensor (image) size")
    parser.add_argument("--grid", type=int, default=5, help="PSF nodes per side")
    parser.add_argument("--psf_size", type=int, default=21, help="PSF window (odd)")
    parser.add_argument("--n_basis", type=int, default=8, help="step 2 PCA basis size K")
    parser.add_argument("--steps", type=int, default=600, help="training steps of every learned method (one lens)")
    parser.add_argument("--mixed_steps", default="600,2000", help="comma-separated budgets for NAFNet vs NAFNetPSF on the mixed data")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64, help="training crop size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--tune_images", type=int, default=4, help="training images used to pick classical hyper-parameters")
    parser.add_argument("--methods", default="", help="comma-separated subset of: " + ", ".join(methods_for(21, 8, False)))
    parser.add_argument("--keep_runs", action="store_true", help="reuse runs whose test results already exist")
    parser.add_argument("--quick", action="store_true",
                        help="tiny everything (48x64 sensor, 3x3 nodes, 11 px PSFs, 3 steps): checks the plumbing, not the methods")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.grid, args.psf_size, args.n_basis, args.steps, args.mixed_steps = [48, 64], 3, 11, 4, 3, "3"
        args.crop, args.batch, args.tune_images = 32, 2, 2
    if args.psf_size % 2 == 0 or args.n_basis > args.grid ** 2:
        raise ConfigError("--psf_size must be odd and --n_basis at most grid**2")
    zoo = methods_for(args.psf_size, args.n_basis, args.quick)
    chosen = [m for m in args.methods.split(",") if m] or list(zoo)
    unknown = [m for m in chosen if m not in zoo]
    if unknown:
        from utils.registry import unknown_name_message

        raise ConfigError(unknown_name_message("method", unknown[0], list(zoo)))
    try:
        mixed_steps = [int(v) for v in args.mixed_steps.split(",") if v]
    except ValueError:
        raise ConfigError(f"--mixed_steps must be comma-separated integers, got {args.mixed_steps!r}") from None
    setup = Setup(args.out, tuple(args.size), args.grid, args.psf_size, args.n_basis, args.steps, mixed_steps,
                  args.batch, args.crop, args.lr, args.seed, args.threads, args.tune_images, chosen, args.keep_runs)
    setup.out.mkdir(parents=True, exist_ok=True)

    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    started = time.time()
    env = {"command": " ".join(["python", "scripts/compare_methods.py", *(argv if argv is not None else sys.argv[1:])]),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}", "torch": torch.__version__,
           "load_start": [round(v, 2) for v in os.getloadavg()]}
    bar = tqdm(total=len(chosen) + 2 * len(mixed_steps) + 3, desc="compare", unit="job")

    def progress(text):
        bar.set_postfix_str(text, refresh=True)

    data = make_data(setup, progress)
    bar.update(1)
    evals = {name: export_split(folder, "validation", setup.out / "eval" / name) for name, folder in data.items()}
    results: dict = {"blurred": {}, "seidel": [], "mixed": []}
    for name in data:
        results["blurred"][name] = {"method": "blurred input (lq)", "steps": 0, "dataset": name,
                                    "scores": score(setup, evals[name] / "gt", evals[name] / "lq",
                                                    setup.out / "eval" / f"{name}_lq_metrics", f"{name} lq")}
    bar.update(1)
    for key in chosen:
        results["seidel"].append(run_method(setup, key, zoo[key], "seidel", data["seidel"], evals["seidel"],
                                            setup.steps, progress))
        if key == "WienerCLS" and "MultiWienerNet" in zoo:  # its Wiener stage starts from the NSR tuned here
            zoo["MultiWienerNet"].network["nsr"] = results["seidel"][-1]["tuned"]["nsr"]
            zoo["MultiWienerNet"].notes = "initial NSR: Wiener-CLS's, tuned on training images"
        bar.update(1)
    for key in ("Wiener", "WienerCLS", "RichardsonLucy", "FISTATV"):  # what the true PSFs alone give on the mixed data
        if key in chosen:
            results["mixed"].append(run_method(setup, key, zoo[key], "mixed", data["mixed"], evals["mixed"], None, progress))
    bar.update(1)
    results["mixed_difference"] = []
    for steps in mixed_steps:
        pair = {}
        for key in ("NAFNet", "NAFNetPSF"):
            pair[key] = run_method(setup, key, zoo[key], "mixed", data["mixed"], evals["mixed"], steps, progress)
            results["mixed"].append(pair[key])
            bar.update(1)
        results["mixed_difference"].append({"steps": steps, **{m: pair["NAFNetPSF"]["scores"][m] - pair["NAFNet"]["scores"][m]
                                                              for m in ("psnr", "ssim", "lpips")}})
    bar.close()
    env.update(load_end=[round(v, 2) for v in os.getloadavg()], total_minutes=(time.time() - started) / 60)
    report = {"setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in setup.__dict__.items() if k != "log"},
              "environment": env, "results": results, "commands": setup.log}
    atomic_write_text(setup.out / "results.json", json.dumps(report, indent=2))
    write_report(setup, results, env)
    print((setup.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    run_cli(main)
