"""scripts/export_onnx.py: dynamic batch/height/width, onnx.checker, onnxruntime vs PyTorch
< 1e-4 at 64², 96×128 and batch 2, and best_model_info.json hashes that reproduce."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent


def saved(tmp_path, net) -> Path:
    folder = tmp_path / "best"
    net.save_pretrained(folder, safe_serialization=True)
    (folder / "restorelab.json").write_text(json.dumps({"step": 7, "metric": "psnr", "mean": {"psnr": 30.5}}))
    return folder


def random_fast_restorer():
    from models.archs.fastrestorer_arch import FastRestorer_arch, FastRestorer_config

    torch.manual_seed(0)
    net = FastRestorer_arch(FastRestorer_config(width=8, blocks=1))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)  # the zero-initialised head would hide most of the network
    return net


@pytest.mark.slow
def test_export_cli_parity_and_info(tmp_path):
    folder = saved(tmp_path, random_fast_restorer())
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_onnx.py"), "--model", str(folder), "--info"],
                         cwd=ROOT, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr
    assert "1x96x128: max |onnxruntime - pytorch|" in out.stdout
    info = json.loads((folder / "best_model_info.json").read_text())
    assert info["step"] == 7 and info["metrics"] == {"psnr": 30.5}
    diffs = info["onnx"]["max_abs_diff_vs_pytorch"]
    assert set(diffs) == {"1x64x64", "1x96x128", "2x64x64"} and max(diffs.values()) < 1e-4
    for name, digest in info["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert {"model.onnx", "model.safetensors", "config.json"} <= set(info["files"])


def test_onnx_runs_other_sizes_and_matches_pytorch(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from models.multitask_model import export_onnx

    net = random_fast_restorer().eval()
    export_onnx(net, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((3, 3, 37, 53), (1, 3, 128, 64)):
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = net(x).numpy()
        got = session.run(None, {"lq": x.numpy()})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


@pytest.mark.slow
def test_hat_exports_with_dynamic_size(tmp_path):
    from models.archs.hat_arch import HAT_arch, HAT_config
    from models.multitask_model import export_onnx, verify_onnx

    torch.manual_seed(0)
    net = HAT_arch(HAT_config.tiny()).eval()
    export_onnx(net, tmp_path / "hat.onnx")
    diffs = verify_onnx(net, tmp_path / "hat.onnx")
    assert max(diffs.values()) < 1e-4, diffs
