"""Atomic writes: the target appears complete or not at all, with ordinary permissions."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from utils.atomic import (
    atomic_create_text, atomic_dir, atomic_files, atomic_path, atomic_write_text, fsync_tree, recover_dir,
)


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temp_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"")


def test_atomic_path_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import utils.atomic as atomic

    events = []
    monkeypatch.setattr(atomic, "_fsync", lambda p: events.append(("fsync", Path(p))))
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", Path(b))), real_replace(a, b)))
    target = tmp_path / "f.txt"
    atomic_write_text(target, "x")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].parent == tmp_path and events[0][1].name.startswith(".f.txt.")
    assert events[1][1] == target and events[2][1] == tmp_path


def test_atomic_dir_creates_replaces_and_never_mixes(tmp_path, monkeypatch):
    import utils.atomic as atomic

    final = tmp_path / "best"
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-best-") and not final.exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"1")
        (tmp / "README.md").write_text("one")
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["README.md", "sub", "sub/w.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    # a failed rewrite leaves the old folder as it was, and no temporary
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "README.md").write_text("half")
            raise RuntimeError("crash")
    assert (final / "README.md").read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["best"]
    # a successful one replaces it whole (old files gone), every new file flushed first
    flushed = []
    real = atomic._fsync
    monkeypatch.setattr(atomic, "_fsync", lambda p: (flushed.append(Path(p)), real(p)))
    with atomic_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"2")
    assert [p.name for p in final.iterdir()] == ["model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["best"]
    assert any(p.name == "model.safetensors" for p in flushed) and flushed[-1] == tmp_path
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(tmp_path / "file"):
            pass


def test_atomic_files_moves_the_marker_last_and_nothing_on_failure(tmp_path, monkeypatch):
    import utils.atomic as atomic

    (tmp_path / "mine.txt").write_text("user file")
    (tmp_path / "psfs.h5").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_files(tmp_path, last=lambda p: p.suffix == ".h5") as stage:
            (stage / "psfs.h5").write_text("new")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "psfs.h5"]
    assert (tmp_path / "psfs.h5").read_text() == "old"
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (moved.append(Path(b).name), real_replace(a, b)))
    with atomic_files(tmp_path, last=lambda p: p.suffix == ".h5") as stage:
        for name in ("psfs.h5", "b.png", "a.png"):
            (stage / name).write_text("new")
    assert moved == ["a.png", "b.png", "psfs.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "mine.txt", "psfs.h5"]
    assert (tmp_path / "psfs.h5").read_text() == "new" and (tmp_path / "mine.txt").read_text() == "user file"


def test_atomic_create_text_is_exclusive(tmp_path):
    target = tmp_path / "generation.json"
    assert atomic_create_text(target, "first") is True
    assert atomic_create_text(target, "second") is False
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["generation.json"]


def test_fsync_tree_flushes_every_file_and_folder(tmp_path, monkeypatch):
    import utils.atomic as atomic

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x").write_text("1")
    (tmp_path / "y").write_text("2")
    flushed = []
    monkeypatch.setattr(atomic, "_fsync", lambda p: flushed.append(Path(p).relative_to(tmp_path).as_posix()))
    fsync_tree(tmp_path)
    assert sorted(flushed) == [".", "a", "a/b", "a/b/x", "y"] and flushed[-1] == "."
    assert flushed.index("a/b/x") < flushed.index("a/b") < flushed.index("a")


def test_atomic_dir_fixed_temporary_and_recovery_after_a_crash_between_the_renames(tmp_path, monkeypatch):
    import utils.atomic as atomic

    final = tmp_path / "last"
    (tmp_path / ".tmp-last").mkdir()
    (tmp_path / ".tmp-last" / "stale").write_text("from a killed run")
    with atomic_dir(final, tmp=tmp_path / ".tmp-last") as tmp:  # e.g. several processes write into it
        assert tmp == tmp_path / ".tmp-last" and list(tmp.iterdir()) == []
        (tmp / "v").write_text("1")
    with pytest.raises(ValueError, match="must be in"):
        with atomic_dir(final, tmp=tmp_path / "elsewhere" / ".tmp-last"):
            pass
    # killed after the old folder was moved aside, before the new one was renamed into place
    real_replace = os.replace

    def die_on_second(a, b):
        if Path(b) == final:
            raise KeyboardInterrupt
        real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "v").write_text("2")
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not final.exists() and len(list(tmp_path.glob(".old-last-*"))) == 1
    (tmp_path / ".tmp-last-abc").mkdir()  # an unfinished temporary of another killed run
    recover_dir(final)
    assert (final / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["last"]
    recover_dir(final)  # nothing to do
    assert (final / "v").read_text() == "1"
