#!/usr/bin/env python
"""Benchmark the network zoo: parameters, MACs at 256×256, forward and training-step time.

Every speed figure comes with baselines measured in the same run, interleaved repeat by repeat
(A B C A B C ...), so a change of machine load affects all of them alike; the speed-up of each
variant is the median of its per-repeat ratios, printed with their range. Variants (``--variants``):

* ``channels_last``: the default path (``torch.channels_last`` tensors: 1×1 convolutions as
  matrix products, fused LayerNorm2d, ``addcmul`` residuals).
* ``contiguous``: the same code on NCHW tensors (1×1 convolutions stay convolutions).
* ``previous_channels_last`` / ``previous_contiguous``: the blocks as they were before the
  CPU speed-ups (every 1×1 convolution an ``nn.Conv2d`` call, residuals ``inp + x * beta``);
  ``previous_contiguous`` is the quickstart's training step before them (the reference).
* ``reference_layernorm_channels_last`` / ``reference_layernorm_contiguous``: ``LayerNorm2d``
  swapped for the official NAFNet implementation (element-wise formula with a hand-written
  ``autograd.Function`` backward), same parameters.

Before timing, each variant's output and gradients on one batch are compared with the first
variant's (``max_abs_output_diff``, ``max_rel_grad_diff``): they must agree to float round-off.

MACs follow ``utils.flops`` (FlopCounterMode, MACs = FLOPs / 2, convolutions and matmuls only).

Examples:
    python scripts/bench_models.py                                  # every network, default configs, CPU
    python scripts/bench_models.py --archs NAFNet,UNet --size 128 --repeats 3 --json bench.json
    python scripts/bench_models.py --device cuda --batch 8 --amp bf16
    python scripts/bench_models.py --config tiny --size 64          # quick smoke run
    # the quickstart's training step (its NAFNet, 96² crops, batch 8, L1 + AdamW), one thread, CPU time:
    python scripts/bench_models.py --config checkpoints/quickstart.yml --size 96 --batch 8 --optimizer adamw \
        --threads 1 --clock cpu --repeats 15 --variants previous_contiguous,contiguous,previous_channels_last,channels_last
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import types
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


def _previous_nafblock_forward(self, inp):
    """``NAFBlock.forward`` before the CPU speed-ups (its 1×1 convolutions are plain
    ``nn.Conv2d`` after ``swap_previous``): the speed baseline only."""
    x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
    x = self.dropout1(self.conv3(x * self.sca(x)))
    y = inp + x * self.beta
    x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
    return y + x * self.gamma


def swap_previous(net: nn.Module) -> int:
    """Put the blocks back as they were before the CPU speed-ups, in place: every
    ``PointwiseConv2d`` becomes an ``nn.Conv2d`` sharing its parameters, every ``NAFBlock``
    computes its residuals as ``inp + x * beta``. Returns how many modules changed."""
    from models.archs.layers import PointwiseConv2d
    from models.archs.nafnet_arch import NAFBlock

    count = 0
    for module in list(net.modules()):
        if isinstance(module, NAFBlock):
            module.forward = types.MethodType(_previous_nafblock_forward, module)
            count += 1
        for name, child in module.named_children():
            if isinstance(child, PointwiseConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 1, bias=child.bias is not None,
                                 device="meta")
                conv.weight, conv.bias = child.weight, child.bias
                setattr(module, name, conv)
                count += 1
    return count


VARIANTS = {  # name -> (channels_last, swap to apply or None)
    "channels_last": (True, None),
    "contiguous": (False, None),
    "previous_channels_last": (True, swap_previous),
    "previous_contiguous": (False, swap_previous),
    "reference_layernorm_channels_last": (True, swap_layernorm),
    "reference_layernorm_contiguous": (False, swap_layernorm),
}
DEFAULT_VARIANTS = ("channels_last", "contiguous", "previous_contiguous",
                    "reference_layernorm_channels_last", "reference_layernorm_contiguous")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runs(net, inputs, device, amp_name: str, channels_last: bool, optimizer: str = "none"):
    """``(forward, train_step, check)`` closures for ``net`` in the given memory format.

    ``train_step``: forward, L1 loss against a fixed target, backward and, with
    ``optimizer="adamw"``, one AdamW step (lr 1e-3, as the quickstart). ``check()`` returns
    the output and the parameter gradients of one forward+backward, without an optimiser step."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt)
    inputs = {k: (v.to(device).contiguous(memory_format=fmt) if v.dim() == 4 else v.to(device)) for k, v in inputs.items()}
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp_name)
    target = torch.rand(inputs["lq"].shape, generator=torch.Generator().manual_seed(1)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3) if optimizer == "adamw" else None

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    def forward():
        net.eval()
        with torch.no_grad(), autocast():
            net(**inputs)

    def backward():
        net.train()
        net.zero_grad(set_to_none=True)
        with autocast():
            out = net(**inputs)
            loss = (out.float() - target[:, :out.shape[1]]).abs().mean()
        loss.backward()
        return out

    def train_step():
        backward()
        if opt is not None:
            opt.step()

    def check():
        out = backward().detach().float().contiguous()
        grads = {n: p.grad.detach().float().contiguous() for n, p in net.named_parameters() if p.grad is not None}
        net.zero_grad(set_to_none=True)
        return out, grads

    return forward, train_step, check


def compare(reference, other) -> dict:
    """Largest output difference and largest gradient difference relative to that gradient's
    scale (max |g|), between two ``check()`` results."""
    (out_a, grads_a), (out_b, grads_b) = reference, other
    rel = [((grads_a[n] - grads_b[n]).abs().max() / grads_a[n].abs().max().clamp_min(1e-30)).item() for n in grads_a]
    return {"max_abs_output_diff": (out_a - out_b).abs().max().item(), "max_rel_grad_diff": max(rel, default=0.0)}


def time_interleaved(runs: dict, device, warmup: int, repeats: int, clock=time.perf_counter) -> dict:
    """Every run's times (ms, one per repeat) by ``clock``; the runs are interleaved repeat by
    repeat so that a change of machine load affects all of them alike (ratios stay meaningful on
    a busy host)."""
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
    return times


def ratio_stats(baseline: list[float], times: list[float]) -> dict:
    """Speed-up of ``times`` over ``baseline`` (same repeats): median and range of the per-repeat ratios."""
    ratios = sorted(b / t for b, t in zip(baseline, times))
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}


def bench_network(net, inputs, device, args) -> dict:
    """Times, speed-ups and agreement of every requested variant of ``net``."""
    names = ["channels_last"] if args.no_baselines else list(args.variants)
    variants = {}
    for name in names:
        channels_last, swap = VARIANTS[name]
        variant = copy.deepcopy(net)
        if swap is not None and not swap(variant):
            continue  # nothing to swap in this network: the variant would equal another one
        variants[name] = (variant, channels_last)
    trainable = any(p.requires_grad for p in net.parameters())  # else there is no backward to time
    runs, checks = {}, {}
    for key, (variant, channels_last) in variants.items():
        forward, step, check = make_runs(variant, inputs, device, args.amp, channels_last, args.optimizer)
        runs[(key, "forward_ms")] = forward
        if trainable:
            runs[(key, "forward_backward_ms")] = step
            checks[key] = check
    out: dict = {}
    if checks:  # agreement with the first variant, before any optimiser step changes the weights
        first = next(iter(checks))
        reference = checks[first]()
        for key, check in checks.items():
            out.setdefault(key, {}).update({f"{k}_vs_{first}": v for k, v in compare(reference, check()).items()})
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timed = time_interleaved(runs, device, args.warmup, args.repeats, clock)
    for (key, what), ms in timed.items():
        out.setdefault(key, {})[what] = statistics.median(ms)
        out[key][what.replace("_ms", "_times_ms")] = ms
    if trainable and args.baseline in variants:
        base = timed[(args.baseline, "forward_backward_ms")]
        for key in variants:
            out[key]["speedup_vs_" + args.baseline] = ratio_stats(base, timed[(key, "forward_backward_ms")])
    return out


def build(name: str, variant: str | dict, device: str | torch.device):
    """Network ``name`` with its default config, its ``tiny()`` config, or the given options."""
    from models.archs import get_network_classes

    config_cls, arch_cls = get_network_classes(name)
    if isinstance(variant, dict):
        config = config_cls(**variant)
    else:
        config = config_cls.tiny() if variant == "tiny" else config_cls()
    with torch.device(device):
        return arch_cls(config)


def network_from_yaml(path: Path) -> tuple[str, dict]:
    """``(type, options)`` of an experiment YAML's ``network``."""
    from utils.config import load_config

    options = dict(load_config(path, []).network)
    return options.pop("type"), options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--archs", default="", help="comma-separated network types (default: every registered one)")
    parser.add_argument("--config", default="default",
                        help="default (each network's default config), tiny (its tiny() test config), or an "
                             "experiment YAML whose network is timed (e.g. checkpoints/quickstart.yml)")
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
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated variants to time side by side, of: {', '.join(VARIANTS)} "
                             f"(default: %(default)s); outputs and gradients are compared with the first")
    parser.add_argument("--baseline", default="previous_contiguous",
                        help="variant the speed-ups are computed against (default: %(default)s)")
    parser.add_argument("--optimizer", choices=("none", "adamw"), default="none",
                        help="adamw: the timed training step includes an AdamW step (as in training)")
    parser.add_argument("--no-baselines", action="store_true", help="time the channels_last variant only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()

    from models.archs import network_names
    from utils.flops import count_flops, count_params

    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants:
        raise ConfigError(f"unknown variant {bad[0] if bad else '(none)'}; choose from {', '.join(VARIANTS)}")
    yaml_network = None
    if args.config not in ("default", "tiny"):
        if not Path(args.config).is_file():
            raise ConfigError(f"--config must be default, tiny or an experiment YAML file, got {args.config!r}")
        yaml_network = network_from_yaml(Path(args.config))
    names = [n for n in args.archs.split(",") if n] or ([yaml_network[0]] if yaml_network else network_names())
    if yaml_network and names != [yaml_network[0]]:
        raise ConfigError(f"--config {args.config} holds a {yaml_network[0]} network; leave --archs out or set it to that")
    variant = yaml_network[1] if yaml_network else args.config
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
            meta_net = build(name, variant, "meta")
            with torch.device("meta"):
                meta_inputs = meta_net.example_inputs(batch_size=1, size=256)
            macs = count_flops(meta_net, meta_inputs)["total"] // 2
        except (NotImplementedError, RuntimeError):  # a data-dependent op: count on the CPU instead
            cpu_net = build(name, variant, "cpu")
            macs = count_flops(cpu_net, cpu_net.example_inputs(batch_size=1, size=256))["total"] // 2
        torch.manual_seed(0)
        net = build(name, variant, "cpu")
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
               "optimizer": args.optimizer, "baseline": args.baseline, "cpu": cpu_name(),
               "command": " ".join(["python", "scripts/bench_models.py", *sys.argv[1:]])}
        if device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
        atomic_write_text(args.json, json.dumps({"environment": env, "results": records}, indent=2))
    return 0


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(records: list[dict], args) -> None:
    step = "forward+backward" + (" + AdamW" if args.optimizer == "adamw" else "")
    print(f"\nsize {args.size}x{args.size}, batch {args.batch}, device {args.device}, amp {args.amp}, "
          f"{args.clock} clock, {torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats; "
          f"train = {step}; MACs at 1x3x256x256")
    for r in records:
        print(f"\n{r['network']} ({r['config']}): {r['params'] / 1e6:.3f} M parameters, {r['macs_256'] / 1e9:.3f} GMACs")
        head = f"  {'variant':<36}{'fwd ms':>10}{'train ms':>10}"
        keys = [k for k in (['channels_last'] if args.no_baselines else args.variants) if k in r]
        first = keys[0]
        speedup = "speedup_vs_" + args.baseline
        if any(speedup in r[k] for k in keys):
            head += f"   {'speed-up vs ' + args.baseline + ' (median, range)':<48}"
        head += f"{'max |out diff|':>16}{'max rel grad diff':>19}"
        print(head)
        for key in keys:
            v = r[key]
            line = f"  {key:<36}{v['forward_ms']:>10.1f}"
            line += f"{v['forward_backward_ms']:>10.1f}" if "forward_backward_ms" in v else f"{'-':>10}"
            if speedup in v:
                s = v[speedup]
                line += f"   {s['median']:>5.2f}x ({s['min']:.2f}-{s['max']:.2f}){'':<31}"
            if f"max_abs_output_diff_vs_{first}" in v:
                line += f"{v[f'max_abs_output_diff_vs_{first}']:>16.2e}{v[f'max_rel_grad_diff_vs_{first}']:>19.2e}"
            print(line)
    print(f"\nDifferences are against the first variant ({args.variants[0] if not args.no_baselines else 'channels_last'}), "
          "one forward+backward on the same batch before timing.")


if __name__ == "__main__":
    run_cli(main)
