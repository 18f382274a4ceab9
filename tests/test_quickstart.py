"""Quickstart: config validity, summary arithmetic, and a shortened end-to-end run."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("input_psnr", "wiener_psnr", "wiener_oracle_psnr", "model_psnr",
        "input_ssim", "wiener_ssim", "wiener_oracle_ssim", "model_ssim", "train_steps", "train_seconds")


def load_quickstart_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "scripts" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_loads_and_holds_out_the_test_images():
    from utils.config import load_config

    cfg = load_config(ROOT / "checkpoints" / "quickstart.yml")
    train, val = cfg.datasets.train.to_dict(), cfg.datasets.val.to_dict()
    held_out = set(val["names"])
    assert held_out == {"astronaut", "camera", "coffee"}
    assert held_out <= set(train["exclude"])  # never seen in training
    assert val["psf"] == train["psf"] and val["noise"] == train["noise"] and val["phase"] == "val"
    assert cfg.network["type"] == "NAFNet" and cfg.datasets.test is not None


def test_summary_margins_and_acceptance():
    qs = load_quickstart_module()
    per_image = {
        "a": {"input_psnr": 25.0, "wiener_psnr": 25.5, "wiener_oracle_psnr": 28.0, "model_psnr": 28.0,
              "input_ssim": 0.7, "wiener_ssim": 0.7, "wiener_oracle_ssim": 0.8, "model_ssim": 0.85},
        "b": {"input_psnr": 27.0, "wiener_psnr": 27.5, "wiener_oracle_psnr": 30.0, "model_psnr": 29.2,
              "input_ssim": 0.8, "wiener_ssim": 0.8, "wiener_oracle_ssim": 0.9, "model_ssim": 0.9},
    }
    s = qs.summarize({"per_image": per_image, "nsr": {"wiener": 0.02, "wiener_oracle": 0.01},
                      "tuning_images": ["x"]}, train_steps=7, train_seconds=1.5)
    assert s["model_psnr"] == pytest.approx(28.6) and s["wiener_oracle_psnr"] == pytest.approx(29.0)
    assert s["margins_db"]["model - input"] == pytest.approx(2.6)
    assert s["margins_db"]["model - wiener"] == pytest.approx(2.1)
    assert s["margins_db"]["model - wiener_oracle"] == pytest.approx(-0.4)
    assert s["acceptance"] == {"model - input": True, "model - wiener": True, "model - wiener_oracle": False}
    assert all(k in s for k in KEYS)


@pytest.mark.slow
def test_quickstart_end_to_end_shortened(tmp_path):
    """A few training steps on small images: the whole pipeline runs and writes its outputs."""
    overrides = [f"path.root={tmp_path}", "train.max_steps=4", "train.val_every=2", "train.checkpoint_every=2",
                 "train.log_every=2", "train.batch_size=2", "datasets.train.crop_size=48",
                 "datasets.train.psf.sensor_res=[96,96]", "datasets.train.psf.grid_shape=[3,3]",
                 "datasets.train.psf.psf_size=15",
                 "datasets.train.exclude=[astronaut,camera,coffee,retina,hubble_deep_field,cell,immunohistochemistry]"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"), *overrides],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Wiener, true SV PSFs" in proc.stdout and "NAFNet (trained)" in proc.stdout
    # The trainer's log lines give the measured speed and the time left (stderr, with the bar).
    assert re.search(r"step 2: .* \| [0-9.]+ steps/s, [0-9.]+ min left for 2 steps", proc.stderr), proc.stderr[-2000:]
    assert "steps/s with start-up and validation" in proc.stdout
    results = tmp_path / "quickstart" / "results"
    summary = json.loads((results / "summary.json").read_text())
    for key in (*KEYS, "wiener_cls_oracle_psnr", "wiener_cls_oracle_ssim"):
        assert key in summary and math.isfinite(summary[key]), key
    assert summary["train_steps"] == 4 and summary["train_seconds"] > 0
    assert set(summary["per_image"]) == {"astronaut", "camera", "coffee"}
    for key in ("input", "wiener", "wiener_oracle", "wiener_cls_oracle", "model"):
        assert 10 < summary[f"{key}_psnr"] < 60 and 0 < summary[f"{key}_ssim"] <= 1
    # The oracle Wiener (true PSFs everywhere) must beat the blurred input even on 96x96 images.
    assert summary["wiener_oracle_psnr"] > summary["input_psnr"]
    assert summary["wiener_cls_oracle_psnr"] > summary["input_psnr"]
    import cv2

    figure = cv2.imread(str(results / "quickstart_comparison.png"))
    assert figure is not None and figure.shape[0] > 200 and figure.shape[1] > 500
    assert np.std(figure) > 10  # not blank
    assert (tmp_path / "quickstart" / "last" / "model.safetensors").is_file()
