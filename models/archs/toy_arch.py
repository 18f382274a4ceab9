"""Toy networks, one per ``ArchIO`` kind: the smallest thing that has each shape of input and
output, so the registry tests, tiling, ``predict``, export and ``scripts/restore.py`` are
exercised for every kind (and a new task has a template to start from).

All are plain convolution stacks with bounded receptive fields (declared in ``io``), so tiled
inference reproduces the whole-input output exactly when the overlap covers them.

* ``ToySR``: ×``upscale`` super-resolution (3×3 convs + PixelShuffle), kind ``image``.
* ``ToyClipFrame``: ``frames`` frames → the restored centre frame, kind ``clip2frame``.
* ``ToyClipClip``: clip → clip, each output frame from its neighbours ±1 per layer, kind ``clip2clip``.
* ``ToyCritic``: conditional PatchGAN-style critic (Isola et al., "Image-to-Image Translation
  with Conditional Adversarial Networks", CVPR 2017): ``forward(lq, image)`` scores ``image``
  (a ground truth or a restoration) given the degraded input ``lq``; returns B×1×⌈H/4⌉×⌈W/4⌉
  logits, one per patch. Kind ``critic``.
* ``ToyAutoencoder``: diffusers-style ``encode(x).latent_dist`` / ``decode(z).sample`` with a
  diagonal Gaussian latent at 1/``factor`` resolution; ``forward(lq)`` is the reconstruction
  from the latent mean (the lab's image contract). Kind ``autoencoder``.
* ``ToyDenoiser``: ``forward(x_t, t, cond)`` → the prediction (noise or x_0) for a diffusion
  step ``t`` conditioned on an image ``cond``; kind ``denoiser``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


def _positive(name: str, **values) -> None:
    bad = {k: v for k, v in values.items() if int(v) < 1}
    if bad:
        raise ConfigError(f"network {name}: {', '.join(bad)} must be positive, got {bad}")


def _rand(generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=generator)


# -- ×2 super-resolution ----------------------------------------------------------------------------
class ToySR_config(RestorationConfig):
    """Args:
        in_channels, out_channels: image channels.
        width: hidden channels.
        upscale: output pixels per input pixel (2 → ×2 SR).
        depth: 3×3 convolutions at the input resolution (receptive radius = depth).
    """

    model_type = "restorelab_toy_sr"

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 16, upscale: int = 2,
                 depth: int = 2, **kwargs):
        _positive("ToySR", in_channels=in_channels, out_channels=out_channels, width=width, upscale=upscale, depth=depth)
        self.in_channels, self.out_channels, self.width = int(in_channels), int(out_channels), int(width)
        self.upscale, self.depth = int(upscale), int(depth)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToySR_config:
        return cls(width=8)


class ToySR_arch(RestorationModel):
    config_class = ToySR_config

    def __init__(self, config: ToySR_config):
        super().__init__(config)
        c = config
        layers = []
        for i in range(c.depth - 1):
            layers += [nn.Conv2d(c.in_channels if i == 0 else c.width, c.width, 3, padding=1), nn.GELU()]
        layers += [nn.Conv2d(c.width if c.depth > 1 else c.in_channels, c.out_channels * c.upscale ** 2, 3, padding=1),
                   nn.PixelShuffle(c.upscale)]
        self.body = nn.Sequential(*layers)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="image", scale=self.config.upscale, inputs={"lq": "image"}, receptive_radius=self.config.depth)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        out = self.body(lq)
        if self.config.in_channels == self.config.out_channels:  # residual over nearest upsampling (pointwise)
            out = out + F.interpolate(lq, scale_factor=self.config.upscale, mode="nearest")
        return out


# -- clip → centre frame ----------------------------------------------------------------------------
class ToyClipFrame_config(RestorationConfig):
    """Args:
        in_channels: channels per frame.
        frames: frames taken (odd; the output is the centre one).
        width: hidden channels.
    """

    model_type = "restorelab_toy_clip_frame"

    def __init__(self, in_channels: int = 3, frames: int = 3, width: int = 16, **kwargs):
        _positive("ToyClipFrame", in_channels=in_channels, frames=frames, width=width)
        if int(frames) % 2 == 0:
            raise ConfigError(f"network ToyClipFrame: frames must be odd (a centre frame), got {frames}")
        self.in_channels, self.frames, self.width = int(in_channels), int(frames), int(width)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToyClipFrame_config:
        return cls(width=8)


class ToyClipFrame_arch(RestorationModel):
    config_class = ToyClipFrame_config

    def __init__(self, config: ToyClipFrame_config):
        super().__init__(config)
        c = config
        self.body = nn.Sequential(nn.Conv2d(c.frames * c.in_channels, c.width, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(c.width, c.in_channels, 3, padding=1))
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="clip2frame", inputs={"lq": "clip"}, frames=self.config.frames, receptive_radius=2)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = lq.shape
        if t != self.config.frames:
            raise ValueError(f"ToyClipFrame takes {self.config.frames} frames, got {t}")
        return lq[:, t // 2] + self.body(lq.reshape(b, t * c, h, w))

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": _rand(generator, batch_size, self.config.frames, self.config.in_channels, size, size)}


# -- clip → clip --------------------------------------------------------------------------------------
class ToyClipClip_config(RestorationConfig):
    """Args:
        in_channels: channels per frame.
        width: hidden channels.
        depth: layers; each mixes frames t-1, t, t+1 (zeros beyond the clip) with a 3×3 conv, so
            the temporal and the spatial receptive radius are both ``depth``.
    """

    model_type = "restorelab_toy_clip_clip"

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 2, **kwargs):
        _positive("ToyClipClip", in_channels=in_channels, width=width, depth=depth)
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToyClipClip_config:
        return cls(width=8)


class ToyClipClip_arch(RestorationModel):
    config_class = ToyClipClip_config

    def __init__(self, config: ToyClipClip_config):
        super().__init__(config)
        c = config
        chans = [c.in_channels] + [c.width] * (c.depth - 1) + [c.in_channels]
        # 2-D convolutions over 3 stacked frames (not Conv3d): networks must accept channels_last.
        self.layers = nn.ModuleList(nn.Conv2d(3 * a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.post_init()

    @property
    def io(self) -> ArchIO:
        d = self.config.depth
        return ArchIO(kind="clip2clip", inputs={"lq": "clip"}, frames=None, receptive_radius=d, temporal_radius=d)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        b, t = lq.shape[:2]
        x = lq
        for i, conv in enumerate(self.layers):
            xp = F.pad(x, (0, 0, 0, 0, 0, 0, 1, 1))  # a zero frame before and after
            stacked = torch.cat([xp[:, :t], xp[:, 1:t + 1], xp[:, 2:]], dim=2)
            x = conv(stacked.flatten(0, 1)).unflatten(0, (b, t))
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return lq + x

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        return {"lq": _rand(generator, batch_size, 5, self.config.in_channels, size, size)}


# -- conditional PatchGAN critic ---------------------------------------------------------------------
class ToyCritic_config(RestorationConfig):
    """Args:
        in_channels: channels of ``lq`` and of ``image``.
        width: channels of the first layer (doubled after each stride-2 layer).
        n_down: stride-2 layers; the score map is ⌈H/2^n_down⌉×⌈W/2^n_down⌉.
    """

    model_type = "restorelab_toy_critic"

    def __init__(self, in_channels: int = 3, width: int = 16, n_down: int = 2, **kwargs):
        _positive("ToyCritic", in_channels=in_channels, width=width, n_down=n_down)
        self.in_channels, self.width, self.n_down = int(in_channels), int(width), int(n_down)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToyCritic_config:
        return cls(width=8)


class ToyCritic_arch(RestorationModel):
    config_class = ToyCritic_config
    input_keys = ("lq", "image")

    def __init__(self, config: ToyCritic_config):
        super().__init__(config)
        c = config
        layers, chan = [], 2 * c.in_channels
        for i in range(c.n_down):
            layers += [nn.Conv2d(chan, c.width * 2 ** i, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            chan = c.width * 2 ** i
        layers.append(nn.Conv2d(chan, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # scale = the score map's downsampling (ceil(H / scale) × ceil(W / scale)).
        return ArchIO(kind="critic", scale=2 ** self.config.n_down, inputs={"lq": "image", "image": "image"},
                      output="score_map", receptive_radius=None)

    def forward(self, lq: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits (real > 0) that ``image`` is a real ground truth for the degraded ``lq``."""
        return self.body(torch.cat([lq, image], dim=1))

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        c = self.config.in_channels
        return {"lq": _rand(generator, batch_size, c, size, size), "image": _rand(generator, batch_size, c, size, size)}


# -- autoencoder (diffusers API) ---------------------------------------------------------------------
class DiagonalGaussian:
    """A diagonal Gaussian from ``B×2L×h×w`` moments (mean, log-variance), as diffusers'
    ``DiagonalGaussianDistribution``: ``.mean``, ``.logvar``, ``.std``, ``.sample()``, ``.mode()``, ``.kl()``."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) per sample (sum over latent elements)."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


@dataclass
class EncoderOutput:
    latent_dist: DiagonalGaussian


@dataclass
class DecoderOutput:
    sample: torch.Tensor


class ToyAutoencoder_config(RestorationConfig):
    """Args:
        in_channels: image channels.
        latent_channels: channels of the latent.
        width: hidden channels.
        factor: spatial downsampling of the latent (one stride-``factor`` patchify convolution).
    """

    model_type = "restorelab_toy_autoencoder"

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, width: int = 16, factor: int = 4, **kwargs):
        _positive("ToyAutoencoder", in_channels=in_channels, latent_channels=latent_channels, width=width, factor=factor)
        self.in_channels, self.latent_channels = int(in_channels), int(latent_channels)
        self.width, self.factor = int(width), int(factor)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToyAutoencoder_config:
        return cls(width=8)


class ToyAutoencoder_arch(RestorationModel):
    config_class = ToyAutoencoder_config

    def __init__(self, config: ToyAutoencoder_config):
        super().__init__(config)
        c, f = config, config.factor
        self.encoder = nn.Sequential(
            nn.Conv2d(c.in_channels, c.width, 3, padding=1), nn.GELU(),
            nn.Conv2d(c.width, c.width, f, stride=f), nn.GELU(),
            nn.Conv2d(c.width, 2 * c.latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(c.latent_channels, c.width, 3, padding=1), nn.GELU(),
            nn.Conv2d(c.width, c.width * f * f, 1), nn.PixelShuffle(f), nn.GELU(),
            nn.Conv2d(c.width, c.in_channels, 3, padding=1))
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # Output pixel p ← conv (±1) ← latent cells (p±1)//f ± 1 (decoder) ± 1 (encoder) ← patchify
        # cells ← conv (±1): within ±(3f + 1) input pixels (13 for f = 4), on the f-grid.
        f = self.config.factor
        return ArchIO(kind="autoencoder", scale=f, inputs={"lq": "image"}, output="image", receptive_radius=3 * f + 1)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        f = self.config.factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"ToyAutoencoder.encode: the image ({x.shape[-2]}x{x.shape[-1]}) must be a multiple of {f}")
        return EncoderOutput(DiagonalGaussian(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(self.decoder(z))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Reconstruction from the latent mean; any size (reflect-padded to a multiple of ``factor``)."""
        f = self.config.factor
        h, w = lq.shape[-2:]
        pad = (0, (-w) % f, 0, (-h) % f)
        x = F.pad(lq, pad, mode="reflect") if any(pad) else lq
        return self.decode(self.encode(x).latent_dist.mean).sample[..., :h, :w]


# -- diffusion denoiser ------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps (Vaswani et al. 2017; DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ToyDenoiser_config(RestorationConfig):
    """Args:
        in_channels: channels of ``x_t``; cond_channels: channels of the conditioning image ``cond``.
        width: hidden channels; time_dim: size of the timestep embedding.
    """

    model_type = "restorelab_toy_denoiser"

    def __init__(self, in_channels: int = 3, cond_channels: int = 3, width: int = 16, time_dim: int = 16, **kwargs):
        _positive("ToyDenoiser", in_channels=in_channels, cond_channels=cond_channels, width=width, time_dim=time_dim)
        self.in_channels, self.cond_channels = int(in_channels), int(cond_channels)
        self.width, self.time_dim = int(width), int(time_dim)
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> ToyDenoiser_config:
        return cls(width=8, time_dim=8)


class ToyDenoiser_arch(RestorationModel):
    config_class = ToyDenoiser_config
    main_input_name = "x_t"
    input_keys = ("x_t", "t", "cond")

    def __init__(self, config: ToyDenoiser_config):
        super().__init__(config)
        c = config
        self.conv_in = nn.Conv2d(c.in_channels + c.cond_channels, c.width, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.conv_out = nn.Conv2d(c.width, c.in_channels, 3, padding=1)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        return ArchIO(kind="denoiser", inputs={"x_t": "image", "t": "scalar", "cond": "image"}, receptive_radius=2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.time_dim).to(x_t.dtype))
        h = self.conv_in(torch.cat([x_t, cond], dim=1)) + emb[:, :, None, None]
        return self.conv_out(F.silu(h))

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        c = self.config
        return {"x_t": torch.randn(batch_size, c.in_channels, size, size, generator=generator),
                "t": torch.randint(0, 1000, (batch_size,), generator=generator).float(),
                "cond": _rand(generator, batch_size, c.cond_channels, size, size)}
