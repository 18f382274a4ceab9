"""BaseModel's contract for tasks with several networks and optimisers (GAN-like)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.archs import define_network
from models.base_model import BaseModel, NonFiniteLossError
from utils.config import config_from_dict


class Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class TwoNetworkModel(BaseModel):
    """A restorer and a critic, each with its own optimiser (the shape of a GAN task)."""

    def build_networks(self):
        return {"net": define_network(self.opt.network.to_dict()), "critic": Critic()}

    def training_step(self, batch, step):
        pred = self.run_network("net", batch)
        critic_loss = self.networks["critic"](pred.detach()).mean() - self.networks["critic"](batch["gt"]).mean()
        self.backward(critic_loss)
        self.step_optimizer("critic")
        critic = self.network("critic")  # the bare module, frozen: no gradients into the critic
        critic.requires_grad_(False)
        loss = (pred - batch["gt"]).abs().mean() - 0.01 * critic(pred).mean()
        self.backward(loss)
        self.step_optimizer("net")
        critic.requires_grad_(True)
        return {"loss": loss.detach(), "critic": critic_loss.detach()}


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import GradientAccumulationPlugin

    AcceleratorState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(cpu=True, step_scheduler_with_optimizer=False,
                      gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=2, sync_with_dataloader=False))
    yield acc
    AcceleratorState._reset_state()
    GradientState._reset_state()


def make_model(accelerator, **train):
    cfg = config_from_dict({
        "name": "two", "network": {"type": "UNet", "width": 4, "depth": 1, "blocks_per_level": 1},
        "train": {"max_steps": 10, "grad_accum": 2, "clip_grad_norm": 0.5,
                  "scheduler": {"type": "linear"}, **train},
    })
    model = TwoNetworkModel(cfg)
    model.setup_training()
    model.prepare(accelerator)
    return model


def snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def changed(before, net):
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_two_optimisers_step_only_at_accumulation_boundaries(accelerator):
    model = make_model(accelerator)
    assert set(model.optimizers) == set(model.schedulers) == {"net", "critic"}
    assert model.batch_keys() == ("gt", "lq")
    g = torch.Generator().manual_seed(0)
    batch = {"gt": torch.rand(2, 3, 16, 16, generator=g), "lq": torch.rand(2, 3, 16, 16, generator=g)}
    model.train()
    lrs = []
    for micro in range(4):
        before = {n: snapshot(model.network(n)) for n in model.networks}
        with model.accumulate():
            logs = model.training_step(batch, micro // 2)
        boundary = micro % 2 == 1
        for name in model.networks:
            assert changed(before[name], model.network(name)) == boundary, (name, micro)
        lrs.append(model.current_lr())
        assert set(logs) == {"loss", "critic"}
    # The linear schedule advanced once per optimiser step (2 steps), not per micro-batch.
    assert lrs == pytest.approx([1e-3, 1e-3 * 0.9, 1e-3 * 0.9, 1e-3 * 0.8])
    for optimizer in model.optimizers.values():
        assert all(p.grad is None for group in optimizer.param_groups for p in group["params"])


def test_non_finite_loss_raises_before_any_update(accelerator):
    model = make_model(accelerator)
    before = snapshot(model.network("net"))
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        model.backward(torch.tensor(float("nan"), requires_grad=True))
    assert not changed(before, model.network("net"))


def test_export_and_reload_the_exported_network(accelerator, tmp_path):
    model = make_model(accelerator)
    with torch.no_grad():
        for p in model.network("net").parameters():
            p.add_(0.1)
    model.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "critic").exists()
    other = make_model(accelerator)
    other.load_pretrained(tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(model.network("net").parameters(), other.network("net").parameters()))
    from utils.errors import DataError

    with pytest.raises(DataError, match="pretrained weights not found"):
        other.load_pretrained(tmp_path / "nowhere")
    define_network({"type": "UNet", "width": 6, "depth": 1, "blocks_per_level": 1}).save_pretrained(tmp_path / "wider")
    with pytest.raises(DataError, match=r"do not fit network 'net' \(UNet_arch\): size mismatch"):
        other.load_pretrained(tmp_path / "wider")


def test_clip_grad_norm_bounds_the_update(accelerator):
    """SGD with lr 1 moves the weights by exactly the clipped gradient: norm = clip_grad_norm."""
    model = make_model(accelerator, lr=1.0, optim={"type": "SGD", "momentum": 0.0}, scheduler={"type": "constant"})
    net = model.network("net")
    before = torch.cat([p.detach().flatten() for p in net.parameters()])
    batch = {"gt": torch.zeros(1, 3, 16, 16), "lq": torch.ones(1, 3, 16, 16)}
    model.train()
    for _ in range(2):  # one optimiser step = 2 micro-batches
        with model.accumulate():
            pred = model.run_network("net", batch)
            model.backward(1000.0 * (pred - batch["gt"]).abs().mean())
            model.step_optimizer("net")
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.5, rel=1e-4)
