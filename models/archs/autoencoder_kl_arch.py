"""diffusers' ``AutoencoderKL`` (the Stable Diffusion VAE design: Rombach et al., "High-Resolution
Image Synthesis with Latent Diffusion Models", CVPR 2022) as a network of the lab, for side-by-side
comparisons with WF-VAE (docs/vae.md, BENCHMARKS.md).

The config holds diffusers' own keyword names (``block_out_channels``, ``layers_per_block``,
``latent_channels``, ``norm_num_groups``, ``down_block_types``...), so a diffusers
``config.json`` loads unchanged; the network is ``self.vae``, a ``diffusers.AutoencoderKL``.
``encode(x)``/``decode(z)`` are diffusers' (x and the decoding in [−1, 1], ``.latent_dist``,
``.sample``), ``forward(lq)`` the lab's contract ([0, 1], the reconstruction from the posterior
mean, any size: padded to a multiple of the downsampling and cropped back), shared with WFVAE
(``wfvae_arch.vae_forward``), so ``VAE_model`` trains both the same way.
``load_official_state_dict`` takes a diffusers state dict (``diffusion_pytorch_model.safetensors``
keys) and ``from_official_checkpoint(path)`` a file or a diffusers folder. GroupNorm uses
image statistics and the middle has attention: the receptive field is unbounded (tiling hides
seams only). Requires ``diffusers`` (pinned in requirements.txt).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from models.archs.layers import load_strict, read_checkpoint
from models.archs.wfvae_arch import vae_forward
from utils.errors import ConfigError


class AutoencoderKL_config(RestorationConfig):
    """diffusers ``AutoencoderKL`` keywords (same names and defaults as diffusers 0.42)."""

    model_type = "restorelab_autoencoder_kl"

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: list[str] = ("DownEncoderBlock2D",),
        up_block_types: list[str] = ("UpDecoderBlock2D",),
        block_out_channels: list[int] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        **kwargs,
    ):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.down_block_types, self.up_block_types = list(down_block_types), list(up_block_types)
        self.block_out_channels = [int(c) for c in block_out_channels]
        self.layers_per_block = int(layers_per_block)
        self.act_fn = act_fn
        self.latent_channels = int(latent_channels)
        self.norm_num_groups = int(norm_num_groups)
        self.sample_size = sample_size
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = shift_factor
        self.latents_mean = None if latents_mean is None else [float(v) for v in latents_mean]
        self.latents_std = None if latents_std is None else [float(v) for v in latents_std]
        self.force_upcast = bool(force_upcast)
        self.use_quant_conv = bool(use_quant_conv)
        self.use_post_quant_conv = bool(use_post_quant_conv)
        self.mid_block_add_attention = bool(mid_block_add_attention)
        if len(self.down_block_types) != len(self.block_out_channels) or len(self.up_block_types) != len(self.block_out_channels):
            raise ConfigError("AutoencoderKL: down_block_types, up_block_types and block_out_channels need one entry per level")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"AutoencoderKL: every block_out_channels entry must be a multiple of norm_num_groups "
                              f"({self.norm_num_groups})")
        super().__init__(**kwargs)

    def diffusers_kwargs(self) -> dict:
        names = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
                 "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor",
                 "shift_factor", "latents_mean", "latents_std", "force_upcast", "use_quant_conv",
                 "use_post_quant_conv", "mid_block_add_attention")
        return {n: (tuple(v) if isinstance(v, list) else v) for n in names for v in [getattr(self, n)]}

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def tiny(cls) -> AutoencoderKL_config:
        return cls(down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                   block_out_channels=[8, 16], norm_num_groups=4, layers_per_block=1, latent_channels=4)


class AutoencoderKL_arch(RestorationModel):
    config_class = AutoencoderKL_config

    def __init__(self, config: AutoencoderKL_config):
        super().__init__(config)
        from diffusers import AutoencoderKL

        self.vae = AutoencoderKL(**config.diffusers_kwargs())
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="autoencoder", scale=self.config.factor, inputs={"lq": "image"}, output="image",
                      receptive_radius=None, sample_range=(-1.0, 1.0))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        return self.vae.encode(x, return_dict=return_dict)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        return self.vae.decode(z, return_dict=return_dict)

    def get_last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight

    def enable_tiling(self, *args, **kwargs) -> None:
        self.vae.enable_tiling(*args, **kwargs)

    def disable_tiling(self) -> None:
        self.vae.disable_tiling()

    def forward(self, lq: torch.Tensor, sample_posterior: bool | torch.Generator = False, return_dict: bool = False):
        """Reconstruction [0, 1] → [0, 1] from the posterior mean (or a sample); see WFVAE_arch.forward."""
        return vae_forward(self, lq, sample_posterior, return_dict)

    def load_official_state_dict(self, state_dict: Mapping) -> None:
        """Load a diffusers ``AutoencoderKL`` state dict (its own key names) strictly."""
        load_strict(self.vae, {k.removeprefix("module."): v for k, v in state_dict.items()}, "diffusers AutoencoderKL weights")

    @classmethod
    def from_official_checkpoint(cls, path, **diffusers_kwargs) -> AutoencoderKL_arch:
        """A diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) or a weights
        file with ``diffusers_kwargs``; eval mode."""
        path = Path(path)
        if path.is_dir():
            kw = {k: v for k, v in json.loads((path / "config.json").read_text()).items() if not k.startswith("_")}
            kw.update(diffusers_kwargs)
            diffusers_kwargs, path = kw, path / "diffusion_pytorch_model.safetensors"
        net = cls(cls.config_class(**diffusers_kwargs))
        net.load_official_state_dict(read_checkpoint(path))
        return net.eval()

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": torch.rand(batch_size, self.config.in_channels, size, size, generator=generator)}
