"""The CPU fast path of the NAFNet blocks computes the same function as the official formulation.

``PointwiseConv2d`` (1×1 convolutions as matrix products on channels-last tensors) and its
``forward_scaled`` (channel attention folded into per-sample weights) are checked against
``F.conv2d``; a whole NAFNet in channels-last against the official block arithmetic written out
here with ``F.conv2d`` calls, in value and gradient; bench_models.py's "previous" variant against
the network it was derived from.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.archs.layers import PointwiseConv2d
from models.archs.nafnet_arch import NAFBlock, NAFNet_arch, NAFNet_config

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench_models.py"
CL = torch.channels_last


def grads(out, inputs, weight):
    return torch.autograd.grad((out * weight).sum(), inputs)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_pointwise_conv_equals_conv2d(bias, channels_last):
    g = torch.Generator().manual_seed(0)
    conv = PointwiseConv2d(6, 10, bias=bias)
    x = torch.randn(3, 6, 7, 5, generator=g)
    if channels_last:
        conv, x = conv.to(memory_format=CL), x.contiguous(memory_format=CL)
    x.requires_grad_()
    y = conv(x)
    ref = F.conv2d(x, conv.weight, conv.bias)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert y.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    w = torch.randn(y.shape, generator=g)
    for a, b in zip(grads(y, params, w), grads(ref, params, w)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert list(conv.state_dict()) == (["weight", "bias"] if bias else ["weight"])


@pytest.mark.parametrize("channels_last", [True, False])
def test_pointwise_conv_scaled_equals_conv_of_product(channels_last):
    g = torch.Generator().manual_seed(1)
    conv = PointwiseConv2d(8, 4)
    x = torch.randn(2, 8, 6, 9, generator=g)
    scale = torch.randn(2, 8, 1, 1, generator=g)
    if channels_last:
        conv, x = conv.to(memory_format=CL), x.contiguous(memory_format=CL)
    x.requires_grad_(), scale.requires_grad_()
    y = conv.forward_scaled(x, scale)
    ref = F.conv2d(x * scale, conv.weight, conv.bias)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn(y.shape, generator=g)
    params = [x, scale, conv.weight, conv.bias]
    for a, b in zip(grads(y, params, w), grads(ref, params, w)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def official_block(block: NAFBlock, inp):
    """NAFBlock.forward of megvii-research/NAFNet (NAFNet_arch.py), every convolution an F.conv2d."""
    def conv(m, x, **kw):
        return F.conv2d(x, m.weight, m.bias, **kw)

    def norm(m, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return m.weight.view(1, -1, 1, 1) * (x - mu) / (var + m.eps).sqrt() + m.bias.view(1, -1, 1, 1)

    def gate(x):
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2

    x = conv(block.conv2, conv(block.conv1, norm(block.norm1, inp)), padding=1, groups=block.conv2.groups)
    x = gate(x)
    x = x * conv(block.sca[1], x.mean(dim=(2, 3), keepdim=True))
    y = inp + conv(block.conv3, x) * block.beta
    x = conv(block.conv5, gate(conv(block.conv4, norm(block.norm2, y))))
    return y + x * block.gamma


def random_net(seed=0):
    torch.manual_seed(seed)
    net = NAFNet_arch(NAFNet_config(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1]))
    with torch.no_grad():  # beta/gamma start at zero: make every branch count
        for p in net.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return net


def test_nafnet_channels_last_equals_official_arithmetic():
    """The whole network in channels-last (fast path) against the same weights run through the
    official block formulation, outputs and every parameter gradient."""
    net = random_net()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 24, 20, generator=g)
    w = torch.randn(x.shape, generator=g)

    blocks = [m for m in net.modules() if isinstance(m, NAFBlock)]
    assert blocks
    ref_out = None
    originals = {}
    try:  # the reference: official block arithmetic, NCHW
        for b in blocks:
            originals[b] = b.forward
            b.forward = (lambda blk: (lambda inp: official_block(blk, inp)))(b)
        ref_out = net(x)
        ref_grads = torch.autograd.grad((ref_out * w).sum(), list(net.parameters()))
    finally:
        for b in blocks:
            del b.forward
    fast = net.to(memory_format=CL)
    out = fast(x.contiguous(memory_format=CL))
    fast_grads = torch.autograd.grad((out * w).sum(), list(fast.parameters()))
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    for (name, _), a, b in zip(net.named_parameters(), fast_grads, ref_grads):
        scale = b.abs().max().clamp_min(1e-6)
        assert ((a - b).abs().max() / scale).item() < 1e-4, name


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_models", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_previous_variant_is_the_same_function():
    import copy

    bench = load_bench()
    net = random_net(1)
    previous = copy.deepcopy(net)
    assert bench.swap_previous(previous) > 0
    assert not any(isinstance(m, PointwiseConv2d) for m in previous.modules())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for fmt in (CL, torch.contiguous_format):
        a = net.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
        b = previous.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_bench_quickstart_training_step_cli(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--config", str(ROOT / "checkpoints" / "quickstart.yml"),
                           "--size", "32", "--batch", "2", "--optimizer", "adamw", "--repeats", "2", "--warmup", "0",
                           "--threads", "1", "--variants", "previous_contiguous,channels_last", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["environment"]["optimizer"] == "adamw" and data["environment"]["baseline"] == "previous_contiguous"
    (record,) = data["results"]
    assert record["network"] == "NAFNet" and 0.28e6 < record["params"] < 0.30e6  # the quickstart's 0.29 M net
    fast = record["channels_last"]
    assert len(fast["forward_backward_times_ms"]) == 2 and fast["speedup_vs_previous_contiguous"]["median"] > 0
    assert fast["max_abs_output_diff_vs_previous_contiguous"] < 1e-5
    assert fast["max_rel_grad_diff_vs_previous_contiguous"] < 1e-3
    assert record["previous_contiguous"]["max_abs_output_diff_vs_previous_contiguous"] == 0.0


def test_bench_rejects_unknown_variant():
    proc = subprocess.run([sys.executable, str(BENCH), "--archs", "NAFNet", "--variants", "fastest"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown variant fastest" in proc.stderr


def test_train_log_line_reports_speed_and_time_left(monkeypatch):
    """Trainer._log_train: steps/s over the steps since the previous line (wall clock) and the
    time the remaining steps take at that speed."""
    from types import SimpleNamespace

    import trainer

    lines, logged = [], {}
    clock = iter([112.5])  # 50 steps since t = 100 s: 4 steps/s
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    fake = SimpleNamespace(
        accelerator=SimpleNamespace(num_processes=1, log=lambda values, step: logged.update(values)),
        model=SimpleNamespace(current_lrs=lambda: {"lr": 1e-3}),
        cfg=SimpleNamespace(train=SimpleNamespace(max_steps=1250)),
        log=SimpleNamespace(info=lines.append),
        step=250, _speed_mark=(100.0, 200))
    bar = SimpleNamespace(set_postfix=lambda *a, **k: None)
    trainer.Trainer._log_train(fake, {"loss": torch.tensor(0.5)}, bar)
    assert logged["train/steps_per_s"] == pytest.approx(4.0)
    assert lines == ["step 250: loss 0.5, lr 0.001 | 4.00 steps/s, 4.2 min left for 1000 steps"]  # 1000 / 4 s
    assert fake._speed_mark == (112.5, 250)
