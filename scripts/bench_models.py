#!/usr/bin/env python
"""Benchmark the network zoo: parameters, MACs at 256×256, forward and forward+backward time.

Every speed figure comes with a baseline measured in the same run:

* memory format: each network is timed with ``torch.channels_last`` and with the default
  contiguous (NCHW) layout; the ratio is printed.
* LayerNorm: networks built on ``LayerNorm2d`` (NAFNet, Restormer) are also timed with it
  swapped for the official NAFNet implementation (element-wise formula with a hand-written
  ``autograd.Function`` backward), same parameters, in both memory formats; the last column
  compares with that official-style setup (official LayerNorm, contiguous tensors).

MACs follow ``utils.flops`` (FlopCounterMode, MACs = FLOPs / 2, convolutions and matmuls only).

Examples:
    python scripts/bench_models.py                                  # every network, default configs, CPU
    python scripts/bench_models.py --archs NAFNet,UNet --size 128 --repeats 3 --json bench.json
    python scripts/bench_models.py --device cuda --batch 8 --amp bf16
    python scripts/bench_models.py --config tiny --size 64          # quick smoke run
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from utils.atomic import atomic_write_text  # noqa: E402
from utils.errors import ConfigError, run_cli  # noqa: E402


class _OfficialLayerNormFunction(torch.autograd.Function):
    """The official NAFNet ``LayerNormFunction`` (hand-written backward), kept here only as the
    speed baseline; the networks themselves use the fused ``F.layer_norm``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        ctx.eps = eps
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + eps).sqrt()
        ctx.save_for_backward(y, var, weight)
        return weight.view(1, -1, 1, 1) * y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad_output):
        y, var, weight = ctx.saved_tensors
        g = grad_output * weight.view(1, -1, 1, 1)
        mean_g = g.mean(dim=1, keepdim=True)
        mean_gy = (g * y).mean(dim=1, keepdim=True)
        gx = 1.0 / torch.sqrt(var + ctx.eps) * (g - y * mean_gy - mean_g)
        return gx, (grad_output * y).sum(dim=(0, 2, 3)), grad_output.sum(dim=(0, 2, 3)), None


class ReferenceLayerNorm2d(nn.Module):
    """Channel LayerNorm as the official NAFNet code computes it (baseline only). Without a
    bias (Restormer's BiasFree norm is not a LayerNorm2d and is never swapped) it falls back to
    the same formula written as plain autograd ops."""

    def __init__(self, ln):
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x):
        if self.bias is not None:
            return _OfficialLayerNormFunction.apply(x, self.weight, self.bias, self.eps)
        mu = x.mean(1, keepdim=True)
        y = (x - mu) / ((x - mu).pow(2).mean(1, keepdim=True) + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y


def swap_layernorm(net: nn.Module) -> int:
    """Replace every ``LayerNorm2d`` by the reference formulation in place; returns how many."""
    from models.archs.layers import LayerNorm2d

    count = 0
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, LayerNorm2d):
                setattr(module, name, ReferenceLayerNorm2d(child))
                count += 1
    return count


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runs(net, inputs, device, amp_name: str, channels_last: bool):
    """``(forward, train_step)`` closures for ``net`` in the given memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt)
    inputs = {k: (v.to(device).contiguous(memory_format=fmt) if v.dim() == 4 else v.to(device)) for k, v in inputs.items()}
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp_name)
    target = torch.rand_like(inputs["lq"][:, :1])

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    def forward():
        net.eval()
        with torch.no_grad(), autocast():
            net(**inputs)

    def train_step():
        net.train()
        net.zero_grad(set_to_none=True)
        with autocast():
            loss = (net(**inputs).float() - target).abs().mean()
        loss.backward()

    return forward, train_step


def time_interleaved(runs: dict, device, warmup: int, repeats: int, clock=time.perf_counter) -> dict:
    """Median time (ms) of every run by ``clock``; the runs are interleaved repeat by repeat so
    that a change of machine load affects all of them alike (ratios stay meaningful on a busy host)."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            sync(device)
            t0 = clock()
            fn()
            sync(device)
            times[key].append((clock() - t0) * 1e3)
    return {key: sorted(t)[len(t) // 2] for key, t in times.items()}


def bench_network(net, inputs, device, args) -> dict:
    """Times of the fused channels-last network and, unless ``--no-baselines``, its baselines."""
    variants = {"channels_last": (net, True)}
    if not args.no_baselines:
        variants["contiguous"] = (copy.deepcopy(net), False)
        reference = copy.deepcopy(net)
        if swap_layernorm(reference):
            variants["reference_layernorm_channels_last"] = (reference, True)
            variants["reference_layernorm_contiguous"] = (copy.deepcopy(reference), False)
    trainable = any(p.requires_grad for p in net.parameters())  # else there is no backward to time
    runs = {}
    for key, (variant, channels_last) in variants.items():
        forward, step = make_runs(variant, inputs, device, args.amp, channels_last)
        runs[(key, "forward_ms")] = forward
        if trainable:
            runs[(key, "forward_backward_ms")] = step
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timed = time_interleaved(runs, device, args.warmup, args.repeats, clock)
    out: dict = {}
    for (key, what), ms in timed.items():
        out.setdefault(key, {})[what] = ms
    return out


def build(name: str, variant: str, device: str | torch.device):
    from models.archs import get_network_classes

    config_cls, arch_cls = get_network_classes(name)
    config = config_cls.tiny() if variant == "tiny" else config_cls()
    with torch.device(device):
        return arch_cls(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--archs", default="", help="comma-separated network types (default: every registered one)")
    parser.add_argument("--config", choices=("default", "tiny"), default="default",
                        help="each network's default config or its tiny() test config")
    parser.add_argument("--size", type=int, default=256, help="timing input size (MACs are always at 256x256)")
    parser.add_argument("--batch", type=int, default=1, help="timing batch size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype for timing")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (with --threads 1 on a shared machine: "
                             "insensitive to other jobs; CPU device only)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the contiguous and reference-LayerNorm runs")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()

    from models.archs import network_names
    from utils.flops import count_flops, count_params

    names = [n for n in args.archs.split(",") if n] or network_names()
    unknown = [n for n in names if n not in network_names()]
    if unknown:
        from utils.registry import unknown_name_message

        raise ConfigError(unknown_name_message("network", unknown[0], network_names()))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda given but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and device.type != "cpu":
        raise ConfigError("--clock cpu measures CPU time and only makes sense with --device cpu")

    from tqdm import tqdm

    records = []
    for name in tqdm(names, desc="networks", file=sys.stderr):
        try:  # counting on the meta device: no memory, no arithmetic
            meta_net = build(name, args.config, "meta")
            with torch.device("meta"):
                meta_inputs = meta_net.example_inputs(batch_size=1, size=256)
            macs = count_flops(meta_net, meta_inputs)["total"] // 2
        except (NotImplementedError, RuntimeError):  # a data-dependent op: count on the CPU instead
            cpu_net = build(name, args.config, "cpu")
            macs = count_flops(cpu_net, cpu_net.example_inputs(batch_size=1, size=256))["total"] // 2
        torch.manual_seed(0)
        net = build(name, args.config, "cpu")
        inputs = net.example_inputs(batch_size=args.batch, size=args.size, generator=torch.Generator().manual_seed(0))
        record = {"network": name, "config": args.config, "params": count_params(net), "macs_256": macs}
        record.update(bench_network(net, inputs, device, args))
        records.append(record)
        del net

    print_table(records, args)
    if args.json:
        env = {"torch": torch.__version__, "device": str(device), "python": platform.python_version(),
               "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "size": args.size,
               "batch": args.batch, "amp": args.amp, "clock": args.clock, "repeats": args.repeats, "warmup": args.warmup,
               "command": " ".join(["python", "scripts/bench_models.py", *sys.argv[1:]])}
        if device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
        atomic_write_text(args.json, json.dumps({"environment": env, "results": records}, indent=2))
    return 0


def print_table(records: list[dict], args) -> None:
    print(f"\nsize {args.size}x{args.size}, batch {args.batch}, device {args.device}, amp {args.amp}, "
          f"{args.clock} clock, {torch.get_num_threads()} threads, median of {args.repeats}; MACs at 1x3x256x256")
    head = f"{'network':<14}{'params (M)':>11}{'GMACs':>9}{'fwd ms':>10}{'fwd+bwd ms':>12}"
    if not args.no_baselines:
        head += f"{'NCHW':>10}{'CL gain':>9}{'official-LN':>13}{'LN gain':>9}{'off.LN+NCHW':>13}{'total gain':>12}"
    print(head)
    for r in records:
        line = (f"{r['network']:<14}{r['params'] / 1e6:>11.3f}{r['macs_256'] / 1e9:>9.3f}"
                f"{r['channels_last']['forward_ms']:>10.1f}")
        ours = r["channels_last"].get("forward_backward_ms")
        if ours is None:  # nothing trainable
            print(line + f"{'-':>12}")
            continue
        line += f"{ours:>12.1f}"
        if not args.no_baselines:
            nchw = r["contiguous"]["forward_backward_ms"]
            line += f"{nchw:>10.1f}{nchw / ours:>8.2f}x"
            if "reference_layernorm_channels_last" in r:
                ref_cl = r["reference_layernorm_channels_last"]["forward_backward_ms"]
                ref_nchw = r["reference_layernorm_contiguous"]["forward_backward_ms"]
                line += f"{ref_cl:>13.1f}{ref_cl / ours:>8.2f}x{ref_nchw:>13.1f}{ref_nchw / ours:>11.2f}x"
        print(line)
    if not args.no_baselines:
        print("Times are forward+backward (ms) except 'fwd ms'. CL gain: contiguous (NCHW) / channels-last; "
              "LN gain: official LayerNorm / fused (both channels-last); total gain: official LayerNorm + NCHW / ours.")

if __name__ == "__main__":
    run_cli(main)
