"""Parameter and multiply-accumulate (MAC) counts of a network.

Convention (the one the official reference numbers in the fixtures use): FLOPs from
``torch.utils.flop_counter.FlopCounterMode`` for one forward pass, MACs = FLOPs / 2. The counter
covers convolutions and matrix products (``aten.convolution``, ``mm``/``bmm``/``addmm``,
attention kernels) only; bias adds, normalisation, activations, pooling and element-wise ops
are not counted, so figures are a little below those of hook-based counters that add them.

Counting runs on the ``meta`` device by default: shapes only, no memory and no arithmetic, so a
100 M-parameter network at 256×256 is counted in well under a second.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_flops(net: nn.Module, inputs: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, int]:
    """FLOPs of ``net(**inputs)`` (eval mode, no grad) per aten op, plus ``"total"``.

    ``inputs`` may live on any device, ``meta`` included (then ``net`` must be on ``meta`` too).
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if isinstance(inputs, torch.Tensor):
                net(inputs)
            else:
                net(**inputs)
    finally:
        net.train(was_training)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    by_op["total"] = int(counter.get_total_flops())
    return by_op


def count_macs(net: nn.Module, inputs: Mapping[str, torch.Tensor] | torch.Tensor) -> int:
    """MACs (= counted FLOPs / 2) of one forward pass of ``net`` on ``inputs``."""
    return count_flops(net, inputs)["total"] // 2


def network_cost(build: Callable[[], nn.Module], size: int = 256, batch_size: int = 1,
                 device: str | torch.device = "meta") -> dict[str, int]:
    """``{"params", "macs", "flops"}`` of the network made by ``build()`` on a
    ``batch_size × C × size × size`` input (the network's ``example_inputs``), built on ``device``."""
    with torch.device(device):
        net = build()
        inputs = net.example_inputs(batch_size=batch_size, size=size)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    flops = count_flops(net, inputs)["total"]
    return {"params": count_params(net), "macs": flops // 2, "flops": flops}
