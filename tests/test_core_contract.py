"""The task-general core: several networks and per-network optimisers from YAML, parameter
groups with an lr multiplier, sub-networks frozen until a step without touching the graph, EMA
from a start step, and the ``network:`` shorthand."""
from __future__ import annotations

import textwrap

import pytest
import torch

from models.base_model import BaseModel, parameter_groups
from utils.config import load_config
from utils.ema import EMA
from utils.errors import ConfigError

GAN_YAML = """
name: two
networks:
  net: {type: UNet, width: 4, depth: 1, blocks_per_level: 1}
  discriminator: {type: DnCNN, depth: 2, width: 4}
train:
  max_steps: 10
  lr: 1.0e-3
  scheduler: {type: constant}
  optimizers:
    discriminator: {lr: 4.0e-4, optim: {type: Adam, betas: [0.5, 0.999]}}
    net:
      param_groups: [{match: "^head", lr_mult: 0.125, frozen_until: 3}]
"""


def load(tmp_path, text, overrides=()):
    path = tmp_path / "exp.yml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, overrides)


def test_networks_mapping_and_shorthand(tmp_path):
    cfg = load(tmp_path, GAN_YAML)
    assert list(cfg.networks) == ["net", "discriminator"]
    assert cfg.network["type"] == "UNet"  # the shorthand reads networks.net
    short = load(tmp_path, "name: a\nnetwork: {type: UNet, width: 4}\ntrain: {max_steps: 1}\n")
    assert list(short.networks) == ["net"] and short.network["width"] == 4
    # An override of the shorthand merges over networks.net (e.g. on a saved, resolved config).
    over = load(tmp_path, GAN_YAML, ["network.width=6"])
    assert over.networks["net"]["width"] == 6 and over.networks["net"]["depth"] == 1


def test_per_network_optimizer_settings(tmp_path):
    cfg = load(tmp_path, GAN_YAML)
    d = cfg.train.optimizer_for("discriminator")
    assert d.lr == 4e-4 and d.optim.type == "Adam" and d.optim.betas == (0.5, 0.999)
    n = cfg.train.optimizer_for("net")
    assert n.lr == 1e-3 and n.optim.type == "AdamW" and n.param_groups[0].lr_mult == 0.125


@pytest.mark.parametrize("text, expected", [
    (GAN_YAML.replace("    discriminator: {lr", "    discrimnator: {lr"),
     "train.optimizers.discrimnator: no network named 'discrimnator'; did you mean train.optimizers.discriminator?"),
    (GAN_YAML.replace("discriminator: {type: DnCNN", "discriminator: {type: DnCN"),
     "networks.discriminator.type: unknown network 'DnCN'; did you mean 'DnCNN'?"),
    (GAN_YAML.replace("discriminator: {type: DnCNN, depth: 2", "discriminator: {type: DnCNN, deep: 2"),
     "unknown key networks.discriminator.deep for network DnCNN; did you mean networks.discriminator.depth?"),
    (GAN_YAML.replace("lr_mult: 0.125", "lr_mul: 0.125"),
     "unknown key train.optimizers.net.param_groups[0].lr_mul; did you mean train.optimizers.net.param_groups[0].lr_mult?"),
    (GAN_YAML.replace('match: "^head"', 'match: "(("'), "is not a regular expression"),
])
def test_bad_network_and_optimizer_options_fail_at_load(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)


class TwoNets(BaseModel):
    """Default networks (the YAML mapping) and default optimisers; a toy step on both."""

    def training_step(self, batch, step):
        pred = self.run_network("net", batch)
        loss = (pred - batch["gt"]).abs().mean() + self.networks["discriminator"](pred).square().mean()
        self.backward(loss)
        self.step_optimizer("net")
        self.step_optimizer("discriminator")
        return {"loss": loss.detach()}


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    yield Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    AcceleratorState._reset_state()
    GradientState._reset_state()


def test_param_groups_lr_and_freeze_without_touching_the_graph(tmp_path, accelerator):
    cfg = load(tmp_path, GAN_YAML)
    model = TwoNets(cfg)
    model.setup_training()
    model.prepare(accelerator)
    net_opt = model.optimizers["net"]
    groups = {g["group"]: g for g in net_opt.param_groups}
    head = [n for n, _ in model.network("net").named_parameters() if n.startswith("head")]
    assert head, "the toy UNet must have a head.* parameter for this test"
    assert groups["^head"]["lr"] == pytest.approx(1e-3 * 0.125) and groups["default"]["lr"] == pytest.approx(1e-3)
    assert len(groups["^head"]["params"]) == len(head)
    d_opt = model.optimizers["discriminator"]
    assert d_opt.param_groups[0]["lr"] == pytest.approx(4e-4) and d_opt.param_groups[0]["betas"] == (0.5, 0.999)

    all_params = [id(p) for g in net_opt.param_groups for p in g["params"]]
    requires = [p.requires_grad for p in model.network("net").parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(2, 3, 16, 16, generator=g), "gt": torch.rand(2, 3, 16, 16, generator=g)}
    named = dict(model.network("net").named_parameters())
    model.train()
    history = []
    for step in range(5):
        before = {n: p.detach().clone() for n, p in named.items()}
        model.begin_step(step)
        model.training_step(batch, step)
        moved_head = any(not torch.equal(before[n], named[n]) for n in head)
        moved_body = any(not torch.equal(before[n], p) for n, p in named.items() if n not in head)
        history.append((moved_head, moved_body))
        # The graph and the optimiser's parameter list never change across the switch.
        assert [p.requires_grad for p in model.network("net").parameters()] == requires
        assert [id(p) for g in net_opt.param_groups for p in g["params"]] == all_params
    assert history == [(False, True)] * 3 + [(True, True)] * 2
    # Frozen parameters got no optimiser state before the switch: Adam's step count says 2.
    state = net_opt.state[named[head[0]]]
    assert int(state["step"]) == 2


def test_param_group_matching_nothing_is_an_error(tmp_path):
    cfg = load(tmp_path, GAN_YAML.replace('match: "^head"', 'match: "^spynet"'))
    model = TwoNets(cfg)
    with pytest.raises(ConfigError, match="'\\^spynet' matches no trainable parameter"):
        model.setup_training()


def test_parameter_groups_first_match_wins(tmp_path):
    cfg = load(tmp_path, GAN_YAML.replace(
        'param_groups: [{match: "^head", lr_mult: 0.125, frozen_until: 3}]',
        'param_groups: [{match: "weight", lr_mult: 0.5}, {match: "^head", lr_mult: 0.25}]'))
    net = TwoNets(cfg).networks["net"]
    groups = parameter_groups(net, cfg.train.optimizer_for("net"), "x")
    by = {g["group"]: {id(p) for p in g["params"]} for g in groups}
    names = {id(p): n for n, p in net.named_parameters()}
    assert all("weight" in names[i] for i in by["weight"])
    assert all(names[i].startswith("head") and "weight" not in names[i] for i in by["^head"])
    assert sum(len(v) for v in by.values()) == len(list(net.parameters()))


def test_ema_follows_weights_until_start_step():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, 0.9, start_step=2)
    for step in (1, 2):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update(net, step=step)
        assert torch.equal(ema.shadow["weight"], net.weight) and ema.num_updates == 0
    before = ema.shadow["weight"].clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=3)
    d = min(0.9, 2 / 11)  # d_1 of the warm-up: (1 + 1) / (10 + 1)
    torch.testing.assert_close(ema.shadow["weight"], d * before + (1 - d) * net.weight.detach())


def test_default_model_state_is_empty_and_strict(tmp_path):
    model = TwoNets(load(tmp_path, GAN_YAML))
    assert model.state_dict() == {}
    model.load_state_dict({})
    with pytest.raises(ConfigError, match="keeps no state"):
        model.load_state_dict({"phase": "gan"})


def test_child_networks_replace_a_base_shorthand(tmp_path):
    (tmp_path / "base.yml").write_text("name: b\nnetwork: {type: NAFNet, width: 8}\ntrain: {max_steps: 1}\n")
    (tmp_path / "child.yml").write_text(
        "base: base.yml\nnetworks:\n  net: {type: UNet, width: 4}\n  discriminator: {type: DnCNN, depth: 2}\n")
    cfg = load_config(tmp_path / "child.yml")
    assert cfg.networks["net"].to_dict() == {"type": "UNet", "width": 4}
    assert list(cfg.networks) == ["net", "discriminator"]
    # A child's shorthand over a base's networks.net merges into it (same type: keys kept).
    (tmp_path / "child2.yml").write_text("base: child.yml\nnetwork: {width: 6}\n")
    cfg2 = load_config(tmp_path / "child2.yml")
    assert cfg2.networks["net"].to_dict() == {"type": "UNet", "width": 6}


@pytest.mark.slow
def test_two_processes_cross_a_frozen_until_switch_and_match_one_process(tmp_path):
    """The failure this guards against: a run that dies at the step where a frozen sub-network
    starts training (requires_grad flips break DDP). Two gloo processes cross the switch at step 5;
    the head is bitwise unchanged before it and moves after it; 2 processes = 1 within float noise."""
    from paired_data import write_pairs
    from safetensors.torch import load_file
    from test_distributed import assert_clean, experiment, launch, max_diff

    data = write_pairs(tmp_path / "pairs")
    config = experiment(tmp_path / "exp", data, """
        train:
          ema_decay: null
          checkpoint_every: 5
          keep_checkpoints: 10
          optimizers:
            net: {param_groups: [{match: "^head", lr_mult: 0.5, frozen_until: 5}]}
    """)
    runs = {}
    for how, nproc in (("python", 1), ("torchrun", 2)):
        name = f"{how}{nproc}"
        result = launch(how, nproc, config, f"name={name}", f"train.batch_size={4 // nproc}", "train.max_steps=10",
                        log=tmp_path / f"{name}.log")
        assert_clean(result, name)
        runs[name] = tmp_path / "exp" / "runs" / name
    for run in runs.values():
        ckpt = {s: load_file(str(run / "checkpoints" / f"checkpoint-{s}" / "model.safetensors")) for s in (5, 10)}
        first = load_file(str(run / "checkpoints" / "checkpoint-5" / "model.safetensors"))
        head = [k for k in first if k.startswith("head")]
        assert head
        # The head had its initial weights through step 5: compare with a fresh build from the same seed.
        from models import create_model
        from utils.config import load_config

        from accelerate.utils import set_seed

        cfg = load_config(run / "config.yaml")
        set_seed(cfg.seed)  # as the trainer does before building the model
        init = create_model(cfg).network("net").state_dict()
        assert all(torch.equal(ckpt[5][k], init[k]) for k in head)
        assert any(not torch.equal(ckpt[10][k], ckpt[5][k]) for k in head)
        assert any(not torch.equal(ckpt[5][k], init[k]) for k in first if k not in head)
    one, two = (load_file(str(runs[n] / "checkpoints" / "checkpoint-10" / "model.safetensors")) for n in ("python1", "torchrun2"))
    assert max_diff(one, two) <= 1e-5
