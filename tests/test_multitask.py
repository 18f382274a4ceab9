"""Multi-task data and model units: MultiTaskDegradationDataset (shapes, records, determinism with
0 and 2 workers, task weights), the balancing rules against a critic with forced outputs, the
schedule, the critic lr ratio, L* kept for colorization, per-item scoring conventions and
per-task means (utils/evaluation.py)."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from dataset.degradation_dataset import MultiTaskDegradationDataset
from models.multitask_model import MultiTaskGAN_model, MultiTaskGANOptions, phase_at

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"sr_x2": {"kind": "sr", "scale": 2}, "jpeg": {"kind": "jpeg"}, "denoise": {"kind": "denoise"},
         "color": {"kind": "colorize"}}


def dataset(phase="train", **kw):
    opts = dict(tasks=TASKS, names=["chelsea", "rocket"], crop_size=32, group_size=3, samples_per_epoch=40,
                phase=phase, seed=5)
    opts.update(kw)
    return MultiTaskDegradationDataset(**opts)


def test_training_items_are_groups_of_one_task_with_real_sr_sizes():
    ds = dataset()
    seen = set()
    for i in range(12):
        s = ds[i]
        assert s["gt"].shape == (3, 3, 32, 32)
        k = 2 if s["task"] == "sr_x2" else 1
        assert s["lq"].shape == (3, 3, 32 // k, 32 // k)
        assert int(s["scale"]) == k and int(s["colorize"]) == (s["task"] == "color")
        assert torch.equal(s["lq"], torch.round(s["lq"] * 255) / 255)  # 8-bit levels
        record = json.loads(s["deg_params"])
        assert len(record) == 3 and all(r["image"] in ("chelsea", "rocket") for r in record)
        if s["task"] == "color":
            assert torch.allclose(s["lq"][:, 0], s["lq"][:, 1])
        seen.add(s["task"])
    assert seen == set(TASKS)


def test_sr_lq_is_the_matlab_bicubic_of_gt():
    from utils.imresize import imresize

    ds = dataset("val", crop_size=64)
    s = ds[0]  # sr_x2 / chelsea
    assert s["key"] == "sr_x2/chelsea"
    ref = torch.round(imresize(s["gt"], 0.5).clamp(0, 1) * 255) / 255
    assert (s["lq"] - ref).abs().max() < 1e-6


def test_same_seed_epoch_index_same_sample_with_0_and_2_workers():
    ds = dataset()
    ds.set_epoch(3)
    direct = [ds[i] for i in (0, 7, 13)]
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=[0, 7, 13], num_workers=workers)
        for a, b in zip(direct, loader):
            assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["deg_params"] == b["deg_params"]
    ds.set_epoch(4)
    assert not torch.equal(ds[0]["gt"], direct[0]["gt"])


def test_validation_samples_are_fixed_and_cover_every_task_and_image():
    ds = dataset("val", crop_size=48)
    assert len(ds) == 8
    keys = [ds[i]["key"] for i in range(8)]
    assert sorted(keys) == sorted(f"{t}/{n}" for t in TASKS for n in ("chelsea", "rocket"))
    ds.set_epoch(7)
    again = dataset("val", crop_size=48)
    for i in range(8):
        assert torch.equal(ds[i]["lq"], again[i]["lq"])


def test_task_weights_set_the_sampling_frequencies():
    tasks = {"a": {"kind": "denoise", "weight": 3}, "b": {"kind": "jpeg", "weight": 1}}
    ds = dataset(tasks=tasks)
    n = 4000
    counts = Counter(ds.task_of(ds.generator(i)).name for i in range(n))
    assert abs(counts["a"] / n - 0.75) < 0.02


def test_gt_usm_is_the_usm_of_gt():
    from utils.degradations import USMSharp

    ds = dataset(gt_usm={"weight": 0.5, "threshold": 10})
    s = ds[1]
    assert torch.allclose(s["gt_usm"], USMSharp(50)(s["gt"], 0.5, 10), atol=1e-6)


def test_clip_items_are_shifted_frames_with_the_centre_as_target():
    ds = dataset("val", crop_size=32, frames=3, max_shift=2, tasks={"color": {"kind": "colorize"}})
    s = ds[0]
    assert s["lq"].shape == (3, 3, 32, 32) and s["gt"].shape == (3, 32, 32)
    record = json.loads(s["deg_params"])[0]["degradations"]
    assert record[1]["shift"] == [0, 0]
    from utils.degradations import to_gray

    gray = torch.round(to_gray(s["gt"]).expand(3, -1, -1).clamp(0, 1) * 255) / 255
    assert (s["lq"][1] - gray).abs().max() < 1e-6
    img, top, left, h, w = ds._gt_crop(ds.images[0], 1, None)
    for t in (0, 2):  # every frame is the window moved by its recorded shift
        dy, dx = record[t]["shift"]
        window = img[:, top + dy:top + dy + h, left + dx:left + dx + w]
        ref = torch.round(to_gray(window).expand(3, -1, -1).clamp(0, 1) * 255) / 255
        assert (s["lq"][t] - ref).abs().max() < 1e-6


def test_bad_task_options_are_config_errors():
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="kind"):
        dataset(tasks={"x": {"kind": "deblurr"}})
    with pytest.raises(ConfigError, match="scale"):
        dataset(tasks={"x": {"kind": "sr", "scale": 1}})
    with pytest.raises(ConfigError, match="multiple"):
        dataset(tasks={"x": {"kind": "sr", "scale": 3}}, crop_size=32)
    from utils.errors import DataError

    bad = dataset(tasks={"x": {"kind": "restore", "scale": 2, "degradations": [{"op": "jpeg"}]}})
    with pytest.raises(DataError, match="lq must be gt / 2"):
        bad[0]


def test_realesrgan_preset_task_gives_quarter_size_lq():
    ds = dataset(tasks={"real": {"kind": "restore", "scale": 4, "degradations": {"preset": "realesrgan", "scale": 4}}},
                 crop_size=64, group_size=2)
    s = ds[0]
    assert s["lq"].shape == (2, 3, 16, 16) and int(s["scale"]) == 4
    assert len(json.loads(s["deg_params"])[0]["degradations"]) == 9


# ---------------------------------------------------------------------------------------------
# model units


def test_phase_schedule():
    o = MultiTaskGANOptions(pretrain_steps=5, critic_steps=2, gan_steps=3, cycles=2)
    got = [phase_at(s, o) for s in range(17)]
    assert got[:5] == [("pretrain", 0)] * 5
    assert got[5:7] == [("critic", 1)] * 2 and got[7:10] == [("gan", 1)] * 3
    assert got[10:12] == [("critic", 2)] * 2 and got[12:15] == [("gan", 2)] * 3
    assert got[15:] == [("gan", 2)] * 2
    assert phase_at(3, o, has_critic=False) == ("pretrain", 0)


class ForcedCritic(nn.Module):
    """A critic with scripted logits: on a real+fake batch (2n) the first n get ``r``, the rest
    ``f``; on the generator's n fakes, ``f``. ``w`` (0) makes it trainable: it moves only when the
    critic's optimiser steps."""

    input_keys = ("image",)

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.n, self.r, self.f = n, 0.0, 0.0

    def forward(self, image):
        out = torch.full((image.shape[0], 1, 1, 1), self.f)
        if image.shape[0] == 2 * self.n:
            out[: self.n] = self.r
        return out + self.w * image.mean()


def make_model(accelerator_factory, **model):
    from utils.config import load_config

    model = {"task_conditioning": "null", **model}
    net = [] if model["task_conditioning"] != "null" else ["networks.net.in_channels=3"]
    cfg = load_config(str(ROOT / "checkpoints" / "multitask_toy.yml"),
                      [f"model.{k}={v}" for k, v in model.items()] + net)
    m = MultiTaskGAN_model(cfg)
    return m, cfg


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    yield Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    AcceleratorState._reset_state()
    GradientState._reset_state()


def gan_batch(ds_seed=0):
    ds = dataset(tasks={"d": {"kind": "denoise"}}, seed=ds_seed)
    s = ds[0]
    return {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in s.items()}


@pytest.mark.parametrize("gan_type", ["vanilla", "lsgan"])
def test_advantage_rule_skips_the_critic_exactly_when_advantage_exceeds_the_threshold(accelerator, gan_type):
    t = 0.5
    script = [(3.0, -3.0), (0.2, 0.0), (2.0, 1.9), (0.0, 0.0), (5.0, -5.0), (0.4, -0.4)]
    m, cfg = make_model(None, gan_type=gan_type, balance="advantage", balance_threshold=t, pretrain_steps=0,
                        critic_steps=0, gan_steps=0)
    batch = gan_batch()
    critic = ForcedCritic(batch["gt"].shape[1])
    m.networks["discriminator"] = critic
    m.setup_training()
    m.prepare(accelerator)
    skips = 0
    s = (lambda x: 1 / (1 + math.exp(-x))) if gan_type == "vanilla" else (lambda x: x)
    for step, (r, f) in enumerate(script):
        critic.r, critic.f = r, f
        w0 = critic.w.detach().clone()
        logs = m.training_step(batch, step)
        adv = s(r) - s(f)
        assert abs(float(logs["d_advantage"]) - adv) < 1e-3  # w·mean(image) shifts the logits slightly
        skipped = adv > t
        skips += skipped
        assert m.counters["d_skips"] == skips
        assert ("loss_d" in logs) == (not skipped)
        assert torch.equal(critic.w.detach(), w0) == skipped
    assert m.counters["critic_updates"] == len(script) - skips
    assert 0 < skips < len(script)


def test_critic_loss_rule_trains_the_critic_until_its_loss_is_below_the_threshold(accelerator):
    m, cfg = make_model(None, gan_type="vanilla", balance="critic_loss", balance_threshold=0.65, pretrain_steps=0,
                        critic_steps=0, gan_steps=0, max_critic_repeats=3)
    batch = gan_batch()
    critic = ForcedCritic(batch["gt"].shape[1])
    m.networks["discriminator"] = critic
    m.setup_training()
    m.prepare(accelerator)
    # vanilla critic loss = ½[softplus(−r) + softplus(f)]: r = f = 0 gives ln 2 ≈ 0.693 > 0.65; r = 2, f = −2: 0.127
    script = [(0, 0), (0, 0), (2, -2), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (2, -2)]
    kinds = []
    for step, (r, f) in enumerate(script):
        critic.r, critic.f = float(r), float(f)
        logs = m.training_step(batch, step)
        kinds.append("D" if "loss_d" in logs else "G")
    # D until its loss < 0.65 (3rd), then one G; D ×3 (max_critic_repeats) then G; then D again
    assert kinds == ["D", "D", "D", "G", "D", "D", "D", "G", "D"]


def test_critic_lr_ratio(accelerator):
    m, cfg = make_model(None, critic_lr_ratio=0.25)
    m.setup_training()
    g = m.optimizers["net"].param_groups[0]["lr"]
    d = m.optimizers["discriminator"].param_groups[0]["lr"]
    assert d == pytest.approx(0.25 * g)


def test_colorization_keeps_the_input_lightness(accelerator):
    from utils.degradations import rgb_to_lab
    from utils.image_io import quantize

    m, _ = make_model(None)
    ds = dataset("val", crop_size=64, tasks={"color": {"kind": "colorize"}})
    s = ds[0]
    batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in s.items()}
    with torch.no_grad():
        nn.init.normal_(m.networks["net"].head[0].weight, std=0.05)  # a generator that changes colours
        pred = quantize(m.predict(batch))
    dl = (rgb_to_lab(pred.double())[:, 0] - rgb_to_lab(batch["lq"].double())[:, 0]).abs().mean()
    assert dl < 1.0


# ---------------------------------------------------------------------------------------------
# core: per-item conventions and per-group means


def test_score_items_uses_each_items_convention():
    from utils.evaluation import ScoreItem, score_items
    from utils.metrics import compute_metrics

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 20, 20, generator=g), torch.rand(3, 20, 20, generator=g)
    items = [ScoreItem("sr/x.png", a, b, crop_border=2, test_y_channel=True), ScoreItem("dn/x.png", a, b)]
    got = score_items(items, ["psnr"], crop_border=0, test_y_channel=False)
    y = compute_metrics(a[None], b[None], names=("psnr",), crop_border=2, test_y_channel=True, round_to_uint8=True)
    rgb = compute_metrics(a[None], b[None], names=("psnr",), crop_border=0, test_y_channel=False, round_to_uint8=True)
    assert got["sr/x.png"]["psnr"] == pytest.approx(float(y["psnr"][0]))
    assert got["dn/x.png"]["psnr"] == pytest.approx(float(rgb["psnr"][0]))
    assert got["sr/x.png"]["psnr"] != got["dn/x.png"]["psnr"]


def test_metric_group_means():
    from utils.evaluation import metric_group_means

    per = {"a/1.png": {"psnr": 10.0}, "a/2.png": {"psnr": 20.0}, "b/1.png": {"psnr": 40.0}}
    means = metric_group_means(MultiTaskGAN_model, per, {}, "image", ["psnr"])
    assert means == {"a": {"psnr": 15.0}, "b": {"psnr": 40.0}}
    assert metric_group_means(object(), per, {}, "image", ["psnr"]) == {}


def test_clip_to_centre_frame_generator_trains_and_predicts(accelerator):
    """T-frame clips cut from still images shifted by known motion, through a clip2frame
    generator (ToyClipFrame), ×2 SR included (each frame pre-upsampled)."""
    m, cfg = make_model(None, pretrain_steps=2, critic_steps=1, gan_steps=1)
    from models.archs.toy_arch import ToyClipFrame_arch, ToyClipFrame_config

    m.networks["net"] = ToyClipFrame_arch(ToyClipFrame_config(frames=3, width=4))
    m.setup_training()
    m.prepare(accelerator)
    ds = dataset(frames=3, max_shift=2, tasks={"sr_x2": {"kind": "sr", "scale": 2}}, group_size=2)
    s = ds[0]
    assert s["lq"].shape == (2, 3, 3, 16, 16) and s["gt"].shape == (2, 3, 32, 32)
    batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in s.items()}
    before = [p.detach().clone() for p in m.networks["net"].parameters()]
    for step in range(4):  # pretrain, pretrain, critic, gan
        logs = m.training_step(batch, step)
        assert torch.isfinite(logs["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, m.networks["net"].parameters()))
    val = dataset("val", frames=3, max_shift=2, tasks={"sr_x2": {"kind": "sr", "scale": 2}}, crop_size=32)
    v = val[0]
    vb = {k: (x[None] if isinstance(x, torch.Tensor) else [x]) for k, x in v.items()}
    with torch.no_grad():
        pred = m.predict(vb)
    assert pred.shape == (1, 3, 32, 32)
    items = m.evaluation_items(vb, pred)
    assert items[0].crop_border == 2 and items[0].test_y_channel


def test_task_conditioning_appends_one_hot_task_maps(accelerator):
    m, _ = make_model(None, task_conditioning="[sr_x2,jpeg,denoise,color]")
    ds = dataset()
    s = ds[2]
    batch = m.fold({k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in s.items()})
    x = m.conditioned(m.generator_input(batch), batch)
    assert x.shape == (3, 7, 32, 32)
    assert torch.equal(x[:, :3], m.generator_input(batch))
    k = ["sr_x2", "jpeg", "denoise", "color"].index(s["task"])
    assert torch.equal(x[:, 3:].amax(dim=(2, 3)), torch.nn.functional.one_hot(torch.tensor([k] * 3), 4).float())
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="in_channels"):
        make_model(None, task_conditioning="[a,b]")
