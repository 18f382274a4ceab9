"""All-or-nothing output folders for the PSF scripts, and their shared argument parser."""
from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from psf.field import PSF_FILENAME
from utils.atomic import atomic_dir, atomic_files
from utils.errors import ConfigError, fail


@contextmanager
def staged_output(save_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder whose files end up in ``save_dir``, all or nothing (utils.atomic):
    a new ``save_dir`` appears whole (``atomic_dir``); into an existing one the files are moved
    one by one, the PSF file last, so its presence means the set is complete (``atomic_files``).
    On any error nothing is moved and no staging folder is left.
    """
    save_dir = Path(save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"--save_dir is a file, not a folder: {save_dir}")
    if not overwrite and (save_dir / PSF_FILENAME).exists():
        raise ConfigError(f"{save_dir / PSF_FILENAME} exists; pass --overwrite to replace it")
    if save_dir.exists():
        with atomic_files(save_dir, last=lambda p: p.suffix in (".h5", ".hdf5")) as stage:
            yield stage
    else:
        with atomic_dir(save_dir) as stage:
            yield stage


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: ...``) and exit code 2."""

    def error(self, message):
        fail(f"{message} (see --help)")
