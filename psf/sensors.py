"""Sensor models as degradation ops on torch tensors: a quanta image sensor (QIS) and a CMOS RAW
pipeline (un-process an sRGB image to RAW, add shot and read noise, process it back).

Both take images ``[..., C, H, W]`` (float, sRGB in [0, 1] for ``__call__``, linear light for
``apply_linear``) and a ``torch.Generator``; draws happen on the generator's device and move to
the image's, so a seed gives the same result on CPU and GPU. They have the interface of
``utils.noise.NoiseModel`` (``__call__(srgb, generator)``, ``apply_linear(linear, generator)``,
``kind``, ``as_dict()``) so a dataset generator can use them where it uses a noise model.

QIS (Fossum, "The quanta image sensor: every photon counts", Sensors 16, 2016; Yang et al.,
"Bits from photons: oversampled image acquisition using binary Poisson statistics", IEEE TIP 21,
2012; the simulation of QUIVER / Chennuri et al. 2024 that svd_v2 used). Per pixel and frame:

    theta = photons_per_pixel * x               (mean photons; x = linear irradiance, 1 = white)
    e ~ Poisson(QE * theta + dark_counts)        (photo-electrons + dark counts)
    r = e + N(0, read_noise^2)                   (read noise, electrons rms)
    counts = clip(round(r), 0, 2^bits - 1)       (multi-bit ADC, one electron per level)
    1-bit: counts = 1[r >= threshold]            (threshold 1 electron: "a photon arrived")

and ``frames`` such frames are averaged. Without read noise a 1-bit pixel has
``P(1) = 1 - exp(-(QE theta + dark))``, a b-bit pixel saturates at ``2^bits - 1``, and the mean of
T independent frames has 1/T of a frame's variance. The op returns ``counts / (2^bits - 1)``
(averaged) in [0, 1]; ``qis_flux_estimate`` inverts the 1-bit mean (maximum likelihood,
``-log(1 - mean)``, Yang et al. eq. 14).

RAW (Brooks et al., "Unprocessing images for learned raw denoising", CVPR 2019, section 3):
un-processing inverts, in this order, the tone curve (smoothstep ``3x² - 2x³``, inverse
``0.5 - sin(asin(1 - 2y) / 3)``), the gamma (``x^(1/2.2)``), the colour-correction matrix
(camera RGB -> sRGB; un-processing applies ``rgb2cam``, rows normalised to sum 1 so grey stays
grey), the white-balance and brightness gains (divided out), and samples an RGGB Bayer mosaic.
Noise is the paper's heteroscedastic Gaussian ``y ~ N(x, read + shot * x)`` (variances), with
``log(read) = 2.18 log(shot) + 1.2 + N(0, 0.26²)`` when drawn. Processing applies the gains,
bilinear demosaicing (each missing sample the mean of its nearest samples of that colour), the CCM,
gamma and tone curve. Random camera parameters (``RawSensor.sample``) follow the paper's ranges:
red gain U(1.9, 2.4), blue gain U(1.5, 1.9), brightness gain 1 / N(0.8, 0.1), CCM a random convex
combination of the paper's four camera XYZ->cam matrices times sRGB->XYZ.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from utils.errors import ConfigError
from utils.noise import linear_to_srgb, srgb_to_linear


def _device(generator, like):
    return generator.device if generator is not None else like.device


# -- QIS -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QISSensor:
    """Quanta image sensor (see module docstring).

    photons_per_pixel: mean photons per pixel and frame at linear irradiance 1 (white);
        with ``relative_exposure`` the image is first divided by its mean (QUIVER's PPP: the
        average photons per pixel of the image then equals ``photons_per_pixel``).
    quantum_efficiency: fraction of photons converted (0, 1].
    dark_counts: mean dark electrons per pixel per frame.
    read_noise: electrons rms (0 for an ideal photon-counting readout).
    bits: ADC bits (1 = binary single-photon pixel).
    frames: frames averaged.
    threshold: electrons for a 1-bit "1" (default 1).
    mono: sum the channels' photons into one grey channel (a colour-filter-free QIS).
    """

    photons_per_pixel: float = 1.0
    quantum_efficiency: float = 1.0
    dark_counts: float = 0.0
    read_noise: float = 0.0
    bits: int = 1
    frames: int = 1
    threshold: float = 1.0
    relative_exposure: bool = False
    mono: bool = False
    kind: str = field(default="qis", init=False)

    def __post_init__(self):
        if not self.photons_per_pixel > 0:
            raise ConfigError(f"photons_per_pixel must be > 0, got {self.photons_per_pixel}")
        if not 0 < self.quantum_efficiency <= 1:
            raise ConfigError(f"quantum_efficiency must be in (0, 1], got {self.quantum_efficiency}")
        if self.dark_counts < 0 or self.read_noise < 0:
            raise ConfigError("dark_counts and read_noise must be >= 0")
        if int(self.bits) != self.bits or not 1 <= self.bits <= 16:
            raise ConfigError(f"bits must be an integer in 1..16, got {self.bits}")
        if int(self.frames) != self.frames or self.frames < 1:
            raise ConfigError(f"frames must be an integer >= 1, got {self.frames}")

    @property
    def max_count(self) -> int:
        return 2 ** int(self.bits) - 1

    def counts(self, linear: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw readouts ``[frames, ...]`` (float counts 0..2^bits-1) of a linear image."""
        device = _device(generator, linear)
        x = linear.detach().to(device, torch.float64).clamp(min=0)
        if self.mono and x.ndim >= 3:
            x = x.mean(dim=-3, keepdim=True)
        if self.relative_exposure:
            x = x / x.mean().clamp(min=1e-12)
        rate = self.quantum_efficiency * self.photons_per_pixel * x + self.dark_counts
        rate = rate.expand(int(self.frames), *rate.shape)
        e = torch.poisson(rate, generator=generator)
        if self.read_noise > 0:
            e = e + self.read_noise * torch.randn(e.shape, generator=generator, device=device, dtype=e.dtype)
        if self.bits == 1:
            return (e >= self.threshold).to(torch.float64)
        return torch.round(e).clamp(0, self.max_count)

    def apply_linear(self, linear: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frame-averaged readout / (2^bits - 1), in [0, 1], on the image's device and dtype."""
        out = self.counts(linear, generator).mean(0) / self.max_count
        return out.to(linear.device, linear.dtype)

    def __call__(self, srgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """sRGB in -> normalised readout out (the sensor's own output, no tone curve)."""
        return self.apply_linear(srgb_to_linear(srgb), generator)

    def as_dict(self) -> dict:
        return asdict(self)


def qis_flux_estimate(mean_binary: torch.Tensor, quantum_efficiency: float = 1.0, dark_counts: float = 0.0) -> torch.Tensor:
    """Maximum-likelihood photons per pixel from the mean of 1-bit frames (threshold 1):
    ``(-log(1 - mean) - dark) / QE`` (Yang et al. 2012); the mean is clamped below 1."""
    m = mean_binary.clamp(0, 1 - 1e-6)
    return ((-torch.log1p(-m)) - dark_counts).clamp(min=0) / quantum_efficiency


# -- RAW: tone, gamma, CCM, gains, mosaic ----------------------------------------------------------
# sRGB (D65) -> XYZ, IEC 61966-2-1.
RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
# XYZ -> camera matrices of four cameras, as listed by Brooks et al. 2019 (unprocess.py).
XYZ2CAMS = torch.tensor([[[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
                         [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
                         [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
                         [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]]],
                        dtype=torch.float64)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """Global tone curve of Brooks et al.: 3x² - 2x³ on [0, 1]."""
    x = x.clamp(0, 1)
    return 3 * x ** 2 - 2 * x ** 3


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``smoothstep`` on [0, 1]: 0.5 - sin(asin(1 - 2y) / 3)."""
    y = y.clamp(0, 1)
    return 0.5 - torch.sin(torch.asin(1 - 2 * y) / 3)


def gamma_compress(x: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    return x.clamp(min=1e-8) ** (1 / gamma)


def gamma_expand(x: torch.Tensor, gamma: float = 2.2) -> torch.Tensor:
    return x.clamp(min=1e-8) ** gamma


def apply_ccm(image: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """``out[c] = sum_d ccm[c, d] image[d]`` over the channel axis -3."""
    return torch.einsum("cd,...dhw->...chw", ccm.to(image), image)


def mosaic(image: torch.Tensor) -> torch.Tensor:
    """RGGB Bayer samples ``[..., 1, H, W]`` of an RGB image ``[..., 3, H, W]`` (H, W even)."""
    h, w = image.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"the Bayer mosaic needs an even height and width, got {h}x{w}")
    out = image[..., 1:2, :, :].clone()  # green everywhere, then R and B sites
    out[..., 0, 0::2, 0::2] = image[..., 0, 0::2, 0::2]
    out[..., 0, 1::2, 1::2] = image[..., 2, 1::2, 1::2]
    return out


def bayer_masks(h: int, w: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """[3, H, W] 0/1 masks of the R, G, B sites of an RGGB mosaic."""
    m = torch.zeros(3, h, w, dtype=dtype, device=device)
    m[0, 0::2, 0::2] = 1
    m[1, 0::2, 1::2] = 1
    m[1, 1::2, 0::2] = 1
    m[2, 1::2, 1::2] = 1
    return m


def demosaic_bilinear(raw: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicing of an RGGB mosaic ``[..., 1, H, W]`` -> ``[..., 3, H, W]``: each missing
    sample is the mean of the nearest samples of its colour (normalised convolution, so the borders
    average only the samples inside); measured samples are kept."""
    lead = raw.shape[:-3]
    h, w = raw.shape[-2:]
    x = raw.reshape(-1, 1, h, w)
    masks = bayer_masks(h, w, raw.dtype, raw.device)
    k = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]], dtype=raw.dtype, device=raw.device)
    k_g = torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]], dtype=raw.dtype, device=raw.device)
    out = []
    for c in range(3):
        kern = (k_g if c == 1 else k)[None, None]
        num = F.conv2d(x * masks[c], kern, padding=1)
        den = F.conv2d(masks[c][None, None], kern, padding=1)
        out.append(num / den)
    return torch.cat(out, dim=1).reshape(*lead, 3, h, w)


def random_ccm(generator: torch.Generator | None = None) -> torch.Tensor:
    """rgb2cam of Brooks et al.: a random convex combination of the XYZ->cam matrices times
    sRGB->XYZ, rows normalised to sum 1."""
    w = torch.rand(len(XYZ2CAMS), generator=generator, dtype=torch.float64, device=_gen_device(generator)).cpu()
    w = w / w.sum()
    xyz2cam = (w[:, None, None] * XYZ2CAMS).sum(0)
    rgb2cam = xyz2cam @ RGB2XYZ
    return rgb2cam / rgb2cam.sum(dim=-1, keepdim=True)


def _gen_device(generator):
    return generator.device if generator is not None else None


def _uniform(lo, hi, generator):
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64, device=_gen_device(generator)))


def _normal(mu, sigma, generator):
    return mu + sigma * float(torch.randn((), generator=generator, dtype=torch.float64, device=_gen_device(generator)))


def random_noise_levels(generator: torch.Generator | None = None) -> tuple[float, float]:
    """(shot, read) variances of Brooks et al.: log shot ~ U(log 1e-4, log 0.012),
    log read = 2.18 log shot + 1.2 + N(0, 0.26²)."""
    log_shot = _uniform(math.log(1e-4), math.log(0.012), generator)
    log_read = 2.18 * log_shot + 1.2 + _normal(0.0, 0.26, generator)
    return math.exp(log_shot), math.exp(log_read)


@dataclass(frozen=True)
class RawSensor:
    """One CMOS camera: ISP parameters and noise level (see module docstring).

    rgb2cam: 3x3 sRGB-linear -> camera RGB (rows sum to 1); identity by default.
    red_gain, blue_gain: white-balance gains; rgb_gain: brightness gain.
    shot_noise, read_noise: variances of y ~ N(x, read + shot x) on the [0, 1] RAW scale.
    clip: clip the RAW to [0, 1] (a sensor's white level) after un-processing and after noise.
    bayer: sample an RGGB mosaic and demosaic it back (False: keep three RAW channels).
    exposure: RAW scale before the noise (< 1: a low-light capture, relatively noisier).
    digital_gain: RAW scale after the noise (e.g. 1 / exposure: brightened back, noise amplified).
    """

    rgb2cam: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    red_gain: float = 2.0
    blue_gain: float = 1.7
    rgb_gain: float = 1.25
    shot_noise: float = 0.0
    read_noise: float = 0.0
    clip: bool = True
    bayer: bool = True
    exposure: float = 1.0
    digital_gain: float = 1.0
    kind: str = field(default="raw", init=False)

    def __post_init__(self):
        m = torch.as_tensor(self.rgb2cam, dtype=torch.float64)
        if m.shape != (3, 3):
            raise ConfigError(f"rgb2cam must be 3x3, got {tuple(m.shape)}")
        if abs(torch.linalg.det(m)) < 1e-9:
            raise ConfigError("rgb2cam must be invertible")
        object.__setattr__(self, "rgb2cam", tuple(tuple(float(v) for v in row) for row in m.tolist()))
        if min(self.red_gain, self.blue_gain, self.rgb_gain) <= 0:
            raise ConfigError("the gains must be > 0")
        if self.shot_noise < 0 or self.read_noise < 0:
            raise ConfigError("shot_noise and read_noise (variances) must be >= 0")
        if not self.exposure > 0 or not self.digital_gain > 0:
            raise ConfigError("exposure and digital_gain must be > 0")

    @classmethod
    def sample(cls, generator: torch.Generator | None = None, noise: bool = True, **overrides) -> "RawSensor":
        """A random camera with the ranges of Brooks et al. (noise levels too unless ``noise=False``)."""
        rgb2cam = random_ccm(generator)
        params = dict(rgb2cam=rgb2cam.tolist(), rgb_gain=1.0 / _normal(0.8, 0.1, generator),
                      red_gain=_uniform(1.9, 2.4, generator), blue_gain=_uniform(1.5, 1.9, generator))
        if noise:
            params["shot_noise"], params["read_noise"] = random_noise_levels(generator)
        params.update(overrides)
        return cls(**params)

    @property
    def gains(self) -> torch.Tensor:
        return torch.tensor([self.red_gain, 1.0, self.blue_gain], dtype=torch.float64) * self.rgb_gain

    @property
    def ccm(self) -> torch.Tensor:
        """cam2rgb = inverse of rgb2cam."""
        return torch.linalg.inv(torch.tensor(self.rgb2cam, dtype=torch.float64))

    # linear sRGB <-> RAW
    def unprocess_linear(self, linear_rgb: torch.Tensor) -> torch.Tensor:
        """Linear sRGB [..., 3, H, W] -> RAW (camera RGB, gains divided out; mosaicked if ``bayer``)."""
        cam = apply_ccm(linear_rgb, torch.tensor(self.rgb2cam, dtype=torch.float64))
        cam = cam / self.gains.to(cam)[:, None, None]
        if self.clip:
            cam = cam.clamp(0, 1)
        return mosaic(cam) if self.bayer else cam

    def process_linear(self, raw: torch.Tensor) -> torch.Tensor:
        """RAW -> linear sRGB (gains, demosaicing if ``bayer``, CCM); unclipped."""
        if self.bayer:
            h, w = raw.shape[-2:]
            raw = raw * (self.gains.to(raw) * 1.0)[:, None, None].mul(bayer_masks(h, w, raw.dtype, raw.device)).sum(0)
            rgb = demosaic_bilinear(raw)
        else:
            rgb = raw * self.gains.to(raw)[:, None, None]
        return apply_ccm(rgb, self.ccm)

    def unprocess(self, srgb: torch.Tensor) -> torch.Tensor:
        """sRGB (display-referred, tone-mapped) -> RAW: inverse tone, inverse gamma, CCM, gains, mosaic."""
        return self.unprocess_linear(gamma_expand(inverse_smoothstep(srgb)))

    def process(self, raw: torch.Tensor) -> torch.Tensor:
        """RAW -> sRGB: gains, demosaic, CCM, gamma, tone curve (clipped to [0, 1])."""
        return smoothstep(gamma_compress(self.process_linear(raw).clamp(0, 1)))

    def add_noise(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Heteroscedastic Gaussian ``N(x, read + shot x)`` (Brooks et al. eq. 2)."""
        if self.shot_noise == 0 and self.read_noise == 0:
            return raw
        device = _device(generator, raw)
        x = raw.detach().to(device, torch.float64)
        var = (self.read_noise + self.shot_noise * x.clamp(min=0)).clamp(min=0)
        noisy = x + var.sqrt() * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        if self.clip:
            noisy = noisy.clamp(0, 1)
        return noisy.to(raw.device, raw.dtype)

    def __call__(self, srgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """sRGB -> RAW (x exposure) -> noise -> (x digital gain) -> sRGB."""
        raw = self.unprocess(srgb)
        if self.exposure != 1:
            raw = raw * self.exposure
        raw = self.add_noise(raw, generator)
        if self.digital_gain != 1:
            raw = raw * self.digital_gain
        return self.process(raw)

    def apply_linear(self, linear: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A linear-light render (IEC sRGB decoding, as ``utils.sv_renderer.simulate_capture`` blurs)
        captured by this camera: ``__call__(linear_to_srgb(linear))``, so without noise, exposure and
        mosaic the result is the sRGB image of ``linear``, as ``NoiseModel.apply_linear`` gives."""
        return self(linear_to_srgb(linear.clamp(0, 1)), generator)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rgb2cam"] = [list(r) for r in self.rgb2cam]
        return d


def _range(value) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    value = [float(v) for v in value]
    if len(value) not in (1, 2) or value[0] > value[-1]:
        raise ConfigError(f"expected a value or LOW HIGH, got {value}")
    return value[0], value[-1]


def _log_uniform(value, generator) -> float:
    lo, hi = _range(value)
    if lo <= 0:
        raise ConfigError(f"a log-uniform range must be > 0, got {value}")
    return math.exp(_uniform(math.log(lo), math.log(hi), generator))


SENSOR_KINDS = ("qis", "raw")


def sample_sensor(kind: str, generator: torch.Generator | None = None, *, photons_per_pixel=(1.0, 10.0),
                  bits: int = 1, frames: int = 1, quantum_efficiency: float = 1.0, dark_counts: float = 0.0,
                  read_noise=0.0, exposure=(1.0, 1.0), digital_gain: bool = False, bayer: bool = True):
    """Draw one sensor per sample (what a dataset generator calls with the sample's generator).

    ``qis``: photons_per_pixel log-uniform in its range (low light: a few photons), the rest fixed,
    read_noise uniform in its range. ``raw``: a random camera and noise level of Brooks et al.
    (``RawSensor.sample``) with ``exposure`` log-uniform in its range (``digital_gain=True``
    brightens back by 1 / exposure after the noise)."""
    if kind == "qis":
        lo, hi = _range(read_noise)
        return QISSensor(photons_per_pixel=_log_uniform(photons_per_pixel, generator), bits=int(bits),
                         frames=int(frames), quantum_efficiency=float(quantum_efficiency),
                         dark_counts=float(dark_counts), read_noise=_uniform(lo, hi, generator))
    if kind == "raw":
        e = _log_uniform(exposure, generator)
        return RawSensor.sample(generator, exposure=e, digital_gain=1.0 / e if digital_gain else 1.0, bayer=bayer)
    raise ConfigError(f"sensor must be one of {SENSOR_KINDS}, got {kind!r}")


def low_light(srgb: torch.Tensor, exposure: float) -> torch.Tensor:
    """A darker exposure of an sRGB image: linear light scaled by ``exposure`` (< 1), re-encoded
    with the sRGB curve. Chain with ``RawSensor``/``QISSensor`` for low-light pairs."""
    return linear_to_srgb(srgb_to_linear(srgb) * float(exposure))


# Keywords of ``sample_sensor`` that each kind uses (the others would be silently ignored).
SENSOR_OPTIONS = {
    "qis": ("photons_per_pixel", "bits", "frames", "quantum_efficiency", "dark_counts", "read_noise"),
    "raw": ("exposure", "digital_gain", "bayer"),
}


def check_sensor_options(kind: str, options) -> dict:
    """Validate ``sample_sensor`` keywords for ``kind`` once, up front (unknown keys and keys of
    the other kind refused with a "did you mean"; a throwaway draw checks the values). Returns a
    plain dict (tuples as lists, so it round-trips through JSON/YAML unchanged)."""
    from collections.abc import Mapping

    from utils.registry import check_keywords, unknown_name_message

    if kind not in SENSOR_KINDS:
        raise ConfigError(unknown_name_message("sensor", kind, SENSOR_KINDS))
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"sensor options must be a mapping like {{photons_per_pixel: [1, 10]}}, got {options!r}")
    options = {str(k): (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(options).items()}
    check_keywords(options, list(SENSOR_OPTIONS[kind]), "sensor", f"the {kind} sensor")
    try:
        sample_sensor(kind, torch.Generator().manual_seed(0), **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sensor {kind}: {exc}") from None
    return options


def sensor_from_dict(params: dict):
    """The sensor an ``as_dict()`` describes (e.g. a dataset's ``sensor`` column, JSON-decoded)."""
    params = dict(params)
    kind = params.pop("kind", None)
    if kind == "qis":
        return QISSensor(**params)
    if kind == "raw":
        return RawSensor(**params)
    raise ConfigError(f"sensor kind must be one of {SENSOR_KINDS}, got {kind!r}")
