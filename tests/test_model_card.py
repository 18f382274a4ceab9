"""utils.model_card: README.md of a best/ folder — YAML front matter the Hub reads, the sections
(task, network + parameter count, data, metrics with their convention, how to load), and the
loading snippet actually loads the folder."""
from __future__ import annotations

import re

import torch
import yaml

from models.archs import define_network
from utils.model_card import model_card_info, write_model_card


def test_model_card(tmp_path):
    net = define_network({"type": "ToySR", "width": 6})
    net.save_pretrained(tmp_path)
    info = model_card_info(net) | {
        "name": "toy-sr-x2", "task": "PairedRestoration_model (x2 super-resolution)",
        "data": {"train": "quickstart train (step 3)", "val": "quickstart val, 3 images"},
        "metrics": {"psnr": 27.12345, "ssim": 0.8123}, "metric_convention": "RGB, [0, 1], crop_border 0, mean over images",
        "step": 20, "repo_id": "someone/toy-sr",
    }
    path = write_model_card(tmp_path, info)
    text = path.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "restorelab" and front["pipeline_tag"] == "image-to-image"
    assert {"restorelab", "image"} <= set(front["tags"])
    for section in ("## Task", "## Network", "## Data", "## Validation metrics", "## How to load"):
        assert section in text
    n_params = sum(p.numel() for p in net.parameters())
    assert f"Parameters: {n_params:,}" in text
    assert "| psnr | 27.1234 |" in text and "crop_border 0" in text and "Scale: ×2" in text
    assert "quickstart val, 3 images" in text and "step of these weights: 20" in text
    assert "scripts/restore.py --model someone/toy-sr" in text
    # The snippet's loading line works on the folder (with the folder's path).
    line = re.search(r'net = AutoModel\.from_pretrained\("([^"]+)"\)', text)
    assert line and line.group(1) == "someone/toy-sr"
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.state_dict()["body.0.weight"], net.state_dict()["body.0.weight"])
    assert not list(tmp_path.glob(".README*"))  # atomic write left no temporary file


def test_model_card_minimal(tmp_path):
    net = define_network({"type": "DnCNN", "width": 4, "depth": 3})
    net.save_pretrained(tmp_path)
    text = write_model_card(tmp_path, {}).read_text()
    assert "`DnCNN`" in text and "Not validated." in text and "Not recorded." in text
    stored = sum(t.numel() for t in net.state_dict().values())  # + BatchNorm running statistics
    assert stored > sum(p.numel() for p in net.parameters())
    assert f"Stored weights (parameters + buffers): {stored:,}" in text


def test_model_card_of_a_several_network_export(tmp_path):
    """best/ with net/ and another exported network: parameters of both, network read from net/."""
    a = define_network({"type": "DnCNN", "width": 4, "depth": 3})
    b = define_network({"type": "ToyCritic", "width": 4})
    a.save_pretrained(tmp_path / "net")
    b.save_pretrained(tmp_path / "discriminator")
    total = sum(t.numel() for t in a.state_dict().values()) + sum(t.numel() for t in b.state_dict().values())
    text = write_model_card(tmp_path, {}).read_text()
    assert f"Stored weights (parameters + buffers): {total:,}" in text and "`DnCNN`" in text
