#!/usr/bin/env python
"""Compare inpainting methods on fixed masks: OpenCV Telea and Navier–Stokes, the parameter-free
push-pull fill, and trained networks (``save_pretrained`` folders, e.g. experiments/X/best).

Data: the held-out built-in images (default astronaut, camera, coffee at 256²) × the fixed masks
of ``--mask_seeds`` from ``--masks`` (default MAT's 256_small generator), or ``--mask_folder``.
Every output keeps the known pixels of the input bit for bit (checked).

Metrics, on 8-bit outputs (as saved PNGs): PSNR / SSIM / L1 over the hole (``utils.metrics.masked``)
and over the whole image, LPIPS (whole image; needs the lab's LPIPS weights, else left out),
with ``--fid`` FID/KID and P-IDS/U-IDS (needs the FID Inception weights; few images make
these noisy). A per-hole-ratio table (MMagic's buckets 0–10 %, …, 50–60 %, 60–100 %) gives
hole PSNR / L1 per bucket.

    python scripts/compare_inpainting.py --model inpaint_demo=experiments/inpaint_demo/best --out cmp
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from utils.errors import run_cli

BASELINES = ("telea", "ns", "pushpull")


def opencv_inpaint(lq: torch.Tensor, mask: torch.Tensor, flag: str, radius: int = 3) -> torch.Tensor:
    """OpenCV's Telea (``INPAINT_TELEA``) or Navier–Stokes (``INPAINT_NS``) fill of one C×H×W
    image in [0, 1] (8-bit in, 8-bit out), known pixels restored exactly."""
    import cv2

    img = np.round(lq.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    hole = ((mask[0] < 0.5).cpu().numpy() * 255).astype(np.uint8)
    out = cv2.inpaint(np.ascontiguousarray(img), hole, radius, cv2.INPAINT_TELEA if flag == "telea" else cv2.INPAINT_NS)
    out = torch.from_numpy(out.astype(np.float32) / 255).permute(2, 0, 1)
    return torch.where(mask > 0.5, lq, out)


def baseline(name: str):
    from models.archs.inpaintnet_arch import push_pull_fill

    if name in ("telea", "ns"):
        return lambda batch: torch.stack([opencv_inpaint(batch["lq"][b], batch["mask"][b], name)
                                          for b in range(len(batch["lq"]))])
    if name == "pushpull":
        return lambda batch: push_pull_fill(batch["lq"], batch["mask"])
    raise ValueError(name)


def network(folder: str):
    from transformers import AutoModel

    import models.archs  # noqa: F401  (registers the Auto classes)

    net = AutoModel.from_pretrained(folder).eval()

    def run(batch):
        with torch.no_grad():
            return net(**{k: batch[k] for k in net.input_keys})
    return run


def evaluate(predict, dataset, lpips_fn=None, inception=None) -> dict:
    """Per-sample metrics + hole ratio; outputs quantised to 8 bits before scoring."""
    from utils.image_io import quantize
    from utils.masks import hole_bucket, hole_ratio
    from utils.metrics import compute_metrics
    from utils.metrics.masked import masked_metrics

    rows, feats_real, feats_fake, seconds = {}, [], [], 0.0
    for k in range(len(dataset)):
        s = dataset[k]
        batch = {key: (v[None] if isinstance(v, torch.Tensor) else [v]) for key, v in s.items()}
        t0 = time.perf_counter()
        pred = predict(batch)
        seconds += time.perf_counter() - t0
        known = batch["mask"].expand_as(pred) > 0.5
        if not torch.equal(pred[known], batch["lq"][known]):
            raise AssertionError(f"{s['key']}: known pixels changed")
        pred = quantize(pred.float())
        gt, hole = batch["gt"], (batch["mask"] < 0.5).float()
        hm = masked_metrics(pred, gt, hole, ("psnr", "ssim", "l1"), round_to_uint8=True)
        wm = compute_metrics(pred, gt, names=("psnr", "ssim"), round_to_uint8=True)
        r = hole_ratio(batch["mask"][0])
        row = {"hole_psnr": float(hm["psnr"][0]), "hole_ssim": float(hm["ssim"][0]), "hole_l1": float(hm["l1"][0]),
               "psnr": float(wm["psnr"][0]), "ssim": float(wm["ssim"][0]), "hole_ratio": r, "bucket": hole_bucket(r)}
        if lpips_fn is not None:
            with torch.no_grad():
                row["lpips"] = float(lpips_fn(pred, gt).flatten()[0])
        rows[s["key"]] = row
        if inception is not None:
            from utils.metrics.fid import extract_features

            feats_real.append(extract_features(inception, gt))
            feats_fake.append(extract_features(inception, pred))
    out = {"per_sample": rows, "seconds": seconds}
    if inception is not None:
        from utils.metrics.fid import fid_from_features, kid_from_features
        from utils.metrics.ids import ids_scores

        fr, ff = torch.cat(feats_real), torch.cat(feats_fake)
        out["fid"] = fid_from_features(fr, ff)
        out["kid"] = kid_from_features(fr, ff, subset_size=min(1000, len(fr)))[0]
        out["pids"], out["uids"] = ids_scores(fr.numpy(), ff.numpy())
    return out


def summarise(result: dict) -> dict:
    rows = list(result["per_sample"].values())
    keys = [k for k in ("hole_psnr", "hole_ssim", "hole_l1", "psnr", "ssim", "lpips") if k in rows[0]]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    buckets = {}
    for r in rows:
        buckets.setdefault(r["bucket"], []).append(r)
    mean["buckets"] = {b: {"n": len(v), "hole_psnr": float(np.mean([r["hole_psnr"] for r in v])),
                           "hole_l1": float(np.mean([r["hole_l1"] for r in v]))} for b, v in sorted(buckets.items())}
    for k in ("fid", "kid", "pids", "uids"):
        if k in result:
            mean[k] = result[k]
    return mean


def markdown(summary: dict[str, dict]) -> str:
    from utils.masks import bucket_labels

    cols = ["hole_psnr", "hole_ssim", "hole_l1", "psnr", "ssim", "lpips", "fid", "pids", "uids"]
    cols = [c for c in cols if any(c in s for s in summary.values())]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{s[c]:.4f}" if c in s else "–" for c in cols) + " |")
    labels = [b for b in bucket_labels() if any(b in s["buckets"] for s in summary.values())]
    lines += ["", "Hole PSNR (dB) / hole L1 by hole ratio (n = samples):", "",
              "| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, s in summary.items():
        cells = [f"{s['buckets'][b]['hole_psnr']:.2f} / {s['buckets'][b]['hole_l1']:.4f} (n={s['buckets'][b]['n']})"
                 if b in s["buckets"] else "–" for b in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME=FOLDER of a save_pretrained network")
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--images", nargs="+", default=["astronaut", "camera", "coffee"])
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--masks", default="mat_256_small")
    p.add_argument("--mask_seeds", default="0,1,2,3,4")
    p.add_argument("--mask_folder", default=None)
    p.add_argument("--ref", default="none", help="reference mode of the dataset (none | same_image)")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (alex; needs the lab's LPIPS weights)")
    p.add_argument("--fid", action="store_true", help="also FID/KID and P-IDS/U-IDS (needs the FID Inception weights)")
    p.add_argument("--out", default=None, help="folder for results.md / results.json")
    a = p.parse_args(argv)
    from dataset.inpaint_dataset import InpaintingDataset

    ds = InpaintingDataset(names=a.images, image_size=a.image_size, masks=a.masks, mask_folder=a.mask_folder,
                           mask_seeds=[int(s) for s in a.mask_seeds.split(",")], ref=a.ref, phase="test")
    lpips_fn = None
    if a.lpips:
        from utils.metrics.lpips import get_lpips

        lpips_fn = get_lpips("alex")
    inception = None
    if a.fid:
        from utils.metrics.fid import load_fid_inception

        inception = load_fid_inception()
    methods = {b: baseline(b) for b in a.baselines.split(",") if b}
    for spec in a.model:
        name, _, folder = spec.partition("=")
        methods[name] = network(folder)
    summary, full = {}, {}
    for name, fn in methods.items():
        full[name] = evaluate(fn, ds, lpips_fn, inception)
        summary[name] = summarise(full[name])
    text = markdown(summary)
    print(text)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        (out / "results.json").write_text(json.dumps({"summary": summary, "runs": full}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
