"""Datasets: ``datasets.<split>.type: X`` -> class ``X`` in ``dataset/*_dataset.py``."""
from __future__ import annotations

from collections.abc import Mapping

from utils.errors import ConfigError
from utils.registry import DATASETS, check_keywords, keyword_names


def dataset_names() -> list[str]:
    return DATASETS.names()


def check_dataset_options(opt: Mapping, prefix: str = "datasets") -> None:
    """Raise ConfigError for a missing ``type`` or a keyword the dataset class does not take."""
    if "type" not in opt:
        raise ConfigError(f"{prefix}.type is required (one of: {', '.join(dataset_names())})")
    valid = keyword_names(DATASETS.get(opt["type"]).__init__)
    check_keywords(opt, valid, prefix, f"dataset {opt['type']}")


def create_dataset(opt: Mapping):
    """Build a dataset from its options mapping (``type`` + constructor keywords)."""
    opt = dict(opt)
    check_dataset_options(opt)
    return DATASETS.get(opt.pop("type"))(**opt)
