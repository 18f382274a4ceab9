"""MultiTaskGAN_model: one generator for super-resolution, JPEG artifact removal, denoising and
colorization (``dataset/degradation_dataset.py``), trained with a NoGAN schedule (DeOldify:
pretrain the generator, then the critic, then short GAN cycles) and discriminator balancing.

Schedule, in optimiser steps (``model:``): ``pretrain_steps`` generator only (content losses);
then ``cycles`` × [``critic_steps`` critic only (generator and its EMA frozen), ``gan_steps``
GAN]; after the last cycle GAN training goes on to ``train.max_steps``. Every phase change is
logged ("phase pretrain -> critic (cycle 1) at step N") and recorded in the model's checkpointed
state. Without ``networks.discriminator`` the whole run is "pretrain" (a plain content-loss run).

Discriminator balancing in GAN phases (``balance``):

* ``advantage`` (vdeg's adaptive rule): after each generator step the critic is updated only
  while its advantage mean s(D(real)) − mean s(D(fake)) ≤ ``balance_threshold``, with s the
  sigmoid for ``vanilla`` (a probability gap in [−1, 1]) and the raw score for ``lsgan``/``hinge``
  (targets 1/0 and ±1); measured on the step's batch by a gradient-free critic pass, averaged over
  processes so every process takes the same decision; skips are counted (``d_skips``) and logged;
* ``critic_loss`` (DeOldify's ``AdaptiveGANSwitcher``): steps alternate between critic steps,
  repeated on new batches until the critic's loss < ``balance_threshold`` (at most
  ``max_critic_repeats`` in a row), and one generator step;
* ``none``: one generator and one critic step per step.

The critic learning rate is ``train.optimizers.discriminator.lr`` or ``critic_lr_ratio`` × the
generator's (DeOldify uses ×5 ... vdeg ×1/5). Losses: ``train.losses`` (e.g. L1 and LPIPS with
their weights; to ``gt``, or the USM-sharpened ``gt_usm`` with ``usm_target``), ``ab_weight`` × L1
on the Lab a/b channels (/128) of colorization samples only, ``gan_weight`` × the adversarial
term (GAN types vanilla/lsgan/hinge). Only ``net`` is exported, with its EMA when
``train.ema_decay`` is set (the EMA pauses in critic phases).

Inputs: the generator's ``io.scale`` decides. A ×1 generator serving ×s SR samples gets lq
upsampled by MATLAB bicubic (``utils.imresize``) to the target size ("pre-upsampling", so one
network serves every task); a ×s generator gets lq as is. Colorization outputs keep the input's
L* (CIE Lab) and take a*/b* from the network (``keep_luminance``). Training items hold groups of
crops of one task (B×K×C×H×W), folded into the batch.

Evaluation: items are named ``task/image.png``; ×s SR items are scored on Y with crop = s (the
SR papers' convention), the others on RGB with the ``val`` settings; per-task means are logged
(``metric_group``). ``best/`` and ``last/`` get ``model.onnx`` (dynamic batch, height, width;
checked with ``onnx.checker`` and onnxruntime against PyTorch) and ``best_model_info.json`` with
the sha256 of the exported files, the step and the validation metrics of exactly those weights.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from models.base_model import BaseModel
from utils.config import ConfigError

PHASES = ("pretrain", "critic", "gan")


@dataclass(frozen=True)
class MultiTaskGANOptions:
    """``model:`` of MultiTaskGAN_model (module docstring)."""

    pretrain_steps: int = 0
    critic_steps: int = 0
    gan_steps: int = 0
    cycles: int = 1
    gan_type: Literal["vanilla", "lsgan", "hinge"] = "vanilla"
    gan_weight: float = 0.1
    ab_weight: float = 0.0
    usm_target: bool = False
    balance: Literal["none", "advantage", "critic_loss"] = "none"
    balance_threshold: float = 0.7
    max_critic_repeats: int = 5
    critic_lr_ratio: float | None = None
    conditional: bool = True          # the critic sees (lq upsampled to the target size, image)
    keep_luminance: bool = True
    task_conditioning: tuple[str, ...] | None = None  # task names: the generator gets their one-hot maps as extra channels
    onnx_export: bool = True
    onnx_opset: int = 17

    def __post_init__(self):
        for name in ("pretrain_steps", "critic_steps", "gan_steps", "cycles", "max_critic_repeats"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0")
        for name in ("gan_weight", "ab_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0")
        if self.critic_lr_ratio is not None and self.critic_lr_ratio <= 0:
            raise ConfigError("model.critic_lr_ratio must be > 0")


def phase_at(step: int, o: MultiTaskGANOptions, has_critic: bool = True) -> tuple[str, int]:
    """(phase, cycle) of 0-based optimiser step ``step``: cycle 0 is the pretraining, cycles
    1..N the critic→GAN cycles, N (+ "gan") after them."""
    if not has_critic or step < o.pretrain_steps:
        return "pretrain", 0
    period = o.critic_steps + o.gan_steps
    r = step - o.pretrain_steps
    if period == 0 or r >= o.cycles * period:
        return "gan", max(o.cycles, 1)
    cycle, within = divmod(r, period)
    return ("critic" if within < o.critic_steps else "gan"), cycle + 1


class MultiTaskGAN_model(BaseModel):
    Options = MultiTaskGANOptions
    export_networks = ("net",)

    def __init__(self, opt):
        super().__init__(opt)
        if "net" not in self.networks:
            raise ConfigError("MultiTaskGAN_model needs networks.net (and networks.discriminator for GAN phases)")
        self.has_critic = "discriminator" in self.networks
        o = self.options
        if not self.has_critic and (o.critic_steps or o.gan_steps):
            raise ConfigError("model.critic_steps/gan_steps need networks.discriminator")
        names = o.task_conditioning
        if names:
            channels = getattr(self.networks["net"].config, "in_channels", None)
            if channels is not None and channels != 3 + len(names):
                raise ConfigError(f"model.task_conditioning names {len(names)} tasks: networks.net.in_channels must be "
                                  f"3 + {len(names)} = {3 + len(names)}, got {channels}")
        self.log = logging.getLogger("restorelab")
        self.counters = {"generator_updates": 0, "critic_updates": 0, "d_skips": 0, "critic_repeats": 0}
        self.phase_changes: list[dict] = []
        self.switch_mode = "critic"  # balance critic_loss: whose turn it is
        self.last_phase: tuple[str, int] | None = None

    # -- setup --------------------------------------------------------------------------------
    def setup_training(self) -> None:
        super().setup_training()
        from models.losses import build_loss

        o = self.options
        self.gan = build_loss({"type": "GAN", "gan_type": o.gan_type, "weight": 1.0})
        self.content_losses = [(str(dict(spec)["type"]), build_loss(dict(spec))) for spec in self.opt.train.losses]
        if self.has_critic and o.critic_lr_ratio is not None:
            # lr_D = ratio × lr_G (per parameter group multiplier kept), under D's own schedule
            g_lr = self.opt.train.optimizer_for("net").lr
            sched = self.schedulers["discriminator"]
            for i, group in enumerate(self.optimizers["discriminator"].param_groups):
                group["initial_lr"] = g_lr * o.critic_lr_ratio * group.get("lr_mult", 1.0)
                group["lr"] = group["initial_lr"] * sched.lr_lambdas[i](sched.last_epoch)
            sched.base_lrs = [g["initial_lr"] for g in self.optimizers["discriminator"].param_groups]

    def ddp_kwargs(self) -> dict:
        # phases leave one network out of a step's graph
        return {"find_unused_parameters": True}

    def batch_keys(self) -> tuple[str, ...]:
        return ("gt", "lq")

    def updates_ema(self, name: str, step: int) -> bool:
        """The generator's EMA pauses in critic phases (the generator does not move there)."""
        return phase_at(step, self.options, self.has_critic)[0] != "critic"

    # -- inputs and outputs ---------------------------------------------------------------------
    @staticmethod
    def fold(batch: dict) -> dict:
        """Training items hold K crops of one task (gt B×K×C×H×W): fold K into the batch."""
        if batch["gt"].ndim != 5 or batch["lq"].ndim not in (5, 6):
            return batch
        b, k = batch["gt"].shape[:2]
        out = dict(batch)
        for name in ("gt", "lq", "gt_usm"):
            if name in batch:
                out[name] = batch[name].reshape(b * k, *batch[name].shape[2:])
        for name in ("scale", "colorize"):
            if name in batch:
                out[name] = batch[name].repeat_interleave(k)
        return out

    def net_scale(self) -> int:
        return int(self.network("net").io.scale)

    def generator_input(self, batch: dict) -> torch.Tensor:
        """lq, upsampled (MATLAB bicubic) by scale / the generator's scale when that is > 1."""
        lq = batch["lq"]
        scale = int(batch["scale"].reshape(-1)[0]) if "scale" in batch else self.net_scale()
        if scale % self.net_scale():
            raise ConfigError(f"a ×{scale} sample cannot be served by a ×{self.net_scale()} generator")
        factor = scale // self.net_scale()
        if factor > 1:
            from utils.imresize import imresize

            lq = imresize(lq, factor).to(lq.dtype)
        return lq

    def condition(self, batch: dict) -> torch.Tensor:
        """What a conditional critic sees next to the image: the generator input at the target
        size (its centre frame for clips)."""
        x = self.generator_input(batch)
        x = x if x.ndim == 4 else x[:, x.shape[1] // 2]
        if x.shape[-2:] != batch["gt"].shape[-2:]:  # a ×s generator: lq upsampled for the critic only
            x = F.interpolate(x, size=batch["gt"].shape[-2:], mode="bicubic", align_corners=False)
        return x

    def conditioned(self, x: torch.Tensor, batch: dict) -> torch.Tensor:
        """x with one constant map per task of ``model.task_conditioning`` appended (1 on the
        sample's task): the generator knows which restoration is asked for."""
        names = self.options.task_conditioning
        if not names:
            return x
        if x.ndim != 4:
            raise ConfigError("model.task_conditioning works with image generators (B×C×H×W inputs)")
        tasks = [batch["task"]] if isinstance(batch["task"], str) else list(batch["task"])
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise ConfigError(f"task {unknown[0]!r} is not in model.task_conditioning {list(names)}")
        rows = torch.tensor([list(names).index(t) for t in tasks], device=x.device)
        rows = rows.repeat_interleave(x.shape[0] // len(tasks))  # folded groups: K crops per item
        onehot = F.one_hot(rows, len(names)).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return torch.cat([x, onehot], dim=1)

    def generate(self, batch: dict, grad: bool = True) -> torch.Tensor:
        x = self.conditioned(self.generator_input(batch), batch)
        if grad:
            return self.networks["net"](x)
        with torch.no_grad():
            return self.network("net")(x)

    def critic(self, image: torch.Tensor, cond: torch.Tensor, bare: bool = False) -> torch.Tensor:
        net = self.network("discriminator") if bare else self.networks["discriminator"]
        if self.options.conditional and "lq" in getattr(net, "input_keys", ()):
            return net(image=image, lq=cond)
        return net(image=image)

    def keep_l(self, pred: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """pred with the L* of ``source`` (the gray input), a*/b* from pred; clamped to [0, 1]."""
        from utils.degradations import lab_to_rgb, rgb_to_lab

        lab = rgb_to_lab(pred.clamp(0, 1).float())
        lab = torch.cat([rgb_to_lab(source.float())[:, :1], lab[:, 1:]], dim=1)
        return lab_to_rgb(lab).clamp(0, 1).to(pred.dtype)

    def predict(self, batch: dict, tile: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.generator_input(batch)
        pred = self.run_network("net", {**batch, "lq": self.conditioned(x, batch)}, tile)
        if self.options.keep_luminance and "colorize" in batch:
            flags = batch["colorize"].reshape(-1).bool()
            if flags.any():
                lq = x if x.ndim == 4 else x[:, x.shape[1] // 2]
                pred = pred.clone()
                pred[flags] = self.keep_l(pred[flags], lq[flags])
        return pred

    def evaluation_items(self, batch: dict, pred: torch.Tensor):
        from utils.evaluation import default_items

        items = default_items(batch, pred)
        scales = batch["scale"].reshape(-1).tolist() if "scale" in batch else [1] * len(items)
        for it, s in zip(items, scales):
            if int(s) > 1:  # SR papers: Y (BT.601) with a border of `scale` pixels cropped
                it.crop_border, it.test_y_channel = int(s), True
        return items

    @staticmethod
    def metric_group(name: str) -> str | None:
        return name.split("/", 1)[0] if "/" in name else None

    # -- losses -------------------------------------------------------------------------------
    def content_loss(self, pred: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        o = self.options
        target = batch["gt_usm"] if o.usm_target and "gt_usm" in batch else batch["gt"]
        logs = {}
        total = pred.new_zeros(())
        for name, loss in self.content_losses:  # train.losses, weights included (L1, LPIPS, ...)
            value = loss(pred, target)
            total = total + value
            logs[f"loss_{name.lower()}"] = value.detach()
        if o.ab_weight and "colorize" in batch and bool(batch["colorize"].any()):
            from utils.degradations import rgb_to_lab

            flags = batch["colorize"].reshape(-1).bool()
            ab_pred = rgb_to_lab(pred[flags].float().clamp(0, 1))[:, 1:] / 128
            ab_gt = rgb_to_lab(batch["gt"][flags].float())[:, 1:] / 128
            ab = F.l1_loss(ab_pred, ab_gt)
            total = total + o.ab_weight * ab
            logs["loss_ab"] = ab.detach()
        return total, logs

    def critic_loss(self, gt: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = gt.shape[0]
        logits = self.critic(torch.cat([gt, fake.detach()]), torch.cat([cond, cond]))
        return self.gan.critic_loss(logits, n)

    def advantage(self, gt: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor) -> float:
        """mean s(D(real)) − mean s(D(fake)), averaged over processes (s: sigmoid for vanilla)."""
        net = self.network("discriminator")
        was_training = net.training
        net.eval()  # no spectral-norm power iteration: a skipped critic stays exactly as it was
        try:
            with torch.no_grad():
                n = gt.shape[0]
                logits = self.critic(torch.cat([gt, fake.detach()]), torch.cat([cond, cond]), bare=True).float()
        finally:
            net.train(was_training)
        with torch.no_grad():
            scores = torch.sigmoid(logits) if self.options.gan_type == "vanilla" else logits
            adv = scores[:n].mean() - scores[n:].mean()
            if self.accelerator.num_processes > 1:
                adv = self.accelerator.reduce(adv, reduction="mean")
        return float(adv)

    def step_critic(self, gt, fake, cond, logs) -> float:
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss = self.critic_loss(gt, fake, cond)
        self.backward(d_loss, "critic loss")
        self.step_optimizer("discriminator")
        self.counters["critic_updates"] += int(self.accelerator.sync_gradients)
        logs["loss_d"] = d_loss.detach()
        value = d_loss.detach()
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(value, reduction="mean")
        return float(value)

    # -- one step ----------------------------------------------------------------------------
    def note_phase(self, step: int) -> tuple[str, int]:
        current = phase_at(step, self.options, self.has_critic)
        if current != self.last_phase:
            if self.last_phase is not None or step > 0:
                before = self.last_phase or phase_at(step - 1, self.options, self.has_critic)
                if before != current:
                    self.phase_changes.append({"step": step, "from": before[0], "to": current[0], "cycle": current[1]})
                    self.log.info(f"step {step}: phase {before[0]} -> {current[0]} (cycle {current[1]})")
            else:
                self.log.info(f"step 0: phase {current[0]} (cycle {current[1]})")
            self.last_phase = current
        return current

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        batch = self.fold(batch)
        phase, _ = self.note_phase(step)
        o = self.options
        gt = batch["gt"]
        logs: dict[str, torch.Tensor] = {}
        if phase == "critic":
            fake = self.generate(batch, grad=False)
            self.step_critic(gt, fake, self.condition(batch), logs)
            logs["loss"] = logs["loss_d"]
            return logs
        if phase == "gan" and o.balance == "critic_loss" and self.switch_mode == "critic":
            fake = self.generate(batch, grad=False)
            value = self.step_critic(gt, fake, self.condition(batch), logs)
            self.counters["critic_repeats"] += 1
            if value < o.balance_threshold or self.counters["critic_repeats"] >= o.max_critic_repeats:
                self.switch_mode, self.counters["critic_repeats"] = "generator", 0
            logs["loss"] = logs["loss_d"]
            return logs
        pred = self.generate(batch)
        total, content_logs = self.content_loss(pred, batch)
        logs.update(content_logs)
        cond = self.condition(batch) if phase == "gan" else None
        if phase == "gan":
            adversarial = self.gan(self.critic(pred, cond), target_is_real=True)
            total = total + o.gan_weight * adversarial
            logs["loss_gan_g"] = adversarial.detach()
        self.backward(total)
        self.step_optimizer("net")
        self.counters["generator_updates"] += int(self.accelerator.sync_gradients)
        logs["loss"] = total.detach()
        if phase != "gan":
            return logs
        if o.balance == "critic_loss":
            self.switch_mode = "critic"
            return logs
        if o.balance == "advantage":
            adv = self.advantage(gt, pred, cond)
            logs["d_advantage"] = torch.tensor(adv)
            if adv > o.balance_threshold:
                self.counters["d_skips"] += 1
                logs["d_skips"] = torch.tensor(float(self.counters["d_skips"]))
                self.optimizers["discriminator"].zero_grad(set_to_none=True)
                return logs
        self.step_critic(gt, pred, cond, logs)
        logs["d_skips"] = torch.tensor(float(self.counters["d_skips"]))
        return logs

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**self.counters, "phase_changes": list(self.phase_changes), "switch_mode": self.switch_mode,
                "last_phase": list(self.last_phase) if self.last_phase else None}

    def load_state_dict(self, state: dict) -> None:
        for k in self.counters:
            self.counters[k] = int(state[k])
        self.phase_changes = [dict(c) for c in state["phase_changes"]]
        self.switch_mode = str(state["switch_mode"])
        self.last_phase = tuple(state["last_phase"]) if state["last_phase"] else None

    # -- export --------------------------------------------------------------------------------
    def on_export(self, folder: Path, name: str, info: dict) -> None:
        """Called by the trainer with the temporary best/ or last/ folder after the weights are
        written: ONNX of exactly the saved weights + ``best_model_info.json``."""
        write_export_info(Path(folder), info, onnx_export=self.options.onnx_export, opset=self.options.onnx_opset)


# ---------------------------------------------------------------------------------------------
# ONNX export (also scripts/export_onnx.py)

PARITY_SHAPES = ((1, 64, 64), (1, 96, 128), (2, 64, 64))


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_exported(folder: Path):
    """The network saved in a save_pretrained folder (AutoModel), in eval mode, on the CPU."""
    import models.archs  # noqa: F401  (registers the lab's Auto classes)
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(folder)).eval().float()


def export_onnx(net, path: Path, opset: int = 17) -> None:
    """ONNX with dynamic batch, height and width (input ``lq``, output ``output``)."""
    import warnings

    channels = getattr(net.config, "in_channels", getattr(net.config, "in_chans", 3))
    example = torch.rand(1, channels, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), input_names=["lq"], output_names=["output"],
                          dynamic_axes={"lq": {0: "batch", 2: "height", 3: "width"},
                                        "output": {0: "batch", 2: "out_height", 3: "out_width"}},
                          opset_version=opset, dynamo=False)


def verify_onnx(net, path: Path, shapes=PARITY_SHAPES) -> dict[str, float]:
    """``onnx.checker`` (full check), then onnxruntime (CPU) vs PyTorch on random inputs of
    ``shapes`` (batch, H, W): max |Δ| per shape."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    channels = getattr(net.config, "in_channels", getattr(net.config, "in_chans", 3))
    g = torch.Generator().manual_seed(1)
    out = {}
    for b, h, w in shapes:
        x = torch.rand(b, channels, h, w, generator=g)
        with torch.no_grad():
            ref = net(x).numpy()
        got = session.run(None, {"lq": x.numpy()})[0]
        out[f"{b}x{h}x{w}"] = float(np.abs(got - ref).max())
    return out


def write_export_info(folder: Path, info: dict, onnx_export: bool = True, opset: int = 17) -> dict:
    """``model.onnx`` (checked) and ``best_model_info.json`` in a save_pretrained ``folder``:
    sha256 of every exported file, the step, the validation metrics of exactly these weights
    (``info["mean"]``, None when the folder was not validated at its step), the ONNX parity."""
    record: dict = {"step": info.get("step"), "metric": info.get("metric"), "metrics": info.get("mean"),
                    "weights": "EMA weights when train.ema_decay is set (what best/ and last/ hold)"}
    if onnx_export:
        net = load_exported(folder)
        try:
            export_onnx(net, folder / "model.onnx", opset)
            record["onnx"] = {"file": "model.onnx", "opset": opset, "dynamic_axes": ["batch", "height", "width"],
                              "max_abs_diff_vs_pytorch": verify_onnx(net, folder / "model.onnx")}
        except ImportError as exc:  # onnx/onnxruntime missing: say so, never leave a stale file
            (folder / "model.onnx").unlink(missing_ok=True)
            record["onnx"] = {"error": f"not exported: {exc}"}
    record["files"] = {p.name: sha256(p) for p in sorted(folder.iterdir())
                       if p.is_file() and p.name not in ("best_model_info.json",)}
    (folder / "best_model_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
