#!/usr/bin/env python
"""Video SR comparison table: MATLAB-bicubic ×scale on a config's validation clips (the baseline
every VSR paper reports), next to the final validation scores of trained runs.

    python scripts/vsr_report.py -opt checkpoints/vsr_basicvsr_demo.yml \
        --runs experiments/vsr_demo_dis experiments/vsr_demo_zero experiments/vsr_demo_none

Scores use the lab's evaluation (utils/evaluation.py): 8-bit outputs, the config's ``val``
metrics, crop border, Y/RGB and averaging (``average: clip`` = mean per clip, then over clips).
A run's figure is its last ``results/val/step-*/metrics.json``. ``--eval RUN[:FLOW]`` scores a
run's exported ``last/`` network here instead, optionally with its ``flow`` mode replaced (e.g.
``experiments/vsr_demo_dis:zero``: the DIS-trained network evaluated without alignment).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def scores(cfg, restore=None) -> dict[str, float]:
    """Scores of ``restore(lq clip T×C×h×w) -> T×C×H×W`` (default: MATLAB bicubic) on the val set."""
    from dataset import create_dataset
    from utils.evaluation import ScoreItem, aggregate, clip_folder, score_items
    from utils.image_io import quantize
    from utils.imresize import imresize

    opts = dict(cfg.datasets.val.to_dict() if hasattr(cfg.datasets.val, "to_dict") else cfg.datasets.val)
    opts["phase"] = "val"
    ds = create_dataset(opts)
    v = cfg.val
    items = []
    for i in range(len(ds)):
        s = ds[i]
        out = restore(s["lq"]) if restore else imresize(s["lq"].double(), ds.scale)
        up = quantize(out.float())
        clip = clip_folder(str(s["key"]))
        items += [ScoreItem(f"{clip}/{t:08d}.png", up[t], s["gt"][t], None, clip) for t in range(up.shape[0])]
    per = score_items(items, list(v.metrics), v.crop_border, v.test_y_channel)
    return aggregate(per, {it.name: it.group for it in items}, v.average, list(v.metrics))


def last_scores(run: Path) -> tuple[int, dict[str, float]]:
    steps = sorted((run / "results" / "val").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if not steps:
        raise SystemExit(f"{run}: no validation results")
    data = json.loads((steps[-1] / "metrics.json").read_text())
    return int(steps[-1].name.split("-")[1]), data.get("mean", data)


def main(argv=None) -> int:
    from utils.config import load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", required=True)
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--eval", nargs="*", default=[], metavar="RUN[:FLOW]")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    cfg = load_config(args.opt)
    metrics = list(cfg.val.metrics)
    print("| method | step | " + " | ".join(metrics) + " |")
    print("|---|---|" + "---|" * len(metrics))
    base = scores(cfg)
    print("| bicubic (MATLAB imresize) | – | " + " | ".join(f"{base[m]:.4f}" for m in metrics) + " |")
    for run in map(Path, args.runs):
        step, got = last_scores(run)
        print(f"| {run.name} | {step} | " + " | ".join(f"{got[m]:.4f}" for m in metrics) + " |")
    for item in args.eval:
        run, _, flow = item.partition(":")
        net = load_run(Path(run), flow or None)
        result = scores(cfg, lambda lq, net=net: net(lq[None])[0])
        label = Path(run).name + (f" (flow: {flow})" if flow else "")
        print(f"| {label}, last/ | – | " + " | ".join(f"{result[m]:.4f}" for m in metrics) + " |")
    return 0


def load_run(run: Path, flow: str | None):
    from transformers import AutoModel

    import models.archs  # noqa: F401 (registers the lab's networks)

    net = AutoModel.from_pretrained(run / "last").eval()
    if flow is not None:
        if flow == "spynet" and getattr(net, "spynet", None) is None:
            raise SystemExit(f"{run}: the network has no SpyNet")
        net.config.flow = flow
    return net


if __name__ == "__main__":
    raise SystemExit(main())
