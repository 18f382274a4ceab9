"""All-or-nothing output folders for the PSF scripts, and their shared argument parser."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from psf.field import PSF_FILENAME
from utils.errors import ConfigError, fail


@contextmanager
def staged_output(save_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``save_dir``; on success move its files into
    ``save_dir`` (the PSF file last, so its presence means the set is complete); on any error
    remove the staging folder (and ``save_dir`` if this call created it), leaving nothing partial.
    """
    save_dir = Path(save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"--save_dir is a file, not a folder: {save_dir}")
    if not overwrite and (save_dir / PSF_FILENAME).exists():
        raise ConfigError(f"{save_dir / PSF_FILENAME} exists; pass --overwrite to replace it")
    created = not save_dir.exists()
    save_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=save_dir))
    try:
        yield stage
        files = sorted(p for p in stage.iterdir() if p.is_file())
        files.sort(key=lambda p: p.suffix in (".h5", ".hdf5"))  # the PSF file last
        for p in files:
            os.replace(p, save_dir / p.name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(save_dir, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: ...``) and exit code 2."""

    def error(self, message):
        fail(f"{message} (see --help)")
