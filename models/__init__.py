"""Models (training logic per task): ``model_type: X`` -> class ``X`` in ``models/**/*_model.py``."""
from __future__ import annotations

from utils.registry import MODELS


def model_names() -> list[str]:
    return MODELS.names()


def create_model(opt, **kwargs):
    """Build the model named by ``opt.model_type`` (an earlier name is accepted) from the
    experiment config ``opt``."""
    from utils.config import MODEL_TYPE_ALIASES

    model_cls = MODELS.get(MODEL_TYPE_ALIASES.get(opt.model_type, opt.model_type))
    return model_cls(opt, **kwargs)
