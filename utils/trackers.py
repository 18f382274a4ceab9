"""Experiment tracking: TensorBoard and Comet ML through Accelerate's trackers, plus the text log.

* TensorBoard: event files in ``{run}/logs/tensorboard/``.
* Comet ML: online when ``COMET_API_KEY`` is set (project from ``COMET_PROJECT_NAME``,
  default "restorelab"; workspace from ``COMET_WORKSPACE``), otherwise an offline archive
  (``.zip``, uploadable later with ``comet upload``) in ``{run}/logs/comet/``. Offline mode is
  chosen with ``comet_ml.start(online=False)``; the key is read by comet_ml from the
  environment and never passed, logged or saved here. Code, git and environment capture are
  off: a run logs what the trainer logs.
* ``logs/train.log``: the text log (main process), mirrored on the console above the bar.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from utils.errors import ConfigError

LOGGER_NAME = "restorelab"


def make_trackers(report_to: tuple[str, ...], run_name: str, logs_dir: Path) -> list:
    """Accelerate tracker objects for ``report_to`` (started by ``accelerator.init_trackers``)."""
    from accelerate.tracking import CometMLTracker, TensorBoardTracker

    trackers = []
    for name in report_to:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("tensorboard", logs_dir))
        elif name == "comet_ml":
            # Auto-logging is off anyway (see below); this also silences comet's import-order warning.
            os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
            try:
                import comet_ml
            except ImportError as exc:
                raise ConfigError("report_to: comet_ml needs the comet_ml package (pip install -c constraints.txt comet_ml)") from exc
            online = bool(os.environ.get("COMET_API_KEY"))
            settings = comet_ml.ExperimentConfig(
                name=run_name,
                offline_directory=None if online else str(logs_dir / "comet"),
                log_code=False, log_graph=False, parse_args=False, log_git_metadata=False, log_git_patch=False,
                log_env_details=False, log_env_host=False, auto_output_logging=False, auto_log_co2=False,
                auto_param_logging=False, auto_metric_logging=False, display_summary_level=0,
            )
            project = os.environ.get("COMET_PROJECT_NAME", "restorelab")
            trackers.append(CometMLTracker(project, online=online, experiment_config=settings))
        else:
            raise ConfigError(f"report_to: unknown tracker {name!r}")
    return trackers


def flat_config(tree: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}`` with lists as strings (tracker params)."""
    out = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_config(value, full))
        elif isinstance(value, (list, tuple)):
            out[full] = str(list(value))
        else:
            out[full] = value
    return out


def log_config(accelerator, config_tree: dict, config_yaml: str) -> None:
    """Store the resolved config: Comet parameters, TensorBoard text."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "comet_ml":
            tracker.writer.log_parameters(flat_config(config_tree))
        elif tracker.name == "tensorboard":
            tracker.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", global_step=0)
            tracker.writer.flush()


def log_images(accelerator, images: dict[str, np.ndarray], step: int) -> None:
    """Log H×W×3 uint8 images (e.g. input | output | ground truth grids) to every tracker."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        for tag, image in images.items():
            if tracker.name == "tensorboard":
                tracker.writer.add_image(tag, image, global_step=step, dataformats="HWC")
            elif tracker.name == "comet_ml":
                tracker.writer.log_image(image, name=tag.replace("/", "_"), step=step)
        if tracker.name == "tensorboard":
            tracker.writer.flush()


class _TqdmHandler(logging.Handler):
    """Console lines printed above the progress bar instead of through it."""

    def emit(self, record):
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let logging break training
            self.handleError(record)


def setup_text_log(log_file: Path | None, console: bool = True) -> logging.Logger:
    """The trainer's logger: ``log_file`` (append) and the console; ``None`` -> console only.
    Call on the main process only; other processes log nothing."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    if console:
        console_handler = _TqdmHandler()
        console_handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console_handler)
    return logger


def silent_logger() -> logging.Logger:
    """A logger that drops everything (non-main processes)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
