"""Naming-convention registries (DESIGN.md, "Naming convention").

A registry maps a name used in configs (``NAFNet``, ``PairedRestoration_model``, ``HFDataset``) to the
class that implements it, found by the file naming convention:

* networks: ``{Type}_arch`` (+ ``{Type}_config``) in ``models/archs/**/*_arch.py``
* models:   ``{Name}`` in ``models/**/*_model.py``, subclasses of ``models.base_model.BaseModel``
* losses:   ``{Name}Loss`` in ``models/losses/**/*_loss.py`` (base classes live in
  ``models/losses/base.py``, outside the pattern)
* datasets: ``{Name}Dataset`` in ``dataset/*_dataset.py`` (the whole name, ``HFDataset``, is the YAML type)

Discovery reads the files' syntax trees (top-level ``class`` statements and ``Name = ...``
aliases) without importing them, so it is cheap and a broken optional dependency in one
module never breaks another. A registry with a ``base`` keeps only the classes (and aliases of
classes) that derive from it, transitively, also across files: base lists are followed through
local classes, aliases and ``import``/``from ... import`` statements of project modules, still
without importing anything (a class whose bases cannot be read that way is not registered).
A module is imported only when one of its names is requested. Files are scanned in sorted
order, so results never depend on the file system. A name defined in two files is an error
naming both; an unknown name is an error listing the known names and the closest match.
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
    ``base``: ``"package.module.Class"``; only its strict subclasses are registered (read from
    the syntax tree, checked again on import).
    """

    def __init__(self, kind: str, root: str, pattern: str, suffix: str = "", base: str | None = None,
                 ending: str = ""):
        self.kind = kind
        self.root = PROJECT_ROOT / root
        self.pattern = pattern
        self.suffix = suffix
        self.base = base
        self.ending = ending  # names must end with it (kept in the name): "Dataset" for datasets
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
        base = None
        if self.base is not None:
            base = _class_of(self.base)
            if base is None:
                raise RegistryError(f"{self.kind} registry: base class {self.base} not found under {PROJECT_ROOT}")
        for path in files:
            module = _module_name(path)
            for name in _top_level_names(path):
                if name.startswith("_") or not name[0].isupper():
                    continue
                if self.ending and not name.endswith(self.ending):
                    continue  # module constants and helper classes (TASK_KINDS, ClipMotion) are not datasets
                if base is not None:
                    cls = _class_of(f"{module}.{name}")
                    if cls is None or cls == base or not _derives(cls, base):
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

    def __iter__(self):
        return iter(self.names())

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
        rel = self._entry(name).path.relative_to(PROJECT_ROOT)
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"{self.kind} '{name}': {rel} defines no '{attr}'") from None
        if self.base is not None and attribute is None:
            base_module, _, base_name = self.base.rpartition(".")
            base = getattr(importlib.import_module(base_module), base_name)
            if not (isinstance(obj, type) and issubclass(obj, base)) or obj is base:
                raise RegistryError(f"{self.kind} '{name}' in {rel} is not a subclass of {self.base}")
        return obj


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise RegistryError(f"cannot parse {path.relative_to(PROJECT_ROOT)}: {exc}") from exc


def _top_level_names(path: Path) -> list[str]:
    """Names bound at module level by ``class X`` or ``X = ...`` (no import)."""
    tree = _parse(path)
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return list(dict.fromkeys(names))  # a name bound twice in one file is one definition


# -- static class hierarchy ---------------------------------------------------------------------
@dataclass(frozen=True)
class _ModuleInfo:
    classes: dict[str, list[str]]   # class name -> its base expressions, dotted ("bm.BaseModel")
    aliases: dict[str, str]         # ``Old = New`` -> dotted right-hand side
    imports: dict[str, str]         # local name -> absolute dotted target


_MODULE_CACHE: dict[Path, tuple[int, _ModuleInfo]] = {}
_MAX_HOPS = 50  # aliases/re-exports followed before giving up (cycles)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(module: str) -> Path | None:
    """The project file of a dotted module name, or None (third-party, builtin, missing)."""
    if not module:
        return None
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = _dotted(expr.value)
        return f"{head}.{expr.attr}" if head else None
    if isinstance(expr, ast.Subscript):  # Generic[T], Base[...]
        return _dotted(expr.value)
    return None


def _module_info(module: str) -> _ModuleInfo | None:
    path = _module_file(module)
    if path is None:
        return None
    mtime = path.stat().st_mtime_ns
    cached = _MODULE_CACHE.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    tree = _parse(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    classes: dict[str, list[str]] = {}
    aliases: dict[str, str] = {}
    imports: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = [d for d in map(_dotted, node.bases) if d]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = _dotted(node.value) if isinstance(node.value, (ast.Name, ast.Attribute)) else None
            if target:
                aliases[node.targets[0].id] = target
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parent = package.split(".") if package else []
                parent = parent[: len(parent) - (node.level - 1)]
                source = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    imports[head] = head
    info = _ModuleInfo(classes, aliases, imports)
    _MODULE_CACHE[path] = (mtime, info)
    return info


def _qualify(module: str, dotted: str) -> str | None:
    """The absolute dotted name that ``dotted`` means inside ``module``."""
    info = _module_info(module)
    head, _, rest = dotted.partition(".")
    if info is None:
        return None
    if head in info.classes or head in info.aliases:
        target = f"{module}.{head}"
    elif head in info.imports:
        target = info.imports[head]
    else:
        return None  # a builtin or an undefined name: not a project class
    return f"{target}.{rest}" if rest else target


def _class_of(qualified: str | None, hops: int = 0) -> tuple[str, str] | None:
    """``(module, class name)`` of the project class an absolute dotted name refers to, following
    aliases and re-exports; None when it is not one (or cannot be told without importing)."""
    if qualified is None or hops > _MAX_HOPS:
        return None
    module, _, name = qualified.rpartition(".")
    info = _module_info(module)
    if info is None:
        return None
    if name in info.classes:
        return module, name
    if name in info.aliases:
        return _class_of(_qualify(module, info.aliases[name]), hops + 1)
    if name in info.imports:
        return _class_of(info.imports[name], hops + 1)
    return None


def _derives(cls: tuple[str, str], base: tuple[str, str], seen: set | None = None) -> bool:
    """True when ``cls`` is ``base`` or one of its (transitive) subclasses."""
    if cls == base:
        return True
    seen = set() if seen is None else seen
    if cls in seen:
        return False
    seen.add(cls)
    module, name = cls
    for expr in _module_info(module).classes[name]:
        parent = _class_of(_qualify(module, expr))
        if parent is not None and _derives(parent, base, seen):
            return True
    return False


NETWORKS = Registry("network", "models/archs", "**/*_arch.py", suffix="_arch")
MODELS = Registry("model_type", "models", "**/*_model.py", base="models.base_model.BaseModel")
LOSSES = Registry("loss", "models/losses", "**/*_loss.py", suffix="Loss", base="models.losses.base.Loss")
DATASETS = Registry("dataset", "dataset", "*_dataset.py", ending="Dataset")


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
