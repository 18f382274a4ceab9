"""Model card (``README.md``) of a ``best/`` or ``last/`` folder: what the network does, how it was
trained and scored, and how to load it. ``push_to_hub`` uploads it with the weights, so the
Hub page says the same.

``write_model_card(folder, info)``; ``info`` keys (all optional except ``network``):

* ``name``: experiment name (the title).
* ``network``: network type (``NAFNet``); ``kind``, ``scale``, ``inputs``, ``receptive_radius``:
  from the network's ``ArchIO``; ``params``: learnable parameters (``model_card_info(net)``
  fills all of them).
* ``task``: the model class / what it was trained for (``PairedRestoration_model``, "deblurring").
* ``data``: a string or ``{split: description}``.
* ``metrics``: ``{metric: value}`` on the validation set; ``metric_convention``: how they were
  computed (range, crop border, Y channel, averaging), printed next to them.
* ``step``: training step of these weights; ``repo_id``: the Hub id, for the loading example.
* ``tags``: extra Hub tags; ``license``.

The number of stored values is also read from the folder's safetensors files (what was saved,
parameters + buffers), and printed when it differs from ``params``.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from utils.atomic import atomic_write_text

PIPELINE_TAGS = {"image": "image-to-image", "clip2frame": "image-to-image", "clip2clip": "image-to-image",
                 "autoencoder": "image-to-image", "denoiser": "image-to-image"}
KIND_WORDS = {
    "image": "image → image",
    "clip2clip": "video clip → clip (B×T×C×H×W)",
    "clip2frame": "video clip → its centre frame",
    "critic": "critic: image(s) → score map",
    "autoencoder": "autoencoder: image → latent → image",
    "denoiser": "diffusion denoiser (x_t, t, cond)",
}


def count_saved_parameters(folder: str | Path) -> int | None:
    """Number of values stored in ``folder``'s safetensors file(s), including those of the
    per-network subfolders of a several-network export (None if there is none)."""
    from safetensors import safe_open

    files = sorted(Path(folder).rglob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def model_card_info(net) -> dict:
    """``network``, ``kind``, ``scale``, ``inputs`` and ``receptive_radius`` of a lab network."""
    io = net.io
    name = type(net).__name__.removesuffix("_arch")
    return {"network": name, "kind": io.kind, "scale": io.scale, "inputs": dict(io.inputs),
            "receptive_radius": io.receptive_radius, "params": sum(p.numel() for p in net.parameters())}


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_model_card(info: dict, stored: int | None = None) -> str:
    """The card's text (YAML front matter + Markdown sections); ``stored``: values in the saved
    weight files (parameters + buffers such as BatchNorm statistics)."""
    kind = info.get("kind", "image")
    network = info.get("network", "?")
    tags = ["restorelab", "image-restoration", "transformers", kind] + list(info.get("tags", []))
    front = {"library_name": "restorelab", "tags": list(dict.fromkeys(tags))}
    if kind in PIPELINE_TAGS:
        front["pipeline_tag"] = PIPELINE_TAGS[kind]
    if info.get("license"):
        front["license"] = info["license"]
    metrics = info.get("metrics") or {}
    if metrics:  # Hub "model-index" is heavier than needed; plain key/values stay readable
        front["metrics"] = sorted(metrics)

    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {info.get('name') or network}", ""]
    lines += ["## Task", ""]
    if info.get("task"):
        lines.append(f"- Task: {info['task']}")
    lines.append(f"- Kind: {KIND_WORDS.get(kind, kind)}")
    scale = info.get("scale", 1)
    if scale and scale != 1:
        lines.append(f"- Scale: ×{scale}" + (" (latent downsampling)" if kind == "autoencoder" else ""))
    if info.get("inputs"):
        lines.append("- Inputs: " + ", ".join(f"`{k}` ({v})" for k, v in info["inputs"].items()))
    lines += ["", "## Network", "", f"- Type: `{network}` (restorelab `models/archs`)"]
    params = info.get("params")
    if params is not None:
        lines.append(f"- Parameters: {params:,} ({params / 1e6:.2f} M)")
    if stored is not None and stored != params:
        lines.append(f"- Stored weights (parameters + buffers): {stored:,}")
    if info.get("receptive_radius") is not None:
        lines.append(f"- Receptive radius: {info['receptive_radius']} px (tiled inference with overlap ≥ "
                     f"{2 * info['receptive_radius']} is exact)")
    if info.get("step") is not None:
        lines.append(f"- Training step of these weights: {info['step']}")
    lines += ["", "## Data", ""]
    data = info.get("data")
    if isinstance(data, dict):
        lines += [f"- {split}: {desc}" for split, desc in data.items()]
    else:
        lines.append(str(data) if data else "Not recorded.")
    lines += ["", "## Validation metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        if info.get("metric_convention"):
            lines += ["", f"Convention: {info['metric_convention']}"]
    else:
        lines.append("Not validated.")
    where = info.get("repo_id") or "path/to/this/folder"
    lines += ["", "## How to load", "", "```python",
              "import models.archs  # the restorelab checkout: registers its networks with transformers",
              "from transformers import AutoModel", "",
              f'net = AutoModel.from_pretrained("{where}").eval()', "```", "",
              "Restore images with no ground truth (tiled, any size):", "", "```bash",
              f"python scripts/restore.py --model {where} --input photos/ --output restored/ --tile 512",
              "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, info: dict) -> Path:
    """Write ``folder/README.md`` (atomically) from ``info`` (module docstring) and the saved weights."""
    folder = Path(folder)
    info = dict(info)
    if "network" not in info:
        config = folder / "config.json" if (folder / "config.json").is_file() else folder / "net" / "config.json"
        if config.is_file():  # fall back to the saved architecture name
            arch = (json.loads(config.read_text()).get("architectures") or ["?"])[0]
            info["network"] = arch.removesuffix("_arch")
    return atomic_write_text(folder / "README.md", render_model_card(info, count_saved_parameters(folder)))
