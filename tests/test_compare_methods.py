"""scripts/compare_methods.py end to end in its --quick form: datasets by steps 1-3, tuned
classical methods, equal-budget training, -test and calculate_metrics, the report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_comparison_runs_and_reports_every_method(tmp_path):
    out = tmp_path / "cmp"
    methods = "Wiener,WienerCLS,RichardsonLucy,NAFNet,NAFNetPSF"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_methods.py"), "--out", str(out), "--quick",
                           "--methods", methods, "--threads", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    seidel = {r["network"]: r for r in report["results"]["seidel"]}
    assert list(seidel) == methods.split(",")
    for row in [*seidel.values(), *report["results"]["mixed"], *report["results"]["blurred"].values()]:
        scores = row["scores"]
        assert 5 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1 and 0 <= scores["lpips"] < 1, row
    # Classical knobs come from the candidate lists, chosen on training images.
    assert seidel["WienerCLS"]["tuned"]["nsr"] in (0.1, 0.3, 1.0, 3.0, 10.0)
    assert seidel["RichardsonLucy"]["tuned"]["iterations"] in (2, 3, 5, 10, 20)
    # Learned methods trained with the common budget; the mixed comparison pairs the twins.
    assert seidel["NAFNet"]["steps"] == seidel["NAFNetPSF"]["steps"] == report["setup"]["steps"]
    mixed = [r for r in report["results"]["mixed"] if r["network"] in ("NAFNet", "NAFNetPSF")]
    assert [r["network"] for r in mixed] == ["NAFNet", "NAFNetPSF"]
    diff = report["results"]["mixed_difference"][0]
    assert diff["psnr"] == pytest.approx(mixed[1]["scores"]["psnr"] - mixed[0]["scores"]["psnr"])
    # The blurred-input row is calculate_metrics.py on the exported lq PNGs: recompute it.
    from utils.metrics.folders import evaluate_folders

    lq = evaluate_folders(out / "eval" / "seidel" / "gt", out / "eval" / "seidel" / "lq", metrics=["psnr"])
    assert lq.mean["psnr"] == pytest.approx(report["results"]["blurred"]["seidel"]["scores"]["psnr"], abs=1e-9)
    text = (out / "results.md").read_text()
    assert "## One lens" in text and "NAFNetPSF minus NAFNet" in text
