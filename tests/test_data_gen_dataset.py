"""Step 3 (dataset generation): loadable HF folder, lq = re-render of gt, identical bytes,
sharded == single run, resume, refusal of mixed configurations, one-line errors."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from psf.field import load_psf_field, save_psf_field
from utils.errors import ConfigError, DataError
from utils.noise import NoiseModel
from psf.example_fields import elliptical_gaussian_field
from utils.sv_renderer import SVRenderer, simulate_capture

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "data_gen" / "3.generate_dataset_synthetic.py"


def load_script():
    spec = importlib.util.spec_from_file_location("generate_dataset_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


step3 = load_script()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A PSF folder (3×3 elliptical field, 48×64 sensor) and a folder of 7 mixed images."""
    root = tmp_path_factory.mktemp("inputs")
    save_psf_field(elliptical_gaussian_field(grid_shape=(3, 3), psf_size=11, sensor_res=(48, 64), sigma_radial=2.5), root / "psf")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    cv2.imwrite(str(images / "astronaut.png"), skimage.data.astronaut()[::4, ::4, ::-1])
    cv2.imwrite(str(images / "coffee.jpg"), skimage.data.coffee()[::3, ::3, ::-1])
    cv2.imwrite(str(images / "camera.png"), skimage.data.camera()[::5, ::5])  # grayscale
    cv2.imwrite(str(images / "sub" / "chelsea.bmp"), skimage.data.chelsea()[:, :, ::-1])
    cv2.imwrite(str(images / "sub" / "rocket.png"), skimage.data.rocket()[::4, ::4, ::-1])
    cv2.imwrite(str(images / "text.png"), skimage.data.text())  # smaller than... upscaled if needed
    cv2.imwrite(str(images / "brick.tif"), skimage.data.brick()[::4, ::4])
    (images / "notes.txt").write_text("not an image")
    return root


def run(inputs, out, *extra, noise=("--noise", "gaussian", "--sigma", "0.01", "0.03")):
    argv = ["--psf_data_path", str(inputs / "psf"), "--images", str(inputs / "images"), "--out", str(out),
            "--seed", "3", "--splits", "train=0.6,validation=0.2,test=0.2", "--samples_per_shard", "4",
            "--workers", "1", *noise, *extra]
    return step3.main(argv)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rerender(sample, renderer: SVRenderer, render_space="linear") -> np.ndarray:
    gt = torch.from_numpy(np.array(sample["gt"])).permute(2, 0, 1)[None].double() / 255
    noise = NoiseModel(sample["noise"], sample["sigma"], sample["photons"], sample["read_noise"])
    y = simulate_capture(gt, renderer, noise, torch.Generator().manual_seed(sample["noise_seed"]),
                         linear_light=render_space == "linear", bits=None)
    return y[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def dataset(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ds"
    assert run(inputs, out, "--samples_per_image", "2") == 0
    return out


def test_folder_loads_with_datasets_and_lq_is_the_rerendered_gt(dataset, tmp_path):
    import datasets

    ds = datasets.load_dataset(str(dataset), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation", "test"}
    assert [len(ds[s]) for s in ("train", "validation", "test")] == [10, 2, 2]  # 7 images: 5/1/1, 2 samples each
    assert sorted(p.name for p in (dataset / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet", "validation-00000-of-00001.parquet"]
    field = load_psf_field(dataset / "psfs" / "psfs.h5")
    renderer = SVRenderer(field, field.sensor_res, "reflect", "full", dtype=torch.float64)
    keys, worst = [], 0.0
    for split in ds:
        for sample in ds[split]:
            keys.append(sample["key"])
            assert sample["gt"].size == (64, 48) and sample["lq"].size == (64, 48) and sample["gt"].mode == "RGB"
            assert sample["psf_file"] == "psfs/psfs.h5" and sample["noise"] == "gaussian"
            assert 0.01 <= sample["sigma"] <= 0.03
            lq = np.array(sample["lq"]).astype(np.float64)
            expect = np.clip(rerender(sample, renderer), 0, 1) * 255
            worst = max(worst, np.abs(expect - lq).max())
            assert np.array_equal(np.round(expect), lq)  # float64 render: the stored 8-bit levels exactly
    assert worst <= 0.5 + 1e-9
    assert len(set(keys)) == len(keys) and "sub__chelsea_001" in keys
    # The split is by image: both samples of an image sit in the same split.
    by_split = {s: {k.rsplit("_", 1)[0] for k in ds[s]["key"]} for s in ds}
    assert not (by_split["train"] & by_split["validation"]) and not (by_split["train"] & by_split["test"])
    # lq is really blurred + noisy, not a copy.
    sample = ds["train"][0]
    assert np.abs(np.array(sample["gt"], np.float64) - np.array(sample["lq"], np.float64)).mean() > 2


def test_dataset_card_and_manifest(dataset):
    card = (dataset / "README.md").read_text()
    front = card.split("---")[1]
    import yaml

    meta = yaml.safe_load(front)
    assert meta["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert {f["name"] for f in meta["dataset_info"]["features"]} >= {"gt", "lq", "key", "noise_seed"}
    assert "--seed 3" in card and "--noise gaussian --sigma 0.01 0.03" in card and "--out DATASET_DIR" in card
    assert str(dataset) not in card  # nothing about where it was written
    assert (dataset / "generation.json").is_file()
    assert (dataset / "psfs" / "psfs.h5").stat().st_mode & 0o044  # readable by others like any file


def test_same_seed_same_bytes_any_process_layout(inputs, dataset, tmp_path):
    """A fresh run, and a 3-task job array + merge: byte-identical folders."""
    ref = tree(dataset)
    assert run(inputs, tmp_path / "again", "--samples_per_image", "2") == 0
    assert tree(tmp_path / "again") == ref
    array = tmp_path / "array"
    for task in (2, 0, 1):
        assert run(inputs, array, "--samples_per_image", "2", "--task_index", str(task), "--num_tasks", "3") == 0
        assert not (array / "README.md").exists()
    assert step3.main(["--merge", "--out", str(array)]) == 0
    assert tree(array) == ref
    # Another seed gives other pixels.
    assert run(inputs, tmp_path / "seed4", "--samples_per_image", "2", "--seed", "4") == 0
    assert tree(tmp_path / "seed4")["data/test-00000-of-00001.parquet"] != ref["data/test-00000-of-00001.parquet"]


@pytest.mark.slow
def test_worker_processes_give_the_same_bytes(inputs, dataset, tmp_path):
    assert run(inputs, tmp_path / "pool", "--samples_per_image", "2", "--workers", "2") == 0
    assert tree(tmp_path / "pool") == tree(dataset)


def test_resume_skips_finished_shards_and_leaves_nothing_partial(inputs, dataset, tmp_path, monkeypatch):
    import data_gen.step3_writer as engine

    out = tmp_path / "ds"
    real = engine.render_sample
    calls = {"n": 0}

    def crash_after_six(sample):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return real(sample)

    monkeypatch.setattr(engine, "render_sample", crash_after_six)
    with pytest.raises(KeyboardInterrupt):
        run(inputs, out, "--samples_per_image", "2")
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert shards == ["train-00000-of-00003.parquet"]  # 6 rendered: one full shard of 4, the next never half-written
    assert not (out / "README.md").exists()
    first = (out / "data" / shards[0]).stat().st_mtime_ns
    monkeypatch.setattr(engine, "render_sample", real)
    calls["n"] = 0
    (out / "data" / ".train-00001-of-00003.parquet.x.tmp").write_bytes(b"stale")  # as a kill -9 would leave
    assert run(inputs, out, "--samples_per_image", "2") == 0
    assert (out / "data" / shards[0]).stat().st_mtime_ns == first  # not redone
    assert tree(out) == tree(dataset)


def test_resume_with_other_arguments_is_refused(inputs, dataset):
    with pytest.raises(DataError, match=r"started with other inputs: arguments differ \(seed: 3 -> 5\)"):
        step3.main(["--psf_data_path", str(inputs / "psf"), "--images", str(inputs / "images"), "--out", str(dataset),
                    "--seed", "5", "--splits", "train=0.6,validation=0.2,test=0.2", "--samples_per_shard", "4",
                    "--workers", "1", "--noise", "gaussian", "--sigma", "0.01", "0.03", "--samples_per_image", "2"])


def test_split_names_and_fractions(inputs, tmp_path):
    out = tmp_path / "ds"
    run(inputs, out, "--split_names", "validation=coffee,sub/rocket", "--split_names", "test=camera.png",
        "--splits", "train=0.8,validation=0.1,test=0.1", noise=("--noise", "none"))
    import pyarrow.parquet as pq

    keys = {s: pq.read_table(next((out / "data").glob(f"{s}-*"))).column("key").to_pylist()
            for s in ("train", "validation", "test")}
    assert keys["validation"] == ["coffee_000", "sub__rocket_000"] and keys["test"] == ["camera_000"]
    assert len(keys["train"]) == 4
    with pytest.raises(ConfigError, match="no source image named 'cofee'; did you mean 'coffee.jpg'"):
        run(inputs, tmp_path / "x", "--split_names", "validation=cofee")
    assert not (tmp_path / "x").exists()


def test_crops_keep_the_sensor_aspect(dataset):
    import json

    import pyarrow.parquet as pq

    sizes = {s["name"]: (s["width"], s["height"]) for s in json.loads((dataset / "generation.json").read_text())["sources"]}
    rows = [r for p in sorted((dataset / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 14
    for row in rows:
        x0, y0, w, h = row["crop_box"]
        sw, sh = sizes[row["source"]]
        assert abs(w / h - 64 / 48) < 0.05 and 0 <= x0 <= sw - w and 0 <= y0 <= sh - h
        if row["key"].endswith("_000"):  # the largest centred window
            assert (w == sw or h == sh) and abs(x0 - (sw - w) / 2) <= 1 and abs(y0 - (sh - h) / 2) <= 1
        else:  # a random window between min_crop (0.5) and 1 times that
            largest = min(sw / 64, sh / 48)
            assert 0.5 * largest * 64 - 1 <= w <= largest * 64 + 1


def test_poisson_gaussian_linear_light(inputs, tmp_path):
    import datasets

    out = tmp_path / "pg"
    run(inputs, out, "--splits", "train=1", noise=("--noise", "poisson_gaussian", "--photons", "100", "1000", "--read_noise", "3"))
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    field = load_psf_field(out / "psfs" / "psfs.h5")
    renderer = SVRenderer(field, field.sensor_res, dtype=torch.float64)
    photons = []
    for sample in ds:
        photons.append(sample["photons"])
        assert np.array_equal(np.round(np.clip(rerender(sample, renderer), 0, 1) * 255), np.array(sample["lq"]))
    assert all(100 <= p <= 1000 for p in photons) and len(set(photons)) == len(photons)


# -- bad input: one line, non-zero exit, nothing written ---------------------------------------------------
def test_bad_inputs_fail_cleanly(inputs, tmp_path):
    out = tmp_path / "out"
    base = ["--psf_data_path", str(inputs / "psf"), "--images", str(inputs / "images"), "--out", str(out), "--workers", "1"]
    with pytest.raises(DataError, match="PSF file not found"):
        step3.main([*base[:1], str(tmp_path / "nope"), *base[2:]])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images in"):
        step3.main([*base[:3], str(empty), *base[4:]])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"cannot read image .*b\.png"):
        step3.main([*base[:3], str(broken), *base[4:]])
    with pytest.raises(ConfigError, match="split fractions must sum to 1"):
        step3.main([*base, "--splits", "train=0.5,validation=0.2"])
    with pytest.raises(ConfigError, match="--sigma takes one value or LOW HIGH"):
        step3.main([*base, "--noise", "gaussian", "--sigma", "0.1", "0.2", "0.3"])
    with pytest.raises(DataError, match="shards are missing"):
        half = tmp_path / "half"
        run(inputs, half, "--task_index", "0", "--num_tasks", "2")
        step3.main(["--merge", "--out", str(half)])
    assert not out.exists()  # nothing partial
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match="exists and is not empty"):
        step3.main([*base[:5], str(tmp_path / "taken"), *base[6:]])


def test_cli_error_is_one_line(tmp_path):
    for extra in (["--psf_data_path", str(tmp_path / "nope"), "--images", "builtin"], ["--bogus"]):
        proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o"), *extra],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "o").exists()
    help_text = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True).stdout
    assert "--task_index" in help_text and "--psf_data_path" in help_text


def test_keys_are_unique_when_stems_clash():
    from data_gen.step3_writer import GenerationConfig, make_plan

    cfg = GenerationConfig(psf_data_path="p", images="imgs", splits={"train": 1.0}, samples_per_image=2)
    sources = [{"name": n, "bytes": 1, "height": 10, "width": 10} for n in ("a.jpg", "a.png", "b.png", "sub/a.png")]
    keys = [s.key for s in make_plan(cfg, sources)["train"]]
    assert keys == ["a_jpg_000", "a_jpg_001", "a_png_000", "a_png_001", "b_000", "b_001", "sub__a_000", "sub__a_001"]
