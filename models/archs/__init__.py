"""Networks: ``{Type}_config`` + ``{Type}_arch`` in ``models/archs/**/*_arch.py``.

``define_network({"type": "NAFNet", "width": 32})`` builds one; nothing is imported until a
network is asked for (see ``utils.registry``).
"""
from __future__ import annotations

from collections.abc import Mapping

from utils.errors import ConfigError
from utils.registry import NETWORKS, check_keywords


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
