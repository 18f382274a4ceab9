"""BaseModel: what every task (``model_type: X`` -> ``models/**/*_model.py``) builds on.

Division of labour (STYLE.md): the trainer owns the loop (Accelerate, data order, logging,
checkpoints, validation schedule, EMA); a model owns its networks, losses, optimisers and
one optimisation step. A new task is one ``*_model.py`` file with a subclass that defines

* ``Options``: a frozen dataclass for its ``model:`` YAML mapping (validated at load time,
  unknown keys get "did you mean"); ``NoOptions`` when it has none;
* ``build_networks() -> {name: network}`` (several networks are fine: a GAN has ``net`` and
  ``discriminator``); ``export_networks`` names those saved to ``best/``/``last/``, validated
  and averaged by EMA (``("net",)`` by default);
* ``setup_training()`` (optional): losses and, if the default one-AdamW-per-network does not
  fit, its own ``self.optimizers``/``self.schedulers`` (dicts keyed by name);
* ``training_step(batch) -> {"loss": ..., ...}``: forward, ``self.backward(loss)``,
  ``self.step_optimizer(name)``; returns detached scalars for logging;
* ``predict(batch, tile=None) -> Tensor``: the restored image (unclamped).

Gradient accumulation, mixed precision, clipping and multi-process gradient averaging come
from the helpers (``backward``, ``step_optimizer``), which call Accelerate, so a model's
step reads the same with 1 or N processes and with ``grad_accum`` 1 or 8.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from utils.config import ExperimentConfig, NoOptions, TrainConfig
from utils.errors import DataError, RestorelabError


class NonFiniteLossError(RestorelabError):
    """The loss became NaN or infinite (raised on every process at once)."""

    def __init__(self, name: str, value: float):
        super().__init__(f"{name} is {value}")
        self.name = name
        self.value = value


# ---------------------------------------------------------------------------------------------
# Optimisers and learning-rate schedules from ``train``


def build_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """``train.optim.type`` over ``params`` with learning rate ``train.lr``."""
    o = train.optim
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


def lr_factor(step: int, train: TrainConfig) -> float:
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


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following ``lr_factor``. The factor is a plain function, so the scheduler's
    state_dict holds only numbers (checkpoints load with ``weights_only=True``)."""

    def factor(step: int) -> float:
        return lr_factor(step, train)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------


class BaseModel:
    """Networks + losses + optimisers + one optimisation step (see the module docstring)."""

    Options = NoOptions
    export_networks: tuple[str, ...] = ("net",)

    def __init__(self, opt: ExperimentConfig):
        self.opt = opt
        self.options = opt.model
        self.accelerator = None
        self.networks: dict[str, nn.Module] = dict(self.build_networks())
        missing = [n for n in self.export_networks if n not in self.networks]
        if missing:
            raise TypeError(f"{type(self).__name__}.export_networks names unknown networks: {missing}")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}

    # -- to implement -----------------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def setup_training(self) -> None:
        """Default: one optimiser + scheduler per network that has trainable parameters."""
        for name, net in self.networks.items():
            if any(p.requires_grad for p in net.parameters()):
                self.optimizers[name] = build_optimizer(net.parameters(), self.opt.train)
                self.schedulers[name] = build_scheduler(self.optimizers[name], self.opt.train)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, batch: dict, tile: tuple[int, int] | None = None) -> torch.Tensor:
        """Restored image for ``batch`` with the first exported network."""
        return self.run_network(self.export_networks[0], batch, tile)

    # -- services used by subclasses --------------------------------------------------------
    def network(self, name: str) -> nn.Module:
        """The bare network (without the distributed wrapper)."""
        net = self.networks[name]
        return self.accelerator.unwrap_model(net) if self.accelerator is not None else net

    def input_keys(self, name: str) -> tuple[str, ...]:
        return tuple(getattr(self.network(name), "input_keys", ("lq",)))

    def batch_keys(self) -> tuple[str, ...]:
        """Every batch entry the model reads (network inputs of all networks + ``gt``)."""
        keys = ["gt"]
        for name in self.networks:
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
        """``network(**inputs)``; with ``tile=(patch_size, overlap)`` through utils.tiling.

        Without gradients (validation, test) the bare network runs, not its distributed
        wrapper: processes score different numbers of images, and a wrapper that syncs
        buffers in forward would wait for the others."""
        inputs = self.network_inputs(name, batch)
        net = self.networks[name] if torch.is_grad_enabled() else self.network(name)
        if tile is None:
            return net(**inputs)
        from utils.tiling import tiled_forward

        lq = inputs.pop("lq")
        patch_size, overlap = tile
        return tiled_forward(lambda x, **cond: net(x, **cond), lq, patch_size, overlap, **inputs)

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
        Between accumulation boundaries Accelerate turns all of this into a no-op."""
        optimizer = self.optimizers[name]
        sync = self.accelerator.sync_gradients
        if sync and self.opt.train.clip_grad_norm is not None:
            self.accelerator.clip_grad_norm_(self.networks[name].parameters(), self.opt.train.clip_grad_norm)
        optimizer.step()
        if sync and not optimizer.step_was_skipped and name in self.schedulers:
            self.schedulers[name].step()
        optimizer.zero_grad(set_to_none=True)

    # -- services used by the trainer -------------------------------------------------------
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
        """Learning rate of the first optimiser (for logs)."""
        if not self.optimizers:
            return 0.0
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

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
