"""PairedRestoration_model: supervised restoration from (lq, gt) pairs — one network maps the
degraded input (plus whatever else its ``input_keys`` name) to the target under weighted
losses: deblurring, denoising, super-resolution, any paired image-to-image or clip task.
(Configs may still say ``Simple_model``, its earlier name.)"""
from __future__ import annotations

import torch

from models.base_model import BaseModel
from models.losses import build_loss


class PairedRestoration_model(BaseModel):
    """``networks.net`` restores ``batch["lq"]`` towards ``batch["gt"]``; the loss is the sum of
    ``train.losses`` (each already weighted)."""

    def build_networks(self):
        from models.archs import define_network

        return {"net": define_network(self.opt.networks["net"].to_dict())}

    def setup_training(self) -> None:
        super().setup_training()
        self.losses = [build_loss(o) for o in self.opt.train.losses]
        names = [o["type"] for o in self.opt.train.losses]
        # "loss_L1", "loss_FFT"; a repeated type gets "_1", "_2"...
        self.loss_names = [f"loss_{n}" + (f"_{names[:i].count(n)}" if names[:i].count(n) else "") for i, n in enumerate(names)]

    def training_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        pred = self.run_network("net", batch)
        terms = [loss(pred, batch["gt"]) for loss in self.losses]
        total = torch.stack(terms).sum()
        self.backward(total)
        self.step_optimizer("net")
        logs = {"loss": total.detach()}
        if len(terms) > 1:
            logs.update({name: t.detach() for name, t in zip(self.loss_names, terms)})
        return logs
