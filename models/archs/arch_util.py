"""Base classes shared by every network (``{Type}_config`` / ``{Type}_arch``).

Networks are ``transformers`` models so ``save_pretrained``/``from_pretrained`` (safetensors +
config.json) rebuild them exactly. Conventions every arch follows:

* ``forward(lq, **conditioning) -> Tensor`` returns the restored image, same size as ``lq``.
* ``input_keys`` names the batch entries the network consumes (``("lq",)`` by default;
  PSF-aware nets add ``"basis_psfs"``, ``"basis_coef"``...). Models feed exactly these.
* ``{Type}_config.tiny()`` returns a small config used by the registry-parametrised tests.
* ``example_inputs()`` returns a batch dict with every key in ``input_keys``.
* Channels: new networks name the image channels ``in_channels`` (what ``lq`` has) and, where
  the output may differ (e.g. colourisation), ``out_channels``; networks whose output always has
  the input's channels (Wiener, Richardson–Lucy, ...) have ``in_channels`` only. Ports of
  official code keep the official keywords so official configs load unchanged (NAFNet
  ``img_channel``, Restormer ``inp_channels``/``out_channels``). Conditioning channels (PSF
  maps, field positions) are never counted in the image channels.
* Layers keep their own initialisation: ``_init_weights`` does nothing, so transformers never
  re-initialises a network behind its back.
"""
from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from utils.registry import keyword_names


class RestorationConfig(PretrainedConfig):
    """Base config. Subclasses list their constructor keywords explicitly (no ``**kwargs``
    beyond the transformers ones), which is what config validation checks keys against."""

    model_type = "restorelab"

    @classmethod
    def tiny(cls) -> "RestorationConfig":
        """A small instance for tests; override with sizes that run in well under a second."""
        return cls()

    @classmethod
    def option_names(cls) -> list[str]:
        """Constructor keywords a YAML ``network:`` mapping may use."""
        return keyword_names(cls.__init__)


class RestorationModel(PreTrainedModel):
    """Base network: an image-to-image ``PreTrainedModel``."""

    config_class = RestorationConfig
    base_model_prefix = "net"
    main_input_name = "lq"
    input_keys: tuple[str, ...] = ("lq",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module: torch.nn.Module) -> None:  # keep each layer's own init
        pass

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        """Random inputs of the right shapes, for tests and benchmarks."""
        channels = getattr(self.config, "in_channels", 3)
        return {"lq": torch.rand(batch_size, channels, size, size, generator=generator)}
