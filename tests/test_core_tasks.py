"""Tasks other than same-size restoration run on the core unchanged: a toy ×2 SR network and a toy
3-frame clip network (checkpoints/toy_sr_x2.yml, checkpoints/toy_clip3.yml) train 20 steps, validate
tiled (tiled = whole within 1e-5: both have a bounded receptive field and the overlap covers it),
and report metrics in their field's convention (SR: Y, crop = scale; clips: per frame, mean per clip)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def train(config: str, root: Path, name: str) -> Path:
    from trainer import main

    assert main(["-opt", str(ROOT / "checkpoints" / config), f"path.root={root}", f"name={name}",
                 "report_to=[]", "val.log_images=0"]) == 0
    return root / name


def tiled_and_whole(run: Path):
    """Predictions of the trained (best/) network on the first validation sample, whole and tiled."""
    from dataset import create_dataset
    from models import create_model
    from trainer import dataset_options
    from utils.config import load_config
    from utils.registry import DATASETS, keyword_names

    cfg = load_config(run / "config.yaml")
    model = create_model(cfg)
    model.load_pretrained(run / "best")
    model.eval()
    options = dataset_options(cfg.datasets.val.to_dict(), keyword_names(DATASETS.get(cfg.datasets.val["type"]).__init__),
                              cfg.seed, model.batch_keys(), split="val")
    sample = create_dataset(options)[0]
    batch = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in sample.items()}
    with torch.no_grad():
        whole = model.predict(batch)
        tiled = model.predict(batch, tile=(cfg.val.patch_size, cfg.val.overlap))
    return batch, whole, tiled


@pytest.mark.slow
def test_toy_x2_sr_trains_validates_tiled_and_scores_like_sr_papers(tmp_path):
    run = train("toy_sr_x2.yml", tmp_path, "sr")
    report = json.loads((run / "results" / "val" / "step-20" / "metrics.json").read_text())
    conv = report["convention"]
    assert conv["crop_border"] == 2 and conv["test_y_channel"] is True and conv["n_images"] == 3
    assert sorted(report["per_image"]) == ["astronaut.png", "camera.png", "coffee.png"]
    batch, whole, tiled = tiled_and_whole(run)
    h, w = batch["lq"].shape[-2:]
    assert whole.shape[-2:] == (2 * h, 2 * w) == batch["gt"].shape[-2:]
    assert h > 48 and w > 48  # several tiles
    assert (tiled - whole).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_toy_3_frame_clip_network_reports_per_clip_metrics(tmp_path):
    run = train("toy_clip3.yml", tmp_path, "clip")
    folder = run / "results" / "val" / "step-20"
    report = json.loads((folder / "metrics.json").read_text())
    assert report["convention"]["average"] == "clip"
    frames = report["per_image"]
    clips = report["per_clip"]
    assert len(clips) == 3 and len(frames) == 15  # 3 held-out clips x 5 frames, every frame scored
    for clip, values in clips.items():
        own = [v["psnr"] for name, v in frames.items() if name.startswith(f"{clip}/")]
        assert len(own) == 5 and math.isclose(values["psnr"], sum(own) / 5, rel_tol=1e-12)
    mean_of_clips = sum(v["psnr"] for v in clips.values()) / 3
    assert math.isclose(report["mean"]["psnr"], mean_of_clips, rel_tol=1e-12)
    assert (folder / "metrics_per_clip.csv").is_file()
    batch, whole, tiled = tiled_and_whole(run)
    assert batch["lq"].shape[1] == 5 and whole.shape == batch["gt"].shape  # every frame from its 3-frame window
    assert (tiled - whole).abs().max().item() <= 1e-5
