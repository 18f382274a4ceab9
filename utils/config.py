"""Experiment configuration: YAML files -> one frozen, typed ``ExperimentConfig``.

Loading an experiment (``load_config(path, overrides)``) does, in order:

1. ``base:`` inheritance. A YAML may name one base file (or a list of them, merged in order)
   by a path relative to the including file; bases may have bases (a cycle is an error).
   The including file is merged over its bases key by key; a mapping whose ``type`` differs
   from the inherited one (``network: {type: UNet}`` over a NAFNet base) replaces it whole,
   so no option of the old type leaks into the new one.
2. Command-line overrides ``a.b=c`` (value parsed as YAML: ``train.lr=2e-4``,
   ``val.metrics=[psnr]``, ``train.losses.0.weight=0.5``), applied with the same merge rule.
3. ``${...}`` interpolation (OmegaConf), e.g. ``name: nafnet_${network.width}``.
4. Validation against the typed schema below: an unknown key is an error naming the key and
   the closest valid one, a wrong type or a missing required field names the field.
   ``networks.<name>`` (``network:`` is shorthand for ``networks.net``), ``datasets.<split>``,
   ``train.optimizers.<name>`` and ``train.losses[i]`` are checked against the network
   config class, the dataset constructor and the loss class; ``model`` against the
   ``Options`` dataclass of the class named by ``model_type`` (a task's own options).

The result is read-only (frozen dataclasses, ``FrozenDict`` mappings, tuples): code reads
fields, there is no ``.get()`` with a default anywhere else. ``save_config`` writes the fully
resolved config (every field, defaults included) that ``load_config`` reads back unchanged.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from utils.atomic import atomic_write_text
from utils.errors import ConfigError, RegistryError, RestorelabError
from utils.registry import closest

# ---------------------------------------------------------------------------------------------
# Read-only containers


def freeze(value):
    """Mappings -> FrozenDict, lists -> tuples, recursively."""
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenDict) else FrozenDict(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    """Inverse of ``freeze``: plain dicts and lists (what YAML, json and constructors expect)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


class FrozenDict(Mapping):
    """An immutable mapping for free-form option blocks (``network``, ``datasets.train``...)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping | None = None):
        self._data = {str(k): freeze(v) for k, v in dict(data or {}).items()}

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def to_dict(self) -> dict:
        """A plain, mutable deep copy (lists instead of tuples)."""
        return thaw(self)


# ---------------------------------------------------------------------------------------------
# Schema. Every field here is documented in docs/training.md (keep both in step).


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class OptimConfig:
    """``train.optim``: the optimiser (learning rate is ``train.lr``)."""

    type: Literal["AdamW", "Adam", "SGD"] = "AdamW"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only

    def __post_init__(self):
        _check(all(0.0 <= b < 1.0 for b in self.betas), f"train.optim.betas must lie in [0, 1), got {list(self.betas)}")
        _check(self.eps > 0, f"train.optim.eps must be > 0, got {self.eps}")
        _check(self.weight_decay >= 0, f"train.optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class SchedulerConfig:
    """``train.scheduler``: learning-rate schedule over optimiser steps (see models.base_model.lr_factor)."""

    type: Literal["constant", "cosine", "linear", "multistep"] = "cosine"
    warmup_steps: int = 0
    min_lr: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5

    def __post_init__(self):
        _check(self.warmup_steps >= 0, f"train.scheduler.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.min_lr >= 0, f"train.scheduler.min_lr must be >= 0, got {self.min_lr}")
        _check(list(self.milestones) == sorted(self.milestones), "train.scheduler.milestones must be increasing")
        _check(self.gamma > 0, f"train.scheduler.gamma must be > 0, got {self.gamma}")


@dataclass(frozen=True)
class ParamGroupConfig:
    """``train.optimizers.<net>.param_groups[i]``: parameters of one network whose name matches
    ``match`` (a regular expression searched in the parameter name, e.g. ``^spynet\\.``) get
    ``lr_mult`` × the network's learning rate, and no update before optimiser step
    ``frozen_until`` (their gradients are set to None: the autograd graph and the optimiser's
    parameter list never change, so DDP and resume work across the switch)."""

    match: str
    lr_mult: float = 1.0
    frozen_until: int = 0

    def __post_init__(self):
        try:
            re.compile(self.match)
        except re.error as exc:
            raise ConfigError(f"param_groups.match {self.match!r} is not a regular expression: {exc}") from None
        _check(self.lr_mult >= 0, f"param_groups.lr_mult must be >= 0, got {self.lr_mult}")
        _check(self.frozen_until >= 0, f"param_groups.frozen_until must be >= 0, got {self.frozen_until}")


@dataclass(frozen=True)
class NetworkOptimizerConfig:
    """``train.optimizers.<net>``: per-network optimiser settings; each unset field falls back to
    the shared ``train.lr`` / ``train.optim`` / ``train.scheduler``."""

    lr: float | None = None
    optim: OptimConfig | None = None
    scheduler: SchedulerConfig | None = None
    param_groups: tuple[ParamGroupConfig, ...] = ()

    def __post_init__(self):
        _check(self.lr is None or self.lr > 0, f"train.optimizers.*.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class OptimizerSettings:
    """The resolved optimiser settings of one network (``TrainConfig.optimizer_for``)."""

    lr: float
    optim: OptimConfig
    scheduler: SchedulerConfig
    param_groups: tuple[ParamGroupConfig, ...]
    max_steps: int


@dataclass(frozen=True)
class TrainConfig:
    """``train``: the optimisation loop."""

    max_steps: int
    batch_size: int = 8  # per process; the global batch is batch_size * processes * grad_accum
    lr: float = 1e-3
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    losses: tuple[FrozenDict, ...] = (FrozenDict({"type": "L1", "weight": 1.0}),)
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    ema_start: int = 0  # EMA follows the weights exactly until this optimiser step, then averages
    optimizers: FrozenDict = field(default_factory=FrozenDict)  # network name -> NetworkOptimizerConfig
    val_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    channels_last: bool = False  # networks and 4-D batch tensors in NHWC memory layout (faster convolutions)
    log_every: int = 10
    num_workers: int | Literal["auto"] = 0  # at most; fewer when the process has fewer CPUs (utils.workers)

    def __post_init__(self):
        for key in ("max_steps", "batch_size", "grad_accum", "keep_checkpoints", "log_every"):
            _check(getattr(self, key) >= 1, f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("val_every", "checkpoint_every"):
            _check(getattr(self, key) >= 0, f"train.{key} must be >= 0, got {getattr(self, key)}")
        _check(self.num_workers == "auto" or self.num_workers >= 0,
               f"train.num_workers must be >= 0 or auto, got {self.num_workers}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0,
               f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        _check(self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
               f"train.ema_decay must lie in (0, 1) or be null, got {self.ema_decay}")
        _check(len(self.losses) > 0, "train.losses must name at least one loss")
        _check(self.scheduler.min_lr <= self.lr, f"train.scheduler.min_lr ({self.scheduler.min_lr}) exceeds train.lr ({self.lr})")
        _check(self.ema_start >= 0, f"train.ema_start must be >= 0, got {self.ema_start}")
        for name, opt in self.optimizers.items():
            lr = opt.lr if opt.lr is not None else self.lr
            sched = opt.scheduler or self.scheduler
            _check(sched.min_lr <= lr, f"train.optimizers.{name}: scheduler.min_lr ({sched.min_lr}) exceeds lr ({lr})")

    def optimizer_for(self, network: str) -> OptimizerSettings:
        """Settings of the optimiser of network ``network``: ``train.optimizers.<network>`` over
        the shared ``train.lr``/``optim``/``scheduler``."""
        own = self.optimizers.get(network) or NetworkOptimizerConfig()
        return OptimizerSettings(lr=own.lr if own.lr is not None else self.lr, optim=own.optim or self.optim,
                                 scheduler=own.scheduler or self.scheduler, param_groups=own.param_groups,
                                 max_steps=self.max_steps)


@dataclass(frozen=True)
class ValConfig:
    """``val``: validation during training and the ``-test`` run."""

    metrics: tuple[str, ...] = ("psnr", "ssim")
    best_metric: str = "psnr"
    patched: bool = False
    patch_size: int = 256
    overlap: int = 32
    save_images: bool = False
    log_images: int = 4
    crop_border: int = 0
    test_y_channel: bool = False
    batch_size: int = 1
    average: Literal["image", "clip", "frame"] = "image"  # clip: mean over each clip's frames, then over clips

    def __post_init__(self):
        _check(len(self.metrics) > 0, "val.metrics must name at least one metric")
        _check(self.best_metric in self.metrics,
               f"val.best_metric '{self.best_metric}' is not one of val.metrics ({', '.join(self.metrics)})")
        _check(self.patch_size >= 8, f"val.patch_size must be >= 8, got {self.patch_size}")
        _check(0 <= self.overlap and 2 * self.overlap <= self.patch_size,
               f"val.overlap must lie in [0, val.patch_size / 2], got {self.overlap} for patch_size {self.patch_size}")
        for key in ("log_images", "crop_border"):
            _check(getattr(self, key) >= 0, f"val.{key} must be >= 0, got {getattr(self, key)}")
        _check(self.batch_size >= 1, f"val.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DatasetsConfig:
    """``datasets``: one options mapping per split (``type`` + the dataset's constructor keywords)."""

    train: FrozenDict | None = None
    val: FrozenDict | None = None
    test: FrozenDict | None = None


@dataclass(frozen=True)
class PathConfig:
    """``path``: where runs go and which weights to start from."""

    root: str = "experiments"
    pretrain_network: str | None = None


@dataclass(frozen=True)
class NoOptions:
    """A model with no options of its own (``model:`` must be empty)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment. ``model`` holds the instance of the model class's ``Options``."""

    name: str
    networks: FrozenDict  # network name -> options (``type`` + config keywords); YAML ``network:`` = ``networks.net``
    train: TrainConfig
    seed: int = 0
    model_type: str = "PairedRestoration_model"
    model: Any = field(default_factory=NoOptions)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    path: PathConfig = field(default_factory=PathConfig)
    val: ValConfig = field(default_factory=ValConfig)
    report_to: tuple[Literal["tensorboard", "comet_ml"], ...] = ("tensorboard",)
    push_to_hub: bool = False
    hub_model_id: str | None = None

    def __post_init__(self):
        _check(bool(self.name) and self.name not in (".", "..") and not re.search(r"[/\\\s]", self.name),
               f"name must be a plain folder name (no slashes or spaces), got {self.name!r}")
        _check(len(set(self.report_to)) == len(self.report_to), f"report_to lists a tracker twice: {list(self.report_to)}")
        _check(not self.push_to_hub or bool(self.hub_model_id), "push_to_hub: true needs hub_model_id (user/name)")

    @property
    def network(self) -> FrozenDict | None:
        """``networks.net``: the main network's options (the YAML shorthand ``network:``)."""
        return self.networks.get("net")

    @property
    def run_dir(self) -> Path:
        """``{path.root}/{name}`` (relative roots are relative to the working directory)."""
        return Path(self.path.root) / self.name


# ---------------------------------------------------------------------------------------------
# YAML: base inheritance, overrides, interpolation


def _merge(base: dict, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base``; a mapping whose ``type`` changes replaces the old one."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if "type" in value and "type" in old and value["type"] != old["type"]:
                out[key] = dict(value)
            else:
                out[key] = _merge(dict(old), value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and OmegaConf's own errors
        first = " ".join(str(exc).split())
        raise ConfigError(f"cannot parse config {path}: {first}") from exc
    data = OmegaConf.to_container(node, resolve=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at top level, got {type(data).__name__}")
    return data


def load_yaml_tree(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict:
    """The YAML at ``path`` merged over its ``base:`` files (recursively), not yet resolved."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, resolved))
        raise ConfigError(f"base: inheritance cycle: {cycle}")
    if not resolved.is_file():
        where = f" (named as base: in {_chain[-1]})" if _chain else ""
        raise ConfigError(f"config file not found: {path}{where}")
    data = _read_yaml(resolved)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"base: in {path} must be a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, load_yaml_tree(resolved.parent / base, (*_chain, resolved)))
    if isinstance(data.get("networks"), Mapping) and "net" in data["networks"]:
        merged.pop("network", None)  # the file's networks.net replaces a base's `network:` shorthand
    return _merge(merged, data)


_OVERRIDE = re.compile(r"([A-Za-z_][\w-]*(?:\.[\w-]+)*)=(.*)", re.S)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=2e-4"`` -> (["train", "lr"], 0.0002); the value is parsed as YAML."""
    from omegaconf import OmegaConf

    match = _OVERRIDE.fullmatch(item)
    if not match:
        raise ConfigError(f"bad override {item!r}: expected key.path=value (e.g. train.lr=2e-4)")
    key, text = match.groups()
    try:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]
    except Exception as exc:
        raise ConfigError(f"bad override {item!r}: cannot parse the value: {' '.join(str(exc).split())}") from exc
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set ``a.b=c`` overrides on a copy of the (unresolved) config tree."""
    out = _merge({}, data)
    for item in overrides:
        parts, value = parse_override(item)
        _set_path(out, parts, value, item)
    return out


def _set_path(tree: dict, parts: list[str], value, item: str) -> None:
    node: Any = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"bad override {item!r}: {where} is not an index of a list of {len(node)}")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
        else:
            raise ConfigError(f"bad override {item!r}: {'.'.join(parts[:depth])} is not a mapping")
        if last:
            old = node[index] if isinstance(node, list) else node.get(index)
            if isinstance(value, Mapping) and isinstance(old, Mapping):
                node[index] = _merge({"_": old}, {"_": value})["_"]
            else:
                node[index] = value
            return
        if isinstance(node, dict) and node.get(index) is None:
            node[index] = {}  # a new section
        elif not isinstance(node[index], (dict, list)):
            raise ConfigError(f"bad override {item!r}: {where} is not a mapping")
        if isinstance(node[index], dict):
            node[index] = dict(node[index])
        elif isinstance(node[index], list):
            node[index] = list(node[index])
        node = node[index]


def resolve_interpolations(data: dict) -> dict:
    """Resolve ``${...}`` (OmegaConf syntax, including ``${oc.env:VAR}``)."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except Exception as exc:
        message = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"cannot resolve ${{...}} in {key or 'config'}: {message}") from exc


# ---------------------------------------------------------------------------------------------
# Typed validation


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return "a list"
    if hint is FrozenDict or dataclasses.is_dataclass(hint):
        return "a mapping"
    if hint is Any:
        return "any value"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(hint, str(hint))


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _schema_paths(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a schema dataclass (for 'did you mean' across sections)."""
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        paths.append(path)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            paths.extend(_schema_paths(hint, path))
    return paths


def unknown_key_message(prefix: str, key: str, valid: list[str], owner: str | None = None) -> str:
    """"unknown key train.max_stepz; did you mean train.max_steps?" (searches other sections too)."""
    full = _join(prefix, key)
    guess = closest(key, valid)
    suffix = f" for {owner}" if owner else ""
    if guess:
        return f"unknown key {full}{suffix}; did you mean {_join(prefix, guess)}?"
    # A key put in the wrong section: match its last part against every schema path.
    everywhere = _schema_paths(ExperimentConfig)
    leaf_matches = [p for p in everywhere if p.rsplit(".", 1)[-1] == key]
    if leaf_matches:
        return f"unknown key {full}{suffix}; did you mean {leaf_matches[0]}?"
    return f"unknown key {full}{suffix} (valid: {', '.join(valid) or 'none'})"


Hook = Callable[[Any, str, Mapping], Any]


def _coerce(value, hint, key: str, hooks: dict[str, Hook], root: Mapping):
    if key in hooks:
        return hooks[key](value, key, root)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return freeze(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            if value is None:
                raise ConfigError(f"{key} must be {_type_name(hint)}, got null")
            if options[0] in (int, float, bool, str):  # scalar: say that null is allowed too
                try:
                    return _coerce(value, options[0], key, hooks, root)
                except ConfigError:
                    raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})") from None
            return _coerce(value, options[0], key, hooks, root)
        for option in options:
            try:
                return _coerce(value, option, key, hooks, root)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        guess = closest(str(value), [str(a) for a in args])
        hint_text = f"; did you mean {guess!r}?" if guess else ""
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}{hint_text}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", hooks, root) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]", hooks, root) for i, (v, a) in enumerate(zip(value, args)))
    if hint is FrozenDict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r} ({type(value).__name__})")
        return FrozenDict(value)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key, hooks, root)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"schema type {hint!r} of {key} is not supported")
    if not ok:
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    return float(value) if hint is float else value


def build_dataclass(cls, data, prefix: str = "", hooks: dict[str, Hook] | None = None,
                    root: Mapping | None = None, owner: str | None = None):
    """Validate the mapping ``data`` against dataclass ``cls`` and build it.

    Unknown keys, missing required fields and wrong types raise ConfigError naming the
    dotted key. ``hooks`` maps a dotted key to a function checking/converting that value.
    """
    hooks = hooks or {}
    root = data if root is None else root
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r} ({type(data).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_key_message(prefix, str(key), list(fields), owner))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        full = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required field {full} ({_type_name(hints[name])})")
            if full in hooks:  # defaults go through their hook too (e.g. model options)
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                kwargs[name] = hooks[full](default, full, root)
            continue
        kwargs[name] = _coerce(data[name], hints[name], full, hooks, root)
    return cls(**kwargs)


def _check_network(value, key: str, root: Mapping) -> FrozenDict:
    from models.archs import check_network_options

    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping with a type, got {value!r}")
    _checked(check_network_options, value, key)
    # Build the (cheap) config object now, so a bad value fails at load time, not after data loading.
    from models.archs import get_network_classes

    config_cls, _ = get_network_classes(value["type"])
    options = thaw({k: v for k, v in value.items() if k != "type"})
    try:
        config_cls(**options)
    except RestorelabError as exc:
        raise ConfigError(f"{key} ({value['type']}): {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} ({value['type']}): {exc}") from exc
    return FrozenDict(value)


def _check_networks(value, key: str, root: Mapping) -> FrozenDict:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{key} must map network names to options, e.g. {{net: {{type: NAFNet}}}}; got {value!r}")
    out = {}
    for name, options in value.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
            raise ConfigError(f"{key}: network name {name!r} must be an identifier (letters, digits, _)")
        # A lone ``net`` is what the ``network:`` shorthand wrote: name it so in errors.
        label = "network" if name == "net" and len(value) == 1 else f"{key}.{name}"
        out[str(name)] = _check_network(options, label, root)
    return FrozenDict(out)


def _check_optimizers(value, key: str, root: Mapping) -> FrozenDict:
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must map network names to optimiser settings, got {value!r}")
    networks = list(root.get("networks") or {})
    out = {}
    for name, options in value.items():
        if networks and name not in networks:
            guess = closest(str(name), networks)
            hint = f"; did you mean {key}.{guess}?" if guess else f" (networks: {', '.join(networks)})"
            raise ConfigError(f"{key}.{name}: no network named '{name}'{hint}")
        out[str(name)] = build_dataclass(NetworkOptimizerConfig, options, f"{key}.{name}")
    return FrozenDict(out)


def _check_dataset(value, key: str, root: Mapping) -> FrozenDict | None:
    from dataset import check_dataset_options

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping with a type, got {value!r}")
    _checked(check_dataset_options, value, key)
    return FrozenDict(value)


def _check_losses(value, key: str, root: Mapping) -> tuple[FrozenDict, ...]:
    from models.losses import check_loss_options

    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list of {{type: ..., weight: ...}} mappings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{key}[{i}] must be a mapping like {{type: L1, weight: 1.0}}, got {item!r}")
        _checked(check_loss_options, item, f"{key}[{i}]")
        out.append(FrozenDict(item))
    return tuple(out)


def _check_metrics(value, key: str, root: Mapping) -> tuple[str, ...]:
    from utils.metrics import METRICS, metric_names

    names = _coerce(value, tuple[str, ...], key, {}, root)
    per_image = metric_names(per_image=True)
    for name in names:
        if name not in per_image:
            from utils.registry import unknown_name_message

            if name in METRICS:
                raise ConfigError(f"{key}: '{name}' compares whole image sets; validation needs a per-image metric "
                                  f"({', '.join(per_image)})")
            raise ConfigError(f"{key}: {unknown_name_message('metric', name, per_image)}")
    return names


def _build_model_options(value, key: str, root: Mapping):
    from utils.registry import MODELS

    model_type = root.get("model_type", "PairedRestoration_model")
    if not isinstance(model_type, str):
        raise ConfigError(f"model_type must be a string, got {model_type!r}")
    try:
        model_cls = MODELS.get(model_type)
    except RegistryError as exc:
        raise ConfigError(f"model_type: {exc}") from None
    options_cls = getattr(model_cls, "Options", NoOptions)
    if value is None or dataclasses.is_dataclass(value):  # absent: the options' own defaults
        value = {}
    return build_dataclass(options_cls, value, key, owner=f"model_type {model_type}")


def _checked(check, options: Mapping, key: str) -> None:
    """Run an options check (``check(options, prefix)``), naming ``key.type`` in registry errors."""
    try:
        check(options, key)
    except RegistryError as exc:
        raise ConfigError(f"{key}.type: {exc}") from None


HOOKS: dict[str, Hook] = {
    "networks": _check_networks,
    "train.optimizers": _check_optimizers,
    "datasets.train": _check_dataset,
    "datasets.val": _check_dataset,
    "datasets.test": _check_dataset,
    "train.losses": _check_losses,
    "val.metrics": _check_metrics,
    "model": _build_model_options,
}


# Earlier names of model classes, still accepted in configs (saved configs carry the new name).
MODEL_TYPE_ALIASES = {"Simple_model": "PairedRestoration_model"}


def normalize_tree(data: Mapping) -> dict:
    """The shorthands of a resolved tree, spelled out: ``network: X`` -> ``networks.net: X``
    (merged over an inherited ``networks.net``), old ``model_type`` names -> current ones."""
    data = dict(data)
    if data.get("network") is None:
        data.pop("network", None)
    else:
        shorthand = data.pop("network")
        networks = dict(data.get("networks") or {})
        old = networks.get("net")
        if isinstance(shorthand, Mapping) and isinstance(old, Mapping):
            shorthand = _merge({"net": old}, {"net": shorthand})["net"]
        networks["net"] = shorthand
        data["networks"] = networks
    if data.get("model_type") in MODEL_TYPE_ALIASES:
        data["model_type"] = MODEL_TYPE_ALIASES[data["model_type"]]
    return data


def config_from_dict(data: Mapping) -> ExperimentConfig:
    """Validate a resolved config tree into an ``ExperimentConfig``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    data = normalize_tree(data)
    if "networks" not in data:
        raise ConfigError("missing required field networks (or its shorthand network: {type: ...})")
    return build_dataclass(ExperimentConfig, data, "", HOOKS, data)


def config_to_dict(obj) -> Any:
    """Plain dict/list tree of a config (every field, defaults included)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    return obj


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, merge, override, resolve and validate an experiment YAML."""
    tree = load_yaml_tree(path)
    tree = apply_overrides(tree, list(overrides))
    resolved = resolve_interpolations(tree)
    try:
        return config_from_dict(resolved)
    except RestorelabError:
        raise
    except (TypeError, ValueError) as exc:  # a network/dataset constructor rejecting a value
        raise ConfigError(f"invalid config {path}: {exc}") from exc


def config_to_yaml(cfg: ExperimentConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)), sort_keys=False)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    return atomic_write_text(path, config_to_yaml(cfg))
