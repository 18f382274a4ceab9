"""Building blocks shared by the ``*_arch.py`` networks, and the official-checkpoint reader.

Speed notes (measured by ``scripts/bench_models.py``):

* ``LayerNorm2d`` normalises over channels with one fused ``F.layer_norm`` call on a
  channels-last view; autograd differentiates it natively (no custom ``autograd.Function``).
  On a ``torch.channels_last`` tensor the permutes are free views.
* ``PointwiseConv2d`` (a 1×1 ``nn.Conv2d``, same parameters) runs on a channels-last tensor as
  one matrix product over the NHWC view: on CPU that is faster than the convolution kernels
  (which, with one thread and a batch below 16, fall back to a slow im2col path), forward and
  backward; otherwise it is the plain convolution.
* Nothing here loops over pixels in Python.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import ConfigError, DataError


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a B×C×H×W tensor (population variance).

    Equal to the NAFNet ``LayerNorm2d`` (eps 1e-6) and, with ``eps=1e-5``, to Restormer's
    ``WithBias_LayerNorm``; parameters ``weight``/``bias`` have shape [C].
    """

    def __init__(self, channels: int, eps: float = 1e-6, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class BiasFreeLayerNorm2d(nn.Module):
    """Restormer's ``BiasFree_LayerNorm`` over channels: ``x / sqrt(var + eps) * weight``.

    The mean is used for the variance but not subtracted from ``x`` (so this is neither
    ``F.layer_norm`` nor RMSNorm).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class PointwiseConv2d(nn.Conv2d):
    """A 1×1 ``nn.Conv2d`` (same parameters, same state dict) that computes a channels-last
    input as ``F.linear`` over its NHWC view: the same sums in another order (float round-off
    only), and on CPU faster forward and backward. A contiguous (NCHW) input, or any tensor
    that is not 4-D channels-last, goes through the ordinary convolution."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)

    def forward_scaled(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``self(x * scale)`` for a per-sample, per-channel ``scale`` (B×C×1×1, e.g. channel
        attention). On a channels-last input the scale goes into per-sample weights
        (``baddbmm``), which saves the full-size product and its backward."""
        b, c, h, w = x.shape
        if not x.is_contiguous(memory_format=torch.channels_last) or scale.shape != (b, c, 1, 1):
            return self(x * scale)
        weights = (scale.view(b, 1, c) * self.weight.flatten(1)).transpose(1, 2)  # B×Cin×Cout
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.bias is None:
            y = torch.bmm(rows, weights)
        else:
            y = torch.baddbmm(self.bias.view(1, 1, -1), rows, weights)
        return y.view(b, h, w, -1).permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """NAFNet's SimpleGate: split channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "constant") -> torch.Tensor:
    """Pad right and bottom so H and W are multiples of ``multiple``.

    ``mode``: ``constant`` (zeros), ``reflect`` (falls back to ``replicate`` when the image is
    too small to reflect) or ``replicate``. Crop back with ``y[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


# --------------------------------------------------------------------------------------------
# Official checkpoints
# --------------------------------------------------------------------------------------------
STATE_DICT_KEYS = ("params", "params_ema", "state_dict", "model", "net", "network")


def read_checkpoint(path: str | Path) -> dict:
    """Tensors of a checkpoint file: ``.safetensors`` or a ``.pth``/``.pt`` loaded with
    ``torch.load(weights_only=True)`` (never unpickles code). Returns the raw top-level dict."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or pickled code objects
        raise DataError(f"cannot read checkpoint {path}: {exc}") from exc


def unwrap_state_dict(checkpoint: Mapping, param_key: str | None = None) -> dict[str, torch.Tensor]:
    """The network state dict inside an official checkpoint.

    BasicSR-style files (NAFNet, Restormer releases) store it under ``params`` and/or
    ``params_ema``; others under ``state_dict``/``model``. ``param_key=None`` picks ``params``
    when present (what the official test scripts load), else the one known key present.
    A ``module.`` prefix (DataParallel/DDP) is removed.
    """
    if param_key is not None:
        if param_key not in checkpoint:
            raise DataError(f"checkpoint has no '{param_key}' entry (entries: {', '.join(map(str, checkpoint))})")
        state = checkpoint[param_key]
    else:
        found = [k for k in STATE_DICT_KEYS if k in checkpoint and isinstance(checkpoint[k], Mapping)]
        state = checkpoint[found[0]] if found else checkpoint
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(
            "checkpoint does not hold a flat state dict; pass param_key= one of: "
            + ", ".join(str(k) for k, v in checkpoint.items() if isinstance(v, Mapping))
        )
    out = {}
    for key, value in state.items():
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line DataError listing what did not match."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise DataError(f"{source} does not match this network's configuration: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


class OfficialCheckpointMixin:
    """``load_official_state_dict`` / ``from_official_checkpoint`` for ports whose parameter
    names are mapped by ``map_official_keys`` (identity unless overridden)."""

    @staticmethod
    def map_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    def load_official_state_dict(self, state_dict: Mapping, param_key: str | None = None) -> None:
        """Load an official state dict (or a whole official checkpoint dict with ``params`` /
        ``params_ema`` / ``state_dict`` entries) strictly, mapping the official key names."""
        load_strict(self, self.map_official_keys(unwrap_state_dict(state_dict, param_key)),
                    f"official {type(self).__name__.removesuffix('_arch')} checkpoint")

    @classmethod
    def from_official_checkpoint(cls, path, param_key: str | None = None, **official_kwargs):
        """Build the network from the official constructor keywords and load an official
        ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file; returns it in eval mode.

        ``param_key``: which entry of the file holds the weights (default: ``params`` if present,
        as the official test scripts do; pass ``"params_ema"`` for the EMA weights).
        """
        net = cls(cls.config_class(**official_kwargs))
        net.load_official_state_dict(read_checkpoint(path), param_key=param_key)
        return net.eval()


def check_choice(name: str, value, choices) -> None:
    """ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
