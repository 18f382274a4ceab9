"""scripts/bench_models.py: the CLI runs, its JSON holds the counted params/MACs, its
official-LayerNorm baseline computes the same function as our fused LayerNorm2d."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from models.archs import get_network_classes
from models.archs.layers import LayerNorm2d
from utils.flops import network_cost

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bench_models.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_cli_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--archs", "NAFNet,UNet", "--config", "tiny", "--size", "32",
                           "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "NAFNet" in proc.stdout and "GMACs" in proc.stdout
    data = json.loads(out.read_text())
    assert data["environment"]["size"] == 32 and "command" in data["environment"]
    by_name = {r["network"]: r for r in data["results"]}
    for name in ("NAFNet", "UNet"):
        config_cls, arch_cls = get_network_classes(name)
        cost = network_cost(lambda: arch_cls(config_cls.tiny()), size=256)
        assert (by_name[name]["params"], by_name[name]["macs_256"]) == (cost["params"], cost["macs"])
        for variant in ("channels_last", "contiguous"):
            assert by_name[name][variant]["forward_ms"] > 0 and by_name[name][variant]["forward_backward_ms"] > 0
    assert "reference_layernorm_contiguous" in by_name["NAFNet"] and "reference_layernorm_contiguous" not in by_name["UNet"]


def test_bench_cli_bad_arch():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--archs", "NAFNte"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown network 'NAFNte'; did you mean 'NAFNet'?")

def test_official_layernorm_baseline_matches_fused():
    bench = load_script()
    g = torch.Generator().manual_seed(0)
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=g))
        ln.bias.copy_(torch.randn(6, generator=g))
    ref = bench.ReferenceLayerNorm2d(ln)
    x = torch.randn(2, 6, 5, 7, generator=g, requires_grad=True)
    w = torch.randn(2, 6, 5, 7, generator=g)
    torch.testing.assert_close(ref(x), ln(x), atol=1e-5, rtol=1e-5)
    ours = torch.autograd.grad((ln(x) * w).sum(), [x, ln.weight, ln.bias])
    theirs = torch.autograd.grad((ref(x) * w).sum(), [x, ln.weight, ln.bias])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    net = get_network_classes("NAFNet")[1](get_network_classes("NAFNet")[0].tiny())
    n_norms = sum(isinstance(m, LayerNorm2d) for m in net.modules())
    assert bench.swap_layernorm(net) == n_norms > 0
    assert not any(isinstance(m, LayerNorm2d) for m in net.modules())
