"""Experiment tracking: TensorBoard and Comet ML through Accelerate's trackers, plus the text log.

* TensorBoard: event files in ``{run}/logs/tensorboard/``.
* Comet ML: online when ``COMET_API_KEY`` is set and the Comet server answers (project from
  ``COMET_PROJECT_NAME``, default "restorelab"; workspace from ``COMET_WORKSPACE``), otherwise
  an offline archive (``.zip``, uploadable later with ``comet upload``) in ``{run}/logs/comet/``.
  Before going online the server is asked once, for at most ``RESTORELAB_TRACKER_TIMEOUT``
  seconds (default 5; DNS included), whether it is there: a cluster node without internet
  (no route, DNS failure, refused, no answer) logs offline at once, with one line saying so,
  instead of comet_ml retrying for half a minute and then logging nothing. An online run that
  loses the server later keeps its data in the same folder (comet_ml's own fallback). Offline
  mode is chosen with ``comet_ml.start(online=False)``; the key is read by comet_ml from the
  environment and never passed, logged or saved here. Code, git and environment capture are
  off: a run logs what the trainer logs. TensorBoard writes local files only: Comet is the one
  online tracker the lab supports.
* ``logs/train.log``: the text log (main process), mirrored on the console above the bar.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from utils.errors import ConfigError

LOGGER_NAME = "restorelab"


TRACKER_TIMEOUT_ENV = "RESTORELAB_TRACKER_TIMEOUT"
DEFAULT_TRACKER_TIMEOUT = 5.0


def tracker_timeout() -> float:
    """Seconds an online tracker's server gets to answer (``RESTORELAB_TRACKER_TIMEOUT``, default 5)."""
    text = os.environ.get(TRACKER_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TRACKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{TRACKER_TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def server_problem(url: str, timeout: float) -> str | None:
    """None when ``url`` answers a GET with a success status within ``timeout`` seconds (name
    resolution included: the request runs in a daemon thread that is given up on), else why not."""
    import requests

    outcome: list[str | None] = []

    def ask():
        try:
            response = requests.get(url, timeout=timeout)
            outcome.append(None if response.ok else f"HTTP {response.status_code}")
        except requests.RequestException as exc:
            found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
            outcome.append(found.group(1).strip() if found else type(exc).__name__)

    thread = threading.Thread(target=ask, name="tracker-server-check", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def comet_server_url() -> str:
    """The URL comet_ml checks first (``clientlib/isAlive/ver`` of the configured server:
    ``COMET_URL_OVERRIDE``, the base URL an on-premises API key carries, or comet.com)."""
    from comet_ml.config import get_api_key, get_comet_root_url, get_config
    from comet_ml.connection.connection_url_helpers import get_backend_version_url

    config = get_config()
    get_api_key(None, config)  # applies the server address an on-premises key carries
    return get_backend_version_url(get_comet_root_url(config))


def _comet_tracker_class():
    """Accelerate's Comet tracker, started online only when the server answers (else offline)."""
    from accelerate.tracking import CometMLTracker, on_main_process

    class CometTracker(CometMLTracker):
        def __init__(self, project: str, offline_dir: Path, experiment_config):
            super().__init__(project, experiment_config=experiment_config)
            self.offline_dir = offline_dir

        @on_main_process
        def start(self):
            import comet_ml

            log = logging.getLogger(LOGGER_NAME)
            settings = self.init_kwargs["experiment_config"]
            why_offline = None
            if os.environ.get("COMET_API_KEY"):
                url, limit = comet_server_url(), tracker_timeout()
                began = time.monotonic()
                why_offline = server_problem(url, limit)
                if why_offline:
                    why_offline = f"Comet server {url} not reachable ({why_offline}, {time.monotonic() - began:.1f} s)"
                else:
                    try:
                        writer = comet_ml.start(project_name=self.run_name, online=True, mode="create",
                                                experiment_config=settings)
                    except Exception as exc:  # a tracker that cannot start must not stop the run
                        why_offline = f"Comet did not start an online experiment ({type(exc).__name__})"
                    else:
                        if writer.alive:
                            self.writer = writer
                            return
                        writer.end()
                        why_offline = "Comet did not start an online experiment (see its message above)"
            self.offline_dir.mkdir(parents=True, exist_ok=True)
            # mode "create" (a new experiment, as every run is): the archive is named after the experiment key
            self.writer = comet_ml.start(project_name=self.run_name, online=False, mode="create",
                                         experiment_config=settings)
            if why_offline:
                archive = self.offline_dir / f"{self.writer.get_key()}.zip"
                log.warning(f"{why_offline}: logging offline to {archive}; upload it later with: comet upload {archive}")

    return CometTracker


def make_trackers(report_to: tuple[str, ...], run_name: str, logs_dir: Path) -> list:
    """Accelerate tracker objects for ``report_to`` (started by ``accelerator.init_trackers``)."""
    from accelerate.tracking import TensorBoardTracker

    trackers = []
    for name in report_to:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("tensorboard", logs_dir))
        elif name == "comet_ml":
            # Auto-logging is off anyway (see below); this also silences comet's import-order warning.
            os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
            # No crash reports to comet's Sentry (without internet they retry at exit).
            os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
            try:
                import comet_ml
            except ImportError as exc:
                raise ConfigError("report_to: comet_ml needs the comet_ml package (pip install -c constraints.txt comet_ml)") from exc
            tracker_timeout()  # a malformed RESTORELAB_TRACKER_TIMEOUT fails here, before the run starts
            offline_dir = logs_dir / "comet"
            # Offline runs write their archive there; online runs keep there what a lost connection held back.
            settings = comet_ml.ExperimentConfig(
                name=run_name, offline_directory=str(offline_dir),
                log_code=False, log_graph=False, parse_args=False, log_git_metadata=False, log_git_patch=False,
                log_env_details=False, log_env_host=False, auto_output_logging=False, auto_log_co2=False,
                auto_param_logging=False, auto_metric_logging=False, display_summary_level=0,
            )
            project = os.environ.get("COMET_PROJECT_NAME", "restorelab")
            trackers.append(_comet_tracker_class()(project, offline_dir, settings))
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
