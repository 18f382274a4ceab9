"""Exponential moving average (EMA) of a network's weights, used for validation and export.

After optimiser step t (t = 1, 2, ...) every floating-point parameter p updates its average
    ema <- d_t * ema + (1 - d_t) * p,   d_t = min(decay, (1 + t) / (10 + t))
(Polyak & Juditsky 1992; the warm-up d_t is TensorFlow's ExponentialMovingAverage with
num_updates, so early averages are not dominated by the random initialisation). Buffers
(e.g. normalisation statistics) are not averaged: the live network's buffers are used. The
state is plain tensors, saved with safetensors by the trainer.

``start_step``: until optimiser step ``start_step`` the average is a copy of the weights (t
stays 0), so an EMA started late (after a pretraining phase, a ``disc_start``) does not carry
the early weights.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float, start_step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in _averaged(module)
        }

    def current_decay(self) -> float:
        """The decay d_t applied by the next update."""
        t = self.num_updates + 1
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int | None = None) -> None:
        """Average in the weights after optimiser step ``step`` (1-based count of steps done);
        up to ``start_step`` the average is set to the weights instead."""
        params = dict(_averaged(module))
        if params.keys() != self.shadow.keys():
            raise RuntimeError("EMA: the network's parameters changed since the EMA was created")
        if step is not None and step <= self.start_step:
            for name, value in params.items():
                self.shadow[name].copy_(value.detach())
            return
        decay = self.current_decay()
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        torch._foreach_lerp_(shadows, [params[n].detach().to(self.shadow[n].dtype) for n in names], 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for name, p in _averaged(module):
            p.copy_(self.shadow[name])

    @contextmanager
    def applied_to(self, module: nn.Module):
        """Temporarily load the averaged weights into ``module`` (restored on exit)."""
        backup = {name: p.detach().clone() for name, p in _averaged(module)}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, p in _averaged(module):
                    p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "start_step": self.start_step,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        if state["shadow"].keys() != self.shadow.keys():
            missing = sorted(set(self.shadow) ^ set(state["shadow"]))[:3]
            raise ValueError(f"EMA state does not match the network (differing keys: {', '.join(missing)})")
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.start_step = int(state.get("start_step", self.start_step))


def _averaged(module: nn.Module):
    """(name, parameter) pairs the EMA tracks: every floating-point parameter."""
    return [(n, p) for n, p in module.named_parameters() if p.dtype.is_floating_point]
