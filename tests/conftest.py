"""Shared pytest setup: project root on sys.path, deterministic torch, fixture paths."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# ../shared/fixtures beside the checkout (CI puts ../shared next to the clone).
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {SHARED_FIXTURES} (../shared must sit beside the checkout)")
    return SHARED_FIXTURES


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.manual_seed(0)
    yield


# The session-scoped local Slurm cluster fixture (tests/slurm_cluster.py), for tests marked slurm.
from slurm_cluster import slurm_cluster  # noqa: E402,F401
