#!/usr/bin/env python
"""Export a trained network to ONNX and check it against PyTorch.

    python scripts/export_onnx.py --model RUN/best [--output FILE.onnx] [--opset 17] [--info]

--model   a save_pretrained folder (an experiment's best/ or last/: the EMA weights when the run
          used an EMA; with several exported networks, the folder's net/).
--output  where to write the ONNX file (default: MODEL/model.onnx).
--info    also (re)write MODEL/best_model_info.json: sha256 of every file of the folder, the step
          and the validation metrics read from the folder's restorelab.json (the metrics of
          exactly these weights, as the trainer recorded them), and the parity below.

The graph has dynamic batch, height and width (input ``lq``, output ``output``); it is checked
with ``onnx.checker.check_model(full_check=True)`` and run in onnxruntime (CPU) against the
PyTorch network on random inputs of 1×64×64, 1×96×128 and 2×64×64: the maximum |Δ| of each is
printed, and a difference ≥ 1e-4 is an error (exit code 2). The trainer does the same at every
best/ and last/ of a MultiTaskGAN_model run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.errors import DataError, run_cli  # noqa: E402

TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--output", default=None)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--info", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.multitask_model import export_onnx, load_exported, verify_onnx, write_export_info

    folder = Path(args.model)
    if (folder / "net" / "config.json").is_file():
        folder = folder / "net"
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} is not a save_pretrained folder (no config.json)")
    if args.info:
        if args.output is not None:
            raise DataError("--info writes MODEL/model.onnx; leave out --output")
        saved = folder / "restorelab.json"
        extra = json.loads(saved.read_text()) if saved.is_file() else {}
        record = write_export_info(folder, extra, opset=args.opset)
        diffs = record["onnx"]["max_abs_diff_vs_pytorch"]
        out = folder / "model.onnx"
    else:
        net = load_exported(folder)
        out = Path(args.output) if args.output else folder / "model.onnx"
        export_onnx(net, out, args.opset)
        diffs = verify_onnx(net, out)
    for shape, d in diffs.items():
        print(f"{shape}: max |onnxruntime - pytorch| = {d:.3g}")
    print(f"wrote {out}")
    if max(diffs.values()) >= TOLERANCE:
        raise DataError(f"ONNX output differs from PyTorch by {max(diffs.values()):.3g} (>= {TOLERANCE})")
    return 0


if __name__ == "__main__":
    run_cli(main)
