"""Conditional PatchGAN critic (Isola et al., "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017, sec. 3.2.2 and appendix 6.1.2): a fully convolutional
classifier that scores overlapping patches of the pair (condition, image) as real or fake.

``forward(image, lq)`` concatenates the condition ``lq`` and the candidate ``image`` along the
channels and returns one logit per patch, B×1×⌈H/2^n⌉×⌈W/2^n⌉ (n = ``n_layers``). Layers: 4×4
convolutions, stride 2 for the first ``n_layers``, then two stride-1 layers (C64-C128-C256-C512 in
the paper's 70×70 configuration: ``width=64, n_layers=3``), LeakyReLU 0.2, optional spectral
normalisation (Miyato et al., ICLR 2018) instead of the paper's batch norm, which keeps the critic
independent of the batch composition. Each 4×4 convolution is zero-padded by 1 before and 2
after (the paper pads 1 on both sides), so a stride-2 layer maps H to ⌈H/2⌉ and a stride-1 layer
keeps H: the score map is the same grid at every image size, odd ones included.
"""
from __future__ import annotations

import torch
from torch import nn

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class PatchGAN_config(RestorationConfig):
    """PatchGAN hyper-parameters.

    Args:
        in_channels: channels of the scored image.
        cond_channels: channels of the condition ``lq`` (0: unconditional critic).
        width: channels of the first layer (doubled per stride-2 layer, capped at 8× width).
        n_layers: stride-2 layers (the patch grows as 2^n_layers).
        spectral_norm: spectral normalisation on every convolution.
    """

    model_type = "restorelab_patchgan"

    def __init__(self, in_channels: int = 3, cond_channels: int = 3, width: int = 64, n_layers: int = 3,
                 spectral_norm: bool = True, **kwargs):
        self.in_channels = int(in_channels)
        self.cond_channels = int(cond_channels)
        self.width = int(width)
        self.n_layers = int(n_layers)
        self.spectral_norm = bool(spectral_norm)
        if self.n_layers < 1 or self.width < 1 or self.in_channels < 1 or self.cond_channels < 0:
            raise ConfigError("PatchGAN needs n_layers >= 1, width >= 1, in_channels >= 1, cond_channels >= 0")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "PatchGAN_config":
        return cls(width=4, n_layers=2)


class PatchGAN_arch(RestorationModel):
    config_class = PatchGAN_config
    main_input_name = "image"

    def __init__(self, config: PatchGAN_config):
        super().__init__(config)
        c = config
        norm = nn.utils.spectral_norm if c.spectral_norm else (lambda m: m)
        chans = [c.in_channels + c.cond_channels] + [c.width * min(2 ** i, 8) for i in range(c.n_layers + 1)]
        layers: list[nn.Module] = []
        for i in range(c.n_layers + 1):
            stride = 2 if i < c.n_layers else 1
            layers += [nn.ZeroPad2d((1, 2, 1, 2)), norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride)), nn.LeakyReLU(0.2)]
        layers += [nn.ZeroPad2d((1, 2, 1, 2)), norm(nn.Conv2d(chans[-1], 1, 4, 1))]
        self.body = nn.Sequential(*layers)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        inputs = {"image": "image", "lq": "image"} if self.config.cond_channels else {"image": "image"}
        return ArchIO(kind="critic", scale=2 ** self.config.n_layers, inputs=inputs, output="score_map")

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.io.inputs)

    def forward(self, image: torch.Tensor, lq: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.cond_channels:
            if lq is None or lq.shape[-2:] != image.shape[-2:]:
                raise ValueError("PatchGAN: a conditional critic needs lq of the image's size")
            image = torch.cat([lq, image], dim=1)
        return self.body(image)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        out = {"image": torch.rand(batch_size, self.config.in_channels, size, size, generator=generator)}
        if self.config.cond_channels:
            out["lq"] = torch.rand(batch_size, self.config.cond_channels, size, size, generator=generator)
        return out
