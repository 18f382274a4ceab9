"""MultiWienerNet (Yanny, Monakhova, Shuai & Waller, "Deep learning for fast spatially varying
deconvolution", Optica 9(1), 2022): learnable Wiener filters initialised from the PSFs, one
deconvolution per filter, the results blended, then a U-Net refiner.

Stages:

1. **Multi-Wiener deconvolution** (``deconvolve``). The filters are the sample's basis PSFs plus
   a learned correction ``filter_delta`` [C, n_basis, psf_size, psf_size] (zero at
   initialisation, so the filters start as the basis PSFs), with a learned noise-to-signal ratio
   per channel. ``mode: components`` deconvolves with every filter and blends the K results with
   the coefficient maps (right for *nodal* bases: PSFs measured or simulated at field positions,
   as in the paper); ``mode: regions`` rebuilds the local PSF from the filters at the centres of
   a ``regions`` grid (any basis, e.g. step 2's PCA basis). These are the Wiener network's modes
   (``models/archs/wiener_arch.py``), applied to the learned filters: at initialisation this
   stage equals ``Wiener`` with the same ``mode``, ``nsr`` and ``regions``.
2. **Refiner**: a U-Net (``models/archs/unet_arch.py``) reads the blended estimate and ``lq`` and
   adds a correction; its last layer starts at zero, so the untrained network is exactly stage 1.

The paper learns the filters for one microscope (and lets its U-Net learn the blending); here the
blending weights come with the data, so one network can also be trained on a dataset that
mixes PSF fields: set ``learn_filters: false`` there (a correction of "basis element k" means
nothing across unrelated bases). ``n_basis`` and ``psf_size`` fix the shape of the learned
correction: a batch with fewer or smaller basis PSFs is zero-padded (zero elements change
nothing), a larger one is an error.

Batch keys: ``lq``, ``basis_psfs`` [B, C_out, 1, K, k, k], ``basis_coef`` [B, C_out, 1, K, H, W].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models.archs.arch_util import PSF_INPUTS, ArchIO, RestorationConfig, RestorationModel
from models.archs.wiener_arch import wiener_components, wiener_regions
from utils.errors import ConfigError

_REFINER_DEFAULTS = dict(width=32, depth=3, blocks_per_level=2, norm="none", activation="relu",
                         downsample="maxpool", upsample="transpose")


class MultiWienerNet_config(RestorationConfig):
    """Args:
        mode: ``components`` (nodal bases) or ``regions`` (any basis), as in ``Wiener``.
        nsr: initial noise-to-signal ratio (per channel, learned when ``learnable_nsr``).
        learnable_nsr: train the NSR.
        regularizer: ``identity`` (textbook Wiener) or ``laplacian`` (constrained least squares), as in ``Wiener``.
        learn_filters: train a correction of every basis PSF (per lens; off for datasets mixing fields).
        n_basis, psf_size: shape of the learned filter correction (largest K and k of the data).
        regions: region grid for ``mode: regions``.
        refiner: ``UNet`` keywords of the refiner (``width``, ``depth``, ``blocks_per_level``, ...).
        linear_light: deconvolve in linear light (data rendered in linear light); the refiner
            works on sRGB values.
        in_channels: image channels.
    """

    model_type = "restorelab_multi_wiener_net"

    def __init__(self, mode: str = "components", nsr: float = 1e-2, learnable_nsr: bool = True,
                 learn_filters: bool = True, n_basis: int = 16, psf_size: int = 33,
                 regions: list[int] | tuple[int, int] = (3, 3), refiner: dict | None = None,
                 linear_light: bool = False, in_channels: int = 3, regularizer: str = "identity", **kwargs):
        from models.archs.unet_arch import UNet_config
        from models.archs.wiener_arch import WIENER_MODES, check_regularizer

        if mode not in WIENER_MODES[1:]:
            raise ConfigError(f"network MultiWienerNet: mode must be components or regions, got {mode!r}")
        if not nsr > 0 or int(n_basis) < 1 or int(psf_size) % 2 == 0:
            raise ConfigError(f"network MultiWienerNet: need nsr > 0, n_basis >= 1 and an odd psf_size "
                              f"(got {nsr}, {n_basis}, {psf_size})")
        refiner = {**_REFINER_DEFAULTS, **dict(refiner or {})}
        unknown = set(refiner) - set(UNet_config.option_names()) | ({"in_channels", "out_channels", "residual"} & set(refiner))
        if unknown:
            raise ConfigError(f"network MultiWienerNet: refiner keys {sorted(unknown)} are not UNet options it sets "
                              f"(valid: width, depth, blocks_per_level, max_width, norm, activation, downsample, upsample)")
        self.mode = mode
        self.regularizer = check_regularizer(regularizer, "MultiWienerNet")
        self.nsr = float(nsr)
        self.learnable_nsr = bool(learnable_nsr)
        self.learn_filters = bool(learn_filters)
        self.n_basis = int(n_basis)
        self.psf_size = int(psf_size)
        self.regions = [int(r) for r in regions]
        self.refiner = refiner
        self.linear_light = bool(linear_light)
        self.in_channels = int(in_channels)
        UNet_config(**self.refiner_options())  # fail now on a bad refiner value
        super().__init__(**kwargs)

    def refiner_options(self) -> dict:
        return {**self.refiner, "in_channels": 2 * self.in_channels, "out_channels": self.in_channels,
                "residual": False}

    @classmethod
    def tiny(cls) -> "MultiWienerNet_config":
        return cls(mode="regions", n_basis=4, psf_size=7, regions=(2, 2), refiner=dict(width=8, depth=2, blocks_per_level=1))


class MultiWienerNet_arch(RestorationModel):
    """Learnable multi-Wiener deconvolution + U-Net refiner (see the module docstring)."""

    config_class = MultiWienerNet_config
    input_keys = ("lq", "basis_psfs", "basis_coef")

    def __init__(self, config: MultiWienerNet_config):
        from models.archs.unet_arch import UNet_arch, UNet_config

        super().__init__(config)
        c = config
        self.log_nsr = nn.Parameter(torch.full((c.in_channels,), math.log(c.nsr)), requires_grad=c.learnable_nsr)
        self.filter_delta = nn.Parameter(torch.zeros(c.in_channels, c.n_basis, c.psf_size, c.psf_size),
                                         requires_grad=c.learn_filters)
        self.refiner = UNet_arch(UNet_config(**c.refiner_options()))
        nn.init.zeros_(self.refiner.head.weight)  # the untrained network is the multi-Wiener stage
        nn.init.zeros_(self.refiner.head.bias)
        self.post_init()

    @property
    def io(self) -> ArchIO:
        # FFT deconvolution over the whole (symmetrically extended) image: global.
        return ArchIO(kind="image", scale=1, inputs=PSF_INPUTS, receptive_radius=None)

    @property
    def nsr(self) -> torch.Tensor:
        return self.log_nsr.exp()

    def filters(self, basis_psfs: torch.Tensor) -> torch.Tensor:
        """The learned filters [B, C, 1, n_basis, s, s]: the (padded) basis PSFs + the correction.
        Zero elements stay zero where the data has no element (their coefficient maps are zero anyway)."""
        return basis_psfs + self.filter_delta[None, :, None].to(basis_psfs.dtype)

    def deconvolve(self, lq: torch.Tensor, basis_psfs: torch.Tensor, basis_coef: torch.Tensor) -> torch.Tensor:
        """Stage 1: the multi-Wiener estimate (sRGB values when ``linear_light``)."""
        from models.archs.psf_util import check_basis_inputs, decode_srgb, encode_srgb, fit_basis

        c = self.config
        check_basis_inputs(lq, basis_psfs, basis_coef, "MultiWienerNet")
        if basis_psfs.shape[2] != 1:
            raise ValueError("MultiWienerNet takes per-channel PSFs (C_in = 1); cross-talk fields are not supported")
        basis_psfs, basis_coef = fit_basis(basis_psfs, basis_coef.to(lq.dtype), c.n_basis, c.psf_size, "MultiWienerNet")
        if basis_psfs.shape[1] == 1:
            basis_psfs, basis_coef = (t.expand(-1, c.in_channels, *t.shape[2:]) for t in (basis_psfs, basis_coef))
        filters = self.filters(basis_psfs.to(lq.dtype))
        y = decode_srgb(lq, c.linear_light)
        if c.mode == "components":
            x = wiener_components(y, filters, basis_coef, self.nsr, c.regularizer)
        else:
            x = wiener_regions(y, filters, basis_coef, self.nsr, tuple(c.regions), c.regularizer)
        return encode_srgb(x, c.linear_light)

    def forward(self, lq: torch.Tensor, basis_psfs: torch.Tensor | None = None, basis_coef: torch.Tensor | None = None,
                **_) -> torch.Tensor:
        estimate = self.deconvolve(lq, basis_psfs, basis_coef)
        return estimate + self.refiner(torch.cat([estimate, lq], dim=1))

    def example_inputs(self, batch_size: int = 2, size: int = 32, generator: torch.Generator | None = None) -> dict:
        from models.archs.psf_util import example_psf_inputs

        return example_psf_inputs(batch_size, size, self.config.in_channels, psf_size=min(7, self.config.psf_size),
                                  generator=generator)
