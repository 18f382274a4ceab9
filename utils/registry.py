"""Naming-convention registries (DESIGN.md, "Naming convention").

A registry maps a name used in configs (``NAFNet``, ``PairedRestoration_model``, ``HFDataset``) to the
class that implements it, found by the file naming convention:

* networks: ``{Type}_arch`` (+ ``{Type}_config``) in ``models/archs/**/*_arch.py``
* models:   ``{Name}`` in ``models/**/*_model.py``
* datasets: ``{Name}`` in ``dataset/*_dataset.py``

Discovery reads the files' syntax trees (top-level ``class`` statements and ``Name = ...``
aliases) without importing them, so it is cheap and a broken optional dependency in one
module never breaks another. A module is imported only when one of its names is requested.
Files are scanned in sorted order, so results never depend on the file system. A name
defined in two files is an error naming both; an unknown name is an error listing the known
names and the closest match.
"""
from __future__ import annotations

import ast
import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

from utils.errors import RegistryError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def unknown_name_message(kind: str, name: str, known: list[str] | tuple[str, ...]) -> str:
    """"unknown network 'NAFNte'; did you mean 'NAFNet'? known: ..." """
    guess = closest(name, known)
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"unknown {kind} '{name}'{hint} (known: {', '.join(sorted(known)) or 'none'})"


@dataclass(frozen=True)
class _Entry:
    name: str
    path: Path
    module: str


class Registry:
    """Lazy registry over ``root/pattern`` files.

    ``suffix``: only top-level names ending with it are registered and the suffix is dropped
    from the public name (``NAFNet_arch`` -> ``NAFNet``). With ``suffix=""`` every public
    top-level class is registered under its own name.
    """

    def __init__(self, kind: str, root: str, pattern: str, suffix: str = ""):
        self.kind = kind
        self.root = PROJECT_ROOT / root
        self.pattern = pattern
        self.suffix = suffix
        self._index: dict[str, list[_Entry]] | None = None
        self._signature: tuple | None = None

    # -- discovery ---------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        return sorted(p for p in self.root.glob(self.pattern) if "__pycache__" not in p.parts)

    def _scan(self) -> dict[str, list[_Entry]]:
        files = self._files()
        signature = tuple((str(p), p.stat().st_mtime_ns) for p in files)
        if self._index is not None and signature == self._signature:
            return self._index
        index: dict[str, list[_Entry]] = {}
        for path in files:
            module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            for name in _top_level_names(path):
                if name.startswith("_") or not name[0].isupper():
                    continue
                if self.suffix:
                    if not name.endswith(self.suffix) or name == self.suffix:
                        continue
                    name = name[: -len(self.suffix)]
                index.setdefault(name, []).append(_Entry(name, path, module))
        self._index, self._signature = index, signature
        return index

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._scan())

    def duplicates(self) -> dict[str, list[Path]]:
        """Names defined in more than one file."""
        return {n: [e.path for e in es] for n, es in self._scan().items() if len(es) > 1}

    def __contains__(self, name: str) -> bool:
        return name in self._scan()

    def path_of(self, name: str) -> Path:
        return self._entry(name).path

    # -- lookup -----------------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} type must be a non-empty string, got {name!r}")
        index = self._scan()
        if name not in index:
            raise RegistryError(unknown_name_message(self.kind, name, list(index)))
        entries = index[name]
        if len(entries) > 1:
            where = " and ".join(str(e.path.relative_to(PROJECT_ROOT)) for e in entries)
            raise RegistryError(f"{self.kind} '{name}' is defined twice: in {where}")
        return entries[0]

    def module_of(self, name: str):
        entry = self._entry(name)
        try:
            return importlib.import_module(entry.module)
        except ImportError as exc:
            rel = entry.path.relative_to(PROJECT_ROOT)
            raise RegistryError(
                f"{self.kind} '{name}' is defined in {rel}, which failed to import: {exc} "
                f"(install the missing package with `pip install -c constraints.txt ...`)"
            ) from exc

    def get(self, name: str, attribute: str | None = None):
        """The object registered as ``name`` (or ``attribute`` of its module)."""
        module = self.module_of(name)
        attr = attribute or f"{name}{self.suffix}"
        try:
            return getattr(module, attr)
        except AttributeError:
            rel = self._entry(name).path.relative_to(PROJECT_ROOT)
            raise RegistryError(f"{self.kind} '{name}': {rel} defines no '{attr}'") from None


def _top_level_names(path: Path) -> list[str]:
    """Names bound at module level by ``class X`` or ``X = ...`` (no import)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise RegistryError(f"cannot parse {path.relative_to(PROJECT_ROOT)}: {exc}") from exc
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


NETWORKS = Registry("network", "models/archs", "**/*_arch.py", suffix="_arch")
MODELS = Registry("model_type", "models", "**/*_model.py")
DATASETS = Registry("dataset", "dataset", "*_dataset.py")


def keyword_names(func) -> list[str]:
    """Named parameters of a callable (``self`` and ``*args``/``**kwargs`` excluded)."""
    import inspect

    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def check_keywords(options, valid: list[str], prefix: str, owner: str) -> None:
    """ConfigError naming the first key of ``options`` (besides ``type``) not in ``valid``."""
    from utils.errors import ConfigError

    for key in options:
        if key != "type" and key not in valid:
            guess = closest(key, valid)
            hint = f"; did you mean {prefix}.{guess}?" if guess else f" (valid: {', '.join(valid)})"
            raise ConfigError(f"unknown key {prefix}.{key} for {owner}{hint}")
