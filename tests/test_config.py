"""Experiment config: base inheritance, overrides, interpolation, typed validation, round trip."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from utils.config import (
    FrozenDict,
    NoOptions,
    build_dataclass,
    config_to_dict,
    load_config,
    save_config,
)
from utils.errors import ConfigError

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"

MINIMAL = """
name: exp
network: {type: UNet, width: 8, depth: 2}
train: {max_steps: 10}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path, text, overrides=()):
    """Load ``text``; a text starting with MINIMAL is written as ``base: minimal.yml`` + the rest,
    so later keys merge over the minimal ones instead of duplicating them."""
    if text.startswith(MINIMAL):
        write(tmp_path / "minimal.yml", MINIMAL)
        text = "base: minimal.yml\n" + textwrap.dedent(text[len(MINIMAL):])
    return load_config(write(tmp_path / "exp.yml", text), overrides)


def error_of(tmp_path, text, overrides=()) -> str:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, text, overrides)
    message = str(err.value)
    assert "\n" not in message  # one line for the CLI
    return message


# -- inheritance, overrides, interpolation ----------------------------------------------------


def test_base_chain_relative_paths_and_type_replacement(tmp_path):
    write(tmp_path / "defaults" / "root.yml", """
        seed: 7
        network: {type: NAFNet, width: 16, middle_blk_num: 1}
        train: {max_steps: 100, lr: 2.0e-4, batch_size: 4}
        val: {metrics: [psnr, ssim]}
    """)
    write(tmp_path / "defaults" / "mid.yml", """
        base: root.yml            # relative to this file, not to the working directory
        train: {batch_size: 8}
    """)
    cfg = load_config(write(tmp_path / "exps" / "unet.yml", """
        base: ../defaults/mid.yml
        name: unet_${train.batch_size}
        network: {type: UNet, width: 8, depth: 2}   # another type: replaces NAFNet's keys whole
        train: {max_steps: 50}
    """))
    assert cfg.seed == 7
    assert cfg.train.max_steps == 50 and cfg.train.batch_size == 8 and cfg.train.lr == pytest.approx(2e-4)
    assert cfg.network.to_dict() == {"type": "UNet", "width": 8, "depth": 2}
    assert cfg.name == "unet_8"  # interpolation sees the merged tree


def test_same_type_mappings_merge(tmp_path):
    write(tmp_path / "b.yml", "network: {type: UNet, width: 8, depth: 2}\n")
    cfg = load_text(tmp_path, "base: b.yml\nname: x\nnetwork: {depth: 3}\ntrain: {max_steps: 1}\n")
    assert cfg.network.to_dict() == {"type": "UNet", "width": 8, "depth": 3}


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path / "a.yml", "base: b.yml\nname: a\n")
    write(tmp_path / "b.yml", "base: a.yml\n")
    with pytest.raises(ConfigError, match=r"inheritance cycle: a.yml -> b.yml -> a.yml"):
        load_config(tmp_path / "a.yml")
    write(tmp_path / "c.yml", "base: nowhere.yml\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere.yml \(named as base: in .*c.yml\)"):
        load_config(tmp_path / "c.yml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yml"):
        load_config(tmp_path / "nope.yml")
    message = error_of(tmp_path, "name: [unclosed\n")
    assert message.startswith("cannot parse config")


def test_overrides(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "train: {max_steps: 10, losses: [{type: L1}, {type: FFT, weight: 0.1}]}\n", [
        "train.lr=2e-4",                       # YAML-parsed value
        "network.width=16",
        "val.metrics=[psnr]",
        "val.best_metric=psnr",
        "train.losses.1.weight=0.05",          # list index
        "datasets.val={type: PairedFolderDataset, root: somewhere, phase: val}",
        "name=exp_${network.width}",           # interpolation in an override
    ])
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.network["width"] == 16
    assert cfg.val.metrics == ("psnr",)
    assert cfg.train.losses[1].to_dict() == {"type": "FFT", "weight": 0.05}
    assert cfg.datasets.val["root"] == "somewhere"
    assert cfg.name == "exp_16"
    for bad, pattern in [("trainlr", "expected key.path=value"), ("train.losses.5.weight=1", "not an index"),
                         ("train.max_steps.x=1", "train.max_steps is not a mapping"), ("train.lr=[1", "cannot parse the value")]:
        with pytest.raises(ConfigError, match=pattern):
            load_text(tmp_path, MINIMAL + "train: {max_steps: 10, losses: [{type: L1}]}\n", [bad])


def test_bad_interpolation_names_the_key(tmp_path):
    message = error_of(tmp_path, MINIMAL + "path:\n  root: ${nowhere}\n")
    assert "path.root" in message and "nowhere" in message


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (MINIMAL + "train: {max_steps: 10, max_stepz: 3}\n", "unknown key train.max_stepz; did you mean train.max_steps?"),
    (MINIMAL + "val: {metrcs: [psnr]}\n", "unknown key val.metrcs; did you mean val.metrics?"),
    (MINIMAL + "max_steps: 3\n", "unknown key max_steps; did you mean train.max_steps?"),  # wrong section
    (MINIMAL + "network: {type: UNet, widht: 8}\n", "unknown key network.widht for network UNet; did you mean network.width?"),
    (MINIMAL + "network: {type: NAFNte}\n", "network.type: unknown network 'NAFNte'; did you mean 'NAFNet'?"),
    (MINIMAL + "datasets: {train: {type: PairedFolderDataset, root: x, crop_sise: 8}}\n",
     "unknown key datasets.train.crop_sise for dataset PairedFolderDataset; did you mean datasets.train.crop_size?"),
    (MINIMAL + "datasets: {val: {type: PairedFolderDatset, root: x}}\n",
     "datasets.val.type: unknown dataset 'PairedFolderDatset'; did you mean 'PairedFolderDataset'?"),
    (MINIMAL + "train: {max_steps: 10, losses: [{type: Charbonier}]}\n",
     "train.losses[0].type: unknown loss 'Charbonier'; did you mean 'Charbonnier'?"),
    (MINIMAL + "train: {max_steps: 10, losses: [{type: Charbonnier, epsilon: 1}]}\n",
     "unknown key train.losses[0].epsilon for loss Charbonnier; did you mean train.losses[0].eps?"),
    (MINIMAL + "model_type: PairedRestoration_modle\n", "model_type: unknown model_type 'PairedRestoration_modle'; did you mean 'PairedRestoration_model'?"),
    (MINIMAL + "model: {discriminator: {type: UNet}}\n", "unknown key model.discriminator for model_type PairedRestoration_model"),
    (MINIMAL + "val: {metrics: [psnr, ssmi], best_metric: psnr}\n", "val.metrics: unknown metric 'ssmi'; did you mean 'ssim'?"),
    (MINIMAL + "report_to: [tensorbord]\n", "report_to[0] must be one of 'tensorboard', 'comet_ml', got 'tensorbord'; did you mean 'tensorboard'?"),
    (MINIMAL + "train: {max_steps: 10, optim: {type: adamw}}\n", "did you mean 'AdamW'?"),
])
def test_unknown_names_say_did_you_mean(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


@pytest.mark.parametrize("text, expected", [
    ("network: {type: UNet}\ntrain: {max_steps: 1}\n", "missing required field name (a string)"),
    ("name: x\ntrain: {max_steps: 1}\n", "missing required field networks (or its shorthand network: {type: ...})"),
    ("name: x\nnetwork: {type: UNet}\ntrain: {lr: 1.0}\n", "missing required field train.max_steps (an integer)"),
    (MINIMAL + "train: {max_steps: ten}\n", "train.max_steps must be an integer, got 'ten' (str)"),
    (MINIMAL + "train: {max_steps: 2.5}\n", "train.max_steps must be an integer, got 2.5 (float)"),
    (MINIMAL + "train: {max_steps: 10, lr: fast}\n", "train.lr must be a number, got 'fast' (str)"),
    (MINIMAL + "train: {max_steps: 10, clip_grad_norm: [1]}\n", "train.clip_grad_norm must be a number or null"),
    (MINIMAL + "val: {patched: 1}\n", "val.patched must be true/false, got 1 (int)"),
    (MINIMAL + "train: {max_steps: 10, optim: {betas: [0.9]}}\n", "train.optim.betas must be a list of 2 values, got 1"),
    (MINIMAL + "train: 5\n", "train must be a mapping, got 5 (int)"),
    (MINIMAL + "network: UNet\n", "network must be a mapping with a type"),
    (MINIMAL + "train: {max_steps: 0}\n", "train.max_steps must be >= 1, got 0"),
    (MINIMAL + "train: {max_steps: 10, ema_decay: 1.5}\n", "train.ema_decay must lie in (0, 1) or be null, got 1.5"),
    (MINIMAL + "val: {metrics: [ssim]}\n", "val.best_metric 'psnr' is not one of val.metrics (ssim)"),
    (MINIMAL + "val: {patch_size: 64, overlap: 33}\n", "val.overlap must lie in [0, val.patch_size / 2], got 33"),
    (MINIMAL + "push_to_hub: true\n", "push_to_hub: true needs hub_model_id"),
    (MINIMAL + "name: a/b\n", "name must be a plain folder name"),
])
def test_wrong_types_and_missing_fields_name_the_field(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_network_constructor_rejection_is_one_line(tmp_path):
    message = error_of(tmp_path, MINIMAL + "network: {type: UNet, norm: sparkly}\n")
    assert message.startswith("network (UNet): ") and "sparkly" in message
    assert "(valid: weight)" in error_of(tmp_path, MINIMAL + "train: {max_steps: 1, losses: [{type: L1, zzz: 1}]}\n")


def test_defaults_and_types(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.seed == 0 and cfg.model_type == "PairedRestoration_model" and isinstance(cfg.model, NoOptions)
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.losses == (FrozenDict({"type": "L1", "weight": 1.0}),)
    assert cfg.train.mixed_precision == "no" and cfg.train.ema_decay is None
    assert cfg.val.metrics == ("psnr", "ssim") and cfg.report_to == ("tensorboard",)
    assert cfg.run_dir == Path("experiments") / "exp"
    cfg = load_text(tmp_path, MINIMAL + "train: {max_steps: 10, lr: 1}\n")  # an int is a valid number
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_config_is_read_only(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "network: {type: NAFNet, enc_blk_nums: [1, 1], dec_blk_nums: [1, 1]}\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0
    with pytest.raises(TypeError):
        cfg.network["width"] = 3
    assert cfg.network["enc_blk_nums"] == (1, 1)            # nested lists frozen as tuples
    plain = cfg.network.to_dict()                            # constructors get plain copies
    assert plain["enc_blk_nums"] == [1, 1]
    plain["width"] = 99
    assert "width" not in cfg.network


def test_resolved_config_round_trip(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + """
        seed: 3
        datasets:
          train: {type: PairedFolderDataset, root: data, crop_size: 32}
        train: {max_steps: 10, losses: [{type: Charbonnier, eps: 1.0e-3}, {type: PSNR, weight: 0.1}],
                scheduler: {type: multistep, milestones: [3, 6]}, ema_decay: 0.999}
        val: {metrics: [ssim, psnr], best_metric: ssim}
        report_to: [tensorboard, comet_ml]
    """, ["train.lr=3e-4"])
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    text = saved.read_text()
    assert "base:" not in text and "${" not in text
    again = load_config(saved)
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)


def test_model_options_dataclass_is_validated():
    """A task's ``Options`` get the same checks as the rest of the config."""

    @dataclasses.dataclass(frozen=True)
    class GANOptions:
        discriminator: FrozenDict
        gan_weight: float = 0.01
        d_steps: int = 1

    opts = build_dataclass(GANOptions, {"discriminator": {"type": "UNet"}, "gan_weight": 0.1}, "model",
                           owner="model_type GAN_model")
    assert opts.gan_weight == 0.1 and opts.discriminator["type"] == "UNet"
    with pytest.raises(ConfigError, match=r"unknown key model.gan_wieght for model_type GAN_model; did you mean model.gan_weight\?"):
        build_dataclass(GANOptions, {"discriminator": {}, "gan_wieght": 1}, "model", owner="model_type GAN_model")
    with pytest.raises(ConfigError, match=r"missing required field model.discriminator"):
        build_dataclass(GANOptions, {}, "model")
    with pytest.raises(ConfigError, match=r"model.d_steps must be an integer, got 'two'"):
        build_dataclass(GANOptions, {"discriminator": {}, "d_steps": "two"}, "model")


@pytest.mark.parametrize("name", ["NAFNet.yml", "UNet.yml"])
def test_shipped_configs_load(name):
    cfg = load_config(CHECKPOINTS / name)
    assert cfg.network["type"] == name[:-4]
    assert cfg.datasets.train["path"] == "datasets_out/seidel" and cfg.datasets.val["split"] == "validation"
    base = load_config(CHECKPOINTS / name, ["train.max_steps=5", "network.width=8"])
    assert base.train.max_steps == 5 and base.network["width"] == 8
