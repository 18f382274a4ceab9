"""Networks: ``{Type}_config`` + ``{Type}_arch`` in ``models/archs/**/*_arch.py``.

``define_network({"type": "NAFNet", "width": 32})`` builds one; nothing is imported until a
network is asked for (see ``utils.registry``).

transformers' Auto classes: ``import models.archs`` makes ``AutoConfig``/``AutoModel
.from_pretrained(folder)`` work for every network of the lab without importing any arch module.
The choice, and why:

* Importing every ``*_arch.py`` at package import would break the registry's rule that a module is
  imported only when needed (and that one broken optional dependency never breaks another).
* So the package registers, for every ``model_type`` id it reads from the arch files' syntax trees
  (the same cheap scan the registry does), a lazy stand-in config class. When transformers reads
  a ``config.json`` with that id, the stand-in imports the one arch module concerned; that import
  registers the real ``{Type}_config``/``{Type}_arch`` pair (``RestorationModel.__init_subclass__``)
  and the stand-in returns the real config, so ``AutoModel`` finds the real network.
* Ids of folders saved before the ids were made consistent (``restorelab-wiener`` ...,
  ``LEGACY_MODEL_TYPES``) get stand-ins too and load as the current config class (a
  re-save writes the current id).
* ``register_auto_classes()`` imports every arch module now (e.g. before ``AutoModel.from_config``
  or listing ``CONFIG_MAPPING``) and returns what it registered; a module that fails to import is
  reported, not fatal.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping

from utils.errors import ConfigError, RegistryError
from utils.registry import NETWORKS, check_keywords

# Older ``model_type`` ids that saved ``config.json`` files may carry → the current id.
LEGACY_MODEL_TYPES = {
    "restorelab-wiener": "restorelab_wiener",
    "restorelab-richardson-lucy": "restorelab_richardson_lucy",
    "restorelab-fista-tv": "restorelab_fista_tv",
    "restorelab-multiwienernet": "restorelab_multi_wiener_net",
}


def network_names() -> list[str]:
    """Every registered network type."""
    return NETWORKS.names()


def get_network_classes(network_type: str):
    """``(config_class, arch_class)`` for a network type."""
    arch_cls = NETWORKS.get(network_type)
    config_cls = NETWORKS.get(network_type, attribute=f"{network_type}_config")
    return config_cls, arch_cls


def check_network_options(opt: Mapping, prefix: str = "network") -> None:
    """Raise ConfigError for a missing ``type`` or a keyword the network's config does not take."""
    if "type" not in opt:
        raise ConfigError(f"{prefix}.type is required (one of: {', '.join(network_names())})")
    config_cls, _ = get_network_classes(opt["type"])
    check_keywords(opt, config_cls.option_names(), prefix, f"network {opt['type']}")


def define_network(opt: Mapping):
    """Build a network from its options mapping (``type`` + config keywords). ``opt`` is not modified."""
    opt = dict(opt)
    check_network_options(opt)
    config_cls, arch_cls = get_network_classes(opt.pop("type"))
    return arch_cls(config_cls(**opt))


# -- transformers Auto classes ------------------------------------------------------------------------
def model_type_ids() -> dict[str, str]:
    """``model_type`` id → network type, read from the arch files without importing them (the
    literal ``model_type = "..."`` in each ``{Type}_config`` class body)."""
    ids: dict[str, str] = {}
    for name in network_names():
        try:
            tree = ast.parse(NETWORKS.path_of(name).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, RegistryError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == f"{name}_config":
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model_type" for t in stmt.targets)
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                        ids[stmt.value.value] = name
    return ids


def _lazy_config(model_type: str, network_type: str):
    """A stand-in config class for ``model_type``: ``from_dict`` imports ``network_type``'s module
    (which registers the real classes) and returns the real config."""
    from transformers import PretrainedConfig

    def from_dict(cls, config_dict, **kwargs):
        config_cls, _ = get_network_classes(network_type)
        config_dict = {k: v for k, v in config_dict.items() if k != "model_type"}
        return config_cls.from_dict(config_dict, **kwargs)

    return type(f"{network_type}_lazy_config", (PretrainedConfig,),
                {"model_type": model_type, "from_dict": classmethod(from_dict), "__module__": __name__})


def _register_lazy_auto_classes() -> None:
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    ids = model_type_ids()
    ids.update({old: ids[new] for old, new in LEGACY_MODEL_TYPES.items() if new in ids})
    for model_type, name in ids.items():
        if model_type in CONFIG_MAPPING._extra_content:  # already real (module imported) or stand-in
            continue
        AutoConfig.register(model_type, _lazy_config(model_type, name))


def register_auto_classes() -> dict[str, str]:
    """Import every arch module now, registering each network with ``AutoConfig``/``AutoModel``.

    Returns ``{network type: "ok" | "error: ..."}``: a module whose import fails (a missing
    optional dependency) is reported, the others are still registered."""
    status = {}
    for name in network_names():
        try:
            get_network_classes(name)  # importing the module registers it (arch_util.RestorationModel)
            status[name] = "ok"
        except RegistryError as exc:
            status[name] = f"error: {exc}"
    return status


_register_lazy_auto_classes()
