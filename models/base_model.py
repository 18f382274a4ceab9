"""BaseModel: what every task (``model_type: X`` -> ``models/**/*_model.py``) builds on.

Division of labour (STYLE.md): the trainer owns the loop (Accelerate, data order, logging,
checkpoints, validation schedule, EMA bookkeeping); a model owns its networks, losses,
optimisers, its own state and one optimisation step. A new task is one ``*_model.py`` file
with a subclass that defines

* ``Options``: a frozen dataclass for its ``model:`` YAML mapping (validated at load time,
  unknown keys get "did you mean"); ``NoOptions`` when it has none;
* ``build_networks() -> {name: network}`` (a GAN has ``net`` and ``discriminator``; by
  default the YAML ``networks:`` mapping is built as is); ``export_networks`` names those saved
  to ``best/``/``last/`` and validated (``("net",)`` by default);
* ``setup_training()`` (optional): losses; the default builds one optimiser + schedule per
  trainable network from ``train.optimizers.<name>`` over the shared ``train`` settings, with
  parameter groups (lr multiplier, frozen until a step);
* ``training_step(batch, step) -> {"loss": ..., ...}``: forward, ``self.backward(loss)``,
  ``self.step_optimizer(name)``; ``step`` is the 0-based index of this optimiser step (phase
  schedules, ``disc_start``); returns detached scalars for logging;
* ``predict(batch, tile=None) -> Tensor``: the restored output (unclamped);
* ``state_dict()``/``load_state_dict()`` (optional): the model's own JSON-serialisable state
  (phase, counters, skip counts, running statistics), saved in every checkpoint and restored
  by ``--resume`` exactly;
* ``ema_settings()`` (optional): which networks get an exponential moving average, with what
  decay and from which step (default: the exported networks, ``train.ema_decay`` from
  ``train.ema_start``); ``ddp_kwargs()`` (optional): keyword arguments for DDP
  (``find_unused_parameters``...).

Gradient accumulation, mixed precision, clipping and multi-process gradient averaging come
from the helpers (``backward``, ``step_optimizer``), which call Accelerate, so a model's
step reads the same with 1 or N processes and with ``grad_accum`` 1 or 8. A parameter group
frozen until step N gets its gradients set to None before each optimiser step until then,
never ``requires_grad=False``: the autograd graph and the optimiser's parameter list stay the
same across the switch, which DDP and bit-exact resume need.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from utils.config import ExperimentConfig, NoOptions, OptimizerSettings, TrainConfig
from utils.errors import ConfigError, DataError, RestorelabError


class NonFiniteLossError(RestorelabError):
    """The loss became NaN or infinite (raised on every process at once)."""

    def __init__(self, name: str, value: float):
        super().__init__(f"{name} is {value}")
        self.name = name
        self.value = value


# ---------------------------------------------------------------------------------------------
# Optimisers and learning-rate schedules from ``train``


def build_optimizer(params, train: TrainConfig | OptimizerSettings) -> torch.optim.Optimizer:
    """``optim.type`` over ``params`` (tensors, or parameter-group dicts with their own ``lr``)
    with learning rate ``lr``."""
    o = train.optim
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        params = [p for p in params if p.requires_grad]
    if not params:
        raise RestorelabError("build_optimizer: no trainable parameters")
    if o.type == "AdamW":
        return torch.optim.AdamW(params, lr=train.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if o.type == "Adam":
        return torch.optim.Adam(params, lr=train.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if o.type == "SGD":
        return torch.optim.SGD(params, lr=train.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise AssertionError(o.type)  # the schema's Literal makes this unreachable


def parameter_groups(net: nn.Module, settings: OptimizerSettings, where: str) -> list[dict]:
    """Trainable parameters of ``net`` split by ``settings.param_groups``: each parameter joins
    the first group whose ``match`` it contains (``re.search`` on its name), else the default
    group (lr multiplier 1, never frozen). Each group dict carries ``lr`` (= lr × lr_mult),
    ``lr_mult``, ``frozen_until`` and ``group`` (its pattern, for logs). A pattern that matches
    no trainable parameter is an error (a typo would otherwise silently train at full lr)."""
    import re

    specs = list(settings.param_groups)
    members: list[list[nn.Parameter]] = [[] for _ in specs]
    default: list[nn.Parameter] = []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        k = next((i for i, g in enumerate(specs) if re.search(g.match, name)), None)
        (default if k is None else members[k]).append(p)
    groups = []
    if default:
        groups.append({"params": default, "lr": settings.lr, "lr_mult": 1.0, "frozen_until": 0, "group": "default"})
    for spec, params in zip(specs, members):
        if not params:
            raise ConfigError(f"{where}.param_groups: '{spec.match}' matches no trainable parameter of "
                              f"{type(net).__name__}")
        groups.append({"params": params, "lr": settings.lr * spec.lr_mult, "lr_mult": spec.lr_mult,
                       "frozen_until": spec.frozen_until, "group": spec.match})
    return groups


def lr_factor(step: int, train: TrainConfig | OptimizerSettings) -> float:
    """Multiplier of ``train.lr`` for the optimiser step with 0-based index ``step``.

    Warm-up: (step + 1) / warmup_steps for the first ``warmup_steps`` steps. Then, with
    t = step - warmup_steps, T = max_steps - warmup_steps and m = min_lr / lr:
    constant 1; cosine m + (1 - m)·(1 + cos(π t / T)) / 2 (Loshchilov & Hutter, SGDR, 2017,
    without restarts); linear m + (1 - m)·(1 - t / T); multistep gamma^(#milestones <= step).
    """
    s = train.scheduler
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    t = step - s.warmup_steps
    total = max(train.max_steps - s.warmup_steps, 1)
    m = s.min_lr / train.lr
    if s.type == "constant":
        return 1.0
    if s.type == "cosine":
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    if s.type == "linear":
        return m + (1.0 - m) * (1.0 - min(t, total) / total)
    if s.type == "multistep":
        return s.gamma ** sum(1 for milestone in s.milestones if milestone <= step)
    raise AssertionError(s.type)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig | OptimizerSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following ``lr_factor``. The factor is a plain function, so the scheduler's
    state_dict holds only numbers (checkpoints load with ``weights_only=True``)."""

    def factor(step: int) -> float:
        return lr_factor(step, train)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EMASettings:
    """EMA of one network: ``decay``; the average follows the weights exactly until optimiser
    step ``start_step`` and averages from then on."""

    decay: float
    start_step: int = 0


class BaseModel:
    """Networks + losses + optimisers + own state + one optimisation step (module docstring)."""

    Options = NoOptions
    export_networks: tuple[str, ...] = ("net",)

    def __init__(self, opt: ExperimentConfig):
        self.opt = opt
        self.options = opt.model
        self.accelerator = None
        self.current_step = 0  # 0-based index of the optimiser step in progress (set by the trainer)
        self.networks: dict[str, nn.Module] = dict(self.build_networks())
        missing = [n for n in self.export_networks if n not in self.networks]
        if missing:
            raise TypeError(f"{type(self).__name__}.export_networks names unknown networks: {missing}")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}

    # -- to implement -----------------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        """Default: every entry of the YAML ``networks:`` mapping, built by name."""
        from models.archs import define_network

        return {name: define_network(options.to_dict()) for name, options in self.opt.networks.items()}

    def setup_training(self) -> None:
        """Default: one optimiser + schedule per network with trainable parameters, from
        ``train.optimizers.<name>`` (falling back to the shared settings), with parameter groups."""
        unknown = [n for n in self.opt.train.optimizers if n not in self.networks]
        if unknown:
            raise ConfigError(f"train.optimizers.{unknown[0]}: {type(self).__name__} has no network "
                              f"'{unknown[0]}' (networks: {', '.join(self.networks)})")
        for name, net in self.networks.items():
            if any(p.requires_grad for p in net.parameters()):
                settings = self.opt.train.optimizer_for(name)
                groups = parameter_groups(net, settings, f"train.optimizers.{name}")
                self.optimizers[name] = build_optimizer(groups, settings)
                self.schedulers[name] = build_scheduler(self.optimizers[name], settings)

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, batch: dict, tile: tuple[int, int] | None = None) -> torch.Tensor:
        """Restored output for ``batch`` with the first exported network."""
        return self.run_network(self.export_networks[0], batch, tile)

    def state_dict(self) -> dict:
        """The model's own state beyond weights and optimisers (JSON-serialisable), saved in
        every checkpoint. Override together with ``load_state_dict``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ConfigError(f"{type(self).__name__} keeps no state of its own, but the checkpoint holds "
                              f"{sorted(state)}")

    def ema_settings(self) -> dict[str, EMASettings]:
        """Networks with an EMA. Default: the exported ones when ``train.ema_decay`` is set."""
        t = self.opt.train
        if t.ema_decay is None:
            return {}
        return {name: EMASettings(t.ema_decay, t.ema_start) for name in self.export_networks}

    def ddp_kwargs(self) -> dict:
        """Keyword arguments for ``DistributedDataParallel`` (e.g. ``find_unused_parameters=True``
        for a network some steps leave out)."""
        return {}

    # -- services used by subclasses --------------------------------------------------------
    def network(self, name: str) -> nn.Module:
        """The bare network (without the distributed wrapper)."""
        net = self.networks[name]
        return self.accelerator.unwrap_model(net) if self.accelerator is not None else net

    def input_keys(self, name: str) -> tuple[str, ...]:
        return tuple(getattr(self.network(name), "input_keys", ("lq",)))

    def batch_keys(self) -> tuple[str, ...]:
        """Every batch entry the model reads from the data: ``gt`` + the inputs of the exported
        networks (a critic's inputs are made by the model; override when another network reads
        the batch directly)."""
        keys = ["gt"]
        for name in self.export_networks:
            keys += [k for k in self.input_keys(name) if k not in keys]
        return tuple(keys)

    def network_inputs(self, name: str, batch: dict) -> dict[str, torch.Tensor]:
        keys = self.input_keys(name)
        missing = [k for k in keys if k not in batch]
        if missing:
            have = ", ".join(sorted(batch))
            raise DataError(f"network '{name}' needs batch entries {missing}, the dataset gives only: {have}")
        return {k: batch[k] for k in keys}

    def run_network(self, name: str, batch: dict, tile: tuple[int, int] | None = None) -> torch.Tensor:
        """``network(**inputs)``; with ``tile=(patch_size, overlap)`` through ``utils.tiling.tiled_predict``.

        Without gradients (validation, test) the bare network runs, not its distributed
        wrapper: processes score different numbers of images, and a wrapper that syncs
        buffers in forward would wait for the others."""
        inputs = self.network_inputs(name, batch)
        net = self.networks[name] if torch.is_grad_enabled() else self.network(name)
        if tile is None:
            io = getattr(self.network(name), "io", None)
            main = inputs.get(io.main_input) if io is not None and io.kind == "clip2frame" and io.frames else None
            if main is not None and main.shape[1] > io.frames:  # a clip longer than the network's window
                from utils.tiling import sliding_frames

                rest = {k: v for k, v in inputs.items() if k != io.main_input}
                return sliding_frames(lambda w, **c: net(**{io.main_input: w}, **c), main, io.frames, **rest)
            return net(**inputs)
        from utils.tiling import tiled_predict

        patch_size, overlap = tile  # tiles in space (and time, for clips), scaled for SR: the arch's io says how
        return tiled_predict(net, inputs, self.network(name).io, patch_size, overlap)

    def backward(self, loss: torch.Tensor, name: str = "loss") -> None:
        """Backward through Accelerate (loss scaling, accumulation). A NaN/inf loss on any process
        raises NonFiniteLossError on every process before any gradient is applied."""
        bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=loss.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() > 0:
            value = loss.detach().float().item()
            raise NonFiniteLossError(name, value if not math.isfinite(value) else float("nan"))
        self.accelerator.backward(loss)

    def step_optimizer(self, name: str) -> None:
        """Clip (``train.clip_grad_norm``), step, advance the schedule and zero the gradients.
        Parameter groups frozen until a later step lose their gradients first (set to None, so
        the optimiser leaves them and their state untouched). Between accumulation boundaries
        Accelerate turns all of this into a no-op."""
        optimizer = self.optimizers[name]
        sync = self.accelerator.sync_gradients
        if sync:
            for group in optimizer.param_groups:
                if self.current_step < group.get("frozen_until", 0):
                    for p in group["params"]:
                        p.grad = None
        if sync and self.opt.train.clip_grad_norm is not None:
            self.accelerator.clip_grad_norm_(self.networks[name].parameters(), self.opt.train.clip_grad_norm)
        optimizer.step()
        if sync and not optimizer.step_was_skipped and name in self.schedulers:
            self.schedulers[name].step()
        optimizer.zero_grad(set_to_none=True)

    # -- services used by the trainer -------------------------------------------------------
    def begin_step(self, step: int) -> None:
        """Called by the trainer before the micro-batches of optimiser step ``step`` (0-based)."""
        self.current_step = int(step)

    def describe(self) -> str:
        """"NAFNet (290,000 parameters)" or "net: UNet (..), discriminator: PatchGAN (..)" for logs."""
        parts = []
        for name in self.networks:
            n = sum(p.numel() for p in self.network(name).parameters())
            label = type(self.network(name)).__name__.removesuffix("_arch")
            parts.append(f"{label} ({n:,} parameters)" if len(self.networks) == 1 else f"{name}: {label} ({n:,} parameters)")
        return ", ".join(parts)

    def export_state_dicts(self) -> dict[str, dict]:
        """Full state dicts of the exported networks, gathered by Accelerate (every process must
        call this: with sharded weights it is a collective)."""
        return {n: self.accelerator.get_state_dict(self.networks[n]) for n in self.export_networks}

    def release(self) -> None:
        """Drop the distributed wrappers (the trainer ends the process group afterwards)."""
        if self.accelerator is not None:
            for name in list(self.networks):
                self.networks[name] = self.accelerator.unwrap_model(self.networks[name])
    def prepare(self, accelerator, training: bool = True, channels_last: bool = False) -> None:
        """Move to the device and wrap for distributed training (networks, optimisers, schedules).
        ``channels_last``: weights in NHWC layout (same values; convolutions run faster)."""
        self.accelerator = accelerator
        for name, net in self.networks.items():
            if channels_last:
                net.to(memory_format=torch.channels_last)
            trainable = training and name in self.optimizers
            self.networks[name] = accelerator.prepare_model(net, evaluation_mode=not trainable)
        for name in self.optimizers:
            self.optimizers[name] = accelerator.prepare_optimizer(self.optimizers[name])
        for name in self.schedulers:
            self.schedulers[name] = accelerator.prepare_scheduler(self.schedulers[name])

    def accumulate(self):
        """Context for one micro-batch: gradients sync only on accumulation boundaries."""
        trainable = [self.networks[n] for n in self.optimizers]
        return self.accelerator.accumulate(*trainable) if trainable else contextlib.nullcontext()

    def train(self) -> None:
        for name, net in self.networks.items():
            net.train(name in self.optimizers)

    def eval(self) -> None:
        for net in self.networks.values():
            net.eval()

    def trainable_networks(self) -> list[str]:
        """Names of the networks with at least one trainable parameter (none for a classical method)."""
        return [n for n in self.networks if any(p.requires_grad for p in self.network(n).parameters())]

    def current_lr(self) -> float:
        """Learning rate of the first optimiser's first group (for logs)."""
        if not self.optimizers:
            return 0.0
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def current_lrs(self) -> dict[str, float]:
        """``{"lr": ...}`` for one optimiser, ``{"lr_<network>": ...}`` for several (for logs)."""
        if len(self.optimizers) <= 1:
            return {"lr": self.current_lr()}
        return {f"lr_{n}": float(o.param_groups[0]["lr"]) for n, o in self.optimizers.items()}

    def save_pretrained(self, folder: str | Path, state_dicts: dict[str, dict] | None = None) -> None:
        """Exported networks as ``save_pretrained`` folders (``folder`` itself for one network,
        ``folder/<name>`` for several). ``state_dicts`` (name -> full state dict, e.g. gathered
        from sharded processes by ``accelerator.get_state_dict``) replaces the networks' own."""
        folder = Path(folder)
        for name in self.export_networks:
            target = folder if len(self.export_networks) == 1 else folder / name
            state = None if state_dicts is None else state_dicts[name]
            self.network(name).save_pretrained(target, state_dict=state, safe_serialization=True)

    def load_pretrained(self, path: str | Path) -> None:
        """Load exported networks' weights from a ``save_pretrained`` folder (as written by
        ``save_pretrained``) or, for a single network, a ``.safetensors`` file."""
        from safetensors.torch import load_file

        path = Path(path)
        for name in self.export_networks:
            if path.is_file():
                if len(self.export_networks) != 1:
                    raise DataError(f"{path}: a single weights file cannot fill networks {list(self.export_networks)}")
                file = path
            else:
                base = path if len(self.export_networks) == 1 else path / name
                file = base / "model.safetensors"
            if not file.is_file():
                raise DataError(f"pretrained weights not found: {file}")
            if file.suffix != ".safetensors":
                raise DataError(f"pretrained weights must be a .safetensors file or a save_pretrained folder: {file}")
            state = load_file(str(file))
            net = self.network(name)
            try:
                result = net.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
                raise DataError(f"weights in {file} do not fit network '{name}' ({type(net).__name__}): {detail}") from None
            if result.missing_keys or result.unexpected_keys:
                detail = (result.missing_keys or result.unexpected_keys)[:3]
                raise DataError(
                    f"weights in {file} do not fit network '{name}' ({type(net).__name__}): "
                    f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected keys, e.g. {detail}"
                )
