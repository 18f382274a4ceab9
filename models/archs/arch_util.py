"""Base classes shared by every network (``{Type}_config`` / ``{Type}_arch``).

Networks are ``transformers`` models so ``save_pretrained``/``from_pretrained`` (safetensors +
config.json) rebuild them exactly. Conventions every arch follows:

* ``io`` (an ``ArchIO``) says what the network is: its kind (image→image, clip→clip,
  clip→frame, critic, autoencoder, denoiser), scale factor, input keys with their layouts, output
  and, where it is bounded, its receptive-field radius. Tests, tiling, ``predict``, export and
  ``scripts/restore.py`` read it (timm's per-model defaults are the model). The default is an
  image→image network at scale 1 over ``input_keys``.
* ``forward(lq, **conditioning) -> Tensor``: for kind ``image`` the restored image, ``scale``×
  the size of ``lq``; the other kinds are described on ``ArchIO``.
* ``input_keys`` names the batch entries the network consumes (``("lq",)`` by default;
  PSF-aware nets add ``"basis_psfs"``, ``"basis_coef"``...) = ``tuple(io.inputs)``. Models feed
  exactly these.
* ``config.model_type`` is ``restorelab_<snake name>`` (e.g. ``restorelab_nafnet_local``);
  older ids a saved ``config.json`` may carry are listed in ``LEGACY_MODEL_TYPES`` and still load.
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

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from transformers import PretrainedConfig, PreTrainedModel

from models.archs import LEGACY_MODEL_TYPES  # noqa: F401 (re-exported)
from utils.layouts import LAYOUTS  # noqa: F401 (re-exported)
from utils.registry import keyword_names

KINDS = ("image", "clip2clip", "clip2frame", "critic", "autoencoder", "denoiser")
OUTPUTS = ("image", "clip", "score_map", "latent")
_DEFAULT_OUTPUT = {"image": "image", "clip2clip": "clip", "clip2frame": "image", "critic": "score_map",
                   "autoencoder": "image", "denoiser": "image"}


@dataclass(frozen=True)
class ArchIO:
    """What a network takes and returns (batched tensors get a leading B).

    kind: ``image`` (image → image), ``clip2clip`` (B×T×C×H×W → B×T×C'×sH×sW), ``clip2frame``
        (clip → its centre frame B×C'×sH×sW), ``critic`` (image(s) → B×1×h×w score map),
        ``autoencoder`` (``encode(x).latent_dist`` / ``decode(z).sample``; ``forward(lq)`` is the
        reconstruction, so it fits the image contract), ``denoiser`` (``forward(x_t, t, cond)`` →
        the prediction, x_t's shape).
    scale: output pixels per input pixel along H and W (×2 SR → 2); autoencoder: the spatial
        downsampling of the latent (f8 → 8).
    inputs: batch key → layout (a key of ``LAYOUTS``); the first key is the main input.
    output: ``image``, ``clip``, ``score_map`` or ``latent`` (default from ``kind``).
    frames: clip networks: the number of frames T they take (None = any).
    receptive_radius: an output pixel depends only on inputs within this many (input) pixels
        and the network is shift-equivariant (no pooling to a fixed grid, no image statistics),
        so tiles with ``overlap >= 2 * receptive_radius`` (``blend=0``) reproduce the whole-image
        output up to float error; for clip networks it bounds space only (time: ``frames``).
        None = unbounded or unknown (global attention, FFTs, padding to a multiple, data-dependent
        PSF size): tiling then only hides seams. Autoencoders: the radius of the reconstruction
        (encoder, then decoder) in input pixels, for tiles on the latent grid.
    temporal_radius: clip→clip networks: an output frame depends only on input frames within this
        many frames, so time windows overlapping by ``2 * temporal_radius`` frames (no blend)
        reproduce the whole clip (None = unbounded or unknown).
    """

    kind: str = "image"
    scale: int = 1
    inputs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({"lq": "image"}))
    output: str | None = None
    frames: int | None = None
    receptive_radius: int | None = None
    temporal_radius: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ArchIO.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if int(self.scale) < 1:
            raise ValueError(f"ArchIO.scale must be a positive integer, got {self.scale!r}")
        if not self.inputs:
            raise ValueError("ArchIO.inputs must name at least the main input")
        unknown = {k: v for k, v in self.inputs.items() if v not in LAYOUTS}
        if unknown:
            raise ValueError(f"ArchIO.inputs: unknown layout(s) {unknown} (known: {', '.join(LAYOUTS)})")
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "output", self.output or _DEFAULT_OUTPUT[self.kind])
        if self.output not in OUTPUTS:
            raise ValueError(f"ArchIO.output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        for name in ("receptive_radius", "temporal_radius", "frames"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"ArchIO.{name} must be >= 0 or None, got {value}")

    @property
    def main_input(self) -> str:
        return next(iter(self.inputs))

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def __hash__(self):  # MappingProxyType is not hashable
        return hash((self.kind, self.scale, tuple(self.inputs.items()), self.output, self.frames,
                     self.receptive_radius, self.temporal_radius))


PSF_INPUTS = {"lq": "image", "basis_psfs": "kernel", "basis_coef": "map"}
"""Inputs of the networks conditioned on the sample's PSF basis (dataset/psf_keys.py)."""



class RestorationConfig(PretrainedConfig):
    """Base config. Subclasses list their constructor keywords explicitly (no ``**kwargs``
    beyond the transformers ones), which is what config validation checks keys against."""

    model_type = "restorelab"

    @classmethod
    def get_config_dict(cls, *args, **kwargs):
        """As transformers', with a legacy ``model_type`` id (LEGACY_MODEL_TYPES) read as the current one."""
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") in LEGACY_MODEL_TYPES:
            config_dict["model_type"] = LEGACY_MODEL_TYPES[config_dict["model_type"]]
        return config_dict, kwargs

    @classmethod
    def tiny(cls) -> "RestorationConfig":
        """A small instance for tests; override with sizes that run in well under a second."""
        return cls()

    @classmethod
    def option_names(cls) -> list[str]:
        """Constructor keywords a YAML ``network:`` mapping may use."""
        return keyword_names(cls.__init__)


def register_auto(config_cls: type[PretrainedConfig], arch_cls: type[PreTrainedModel]) -> None:
    """Register a network with ``AutoConfig``/``AutoModel`` (idempotent; replaces a lazy stand-in)."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, arch_cls, exist_ok=True)


class RestorationModel(PreTrainedModel):
    """Base network: an image-to-image ``PreTrainedModel`` (override ``io`` for other kinds)."""

    config_class = RestorationConfig
    base_model_prefix = "net"
    main_input_name = "lq"
    input_keys: tuple[str, ...] = ("lq",)
    supports_gradient_checkpointing = False

    def __init_subclass__(cls, **kwargs):
        # Every concrete network registers with transformers' Auto classes when its module is
        # imported, so ``AutoModel.from_pretrained(folder)`` finds it (models/archs/__init__.py
        # registers lazy stand-ins before any arch module is imported).
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__ and cls.config_class is not RestorationConfig:
            register_auto(cls.config_class, cls)

    @property
    def io(self) -> ArchIO:
        """What this network takes and returns; default: image→image at scale 1 over ``input_keys``
        (``lq`` an image; ``psf``/``basis_psfs`` kernels; anything else a map aligned with ``lq``)."""
        layouts = {"lq": "image", "psf": "kernel", "basis_psfs": "kernel"}
        return ArchIO(inputs={k: layouts.get(k, "map") for k in self.input_keys})

    def _init_weights(self, module: torch.nn.Module) -> None:  # keep each layer's own init
        pass

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        """Random inputs of the right shapes, for tests and benchmarks."""
        channels = getattr(self.config, "in_channels", 3)
        return {"lq": torch.rand(batch_size, channels, size, size, generator=generator)}
