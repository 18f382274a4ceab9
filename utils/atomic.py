"""Write files and folders so a crash never leaves a half-written one where a good one was.

The one idiom of the project: write under a temporary name in the target's folder, flush it to
disk (``fsync``), rename it onto the target (atomic on POSIX), flush the folder so the rename
itself survives a power loss. On an exception the temporary is removed and the target untouched.

* ``atomic_path(path)``: a file (yields the temporary path to write);
  ``atomic_write_text``/``atomic_write_bytes`` on top of it;
* ``atomic_create_text(path, text)``: a file created only if absent (exclusive, for concurrent
  writers that must agree on one version);
* ``atomic_dir(final)``: a whole folder (yields a temporary sibling folder; an existing ``final``
  is replaced); ``recover_dir(final)`` cleans up after one killed midway;
* ``atomic_files(folder)``: files added to an existing folder that holds other things (each
  file atomic, in a chosen order; the set is not);
* ``fsync_file``/``fsync_dir``/``fsync_tree``: the flushes.

Temporary files get ordinary permissions (``mkstemp``/``mkdtemp`` create 0600/0700 ones).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path


def umask_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions a plain ``open()`` would have (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's contents to disk."""
    _fsync(path)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries to disk: makes a rename (or a new file) inside it durable."""
    _fsync(folder)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and folder under ``folder`` (deepest first) and ``folder`` itself, so a folder
    renamed into place afterwards never shows empty or truncated files after a crash."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        if not path.is_symlink():
            _fsync(path)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; flush it and rename it onto ``path`` if the block
    succeeds (the block writes the file and closes it).

    ``suffix`` defaults to the target's own suffix, so writers that infer the format from the file
    name (OpenCV, matplotlib) keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask_permissions(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_create_text(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` with ``text`` (UTF-8) atomically unless it exists; True if this call created it.

    Exclusive: of several processes racing to create it, exactly one wins (a hard link, unlike a
    rename, never replaces an existing file); the others get False and can read the winner's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask_permissions(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _umask_dir_permissions(path: str | os.PathLike) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


@contextmanager
def atomic_dir(final: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final`` (``.tmp-{name}-XXXX``); when the block
    succeeds it is flushed (``fsync_tree``) and renamed to ``final``, replacing an existing folder
    of that name (moved aside to ``.old-{name}-XXXX`` first, removed after); on an exception it is
    removed and ``final`` is untouched.

    ``tmp``: a fixed temporary folder instead (a stale one is removed first), for writers in
    several processes that must agree on the name; it must sit in ``final``'s folder.

    Readers see the old folder or the new one, never a mix; between the two renames ``final`` is
    briefly absent (POSIX cannot swap two folders atomically): after a crash there,
    ``recover_dir(final)`` puts the old folder back.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} exists and is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    else:
        tmp = Path(tmp)
        if tmp.parent.resolve() != final.parent.resolve():
            raise ValueError(f"atomic_dir: the temporary folder {tmp} must be in {final.parent}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        _umask_dir_permissions(tmp)
        fsync_tree(tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.replace(final, old)  # onto the empty placeholder folder
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(final: str | os.PathLike) -> None:
    """Clean up after an ``atomic_dir(final)`` killed midway: remove its unfinished temporary
    folders and, if ``final`` is missing while the old version was moved aside, move it back."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f".tmp-{glob_escape(final.name)}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(final.parent.glob(f".old-{glob_escape(final.name)}-*"), key=lambda p: p.stat().st_mtime_ns)
    if olds and not final.exists():
        os.replace(olds.pop(), final)  # the newest one held the last complete version
        fsync_dir(final.parent)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_files(folder: str | os.PathLike, last=lambda path: False) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``folder`` (created if missing); when the block succeeds,
    each file written at its top level is flushed and renamed into ``folder`` (replacing a file of
    that name), the files for which ``last(path)`` is true after the others, then ``folder`` is
    flushed; on an exception nothing is moved. The staging folder is always removed.

    For adding files to a folder that holds other things; each file appears complete or not at
    all, and putting the file whose presence marks the set complete ``last`` makes the set safe
    to read. (For a folder of its own, ``atomic_dir`` makes the whole set atomic.)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield stage
        files = sorted(p for p in stage.iterdir() if p.is_file())
        files.sort(key=lambda p: bool(last(p)))  # stable: name order within each group
        for path in files:
            umask_permissions(path)
            fsync_file(path)
        for path in files:
            os.replace(path, folder / path.name)
        fsync_dir(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
