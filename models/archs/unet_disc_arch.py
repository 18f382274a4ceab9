"""U-Net discriminator with spectral normalisation (Wang et al., "Real-ESRGAN: Training Real-World
Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021, sec. 3.3; BasicSR
``UNetDiscriminatorSN``): a per-pixel realness map from a U-Net (three stride-2 4×4 convolutions
down, bilinear ×2 + 3×3 convolutions up with additive skips, two extra 3×3 convolutions), so the
critic judges both global structure and local texture. Spectral norm on every convolution but
the first and the last, as the paper.

Same layer names as BasicSR (``conv0`` … ``conv9``). Optionally conditional (``cond_channels``):
``forward(image, lq)`` scores ``image`` given the degraded input (concatenated along channels,
lq at the image's size). Output B×1×H×W logits (any H, W; multiples of 8 match BasicSR's ×2 upsampling).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from models.archs.arch_util import ArchIO, RestorationConfig, RestorationModel
from utils.errors import ConfigError


class UNetDiscriminator_config(RestorationConfig):
    """Args:
        num_in_ch: channels of the scored image.
        cond_channels: channels of the condition ``lq`` (0: unconditional, as Real-ESRGAN).
        num_feat: channels of the first level (×2, ×4, ×8 deeper).
        skip_connection: additive U-Net skips.
    """

    model_type = "restorelab_unet_discriminator"

    def __init__(self, num_in_ch: int = 3, cond_channels: int = 0, num_feat: int = 64, skip_connection: bool = True,
                 **kwargs):
        self.num_in_ch, self.cond_channels, self.num_feat = int(num_in_ch), int(cond_channels), int(num_feat)
        self.skip_connection = bool(skip_connection)
        if self.num_in_ch < 1 or self.num_feat < 1 or self.cond_channels < 0:
            raise ConfigError("UNetDiscriminator needs num_in_ch >= 1, num_feat >= 1, cond_channels >= 0")
        super().__init__(**kwargs)

    @classmethod
    def tiny(cls) -> "UNetDiscriminator_config":
        return cls(num_feat=4)


class UNetDiscriminator_arch(RestorationModel):
    config_class = UNetDiscriminator_config
    main_input_name = "image"

    def __init__(self, config: UNetDiscriminator_config):
        super().__init__(config)
        c, f = config, config.num_feat
        self.conv0 = nn.Conv2d(c.num_in_ch + c.cond_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)
        self.post_init()
        self.converge_spectral_norms()

    @torch.no_grad()
    def converge_spectral_norms(self, iterations: int = 15) -> None:
        """Power iterations on every spectral norm's (u, v) so the estimate of σ(W) is accurate from
        the start (one iteration per training forward otherwise: an untrained critic in eval mode
        would divide by a far too small σ and output values ~1e8)."""
        from torch.nn.utils.spectral_norm import SpectralNorm

        for module in self.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm) and not module.weight_orig.is_meta:
                    for _ in range(iterations):
                        hook.compute_weight(module, do_power_iteration=True)
                    setattr(module, hook.name, hook.compute_weight(module, do_power_iteration=False))

    @property
    def io(self) -> ArchIO:
        inputs = {"image": "image", "lq": "image"} if self.config.cond_channels else {"image": "image"}
        return ArchIO(kind="critic", scale=1, inputs=inputs, output="score_map")

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(self.io.inputs)

    def forward(self, image: torch.Tensor, lq: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.cond_channels:
            if lq is None or lq.shape[-2:] != image.shape[-2:]:
                raise ValueError("UNetDiscriminator: a conditional critic needs lq of the image's size")
            image = torch.cat([lq, image], dim=1)
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731

        def up(t, like):  # ×2 bilinear (for H, W multiples of 8); other sizes: to the skip's size
            return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)

        x0 = act(self.conv0(image))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3, x2)))
        if self.config.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4, x1)))
        if self.config.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5, x0)))
        if self.config.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        out = {"image": torch.rand(batch_size, self.config.num_in_ch, size, size, generator=generator)}
        if self.config.cond_channels:
            out["lq"] = torch.rand(batch_size, self.config.cond_channels, size, size, generator=generator)
        return out
