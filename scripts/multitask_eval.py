#!/usr/bin/env python
"""Measure a multi-task run (docs/multitask.md): per-task 8-bit PSNR of best/ (or last/) on the
held-out test images against the baselines, colorization's lightness and chroma errors, and the
degradation pipeline's time beside a training step's.

    python scripts/multitask_eval.py --run RUN_DIR [--weights best|last] [--config YML]
    python scripts/multitask_eval.py --speed [--config YML]

Quality: ×s SR on Y (BT.601) with crop = s against MATLAB bicubic (utils.imresize, the model's
own input) and PyTorch bicubic; JPEG and denoising on RGB against the degraded input;
colorization: mean |ΔL*| between output and input, mean |Δ(a*, b*)| to the ground truth against
the gray input's. Speed: the Real-ESRGAN second-order preset per 256² sample and the demo
config's data per item, interleaved with training steps in this one process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.errors import run_cli  # noqa: E402


def batch_of(sample: dict) -> dict:
    import torch

    return {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in sample.items()}


def quality(run: Path, weights: str, config: str | None) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dataset import create_dataset
    from models.multitask_model import MultiTaskGAN_model, load_exported
    from utils.config import load_config
    from utils.degradations import rgb_to_lab
    from utils.image_io import quantize
    from utils.imresize import imresize
    from utils.metrics import compute_metrics

    cfg = load_config(config or str(run / "config.yaml"), [])
    test = create_dataset({**cfg.datasets.test, "phase": "test", "seed": cfg.seed})
    model = MultiTaskGAN_model.__new__(MultiTaskGAN_model)
    model.networks, model.accelerator, model.options = {"net": load_exported(run / weights)}, None, cfg.model

    def psnr(a, b, crop=0, y=False):
        return float(compute_metrics(a[None], b[None], names=("psnr",), crop_border=crop, test_y_channel=y,
                                     round_to_uint8=True)["psnr"][0])

    rows: dict[str, list[dict]] = {}
    for i in range(len(test)):
        s = test[i]
        b = batch_of(s)
        with torch.no_grad():
            pred = quantize(model.predict(b))[0]
        gt, lq, kind, scale = s["gt"], s["lq"], s["kind"], int(s["scale"])
        row = {"image": s["key"]}
        if kind == "sr":
            row["model"] = psnr(pred, gt, scale, True)
            row["bicubic_matlab"] = psnr(quantize(imresize(lq, scale)), gt, scale, True)
            row["bicubic_torch"] = psnr(quantize(F.interpolate(lq[None], scale_factor=scale, mode="bicubic",
                                                               align_corners=False)[0]), gt, scale, True)
        elif kind in ("jpeg", "denoise"):
            row["model"], row["input"] = psnr(pred, gt), psnr(lq, gt)
        elif kind == "colorize":
            lab_p, lab_in, lab_gt = (rgb_to_lab(x.double()[None])[0] for x in (pred, lq, gt))
            row["mean_abs_dL"] = float((lab_p[0] - lab_in[0]).abs().mean())
            row["ab_error_model"] = float((lab_p[1:] - lab_gt[1:]).abs().mean())
            row["ab_error_gray"] = float((lab_in[1:] - lab_gt[1:]).abs().mean())
            row["model"], row["input"] = psnr(pred, gt), psnr(lq, gt)
        rows.setdefault(s["task"], []).append(row)
    summary = {}
    for task, rs in rows.items():
        keys = [k for k in rs[0] if k != "image"]
        summary[task] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
    return {"run": str(run), "weights": weights, "summary": summary, "per_image": rows}


def speed(config: str) -> dict:
    import torch
    from accelerate import Accelerator

    from dataset import create_dataset
    from models.multitask_model import MultiTaskGAN_model
    from utils.config import load_config
    from utils.degradations import DegradationPipeline
    import skimage.data

    cfg = load_config(config, [])
    train = create_dataset({**cfg.datasets.train, "seed": 0})
    model = MultiTaskGAN_model(cfg)
    model.setup_training()
    model.prepare(Accelerator(cpu=True))
    pipe = DegradationPipeline({"preset": "realesrgan", "scale": 4})
    gt = torch.from_numpy(skimage.data.chelsea()[:256, :256].transpose(2, 0, 1).copy()).float() / 255
    t_deg, t_item, t_step = [], [], []
    for i in range(12):  # interleaved: one of each per round
        t = time.perf_counter()
        pipe(gt, torch.Generator().manual_seed(i))
        t_deg.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = train[i]
        t_item.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.training_step(batch_of(s), i)
        t_step.append(time.perf_counter() - t)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"threads": torch.get_num_threads(), "realesrgan_x4_per_256px_sample_s": med(t_deg),
            "demo_data_per_item_s": med(t_item), "demo_train_step_s": med(t_step),
            "num_workers": cfg.train.num_workers}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run")
    p.add_argument("--weights", default="best")
    p.add_argument("--config", default=None)
    p.add_argument("--speed", action="store_true")
    args = p.parse_args(argv)
    if args.speed:
        print(json.dumps(speed(args.config or str(ROOT / "checkpoints" / "multitask_demo.yml")), indent=2))
    else:
        out = quality(Path(args.run), args.weights, args.config)
        print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
