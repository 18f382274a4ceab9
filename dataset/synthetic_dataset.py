"""``SyntheticBlurDataset``: sharp images degraded on the fly by a spatially varying PSF field + noise
(or a simulated sensor)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from tqdm import tqdm

from dataset.base import Geometry, PairedImageDataset, as_size, check_psf_scale
from dataset.psf_keys import PSFAttacher, check_psf_keys
from dataset.sources import fit_to_size, list_sources, load_source
from dataset.transforms import check_downscale
from dataset.transforms import downscale as downscale_image
from utils.errors import ConfigError, DataError
from utils.image_io import quantize
from utils.registry import check_keywords

_FIELD_NAME = "psfs.h5"


def make_psf_field(psf_path: str | None, psf: Mapping | None):
    """The PSF field from a file (``psf_path``) or simulated from ``PSFSimulator`` options (``psf``)."""
    if (psf_path is None) == (psf is None):
        raise ConfigError("give exactly one of psf_path (a psfs.h5 file or its folder) and psf "
                          "(PSFSimulator options, e.g. {psf_type: gaussian, grid_shape: [5, 5], psf_size: 21, "
                          "sensor_res: [256, 256], seed: 0})")
    if psf_path is not None:
        from psf.field import load_psf_field, resolve_psf_path

        depths = _file_depths(resolve_psf_path(psf_path))
        if depths is not None:
            raise ConfigError(f"psf_path {psf_path} is a depth-aware PSF file ({len(depths)} planes, "
                              f"{_metres(depths)}) and SyntheticBlurDataset renders one object plane: {_DEPTH_HINT}")
        return load_psf_field(psf_path)
    from psf.svpsf import PSFSimulator

    if not isinstance(psf, Mapping):
        raise ConfigError(f"psf must be a mapping of PSFSimulator options, got {psf!r}")
    try:  # PSFSimulator checks its own options (and the PSF type's) with "did you mean" errors
        simulator = PSFSimulator(**dict(psf))
    except TypeError as exc:
        raise ConfigError(f"psf: {exc}") from None
    if simulator.depths_m is not None:  # checked before the (costly) simulation
        raise ConfigError(f"psf.object_distance_m lists {len(simulator.depths_m)} distances "
                          f"({_metres(simulator.depths_m)}), a depth stack, and SyntheticBlurDataset renders one "
                          f"object plane: give one distance (object_distance_m: {simulator.depths_m[0]:g}), or "
                          + _DEPTH_HINT)
    return simulator.simulate()


_DEPTH_HINT = ("for depth-dependent blur write a layered dataset (data_gen/3.generate_dataset_synthetic.py --scenes "
               "layered) and train on it with HFDataset (extra_keys: [depth]), or save one plane as its own file "
               "(psf.depth.load_depth_psf_field(path).at_depth(metres) with psf.field.save_psf_field) for psf_path")


def _metres(depths) -> str:
    return ", ".join(f"{float(d):g}" for d in depths) + " m"


def _file_depths(path) -> list[float] | None:
    """The object distances of a depth-aware PSF file, None for a single-plane file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return [float(v) for v in f["depths_m"][()]] if "depths_m" in f else None
    except OSError:
        return None  # load_psf_field reports an unreadable file


_NOISE_OPTIONS = ("kind", "sigma", "photons", "read_noise")


def check_noise_options(noise) -> dict:
    """Validate the ``noise`` mapping (utils.noise.sample_noise_model keywords) once, up front."""
    from utils.noise import NOISE_KINDS, sample_noise_model

    if not isinstance(noise, Mapping):
        raise ConfigError(f"noise must be a mapping like {{kind: gaussian, sigma: 0.01}}, got {noise!r}")
    noise = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(noise).items()}
    check_keywords(noise, list(_NOISE_OPTIONS), "noise", "the noise model")
    if noise.get("kind", "none") not in NOISE_KINDS:
        raise ConfigError(f"noise.kind must be one of {', '.join(NOISE_KINDS)}, got {noise.get('kind')!r}")
    for key in ("sigma", "photons", "read_noise"):
        value = noise.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and (len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and v >= 0 for v in values)
                                  or values[0] > values[-1]):
            raise ConfigError(f"noise.{key} must be a number >= 0 or a [low, high] range, got {value!r}")
    try:  # a draw with a throwaway generator catches what is left (e.g. photons <= 0)
        sample_noise_model(**noise, generator=torch.Generator().manual_seed(0))
    except ValueError as exc:
        raise ConfigError(f"noise: {exc}") from None
    return noise


def check_sensor_option(sensor, noise) -> tuple[str, dict] | None:
    """(kind, sample_sensor keywords) of the ``sensor`` mapping, checked once; None without one."""
    if sensor is None:
        return None
    if noise is not None:
        raise ConfigError("give noise or sensor, not both (a sensor model brings its own noise)")
    if not isinstance(sensor, Mapping) or "kind" not in sensor:
        raise ConfigError(f"sensor must be a mapping like {{kind: qis, photons_per_pixel: [1, 10]}} or "
                          f"{{kind: raw, exposure: [0.05, 0.2], digital_gain: true}}, got {sensor!r}")
    from psf.sensors import check_sensor_options

    options = {k: v for k, v in dict(sensor).items() if k != "kind"}
    return sensor["kind"], check_sensor_options(sensor["kind"], options)


class SyntheticBlurDataset(PairedImageDataset):
    """Sharp images (``skimage.data`` built-ins or a folder) blurred by a spatially varying PSF
    field (``utils.sv_renderer.render``, linear convolution) plus Gaussian noise.

    YAML keys (constructor keywords)::

        type: SyntheticBlurDataset
        images: builtin            # "builtin" (skimage.data) or a folder of images
        names: null                # only these images (built-in names / relative paths w/o extension)
        exclude: [astronaut]       # leave these out (held-out images)
        image_size: null           # [H, W] each image is centre-cropped + resized to (default: sensor_res)
        psf_path: null             # a psfs.h5 file (or its folder) ...
        psf: {psf_type: gaussian, grid_shape: [5, 5], psf_size: 21, sensor_res: [256, 256], seed: 0}
                                   # ... or PSFSimulator options (exactly one of the two)
        boundary: reflect          # renderer boundary: reflect | zero
        linear_light: true         # blur (and Poisson noise) in linear light, as a camera; false: in sRGB
        noise: {kind: gaussian, sigma: 0.01}
                                   # utils.noise: kind none | gaussian (sigma, sRGB units) |
                                   # poisson_gaussian (photons at white, read_noise in electrons);
                                   # a [low, high] range is drawn per sample
        sensor: null               # instead of noise: a simulated sensor (psf/sensors.py), drawn per
                                   # sample as step 3's --sensor: {kind: qis, photons_per_pixel: [1, 10],
                                   # bits: 1, frames: 1, quantum_efficiency: 1, dark_counts: 0, read_noise: 0}
                                   # or {kind: raw, exposure: [0.05, 0.2], digital_gain: true, bayer: true}
        quantize_bits: 8           # round gt and lq to 8-bit levels like stored PNGs (null: keep float)
        samples_per_image: 1       # samples per image per epoch (many random crops of few images)
        phase: train               # train (random crop/flips/noise) | val | test (fixed noise); set by the trainer
        crop_size: 96
        use_flip: true
        use_rot: true
        seed: 0
        psf_keys: []               # any of psf, basis_psfs, basis_coef
        skip_bad_samples: false    # true: an unreadable source image is left out (logged, counted)
        scale: 1                   # ×scale super-resolution: lq = the blurred image downscaled by scale
        downscale: bicubic         # bicubic (antialiased, PIL/MATLAB kernel) | area (block mean)

    The forward model is step 3's (``utils.sv_renderer.simulate_capture``): sRGB gt -> linear
    light -> spatially varying blur -> noise -> sRGB -> 8-bit. Each source image is prepared once
    at construction (crop/resize to ``image_size``, quantised, blurred by the whole field, so the
    blur of any crop is exact with no artificial crop border); per sample only the crop, flips,
    noise level and noise are drawn, from the (seed, epoch, index) generator. Validation and test
    samples always use epoch 0, so their noise is fixed.

    ``sensor`` (instead of ``noise``; psf/sensors.py, the keywords of step 3's ``--sensor_options``)
    captures the blur with a quanta image sensor or a CMOS RAW camera drawn per sample from the
    sample's generator (photon level, camera, noise level), then the sensor's draws. Depth PSF
    fields (several object distances) are refused: one plane is rendered here; depth-dependent
    blur comes from step 3's layered scenes (``HFDataset`` with ``extra_keys: [depth]``).

    With ``scale`` > 1 (SR pairs) the noise-free blur (in linear light when ``linear_light``) is
    downscaled once per image (``dataset.transforms.downscale``), then the noise is added at lq
    resolution; ``crop_size`` is in lq pixels and gt is the ``scale``× larger crop of the same
    content. ``image_size`` must then be a multiple of ``scale``. With no blur wanted, use a
    delta PSF (e.g. a gaussian field of tiny ``sigma_px``).
    """

    def __init__(
        self,
        images: str = "builtin",
        names: list[str] | None = None,
        exclude: list[str] | None = None,
        image_size: int | list[int] | None = None,
        psf_path: str | None = None,
        psf: dict | None = None,
        boundary: str = "reflect",
        linear_light: bool = True,
        noise: dict | None = None,
        sensor: dict | None = None,
        quantize_bits: int | None = 8,
        samples_per_image: int = 1,
        phase: str = "train",
        crop_size: int | list[int] | None = None,
        use_flip: bool = True,
        use_rot: bool = True,
        seed: int = 0,
        psf_keys: list[str] | None = None,
        skip_bad_samples: bool = False,
        scale: int = 1,
        downscale: str = "bicubic",
    ):
        from utils.noise import srgb_to_linear
        from utils.sv_renderer import SVRenderer

        super().__init__(phase=phase, crop_size=crop_size, use_flip=use_flip, use_rot=use_rot,
                         seed=seed, skip_bad_samples=skip_bad_samples, scale=scale)
        self.downscale = check_downscale(downscale)
        check_psf_scale(check_psf_keys(psf_keys), self.scale)
        self.sensor = check_sensor_option(sensor, noise)
        self.noise = check_noise_options({"kind": "gaussian", "sigma": 0.01} if noise is None else noise)
        self.linear_light = bool(linear_light)
        if quantize_bits not in (None, 8, 16):
            raise ConfigError(f"quantize_bits must be 8, 16 or null, got {quantize_bits!r}")
        if not isinstance(samples_per_image, int) or samples_per_image < 1:
            raise ConfigError(f"samples_per_image must be a positive integer, got {samples_per_image!r}")
        if boundary not in ("reflect", "zero"):
            raise ConfigError(f"boundary must be reflect or zero, got {boundary!r}")
        self.quantize_bits = quantize_bits
        self.samples_per_image = samples_per_image
        self.field = make_psf_field(psf_path, psf)
        self.image_size = as_size(image_size, "image_size") or tuple(self.field.sensor_res)
        if self.image_size[0] % self.scale or self.image_size[1] % self.scale:
            raise ConfigError(f"image_size {list(self.image_size)} must be a multiple of scale {self.scale}")

        self.keys_: list[str] = []
        self.gt_images: list[torch.Tensor] = []
        self.blurred: list[torch.Tensor] = []  # noise-free blur (lq size), in linear light when linear_light
        renderer = SVRenderer(self.field, self.image_size, boundary)
        sources = list_sources(images, names, exclude)
        for name, path in tqdm(sources, desc="blurring source images", unit="img", disable=len(sources) < 8):
            try:
                img = fit_to_size(load_source(name, path), self.image_size)
            except DataError as exc:
                if not skip_bad_samples:
                    raise
                self.skipped[name] = str(exc)
                continue
            if quantize_bits:
                img = quantize(img, quantize_bits)
            gt = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            with torch.no_grad():
                blurred = renderer((srgb_to_linear(gt) if self.linear_light else gt)[None])[0].float()
                blurred = downscale_image(blurred, self.scale, self.downscale)
            self.keys_.append(name)
            self.gt_images.append(gt)
            self.blurred.append(blurred)
        if not self.keys_:
            raise DataError(f"no readable source image ({len(self.skipped)} skipped)")
        if check_psf_keys(psf_keys):
            self.psf_attacher = PSFAttacher({_FIELD_NAME: self.field}, psf_keys)
        if self.sensor is not None and self.sensor[0] == "raw" and self.sensor[1].get("bayer", True):
            lq_size = self.crop_size or (self.image_size[0] // self.scale, self.image_size[1] // self.scale)
            if lq_size[0] % 2 or lq_size[1] % 2:
                raise ConfigError(f"sensor raw samples a 2x2 Bayer mosaic: the lq size {list(lq_size)} "
                                  f"({'crop_size' if self.crop_size else 'image_size / scale'}) must be even, "
                                  "or set sensor.bayer: false")

    def __len__(self) -> int:
        return len(self.keys_) * self.samples_per_image

    def image_index(self, index: int) -> int:
        return index // self.samples_per_image

    def sample_key(self, index: int) -> str:
        name = self.keys_[self.image_index(index)]
        return name if self.samples_per_image == 1 else f"{name}#{index % self.samples_per_image}"

    def load_pair(self, index: int):
        i = self.image_index(index)
        return self.gt_images[i], self.blurred[i], self.sample_key(index)

    def psf_field_name(self, index: int) -> str:
        return _FIELD_NAME

    def finish_sample(self, sample: dict, index: int, geometry: Geometry, generator: torch.Generator) -> None:
        """Noise (or a sensor) on the (cropped, flipped) noise-free blur, then back to sRGB and quantised."""
        from utils.noise import sample_noise_model

        if self.sensor is not None:
            from psf.sensors import sample_sensor

            noise = sample_sensor(self.sensor[0], generator, **self.sensor[1])
        else:
            noise = sample_noise_model(**self.noise, generator=generator)
        blurred = sample["lq"]
        lq = noise.apply_linear(blurred, generator) if self.linear_light else noise(blurred, generator)
        sample["lq"] = (quantize(lq, self.quantize_bits) if self.quantize_bits else lq).contiguous()
