"""VSR_model: video super-resolution (BasicVSR, BasicVSR++, IART or any clip→clip network) on
the core's contracts.

* Loss: ``train.losses`` on the whole output clip (IART/BasicVSR++ use Charbonnier
  ``sqrt(d² + 1e-12)`` = ``{type: Charbonnier, eps: 1.0e-6}`` here, since the lab squares eps).
* Flow network frozen for N steps then trained at an lr multiplier, **without changing the
  graph**: the core's parameter groups, e.g.
  ``train.optimizers.net.param_groups: [{match: "^spynet\\\\.", lr_mult: 0.125, frozen_until: 5000}]``
  (gradients set to None before each step until N; ``requires_grad`` never flips, so DDP and
  resume work across the switch — IART's crash at iteration 5,000).
* Optional flow supervision (``model.flow_loss_weight``): when the data carry exact flows
  (``flows_backward``/``flows_forward``, dataset/video_synthetic_dataset.py), the network's own
  flows of the same forward (``last_flows``) get an end-point-error term: SpyNet trains from
  scratch on known motion.
* EMA, mixed precision, clip augmentation (flips, transposes, time reversal, consistent across
  frames and flows: the datasets), tiled inference in space and time (``predict``/``val.tile``):
  the core.
* Evaluation: every frame of every clip (REDS4, Vid4, UDM10; ``val.average: clip``), or only the
  centre frame of each clip with ``model.center_frame_only`` (Vimeo-90K-T, ``im4``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.paired_restoration_model import PairedRestoration_model
from utils.config import ConfigError
from utils.errors import DataError

FLOW_KEYS = ("flows_forward", "flows_backward")


@dataclass(frozen=True)
class VSROptions:
    """``model:`` of VSR_model."""

    flow_loss_weight: float = 0.0    # EPE of the network's flows vs the data's exact flows (0: off)
    center_frame_only: bool = False  # evaluation scores only each clip's centre frame (Vimeo-90K-T)

    def __post_init__(self):
        if self.flow_loss_weight < 0:
            raise ConfigError(f"model.flow_loss_weight must be >= 0, got {self.flow_loss_weight}")


def epe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean end-point error over B×(T-1)×2×H×W flows."""
    return (pred.float() - target.float()).square().sum(dim=2).add(1e-12).sqrt().mean()


class VSR_model(PairedRestoration_model):
    Options = VSROptions

    def batch_keys(self) -> tuple[str, ...]:
        keys = super().batch_keys()
        return keys + FLOW_KEYS if self.options.flow_loss_weight > 0 else keys

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        if batch["lq"].dim() != 5:
            raise DataError(f"VSR_model trains on clips B×T×C×H×W; lq has shape {tuple(batch['lq'].shape)}")
        pred = self.run_network("net", batch)
        terms = [loss(pred, batch["gt"]) for loss in self.losses]
        total = torch.stack(terms).sum()
        logs = {}
        if len(terms) > 1:
            logs.update({name: t.detach() for name, t in zip(self.loss_names, terms)})
        if self.options.flow_loss_weight > 0:
            flows = getattr(self.network("net"), "last_flows", None)
            missing = [k for k in FLOW_KEYS if k not in batch]
            if flows is None or missing:
                raise DataError("model.flow_loss_weight needs a network that keeps last_flows (BasicVSR, BasicVSR++, "
                                f"IART with flow: spynet) and data with exact flows {FLOW_KEYS}")
            flow_term = epe_loss(flows[0], batch["flows_forward"]) + epe_loss(flows[1], batch["flows_backward"])
            total = total + self.options.flow_loss_weight * flow_term
            logs["loss_flow_epe"] = flow_term.detach() / 2
        self.backward(total)
        self.step_optimizer("net")
        logs["loss"] = total.detach()
        return logs

    def evaluation_items(self, batch: dict, pred: torch.Tensor):
        """Every frame, or only the centre frame of each clip (``center_frame_only``)."""
        from utils.evaluation import ScoreItem, clip_folder, default_items, frame_name

        if not self.options.center_frame_only or pred.dim() != 5:
            return default_items(batch, pred)
        gt = batch["gt"]
        items = []
        for b, key in enumerate(batch["key"]):
            t = pred.shape[1] // 2
            clip = clip_folder(key)
            items.append(ScoreItem(f"{clip}/{frame_name(batch, b, t)}", pred[b, t], gt[b, t], None, clip))
        return items
