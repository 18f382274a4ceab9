#!/usr/bin/env python
"""Train, validate and test restoration models from an experiment YAML.

    accelerate launch trainer.py -opt checkpoints/NAFNet.yml [--resume auto|PATH] [a.b=c ...]
    accelerate launch trainer.py -opt checkpoints/NAFNet.yml -test [--weights PATH]
    torchrun --nproc_per_node 2 trainer.py -opt ...          (CPU: gloo, one process per rank)

The trainer owns the loop: Accelerate (processes, mixed precision, gradient accumulation),
the data order, logging (text log, tqdm, TensorBoard, Comet ML), validation, EMA and
checkpoints. The model (``model_type``) owns its networks, losses and one optimisation step.
Run directory ``{path.root}/{name}/``: config.yaml, checkpoints/checkpoint-{step}/, best/,
last/, logs/, results/ (docs/training.md).

Exit codes: 0 done; 2 bad input (one line on stderr; --debug for the traceback); 75 stopped
by SIGTERM/SIGUSR1 after writing a checkpoint (requeue, then --resume auto).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from utils.atomic import atomic_dir, recover_dir
from utils.errors import ConfigError, DataError, RestorelabError, run_cli

EXIT_REQUEUE = 75  # os.EX_TEMPFAIL: Slurm scripts requeue on it
CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
MODEL_STATE_FILE = "model_state.json"  # the model's own state (phase, counters...): BaseModel.state_dict
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingError(RestorelabError):
    """Training cannot go on (e.g. a NaN loss); the last good checkpoint is kept."""


class SharedDataError(DataError):
    """Bad data met by one process, raised on every process at once (the main process reports it)."""


def error_line(exc: BaseException) -> str:
    """The one-line message of an error, also of one re-raised from a DataLoader worker process
    (torch wraps it as "Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1].strip()
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def process_seed(seed: int, rank: int) -> int:
    """Seed of process ``rank``'s global RNGs during training (dropout, noise drawn inside a model):
    a different stream per process, fixed by (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank, 0x5EED]).generate_state(1, dtype=np.uint32)[0])


# ---------------------------------------------------------------------------------------------
# Data order


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s sample permutation (independent streams per (seed, epoch))."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


class TrainStream:
    """Per-process training micro-batches in an order fixed by (seed, epoch) alone.

    Epoch e is a permutation of the dataset drawn from ``epoch_seed(seed, e)``. Global
    micro-batch g holds its samples [g·G, (g+1)·G) with G = batch_size × processes, and
    process r takes [r·batch_size, (r+1)·batch_size) of those, so N processes see exactly
    the samples one process would with an N× batch. Incomplete last batches are dropped.
    ``start`` is the number of micro-batches already consumed (resume: no sample is loaded
    to skip them). ``dataset.set_epoch(e)`` is called before each epoch, so per-sample
    randomness can be drawn from (seed, epoch, index).
    """

    def __init__(self, dataset, batch_size: int, rank: int, world: int, seed: int, num_workers: int = 0,
                 start: int = 0, pin_memory: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.seed = seed
        self.num_workers = num_workers
        self.start = start
        self.pin_memory = pin_memory
        self.global_batch = batch_size * world
        self.batches_per_epoch = len(dataset) // self.global_batch

    def epoch_batches(self, epoch: int, first: int = 0) -> list[list[int]]:
        """This process's index lists for global micro-batches ``first``.. of ``epoch``."""
        perm = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
        out = []
        for g in range(first, self.batches_per_epoch):
            lo = g * self.global_batch + self.rank * self.batch_size
            out.append(perm[lo: lo + self.batch_size].tolist())
        return out

    def __iter__(self) -> Iterator[dict]:
        from torch.utils.data import DataLoader

        epoch, first = divmod(self.start, self.batches_per_epoch)
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            loader = DataLoader(self.dataset, batch_sampler=self.epoch_batches(epoch, first),
                                num_workers=self.num_workers, pin_memory=self.pin_memory)
            yield from loader
            epoch, first = epoch + 1, 0


def dataset_options(options: dict, keywords: list[str], seed: int, batch_keys: tuple[str, ...],
                    split: str | None = None) -> dict:
    """Constructor keywords of a dataset: the YAML mapping plus what the experiment implies,
    for datasets that take them:

    * ``phase``: the split (``train``/``val``/``test``), so a validation set is never cropped or
      flipped at random. A YAML ``phase`` that contradicts the split is a ConfigError; ``val``
      and ``test`` are the same fixed evaluation, so either is accepted on either of those splits
      (``test: ${datasets.val}`` keeps working);
    * ``seed``: the experiment ``seed`` (training randomness comes from (seed, epoch, index)),
      where the YAML leaves it unset;
    * ``psf_keys``: the PSF entries (psf, basis_psfs, basis_coef) the model's networks read
      (their ``input_keys``), so a PSF-aware network gets them without extra YAML.
    """
    from dataset.psf_keys import psf_keys_for

    options = dict(options)
    if split is not None and "phase" in keywords:
        given = options.get("phase")
        if given is not None and given != split and "train" in (given, split):
            raise ConfigError(f"datasets.{split}.phase is {given!r} but the dataset is the {split!r} split; "
                              f"remove phase (the trainer sets it from the split)")
        options["phase"] = split
    if "seed" in keywords and "seed" not in options:
        options["seed"] = seed
    wanted = psf_keys_for(batch_keys)
    if wanted and "psf_keys" in keywords and options.get("psf_keys") is None:
        options["psf_keys"] = wanted
    return options


class MarkBadSamples(torch.utils.data.Dataset):
    """View of a dataset with ``skip_bad_samples: true`` that tags every sample with
    ``bad_sample``: "" for the sample asked for, else the error of the unreadable one it stands
    in for (the dataset's own policy picks the substitute). The tag survives DataLoader worker
    processes, so the trainer counts and logs skipped samples of every process and worker."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        try:
            sample = self.dataset.make_sample(index)
            sample["bad_sample"] = ""
        except DataError as exc:
            sample = self.dataset[index]
            sample["bad_sample"] = error_line(exc)
        return sample


# Evaluation (sharding, scoring, averaging, metrics files, grids) lives in utils/evaluation.py.


# ---------------------------------------------------------------------------------------------
# Checkpoint folders


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``checkpoint-{step}`` with a trainer state), oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = CHECKPOINT_RE.fullmatch(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def config_changes(saved: Path, cfg) -> list[str]:
    """``key: old -> new`` for every value of ``cfg`` that differs from the saved config.yaml."""
    from omegaconf import OmegaConf

    from utils.config import config_to_dict
    from utils.trackers import flat_config

    if not saved.is_file():
        return []
    old = flat_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=False) or {})
    new = flat_config(config_to_dict(cfg))
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_hub_credentials(repo_id: str) -> None:
    """Fail fast (before training) when pushing cannot work."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"push_to_hub: cannot push to {repo_id}: the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)")
    if not get_token():
        raise ConfigError(f"push_to_hub: no Hugging Face token to push to {repo_id}; set HF_TOKEN or run `hf auth login`")


def push_folder_to_hub(folder: Path, repo_id: str) -> str:
    """Upload a save_pretrained folder to a model repo (token from the environment)."""
    from huggingface_hub import HfApi

    check_hub_credentials(repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=f"restorelab: upload {folder.name}/")
    except Exception as exc:  # network, auth, permissions: one line, never the token
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"push_to_hub: upload of {folder} to {repo_id} failed: {first}") from exc
    return str(getattr(info, "commit_url", repo_id))


# ---------------------------------------------------------------------------------------------


class Trainer:
    """One experiment: ``fit()`` trains (resuming if asked), ``test()`` evaluates the test split."""

    def __init__(self, cfg, *, resume: str | None = None, mode: str = "train", weights: str | None = None):
        from models import create_model
        from utils.trackers import make_trackers

        self.cfg = cfg
        self.mode = mode
        self.run_dir = cfg.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        from accelerate.utils import set_seed

        # The model first (identical on every process: same seed), so its DDP options reach the
        # accelerator.
        set_seed(cfg.seed)
        self.model = create_model(cfg)
        self.accelerator = self._make_accelerator(make_trackers if mode == "train" else None)
        acc = self.accelerator
        self.is_main = acc.is_main_process

        # Everything that can fail on user input happens before the run directory is touched.
        if mode == "train" and cfg.push_to_hub:
            check_hub_credentials(cfg.hub_model_id)
        self.resume_from = self._find_resume(resume) if mode == "train" else None
        if mode == "train" and self.resume_from is None and list_checkpoints(self.ckpt_dir):
            raise ConfigError(f"{self.run_dir} already holds checkpoints; pass --resume auto to continue it "
                              f"or choose another name")

        if mode == "train":
            self.model.setup_training()
            if not self.model.trainable_networks():
                kinds = ", ".join(type(self.model.network(n)).__name__.removesuffix("_arch") for n in self.model.networks)
                raise ConfigError(f"network {kinds} has no trainable parameters: nothing to train; "
                                  f"evaluate it with -test (it runs as configured, without weights)")
        self.train_set = self._dataset("train") if mode == "train" else None
        self.val_set = self._dataset("val") if mode == "train" and cfg.datasets.val is not None else None
        self.test_set = self._dataset("test") if mode == "test" else None
        self._preflight()
        if mode == "test":
            self._load_test_weights(weights)
        elif cfg.path.pretrain_network:
            self.model.load_pretrained(cfg.path.pretrain_network)

        self._stop_signal = None
        self.model.prepare(acc, training=mode == "train", channels_last=cfg.train.channels_last)
        try:
            self._start(mode)
        except BaseException:
            self.release()
            raise

    def _start(self, mode: str) -> None:
        """Everything after the networks are wrapped: EMA, per-process seeds, the run directory,
        logs and trackers, and the resumed state."""
        from utils.trackers import setup_text_log, silent_logger

        cfg, acc = self.cfg, self.accelerator
        self.emas = {}
        settings = self.model.ema_settings() if mode == "train" else {}
        if settings:
            from utils.ema import EMA

            if acc.distributed_type.name == "FSDP":
                raise ConfigError("an EMA (train.ema_decay) is not supported with FSDP (each process holds only a "
                                  "shard of the weights to average); set train.ema_decay=null")
            self.emas = {n: EMA(self.model.network(n), s.decay, start_step=s.start_step) for n, s in settings.items()}
        # The networks were initialised alike on every process (seed above); what is drawn from the
        # global RNGs from now on (dropout, noise inside a model) differs between processes.
        from accelerate.utils import set_seed

        set_seed(process_seed(cfg.seed, acc.process_index))

        # The run directory, logs and trackers.
        changed: list[str] = []
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if mode == "train":
                from utils.config import save_config

                changed = config_changes(self.run_dir / "config.yaml", cfg) if self.resume_from else []
                save_config(cfg, self.run_dir / "config.yaml")
                self._clean_temporary()
            self.log = setup_text_log(self.run_dir / "logs" / ("train.log" if mode == "train" else "test.log"))
        else:
            self.log = silent_logger()
        for line in changed:
            self.log.warning(f"config changed since the previous run: {line}")
        acc.wait_for_everyone()

        self.step = 0
        self.best: dict = {"metric": cfg.val.best_metric, "value": None, "step": None}
        self.bad_samples: dict[str, int] = {}  # skip_bad_samples: error -> times a sample stood in
        self.last_validation: tuple[int, dict] | None = None  # (step, means) of the latest validation (model cards)
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)

    def release(self) -> None:
        """Drop the distributed wrappers of the networks, then end the process group. In that
        order: a gloo process group whose last owner is a DDP wrapper is destroyed while Python
        holds the GIL, which deadlocks at exit when a gloo thread still needs the GIL to free a
        finished collective's tensors (pytorch/pytorch#56297, #190489)."""
        import gc

        model = getattr(self, "model", None)
        if model is not None:
            model.release()
        if getattr(self, "accelerator", None) is not None:
            self.accelerator.free_memory()
        gc.collect()
        _shutdown_distributed()

    # -- setup ------------------------------------------------------------------------------
    def _make_accelerator(self, make_trackers):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

        cfg = self.cfg
        cpu = not torch.cuda.is_available()
        if cfg.train.mixed_precision == "fp16" and cpu:
            raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 (or no) on CPU")
        # A fresh accelerator state per trainer (several runs in one process, e.g. a notebook).
        AcceleratorState._reset_state()
        GradientState._reset_state()
        trackers = make_trackers(cfg.report_to, cfg.name, cfg.run_dir / "logs") if make_trackers else None
        handlers = []
        if self.model.ddp_kwargs():
            from accelerate.utils import DistributedDataParallelKwargs

            handlers.append(DistributedDataParallelKwargs(**self.model.ddp_kwargs()))
        return Accelerator(
            cpu=cpu,
            kwargs_handlers=handlers,
            mixed_precision=cfg.train.mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.train.grad_accum,
                                                                    sync_with_dataloader=False),
            step_scheduler_with_optimizer=False,
            log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(cfg.run_dir), logging_dir=str(cfg.run_dir / "logs")),
        )

    def _dataset(self, split: str):
        from dataset import create_dataset
        from utils.registry import DATASETS, keyword_names

        options = getattr(self.cfg.datasets, split)
        if options is None:
            raise ConfigError(f"datasets.{split} is not set (needed for {'training' if split == 'train' else split})")
        options = dataset_options(options.to_dict(), keyword_names(DATASETS.get(options["type"]).__init__),
                                  self.cfg.seed, self.model.batch_keys(), split=split)
        try:
            data = create_dataset(options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"datasets.{split}: {exc}") from exc
        if len(data) == 0:
            raise DataError(f"datasets.{split} ({options['type']}) is empty")
        if getattr(data, "skip_bad_samples", False) and hasattr(data, "make_sample"):
            data = MarkBadSamples(data)  # skipped samples are counted and logged (training) or dropped (evaluation)
        return data

    def _preflight(self) -> None:
        """Check the data fits the model before anything is written."""
        acc = self.accelerator
        if self.train_set is not None:
            global_batch = self.cfg.train.batch_size * acc.num_processes
            if len(self.train_set) < global_batch:
                raise DataError(f"datasets.train has {len(self.train_set)} samples, fewer than one global batch "
                                f"({self.cfg.train.batch_size} x {acc.num_processes} processes)")
        for split, data in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            if data is None:
                continue
            sample = data[0]
            missing = [k for k in self.model.batch_keys() if k not in sample]
            if missing:
                raise DataError(f"datasets.{split} ({type(data).__name__}) gives no {missing} for model "
                                f"{self.cfg.model_type}; its samples hold: {', '.join(sorted(sample))}")

    def _find_resume(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        if resume == "auto":
            found = list_checkpoints(self.ckpt_dir)
            return found[-1][1] if found else None
        path = Path(resume)
        if not path.exists() and (self.ckpt_dir / resume).exists():
            path = self.ckpt_dir / resume
        if not (path.is_dir() and (path / STATE_FILE).is_file()):
            raise ConfigError(f"--resume {resume}: not a complete checkpoint folder (expected {STATE_FILE} inside)")
        return path

    def _clean_temporary(self) -> None:
        """Remove folders left by a process killed while writing (never complete checkpoints)."""
        if self.ckpt_dir.is_dir():
            for child in self.ckpt_dir.iterdir():
                if child.name.startswith(".tmp-"):
                    shutil.rmtree(child, ignore_errors=True)
        for name in ("best", "last"):
            recover_dir(self.run_dir / name)

    def _load_test_weights(self, weights: str | None) -> None:
        candidates = [Path(weights)] if weights else []
        candidates += [self.run_dir / "best", self.run_dir / "last"]
        if self.cfg.path.pretrain_network:
            candidates.append(Path(self.cfg.path.pretrain_network))
        for path in candidates:
            if path.exists():
                self.model.load_pretrained(path)
                self.weights_path = path
                return
            if weights and path == Path(weights):
                raise DataError(f"--weights {weights}: not found")
        if not self.model.trainable_networks():
            # A classical method (e.g. Wiener with a fixed NSR, Richardson-Lucy): its config is everything.
            self.weights_path = "none (no trainable parameters: the network as configured)"
            return
        raise DataError(f"no weights to test: neither {self.run_dir / 'best'} nor {self.run_dir / 'last'} exists "
                        f"(train first, or pass --weights PATH / set path.pretrain_network)")

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Accelerate state + trainer state + EMA into ``checkpoint-{step}``, written under a
        temporary name and renamed when complete; then keep only the newest N."""
        from contextlib import nullcontext

        acc = self.accelerator
        final = self.ckpt_dir / f"checkpoint-{self.step}"
        tmp = self.ckpt_dir / f".tmp-checkpoint-{self.step}"
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        # The main process owns the temporary folder (utils.atomic.atomic_dir: renamed into place,
        # replacing a checkpoint of the same step, only when the block completes); every process
        # writes its own RNG state into it.
        with (atomic_dir(final, tmp=tmp) if self.is_main else nullcontext(tmp)) as folder:
            acc.wait_for_everyone()        # the folder exists
            acc.save_state(str(folder))
            acc.wait_for_everyone()        # ... every process has written before it is completed
            if self.is_main:
                self._write_checkpoint_extras(folder)
        if self.is_main:
            for _, old in list_checkpoints(self.ckpt_dir)[: -self.cfg.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.log.info(f"step {self.step}: saved checkpoint {final}")
        return final

    def _write_checkpoint_extras(self, tmp: Path) -> None:
        """EMA, the model's own state and, last (it marks the checkpoint complete), the trainer state."""
        acc = self.accelerator
        if self.emas:
            from safetensors.torch import save_file

            tensors = {f"{n}.{k}": v.detach().cpu().contiguous() for n, e in self.emas.items() for k, v in e.shadow.items()}
            meta = {n: json.dumps({"decay": e.decay, "num_updates": e.num_updates, "start_step": e.start_step})
                    for n, e in self.emas.items()}
            save_file(tensors, str(tmp / EMA_FILE), metadata=meta)
        (tmp / MODEL_STATE_FILE).write_text(json.dumps(self.model.state_dict(), indent=2) + "\n")
        state = {"step": self.step, "best": self.best, "num_processes": acc.num_processes,
                 "batch_size": self.cfg.train.batch_size, "grad_accum": self.cfg.train.grad_accum,
                 "bad_samples": self.bad_samples}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: marks it complete

    def _load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        state = json.loads((path / STATE_FILE).read_text())
        try:
            acc.load_state(str(path))
        except Exception as exc:  # shapes, missing files, unpickling: one line, --debug for the rest
            raise ConfigError(f"cannot resume from {path}: {error_line(exc)} (if this checkpoint is damaged, "
                              f"delete it: --resume auto then continues from the one before)") from exc
        if self.emas:
            from safetensors import safe_open

            file = path / EMA_FILE
            if not file.is_file():
                raise ConfigError(f"cannot resume from {path}: train.ema_decay is set but the checkpoint holds no EMA")
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata()
                for name, ema in self.emas.items():
                    if name not in meta:
                        raise ConfigError(f"cannot resume from {path}: its EMA holds no network '{name}'")
                    info = json.loads(meta[name])
                    shadow = {k: f.get_tensor(f"{name}.{k}") for k in ema.shadow}
                    ema.load_state_dict({"decay": ema.decay, "num_updates": info["num_updates"], "shadow": shadow})
        model_state = path / MODEL_STATE_FILE
        self.model.load_state_dict(json.loads(model_state.read_text()) if model_state.is_file() else {})
        self.step = int(state["step"])
        self.best = state["best"]
        self.bad_samples = dict(state.get("bad_samples", {}))
        if state["num_processes"] != acc.num_processes or state["batch_size"] != self.cfg.train.batch_size:
            self.log.warning(f"resuming with {acc.num_processes} processes x batch {self.cfg.train.batch_size} "
                             f"(checkpoint: {state['num_processes']} x {state['batch_size']}): the data order differs "
                             f"from an uninterrupted run")
        self.log.info(f"resumed from {path} at step {self.step}")

    def _save_export(self, name: str, extra: dict | None = None) -> Path:
        """``best/`` or ``last/``: save_pretrained folder(s) of the exported networks (EMA weights
        when EMA is on), written to a temporary folder and swapped in."""
        acc = self.accelerator
        final = self.run_dir / name
        acc.wait_for_everyone()
        with self._ema_weights():
            # Every process takes part (with sharded weights, FSDP, this gathers them); the main one writes.
            states = self.model.export_state_dicts()
            if self.is_main:
                with atomic_dir(final) as tmp:
                    self.model.save_pretrained(tmp, state_dicts=states)
                    if extra is not None:
                        (tmp / "restorelab.json").write_text(json.dumps(extra, indent=2) + "\n")
                    latest = self.last_validation  # metrics of exactly these weights, or none
                    self._write_model_card(tmp, (extra or {}).get("mean") or
                                           (latest[1] if latest and latest[0] == self.step else None))
        acc.wait_for_everyone()
        return final

    def _write_model_card(self, folder: Path, metrics: dict | None) -> None:
        """``README.md`` of best/ or last/ (utils.model_card): network, task, data, validation
        metrics with their convention, how to load; uploaded with the weights by push_to_hub."""
        from utils.model_card import model_card_info, write_model_card

        cfg, v = self.cfg, self.cfg.val
        datasets = {split: getattr(cfg.datasets, split)["type"] for split in ("train", "val")
                    if getattr(cfg.datasets, split) is not None}
        info = model_card_info(self.model.network(self.model.export_networks[0]))
        info.update({"name": cfg.name, "task": cfg.model_type, "step": self.step,
                     "data": ", ".join(f"{k}: {t}" for k, t in datasets.items()) or None,
                     "metrics": metrics or {},
                     "metric_convention": f"8-bit outputs, crop_border {v.crop_border}, "
                                          f"{'Y (BT.601)' if v.test_y_channel else 'RGB'}, mean per {v.average}"
                                          f"{' (EMA weights)' if self.emas else ''}",
                     "repo_id": cfg.hub_model_id})
        write_model_card(folder, info)

    def _ema_weights(self):
        """Context: exported networks hold their EMA weights (no-op without EMA)."""
        from contextlib import ExitStack

        stack = ExitStack()
        for name, ema in self.emas.items():
            stack.enter_context(ema.applied_to(self.model.network(name)))
        return stack

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, save_dir: Path | None = None, log_images: int = 0, desc: str = "val"):
        """Score every sample of ``dataset`` with the (EMA) networks: ``utils.evaluation.Evaluator``
        (sharded over processes, 8-bit outputs, the numbers of calculate_metrics.py on the PNGs)."""
        from utils.evaluation import Evaluator, SharedEvaluationError

        evaluator = Evaluator(self.cfg.val, self.accelerator, num_workers=self.cfg.train.num_workers,
                              to_device=self._to_device, error_text=error_line)
        try:
            with self._ema_weights():
                result = evaluator.run(self.model, dataset, save_dir, log_images, desc)
        except SharedEvaluationError as exc:
            self.log.error(str(exc))
            raise SharedDataError(str(exc)) from None
        self._note_skipped(result.skip_events, desc)
        return result

    def _to_device(self, batch: dict) -> dict:
        device = self.accelerator.device
        layout = torch.channels_last if self.cfg.train.channels_last else torch.preserve_format

        def move(t):
            if not isinstance(t, torch.Tensor):
                return t
            return t.to(device, non_blocking=True, memory_format=layout if t.ndim == 4 else torch.preserve_format)

        return {k: move(t) for k, t in batch.items()}

    def validate(self) -> dict[str, float]:
        from utils.evaluation import Evaluator, mean_text
        from utils.metrics import higher_is_better
        from utils.trackers import log_images

        v = self.cfg.val
        folder = self.run_dir / "results" / "val" / f"step-{self.step}"
        result = self.evaluate(self.val_set, folder if v.save_images else None, v.log_images)
        mean = result.mean
        self.last_validation = (self.step, mean)
        if self.is_main:
            Evaluator(v, self.accelerator).write(folder, result, {"split": "datasets.val", "step": self.step,
                                                                  "ema": bool(self.emas)})
        self.accelerator.log({f"val/{m}": x for m, x in mean.items()}, step=self.step)
        log_images(self.accelerator, result.grids, self.step)
        left_out = f" ({len(result.skipped)} unreadable left out)" if result.skipped else ""
        self.log.info(f"step {self.step}: validation over {result.describe()}{left_out}: {mean_text(mean)}")

        value = mean[v.best_metric]
        better = higher_is_better(v.best_metric)
        old = self.best["value"]
        if math.isfinite(value) or value == (math.inf if better else -math.inf):
            if old is None or (value > old if better else value < old):
                self.best = {"metric": v.best_metric, "value": value, "step": self.step}
                self._save_export("best", {"step": self.step, "metric": v.best_metric, "mean": mean})
                self.log.info(f"step {self.step}: new best {v.best_metric} {value:.4f} -> {self.run_dir / 'best'}")
        return mean

    # -- training ---------------------------------------------------------------------------
    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor(1.0 if flag else 0.0, device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def fit(self) -> int:
        """Train to ``train.max_steps``; returns 0, or EXIT_REQUEUE after a preemption checkpoint."""
        from tqdm import tqdm

        from models.base_model import NonFiniteLossError
        from utils.config import config_to_dict, config_to_yaml
        from utils.trackers import log_config

        cfg, acc, t = self.cfg, self.accelerator, self.cfg.train
        acc.init_trackers(cfg.name)
        log_config(acc, config_to_dict(cfg), config_to_yaml(cfg))
        self.log.info(f"run {self.run_dir} | {self.model.describe()} | "
                      f"{acc.num_processes} process(es) on {acc.device} | global batch "
                      f"{t.batch_size} x {acc.num_processes} x {t.grad_accum} | {len(self.train_set)} training samples")

        stream = iter(TrainStream(self.train_set, t.batch_size, acc.process_index, acc.num_processes, cfg.seed,
                                  t.num_workers, start=self.step * t.grad_accum,
                                  pin_memory=acc.device.type == "cuda"))
        previous = {s: signal.signal(s, self._on_signal) for s in PREEMPT_SIGNALS}
        bar = tqdm(total=t.max_steps, initial=self.step, desc="train", dynamic_ncols=True, disable=not self.is_main)
        self.model.train()
        exit_code = 0
        import time

        self._speed_mark = (time.perf_counter(), self.step)  # steps/s and time left in _log_train
        try:
            sums: dict[str, torch.Tensor] = {}  # logged values summed since the last log line
            steps_since_log = 0
            while self.step < t.max_steps:
                self.model.begin_step(self.step)
                for batch in self._next_batches(stream):
                    batch = self._to_device(batch)
                    with self.model.accumulate():
                        try:
                            logs = self.model.training_step(batch, self.step)
                        except NonFiniteLossError as exc:
                            raise self._nan_error(exc) from None
                    for k, val in logs.items():
                        sums[k] = sums.get(k, 0.0) + torch.as_tensor(val, device=acc.device).detach().float() / t.grad_accum
                self.step += 1
                steps_since_log += 1
                for name, ema in self.emas.items():
                    ema.update(self.model.network(name), step=self.step)
                stop = self._any_process(self._stop_signal is not None)
                if self.step % t.log_every == 0 or self.step == t.max_steps or stop:
                    self._log_train({k: v / steps_since_log for k, v in sums.items()}, bar)
                    sums, steps_since_log = {}, 0
                bar.update(1)
                if self.val_set is not None and ((t.val_every and self.step % t.val_every == 0) or self.step == t.max_steps):
                    self.validate()
                if (t.checkpoint_every and self.step % t.checkpoint_every == 0) or self.step == t.max_steps or stop:
                    self.save_checkpoint()
                if stop:
                    name = signal.Signals(self._stop_signal).name if self._stop_signal else "a signal on another process"
                    self.log.info(f"step {self.step}: stopped by {name}; checkpoint written, exiting with {EXIT_REQUEUE} "
                                  f"(continue with --resume auto)")
                    exit_code = EXIT_REQUEUE
                    return exit_code
            last = self._save_export("last", {"step": self.step})
            if self.bad_samples:
                self.log.warning(f"{len(self.bad_samples)} bad sample(s) were skipped (skip_bad_samples), "
                                 f"{sum(self.bad_samples.values())} time(s) in all; listed above")
            self.log.info(f"finished {self.step} steps; weights in {last}")
            if cfg.push_to_hub and self.is_main:
                source = self.run_dir / "best" if (self.run_dir / "best").is_dir() else last
                url = push_folder_to_hub(source, cfg.hub_model_id)
                self.log.info(f"pushed {source} to {cfg.hub_model_id} ({url})")
            return exit_code
        finally:
            stream.close()  # stops DataLoader worker processes now, not at interpreter exit
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            for tracker in acc.trackers:  # the process group stays up until release()
                tracker.finish()

    def _next_batches(self, stream) -> list[dict]:
        """The micro-batches of the next optimiser step, on every process or on none.

        A sample that cannot be read stops every process (not only the one that met it, which
        would leave the others waiting in the next collective) with that sample's error; with
        ``skip_bad_samples: true`` the samples skipped on any process are counted and logged.
        One small all-reduce per step."""
        acc = self.accelerator
        batches, error = [], None
        try:
            for _ in range(self.cfg.train.grad_accum):
                batches.append(next(stream))
        except DataError as exc:
            error = error_line(exc)
        skipped = [reason for b in batches for reason in b.pop("bad_sample", ()) if reason]
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            flags = acc.reduce(torch.tensor([float(error is not None), float(len(skipped))], device=acc.device),
                               reduction="sum")
            if flags[0].item() > 0:
                error = next(e for e in gather_object([error]) if e is not None)
            if flags[1].item() > 0:
                skipped = gather_object(skipped)
        if error is not None:
            hint = "" if not hasattr(self.train_set, "skip_bad_samples") else \
                " (skip_bad_samples: true in datasets.train skips unreadable samples)"
            message = f"datasets.train, step {self.step + 1}: {error}{hint}"
            self.log.error(message)
            raise SharedDataError(message)
        self._note_skipped(skipped, "training")
        return batches

    def _note_skipped(self, reasons: list[str], split: str) -> None:
        """Count samples skipped by ``skip_bad_samples`` and log each bad one the first time."""
        for reason in reasons:
            first = reason not in self.bad_samples
            self.bad_samples[reason] = self.bad_samples.get(reason, 0) + 1
            if first:
                where = f"step {self.step + (split == 'training')}: " if self.mode == "train" else ""
                self.log.warning(f"{where}skipped a bad {split} sample ({len(self.bad_samples)} so far): {reason}")

    def _log_train(self, means: dict[str, torch.Tensor], bar) -> None:
        """Mean of each logged value over the steps since the last log line and over processes,
        with the training speed since then (steps/s, wall clock: validation and checkpoints
        included) and the time the remaining steps will take at that speed."""
        import time

        acc = self.accelerator
        values = {}
        for k, val in means.items():
            if acc.num_processes > 1:
                val = acc.reduce(val, reduction="mean")
            values[f"train/{k}"] = float(val)
        values.update({f"train/{k}": v for k, v in self.model.current_lrs().items()})
        now, (then, then_step) = time.perf_counter(), self._speed_mark
        self._speed_mark = (now, self.step)
        speed = (self.step - then_step) / max(now - then, 1e-9)
        values["train/steps_per_s"] = speed
        acc.log(values, step=self.step)
        loss = values.get("train/loss")
        lr = values.get("train/lr", next((v for k, v in values.items() if k.startswith("train/lr")), 0.0))
        bar.set_postfix({"loss": f"{loss:.4g}" if loss is not None else "-", "lr": f"{lr:.3g}"}, refresh=False)
        left = (self.cfg.train.max_steps - self.step) / speed if speed > 0 else float("inf")
        self.log.info(f"step {self.step}: " + ", ".join(f"{k[6:]} {x:.6g}" for k, x in values.items() if k != "train/steps_per_s")
                      + f" | {speed:.2f} steps/s, {left / 60:.1f} min left for {self.cfg.train.max_steps - self.step} steps")

    def _nan_error(self, exc) -> TrainingError:
        found = list_checkpoints(self.ckpt_dir)
        last = f"{found[-1][1]} (kept)" if found else "none written yet"
        message = (f"{exc} at step {self.step + 1}; training stopped, nothing saved after it. "
                   f"Last good checkpoint: {last}")
        self.log.error(message)
        return TrainingError(message)

    # -- test -------------------------------------------------------------------------------
    def test(self) -> dict[str, float]:
        from utils.evaluation import Evaluator, mean_text

        folder = self.run_dir / "results" / "test"
        self.log.info(f"testing {self.weights_path} on {len(self.test_set)} samples -> {folder}")
        result = self.evaluate(self.test_set, folder, desc="test")
        if self.is_main:
            Evaluator(self.cfg.val, self.accelerator).write(folder, result, {"split": "datasets.test",
                                                                            "weights": str(self.weights_path)})
            left_out = f" ({len(result.skipped)} unreadable left out)" if result.skipped else ""
            self.log.info(f"test over {result.describe()}{left_out}: {mean_text(result.mean)}")
        self.accelerator.wait_for_everyone()
        return result.mean


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer.py",
        description="Train (default) or test (-test) a restoration model described by an experiment YAML.",
        epilog="Examples:\n"
               "  accelerate launch trainer.py -opt checkpoints/NAFNet.yml\n"
               "  python trainer.py -opt checkpoints/UNet.yml train.max_steps=200 train.batch_size=4\n"
               "  python trainer.py -opt checkpoints/NAFNet.yml --resume auto\n"
               "  python trainer.py -opt checkpoints/NAFNet.yml -test\n"
               "Exit codes: 0 done, 2 bad input, 75 preempted (checkpoint written; rerun with --resume auto).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("-opt", "--opt", required=True, metavar="YAML", help="experiment config (see docs/training.md)")
    parser.add_argument("-test", "--test", action="store_true",
                        help="evaluate datasets.test: outputs as PNG plus metrics.csv/metrics.json in results/test/")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue from the newest complete checkpoint (auto; starts fresh if there is none) "
                             "or from a checkpoint folder")
    parser.add_argument("--weights", metavar="PATH",
                        help="-test only: weights to evaluate (save_pretrained folder or .safetensors); "
                             "default best/, then last/, then path.pretrain_network")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for input errors")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="config overrides, e.g. train.lr=2e-4 val.patched=true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from utils.config import load_config

    args = build_parser().parse_intermixed_args(argv)  # overrides may come before or after options
    if args.test and args.resume:
        raise ConfigError("--resume applies to training, not to -test")
    if args.weights and not args.test:
        raise ConfigError("--weights applies to -test (training starts from path.pretrain_network)")
    cfg = load_config(args.opt, args.overrides)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars inside ours
    trainer = None
    try:
        trainer = Trainer(cfg, resume=args.resume, mode="test" if args.test else "train", weights=args.weights)
        if args.test:
            trainer.test()
            return 0
        return trainer.fit()
    except (ConfigError, TrainingError, SharedDataError):
        # Every process raises these alike: the main process reports it (one line, not one per process)
        # and exits with 2. The others leave quietly with 0: a launcher (torchrun, accelerate launch)
        # stops every process as soon as one fails, which could kill the main one before it reports.
        from accelerate.state import PartialState

        if PartialState._shared_state and not PartialState().is_main_process:
            raise SystemExit(0)
        raise
    finally:
        if trainer is not None:
            trainer.release()
        _shutdown_distributed()


_ENDED_PROCESS_GROUP = False


def _shutdown_distributed() -> None:
    """End the process group (after the networks' distributed wrappers are gone: Trainer.release)."""
    global _ENDED_PROCESS_GROUP
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        _ENDED_PROCESS_GROUP = True


def run_and_exit() -> None:
    """``run_cli(main)``; a process that was part of a process group then leaves with ``os._exit``
    once its output is flushed. Everything is saved and closed by then; what is skipped is the
    interpreter's own teardown, where torch can still free gloo's threads while holding the GIL
    and hang or abort the exit (pytorch/pytorch#190489), turning a finished run into a failed job."""
    try:
        run_cli(main)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # a bug: keep its traceback
        if not _ENDED_PROCESS_GROUP:
            raise
        import traceback

        traceback.print_exc()
        code = 1
    if _ENDED_PROCESS_GROUP:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    run_and_exit()
