"""restorelab utilities (registries, configs, rendering, metrics, image io)."""

__version__ = "0.1.0"
