"""Loading the official video-SR fixtures (../shared/fixtures/video, see its README)."""
from __future__ import annotations

import json

from safetensors.torch import load_file

from conftest import SHARED_FIXTURES

VIDEO = SHARED_FIXTURES / "video"


def load(name: str) -> dict:
    return load_file(str(VIDEO / f"{name}.safetensors"))


def meta(name: str) -> dict:
    return json.loads((VIDEO / f"{name}.json").read_text())


def state_dict(tensors: dict) -> dict:
    return {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}


def full_state_dict(name: str) -> tuple[dict, dict]:
    """(tensors, official state dict with the shared SpyNet entries merged in, as the README says)."""
    tensors = load(name)
    full = state_dict(tensors)
    full.update({"spynet." + k: v for k, v in state_dict(load("spynet_official")).items()})
    return tensors, full
