"""Step 3 ``--scenes layered``: depth-aware datasets of synthetic layered scenes (data_gen/depth_dataset.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psf.depth import save_depth_psf_field
from psf.field import save_psf_field
from psf.svpsf import PSFSimulator

ROOT = Path(__file__).resolve().parent.parent
STEP3 = str(ROOT / "data_gen" / "3.generate_dataset_synthetic.py")


@pytest.fixture(scope="module")
def depth_psfs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depth_psfs")
    stack = PSFSimulator("seidel", grid_shape=(2, 2), psf_size=15, sensor_res=(48, 64), pixel_pitch_um=4.0,
                         f_number=4.0, focal_length_mm=25.0, focus_distance_m=2.0,
                         object_distance_m=[1.0, 2.0, 8.0]).simulate()
    save_depth_psf_field(stack, folder / "psfs.h5")
    return folder


def run_step3(*args):
    return subprocess.run([sys.executable, STEP3, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # ~20 s: two step-3 runs in subprocesses
def test_layered_dataset(depth_psfs, tmp_path):
    import datasets

    out = tmp_path / "ds"
    run = run_step3("--psf_data_path", depth_psfs, "--images", "builtin", "--out", out, "--scenes", "layered",
                    "--n_scenes", "train=3,validation=1", "--seed", "3")
    assert run.returncode == 0, run.stderr
    assert (out / "psfs" / "psfs.h5").is_file() and (out / "README.md").read_text().startswith("---")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows == 3 and ds["validation"].num_rows == 1
    for row in ds["train"]:
        gt, lq, depth = np.array(row["gt"]), np.array(row["lq"]), np.array(row["depth"])
        assert gt.shape == lq.shape == (48, 64, 3) and depth.shape == (48, 64) and depth.dtype == np.uint16
        layers = row["layer_depths_m"]
        assert layers[0] == 8.0 and all(1.0 <= d <= 8.0 for d in layers)
        assert all(a > b for a, b in zip(layers, layers[1:]))  # far to near
        # every depth value is one of the layers' distances, in millimetres
        assert set(np.unique(depth).tolist()) <= {int(round(d * 1000)) for d in layers}
        assert (depth == 8000).any()  # some background is visible
        assert not np.array_equal(gt, lq)
    # the same arguments give the same bytes
    again = tmp_path / "again"
    assert run_step3("--psf_data_path", depth_psfs, "--images", "builtin", "--out", again, "--scenes", "layered",
                     "--n_scenes", "train=3,validation=1", "--seed", "3").returncode == 0
    for name in ("train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"):
        assert (out / "data" / name).read_bytes() == (again / "data" / name).read_bytes()


def test_layered_scene_render_matches_the_renderer(depth_psfs):
    """A scene's lq is the layered render of its layers (no noise, sRGB path), quantised to 8 bits."""
    from data_gen.depth_dataset import composite_sharp, layered_scene, render_scene
    from psf.depth import load_depth_psf_field
    from utils.layered_renderer import LayeredRenderer
    from utils.noise import NoiseModel

    rng = np.random.default_rng(0)
    colours, masks, depths, _ = layered_scene(rng, (48, 64), (1.0, 8.0), max_objects=2)
    assert masks[0].min() == 1.0 and depths[0] == 8.0
    gt, depth = composite_sharp(colours, masks, depths)
    top = masks[-1] > 0
    np.testing.assert_array_equal(gt[top], colours[-1][top])
    assert np.all(depth[top] == depths[-1])
    renderer = LayeredRenderer(load_depth_psf_field(depth_psfs), (48, 64), dtype=torch.float64)
    lq = render_scene(renderer, colours, masks, depths, NoiseModel(), 0, linear_light=False)
    cols = torch.from_numpy(colours).permute(0, 3, 1, 2)[None].double()
    expected = renderer.render_layers(cols, torch.from_numpy(masks)[None, :, None].double(), depths.tolist())
    expected = np.round(expected.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(lq.astype(float) - expected).max() <= 1


def test_layered_needs_a_depth_file(tmp_path):
    flat = PSFSimulator("gaussian", grid_shape=(2, 2), psf_size=9, sensor_res=(32, 32)).simulate()
    save_psf_field(flat, tmp_path / "psfs.h5")
    run = run_step3("--psf_data_path", tmp_path, "--images", "builtin", "--out", tmp_path / "ds", "--scenes", "layered",
                    "--n_scenes", "train=1")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no depth axis" in run.stderr
    assert not (tmp_path / "ds").exists()
