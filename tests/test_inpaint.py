"""Inpainting task: push-pull fill, InpaintNet / RefInpaintNet (known pixels bit-exact at odd
sizes, every parameter gets a gradient, ref_valid = 0 is the backbone, freezing), the dataset
(lq = gt·mask, seeded masks equal the generator's, fixed evaluation masks, step-3 writer),
the model's losses (hole L1, R1 against a hand-computed gradient) and an end-to-end trainer run
with the critic and lazy R1 on, then ``-test`` whose outputs keep the known pixels."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.archs.inpaintnet_arch import (
    InpaintNet_arch,
    InpaintNet_config,
    push_pull_fill,
)
from models.archs.refinpaint_arch import RefInpaintNet_arch, RefInpaintNet_config
from models.inpaint_model import hole_l1, r1_penalty
from utils import masks as mask_lib

ROOT = Path(__file__).resolve().parent.parent


def _batch(size, seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, *size, generator=g)
    mask = (torch.rand(b, 1, *size, generator=g) > 0.4).float()
    return gt, mask


def test_push_pull_fill_constant_and_known_pixels():
    gt, mask = _batch((37, 50))
    const = torch.full_like(gt, 0.3)
    assert torch.allclose(push_pull_fill(const * mask, mask), const, atol=1e-6)
    out = push_pull_fill(gt * mask, mask)
    known = mask.expand_as(gt) > 0.5
    assert torch.equal(out[known], gt[known])
    # a hole in a smooth ramp is filled close to the ramp
    ramp = torch.linspace(0, 1, 64).repeat(1, 3, 64, 1)
    m = torch.ones(1, 1, 64, 64)
    m[..., 28:36, 28:36] = 0
    assert (push_pull_fill(ramp * m, m) - ramp).abs().max() < 0.05


def _perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("size", [(37, 41), (32, 32), (17, 64)])
def test_known_pixels_bit_exact(size):
    torch.manual_seed(0)
    gt, mask = _batch(size)
    net = InpaintNet_arch(InpaintNet_config.tiny()).eval()
    ref = RefInpaintNet_arch(RefInpaintNet_config.tiny()).eval()
    _perturb(net), _perturb(ref)
    known = mask.expand_as(gt) > 0.5
    with torch.no_grad():
        for out in (net(gt * mask, mask), ref(gt * mask, mask, gt.flip(-1), torch.tensor([1.0, 0.0]))):
            assert out.shape == gt.shape and torch.equal(out[known], (gt * mask)[known])
            assert not torch.equal(out[~known], (gt * mask)[~known])


def test_reference_every_parameter_gets_a_gradient_and_ref_valid_zero_is_the_backbone():
    torch.manual_seed(0)
    net = RefInpaintNet_arch(RefInpaintNet_config(width=8, depth=2, max_width=16, dilated_blocks=1, ref_tokens=4,
                                                  heads=2))
    assert sorted(net.fusion) == ["0", "1", "2"]  # every level fused by default
    _perturb(net)
    gt, mask = _batch((24, 24))
    out = net(gt * mask, mask, torch.rand(2, 3, 20, 28), torch.ones(2))  # a reference of another size
    ((out - gt) ** 2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # ref_valid = 0: exactly the backbone (an InpaintNet with the same body weights)
    plain = InpaintNet_arch(InpaintNet_config(width=8, depth=2, max_width=16, dilated_blocks=1))
    plain.body.load_state_dict(net.body.state_dict())
    with torch.no_grad():
        a = net(gt * mask, mask, torch.rand(2, 3, 24, 24), torch.zeros(2))
        assert torch.allclose(a, plain(gt * mask, mask), atol=1e-6)


def test_reference_freezing_with_selective_unfreezing():
    net = RefInpaintNet_arch(RefInpaintNet_config(width=8, depth=2, max_width=16, dilated_blocks=1, ref_tokens=4,
                                                  heads=2, freeze_backbone=True, unfreeze=[r"^body\.tail\."]))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert {"body.tail.weight", "body.tail.bias"} <= trainable
    assert not any(n.startswith("body.") and not n.startswith("body.tail.") for n in trainable)
    assert any(n.startswith("fusion.") for n in trainable) and any(n.startswith("ref_enc.") for n in trainable)


def test_hole_l1_and_r1_by_hand():
    gt, mask = _batch((8, 8))
    pred = gt.clone()
    pred[mask.expand_as(gt) < 0.5] += 0.25
    pred[mask.expand_as(gt) > 0.5] += 1.0  # known-pixel errors do not count
    assert hole_l1(pred, gt, mask).item() == pytest.approx(0.25, abs=1e-6)
    # a linear critic D(x) = Σ w·x has ∇_x = w for every sample: R1 = ‖w‖²
    w = torch.randn(1, 3, 8, 8)
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    assert r1_penalty(logits, x).item() == pytest.approx(w.square().sum().item(), rel=1e-6)


def test_dataset_masks_and_samples():
    from dataset.inpaint_dataset import InpaintingDataset

    val = InpaintingDataset(names=["camera"], image_size=256, masks="mat_256_small", mask_seeds=[0, 3], phase="val")
    assert len(val) == 2 and val[1]["key"] == "camera_m3"
    s = val[1]
    assert np.array_equal(s["mask"][0].numpy().astype(np.uint8), mask_lib.mat_mask("mat_256_small", 3))
    assert torch.equal(s["lq"], s["gt"] * s["mask"])
    train = InpaintingDataset(names=["coins", "moon"], crop_size=40, masks="lama_thick", phase="train",
                              ref="same_image", ref_prob=0.5, samples_per_image=8)
    a, b = train[5], train[5]
    assert torch.equal(a["mask"], b["mask"]) and a["mask"].shape == (1, 40, 40)
    first = [train[i]["mask"] for i in range(8)]
    train.set_epoch(1)
    assert any(not torch.equal(train[i]["mask"], first[i]) for i in range(8))  # a new epoch, new masks
    flags = [float(train[i]["ref_valid"]) for i in range(16)]
    assert 0 < sum(flags) < 16
    for i in range(16):
        s = train[i]
        assert (s["ref"].abs().sum() > 0) == (float(s["ref_valid"]) == 1.0)  # zeros only with the flag at 0


def test_step3_writer(tmp_path):
    from dataset.inpaint_dataset import write_inpainting_dataset
    from utils.image_io import read_image

    index = write_inpainting_dataset(tmp_path, names=["camera"], image_size=64, masks="mat_256_small",
                                     mask_seeds=[1])
    (name, info), = index.items()
    mask = read_image(tmp_path / "mask" / name)
    assert info["mask_seed"] == 1 and info["hole_ratio"] == pytest.approx(float((mask[..., 0] < 0.5).mean()))
    assert json.loads((tmp_path / "masks.json").read_text()) == index


def test_opencv_baselines_keep_known_pixels():
    sys.path.insert(0, str(ROOT / "scripts"))
    from compare_inpainting import opencv_inpaint

    gt, mask = _batch((33, 40), b=1)
    for flag in ("telea", "ns"):
        out = opencv_inpaint(gt[0] * mask[0], mask[0], flag)
        known = mask[0].expand_as(out) > 0.5
        assert torch.equal(out[known], (gt[0] * mask[0])[known]) and out[~known].abs().sum() > 0


@pytest.mark.slow
def test_trainer_end_to_end_with_critic_and_r1_then_test(tmp_path):
    """MAT (shrunk) + critic + lazy R1 + LPIPS through trainer.py (checkpoints/inpaint_mat_toy.yml)."""
    args = [sys.executable, str(ROOT / "trainer.py"), "-opt", str(ROOT / "checkpoints" / "inpaint_mat_toy.yml"),
            "name=e2e", f"path.root={tmp_path}", "train.max_steps=4", "train.val_every=4", "train.checkpoint_every=4",
            "train.log_every=1", "train.batch_size=2", "datasets.train.crop_size=48", "report_to=[]",
            "datasets.val.names=[camera]", "datasets.val.mask_seeds=[0]", "datasets.val.image_size=[48,48]",
            "model.r1_every=2"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "e2e"
    log = (run / "logs" / "train.log").read_text()
    assert "loss_d" in log and "r1" in log and "psnr" in log
    r = subprocess.run(args + ["-test"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    from dataset.inpaint_dataset import InpaintingDataset
    from utils.image_io import read_image

    pngs = sorted((run / "results").rglob("*.png"))
    assert pngs
    s = InpaintingDataset(names=["camera"], image_size=48, mask_seeds=[0], phase="test")[0]
    out = torch.from_numpy(read_image(pngs[0])).permute(2, 0, 1)
    known = s["mask"].expand_as(out) > 0.5
    assert torch.allclose(out[known], s["lq"][known], atol=0.5 / 255)  # the 8-bit PNG of the exact known pixels


def _square_task(n, generator, size=32):
    """A background colour (known) and a central square of another colour (the hole): the
    hole's colour is unknowable from the context; the reference (the image cyclically shifted,
    flipped) holds it."""
    bg = torch.rand(n, 3, 1, 1, generator=generator).expand(n, 3, size, size)
    fg = torch.rand(n, 3, 1, 1, generator=generator)
    q = size // 4
    mask = torch.ones(n, 1, size, size)
    mask[..., q:3 * q, q:3 * q] = 0
    gt = torch.where(mask > 0.5, bg, fg.expand(n, 3, size, size))
    shifts = torch.randint(0, size, (2,), generator=generator).tolist()
    ref = torch.roll(gt.flip(-1), shifts=shifts, dims=(-2, -1))
    return gt, mask, ref


@pytest.mark.slow
def test_reference_guides_the_fill_on_a_synthetic_task():
    torch.manual_seed(0)
    net = RefInpaintNet_arch(RefInpaintNet_config(width=8, depth=2, max_width=32, dilated_blocks=1, ref_tokens=8,
                                                  heads=2))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        gt, mask, ref = _square_task(16, g)
        out = net(gt * mask, mask, ref, torch.ones(16))
        loss = hole_l1(out, gt, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    gt, mask, ref = _square_task(64, torch.Generator().manual_seed(99))
    from utils.metrics.masked import masked_psnr

    hole = 1 - mask
    with torch.no_grad():
        with_ref = masked_psnr(net(gt * mask, mask, ref, torch.ones(64)).clamp(0, 1), gt, hole).mean().item()
        without = masked_psnr(net(gt * mask, mask, torch.zeros_like(ref), torch.zeros(64)).clamp(0, 1), gt,
                              hole).mean().item()
    print(f"hole PSNR with reference {with_ref:.2f} dB, ref_valid = 0 {without:.2f} dB")
    assert with_ref > without + 3.0


def test_opencv_network_equals_the_comparison_baseline():
    from models.archs.inpaint_opencv_arch import (
        OpenCVInpaint_arch,
        OpenCVInpaint_config,
    )

    sys.path.insert(0, str(ROOT / "scripts"))
    from compare_inpainting import opencv_inpaint

    gt, mask = _batch((30, 34), b=2)
    for method in ("telea", "ns"):
        net = OpenCVInpaint_arch(OpenCVInpaint_config(method=method))
        out = net(gt * mask, mask)
        for b in range(2):
            assert torch.equal(out[b], opencv_inpaint(gt[b] * mask[b], mask[b], method))
