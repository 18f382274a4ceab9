"""scripts/restore.py: restore images with no ground truth from a save_pretrained folder or a Hub id
(offline Hugging Face cache, the real loading path), tiled = whole-image inference for a network
with a bounded receptive field, relative paths kept, unreadable files reported after the readable
ones are done, nothing half-written, PSF-conditioned networks fed from a psfs.h5."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.archs import define_network
from utils.image_io import image_to_tensor, read_image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "restore.py"


def load_script():
    spec = importlib.util.spec_from_file_location("restore_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env(**extra):
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    e.update(extra)
    return e


def run(*args, **env_extra):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=env(**env_extra), cwd=ROOT, timeout=600)


def write_png(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def save_model(folder, opts, seed=0):
    torch.manual_seed(seed)
    net = define_network(opts).eval()
    with torch.no_grad():  # not the identity: every tap of the receptive field matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.save_pretrained(folder)
    return net


def whole(net, path):
    with torch.no_grad():
        return net(image_to_tensor(read_image(path))[None])[0].clamp(0, 1)


def assert_png_matches(png, expected):
    """The written 8-bit PNG is the float output rounded (1e-5 of float slack at the rounding points)."""
    got = image_to_tensor(read_image(png))
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-5


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    write_png(root / "a.png", 37, 50, 0)
    write_png(root / "sub" / "b.png", 64, 29, 1)
    rng = np.random.default_rng(2)
    (root / "sub" / "deeper").mkdir(parents=True)
    assert cv2.imwrite(str(root / "sub" / "deeper" / "c.jpg"), rng.integers(0, 256, (21, 33, 3), dtype=np.uint8))
    return root


def test_help():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--model", "--input", "--output", "--tile", "--overlap", "--psf_data_path", "--device", "HF_HUB_OFFLINE"):
        assert flag in proc.stdout


def test_folder_tiled_equals_whole_and_keeps_relative_paths(photos, tmp_path):
    net = save_model(tmp_path / "model", {"type": "DnCNN", "width": 6, "depth": 4})
    out = tmp_path / "out"
    script = load_script()
    assert script.main(["--model", str(tmp_path / "model"), "--input", str(photos), "--output", str(out),
                        "--tile", "16", "--device", "cpu", "--quiet"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    for rel, src in (("a.png", "a.png"), ("sub/b.png", "sub/b.png"), ("sub/deeper/c.png", "sub/deeper/c.jpg")):
        assert_png_matches(out / rel, whole(net, photos / src))
    # In floats: the default overlap is 2 × the receptive radius (4) with no blend -> tiled = whole.
    lq = image_to_tensor(read_image(photos / "sub" / "b.png"))[None]
    tiling = script.tile_settings(net.io, 16, None, None)
    assert tiling == (16, 8, 0)
    tiled = script.restore_tensor(net, lq, tiling=tiling)
    torch.testing.assert_close(tiled, net(lq).detach(), atol=1e-5, rtol=0)


def test_super_resolution_model_tiled(tmp_path):
    net = save_model(tmp_path / "model", {"type": "ToySR", "width": 6})
    write_png(tmp_path / "in.png", 30, 41, 3)
    script = load_script()
    assert script.main(["--model", str(tmp_path / "model"), "--input", str(tmp_path / "in.png"),
                        "--output", str(tmp_path / "out"), "--tile", "12", "--quiet", "--device", "cpu"]) == 0
    expected = whole(net, tmp_path / "in.png")
    assert expected.shape[-2:] == (60, 82)
    assert_png_matches(tmp_path / "out" / "in.png", expected)


def test_unreadable_file_reported_after_the_others(photos, tmp_path):
    save_model(tmp_path / "model", {"type": "DnCNN", "width": 4, "depth": 3})
    (photos / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    proc = run("--model", tmp_path / "model", "--input", photos, "--output", out, "--tile", "16", "--quiet")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "Traceback" not in proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["a.png", "sub/b.png", "sub/deeper/c.png"]  # the readable ones done, no temporary file left
    assert re.search(r"restored 3 of 4 image\(s\).*peak RSS \d+ MB", proc.stderr)


def test_bad_model_and_arguments_are_one_line(tmp_path, photos):
    for args in (["--model", tmp_path / "nothing", "--input", photos, "--output", tmp_path / "o"],
                 ["--model", "someone/not-cached", "--input", photos, "--output", tmp_path / "o"]):
        proc = run(*args, HF_HUB_CACHE=str(tmp_path / "empty-cache"))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert "not in the Hugging Face cache" in lines[0]
    assert not (tmp_path / "o").exists()
    write_png(photos / "a.jpg", 8, 8, 5)  # a.jpg and a.png would both become a.png
    script = load_script()
    with pytest.raises(Exception, match="would both be written to a.png"):
        script.main(["--model", str(tmp_path / "nothing"), "--input", str(photos), "--output", str(tmp_path / "o")])


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = "0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub writes: models--USER--NAME/{refs/main, snapshots/<rev>/files}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hub_id_from_the_offline_cache(tmp_path, photos):
    net = save_model(tmp_path / "model", {"type": "DnCNN", "width": 4, "depth": 3})
    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, "someone/toy-dncnn", tmp_path / "model")
    out = tmp_path / "out"
    proc = run("--model", "someone/toy-dncnn", "--input", photos / "a.png", "--output", out, "--quiet",
               HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    assert_png_matches(out / "a.png", whole(net, photos / "a.png"))


def test_psf_network_needs_and_uses_psf_data_path(tmp_path):
    from test_datasets_psf import SENSOR, pixel_psfs, random_field, scatter

    from psf.field import save_psf_field

    field = random_field(grid=(3, 3), k=7, seed=0)
    save_psf_field(field, tmp_path / "lens")
    gt = torch.rand(3, *SENSOR, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # a smooth scene
        gt = torch.nn.functional.avg_pool2d(gt[None], 7, 1, 3, count_include_pad=False)[0]
    lq = scatter(gt, pixel_psfs(field, *SENSOR)).float()
    path = tmp_path / "lq.png"
    arr = np.round(lq.clamp(0, 1).numpy().transpose(1, 2, 0) * 65535).astype(np.uint16)[:, :, ::-1]
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr))
    define_network({"type": "RichardsonLucy", "iterations": 5, "boundary": "zero"}).save_pretrained(tmp_path / "model")

    proc = run("--model", tmp_path / "model", "--input", path, "--output", tmp_path / "out", "--quiet")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--psf_data_path" in proc.stderr
    script = load_script()
    assert script.main(["--model", str(tmp_path / "model"), "--input", str(path), "--output", str(tmp_path / "out"),
                        "--psf_data_path", str(tmp_path / "lens"), "--quiet", "--device", "cpu"]) == 0
    inner = (slice(None), slice(6, -6), slice(6, -6))  # away from the borders the blur came from outside
    err_lq = (lq[inner] - gt[inner]).square().mean()
    restored = image_to_tensor(read_image(tmp_path / "out" / "lq.png"))
    err_restored = (restored[inner] - gt[inner]).square().mean()
    assert err_restored < 0.6 * err_lq, (err_restored, err_lq)  # RL with the true field deblurs (2.3× here)
    # Tiled: basis_coef is cut with the image, the basis passed whole. One RL iteration with a zero
    # boundary reaches 2 × 3 px (H then Hᵀ, k = 7): tiles overlapping by 12 without blend are exact.
    rl1 = define_network({"type": "RichardsonLucy", "iterations": 1, "boundary": "zero"}).eval()
    extra = script.PSFInputs(tmp_path / "lens", list(rl1.io.inputs)[1:]).for_image(*SENSOR)
    x = lq[None]
    whole_out = script.restore_tensor(rl1, x, extra)
    tiled_out = script.restore_tensor(rl1, x, extra, tiling=script.tile_settings(rl1.io, 24, 12, 0))
    torch.testing.assert_close(tiled_out, whole_out, atol=1e-5, rtol=0)
    less = script.restore_tensor(rl1, x, extra, tiling=script.tile_settings(rl1.io, 16, 4, 0))
    assert (less - whole_out).abs().max() > 1e-4  # control: a margin below the reach shows


@pytest.mark.slow
def test_big_image_folder_tiled_equals_whole_and_saves_memory(tmp_path):
    """Acceptance: 3 images of different sizes, one 2000×3000, ``--tile 512``: tiled = whole-image
    inference within 1e-5 (DnCNN width 16, depth 5, no BatchNorm: receptive radius 5 → overlap 10, no blend), from
    a folder, from the offline Hub cache and through AutoModel; peak RSS of tiled vs whole."""
    from transformers import AutoModel

    net = save_model(tmp_path / "model", {"type": "DnCNN", "width": 16, "depth": 5, "batch_norm": False})
    photos = tmp_path / "photos"
    for name, (h, w) in {"big.png": (2000, 3000), "mid.png": (700, 523), "small.png": (97, 130)}.items():
        write_png(photos / name, h, w, h)
    cache = tmp_path / "hf-cache"
    populate_hub_cache(cache, "someone/dncnn-big", tmp_path / "model")
    rss = {}
    for label, model, extra in (("tiled", "someone/dncnn-big", ["--tile", "512"]), ("whole", tmp_path / "model", [])):
        proc = run("--model", model, "--input", photos, "--output", tmp_path / label, "--quiet", "--device", "cpu",
                   *extra, HF_HUB_CACHE=str(cache))
        assert proc.returncode == 0, proc.stderr
        rss[label] = float(re.search(r"peak RSS (\d+) MB", proc.stderr).group(1))
        print(label, proc.stderr.strip().splitlines()[-1])
    for name in ("big.png", "mid.png", "small.png"):
        a = image_to_tensor(read_image(tmp_path / "tiled" / name))
        b = image_to_tensor(read_image(tmp_path / "whole" / name))
        assert (a - b).abs().max() <= 1 / 255 + 1e-6 and (a != b).float().mean() < 1e-4
    print(f"peak RSS: tiled {rss['tiled']:.0f} MB, whole {rss['whole']:.0f} MB")
    script = load_script()
    auto = AutoModel.from_pretrained(tmp_path / "model").eval()
    tiling = script.tile_settings(auto.io, 512, None, None)
    assert tiling == (512, 10, 0)
    for name in ("big.png", "mid.png", "small.png"):
        lq = image_to_tensor(read_image(photos / name))[None]
        diff = (script.restore_tensor(auto, lq, tiling=tiling) - script.restore_tensor(net, lq)).abs().max().item()
        print(f"{name} {tuple(lq.shape[-2:])}: max |tiled - whole| = {diff:.2e}")
        assert diff <= 1e-5
        del lq
    assert rss["tiled"] < rss["whole"]
    (tmp_path / "rss.json").write_text(json.dumps(rss))
