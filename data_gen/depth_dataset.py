"""Depth-aware datasets from synthetic layered scenes (step 3 ``--scenes layered``).

A scene is a background plane and 1..n fronto-parallel objects (image crops cut by an ellipse or a
rectangle) at distances drawn uniformly in 1/distance between the nearest and farthest depth of
the PSF file, far to near. ``gt`` is the all-in-focus composite, ``depth`` the distance of the
visible surface at each pixel, and ``lq`` the layered render (utils/layered_renderer.py): each
object blurred by the PSF field of its own depth (interpolated in 1/distance between the file's
planes), composited back to front with occlusion. The whole of every layer is known (the
background behind an object, an object behind a nearer one), so the render needs no guess of
hidden radiance. Blur in linear light, then noise, sRGB, 8 bits, as step 3's flat scenes.

Output (a Hugging Face dataset folder, the layout of DESIGN.md "Dataset on disk"):
``data/{split}-00000-of-00001.parquet`` with columns ``gt``, ``lq`` (8-bit PNG), ``depth``
(16-bit PNG, millimetres: metres = value / 1000), ``key``, ``layer_depths_m``, ``sources``,
``noise`` parameters, ``psf_file``; ``README.md`` (card), ``psfs/psfs.h5``, ``generation.json``.
Written in a hidden sibling folder and renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from utils import __version__
from utils.atomic import atomic_write_text
from utils.errors import ConfigError, DataError

# scikit-image sample images that load offline and are colour or textured enough for layers
SCENE_IMAGES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")
DEPTH_SCALE_M = 1e-3  # the depth PNG stores millimetres


@dataclass
class DepthSceneConfig:
    psf_data_path: str
    images: str = "builtin"
    splits: dict[str, int] = field(default_factory=lambda: {"train": 8, "validation": 2})
    seed: int = 0
    max_objects: int = 3
    noise: str = "none"
    sigma: tuple[float, float] = (0.0, 0.0)
    photons: tuple[float, float] = (0.0, 0.0)
    read_noise: tuple[float, float] = (0.0, 0.0)
    boundary: str = "reflect"
    render_space: str = "linear"
    command: str = ""
    sensor: str | None = None  # psf.sensors kind (qis | raw) in place of the noise model
    sensor_options: dict | None = None  # psf.sensors.sample_sensor keywords

    def validate(self):
        if self.sensor in (None, "none"):
            self.sensor, self.sensor_options = None, None
        else:
            from psf.sensors import check_sensor_options

            if self.noise != "none":
                raise ConfigError(f"sensor {self.sensor} replaces the noise model; drop noise {self.noise}")
            self.sensor_options = check_sensor_options(self.sensor, self.sensor_options)
        if not self.splits or any(int(n) < 1 for n in self.splits.values()):
            raise ConfigError(f"every split needs at least one scene, got {self.splits}")
        if self.max_objects < 1:
            raise ConfigError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.render_space not in ("linear", "srgb"):
            raise ConfigError(f"render_space must be linear or srgb, got {self.render_space}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sources(images: str) -> list[str]:
    if images == "builtin":
        return list(SCENE_IMAGES)
    from utils.image_io import list_images

    files = list_images(Path(images))
    if len(files) < 2:
        raise DataError(f"layered scenes need at least 2 images in {images}")
    return [str(p) for p in files]


def _load(images: str, name: str) -> np.ndarray:
    if images == "builtin":
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return np.ascontiguousarray(img[:, :, :3]).astype(np.float32) / 255.0
    from utils.image_io import read_image

    return read_image(name)


def _crop_resized(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``img`` with aspect w/h (at least half the largest), resized to h x w."""
    import cv2

    ih, iw = img.shape[:2]
    scale = min(ih / h, iw / w) * rng.uniform(0.5, 1.0)
    ch, cw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = img[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if cw >= w else cv2.INTER_CUBIC
    return np.clip(cv2.resize(crop, (w, h), interpolation=interp), 0.0, 1.0)


def layered_scene(rng: np.random.Generator, size: tuple[int, int], depth_range_m: tuple[float, float],
                  images: str = "builtin", max_objects: int = 3):
    """Layers of one scene, far to near: colours [L, H, W, 3], masks [L, H, W] (1 = object), depths [L]
    (the background, layer 0, covers everything), and the source names."""
    h, w = size
    near, far = depth_range_m
    names = _sources(images)
    n_obj = int(rng.integers(1, max_objects + 1))
    picks = rng.choice(len(names), size=n_obj + 1, replace=len(names) < n_obj + 1)
    # background at the far end; objects uniform in 1/distance between near and the background
    inv = np.sort(rng.uniform(1.0 / far, 1.0 / near, size=n_obj))  # ascending 1/d: far to near
    depths = [far] + [float(1.0 / v) for v in inv]
    colours, masks = [_crop_resized(_load(images, names[picks[0]]), h, w, rng)], [np.ones((h, w), np.float32)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for i in range(1, n_obj + 1):
        oh, ow = int(h * rng.uniform(0.3, 0.7)), int(w * rng.uniform(0.3, 0.7))
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        if rng.random() < 0.5:
            mask = ((yy - cy) / (oh / 2)) ** 2 + ((xx - cx) / (ow / 2)) ** 2 <= 1.0
        else:
            mask = (np.abs(yy - cy) <= oh / 2) & (np.abs(xx - cx) <= ow / 2)
        colours.append(_crop_resized(_load(images, names[picks[i]]), h, w, rng))
        masks.append(mask.astype(np.float32))
    return np.stack(colours), np.stack(masks), np.asarray(depths), [names[p] for p in picks]


def composite_sharp(colours: np.ndarray, masks: np.ndarray, depths: np.ndarray):
    """All-in-focus image and depth map of layers given far to near (painter's algorithm)."""
    img = colours[0].copy()
    depth = np.full(masks.shape[1:], depths[0], dtype=np.float64)
    for c, m, d in zip(colours[1:], masks[1:], depths[1:]):
        img = np.where(m[..., None] > 0, c, img)
        depth = np.where(m > 0, d, depth)
    return img, depth


def _png(arr: np.ndarray) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def features(sensor: bool = False):
    import datasets

    extra = {"sensor": datasets.Value("string")} if sensor else {}
    return datasets.Features({
        "gt": datasets.Image(), "lq": datasets.Image(), "depth": datasets.Image(), "key": datasets.Value("string"),
        "layer_depths_m": datasets.Sequence(datasets.Value("float64")),
        "sources": datasets.Sequence(datasets.Value("string")), "noise": datasets.Value("string"),
        "sigma": datasets.Value("float64"), "photons": datasets.Value("float64"),
        "read_noise": datasets.Value("float64"), "noise_seed": datasets.Value("int64"),
        "psf_file": datasets.Value("string"), **extra,
    })


def render_scene(renderer, colours, masks, depths, noise, noise_seed: int, linear_light: bool):
    """lq (uint8 H x W x 3) of one scene's layers through a ``LayeredRenderer``."""
    import torch

    from utils.noise import srgb_to_linear

    cols = torch.from_numpy(colours).permute(0, 3, 1, 2)[None].double()  # [1, L, 3, H, W]
    alphas = torch.from_numpy(masks)[None, :, None].double()
    if linear_light:
        y = renderer.render_layers(srgb_to_linear(cols), alphas, depths.tolist())
        y = noise.apply_linear(y, torch.Generator().manual_seed(noise_seed))  # sRGB out
    else:
        y = noise(renderer.render_layers(cols, alphas, depths.tolist()), torch.Generator().manual_seed(noise_seed))
    # the lab's 8-bit quantiser (utils.image_io.quantize): clamp, float64, round half to even
    return np.round(y[0].permute(1, 2, 0).double().clamp(0.0, 1.0).numpy() * 255.0).astype(np.uint8)


def build_depth_dataset(cfg: DepthSceneConfig, out: str | Path, progress: bool = True) -> Path:
    """Render every split's scenes and write the dataset folder ``out`` (replaced only when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from psf.depth import load_depth_psf_field
    from psf.field import resolve_psf_path
    from psf.sensors import sample_sensor
    from utils.layered_renderer import LayeredRenderer
    from utils.noise import sample_noise_model

    cfg.validate()
    out = Path(out)
    psf_path = resolve_psf_path(cfg.psf_data_path)
    stack = load_depth_psf_field(psf_path)
    if stack.n_depths < 2:
        raise ConfigError(f"{psf_path} has no depth axis; layered scenes need a depth stack "
                          "(step 1 with --focal_length_mm --focus_distance_m --object_distance_m D1 D2 ...)")
    h, w = stack.sensor_res
    if cfg.sensor == "raw" and cfg.sensor_options.get("bayer", True) and (h % 2 or w % 2):
        raise ConfigError(f"sensor raw samples a 2x2 Bayer mosaic: the sensor resolution ({h}, {w}) must be even")
    renderer = LayeredRenderer(stack, (h, w), cfg.boundary, "full", dtype=torch.float64)
    depth_range = (float(stack.depths_m[0]), float(stack.depths_m[-1]))
    if depth_range[1] / DEPTH_SCALE_M > 65535:
        raise ConfigError(f"depths up to {depth_range[1]} m do not fit the 16-bit millimetre depth PNG (max 65.535 m)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a dataset folder is as a plain mkdir makes it
    try:
        (stage / "data").mkdir()
        (stage / "psfs").mkdir()
        shutil.copyfile(psf_path, stage / "psfs" / "psfs.h5")
        total = sum(cfg.splits.values())
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="layered scenes", unit="scene")
        counts = {}
        for s_index, (split, n) in enumerate(cfg.splits.items()):
            rows = []
            for i in range(int(n)):
                scene_seed = int(np.random.SeedSequence([cfg.seed, s_index, i]).generate_state(1)[0])
                rng = np.random.default_rng(scene_seed)
                colours, masks, depths, names = layered_scene(rng, (h, w), depth_range, cfg.images, cfg.max_objects)
                colours = np.round(colours * 255.0) / 255.0  # 8-bit layers: gt holds exactly what is blurred
                gt, depth = composite_sharp(colours, masks, depths)
                gt8 = np.round(gt * 255.0).astype(np.uint8)
                if cfg.sensor is None:
                    noise = sample_noise_model(cfg.noise, cfg.sigma, cfg.photons, cfg.read_noise,
                                               generator=torch.Generator().manual_seed(scene_seed))
                else:
                    noise = sample_sensor(cfg.sensor, torch.Generator().manual_seed(scene_seed), **cfg.sensor_options)
                lq = render_scene(renderer, colours, masks, depths, noise, scene_seed + 1,
                                  cfg.render_space == "linear")
                rows.append({
                    "gt": {"bytes": _png(gt8), "path": None}, "lq": {"bytes": _png(lq), "path": None},
                    "depth": {"bytes": _png(np.round(depth / DEPTH_SCALE_M).astype(np.uint16)), "path": None},
                    "key": f"{split}_{i:05d}", "layer_depths_m": depths.tolist(),
                    "sources": [n if cfg.images == "builtin" else Path(n).name for n in names],
                    "noise": noise.kind, "noise_seed": scene_seed + 1, "psf_file": "psfs/psfs.h5"})
                if cfg.sensor is None:
                    rows[-1].update(sigma=noise.sigma, photons=noise.photons, read_noise=noise.read_noise)
                else:
                    rows[-1].update(sigma=0.0, photons=0.0, read_noise=0.0,
                                    sensor=json.dumps(noise.as_dict(), sort_keys=True))
                if bar is not None:
                    bar.update(1)
            table = pa.Table.from_pylist(rows, schema=features(cfg.sensor is not None).arrow_schema)
            pq.write_table(table, stage / "data" / f"{split}-00000-of-00001.parquet")
            counts[split] = len(rows)
        if bar is not None:
            bar.close()
        manifest = {"format": "restorelab layered scenes 1", "config": asdict(cfg), "splits": counts,
                    "sensor_res": [h, w], "depths_m": stack.depths_m.tolist(), "restorelab": __version__}
        atomic_write_text(stage / "generation.json", json.dumps(manifest, indent=1, default=list))
        atomic_write_text(stage / "README.md", dataset_card(cfg, manifest))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            stage.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _sensor_card(cfg: DepthSceneConfig) -> str:
    from data_gen.step3_writer import sensor_text

    return (sensor_text(cfg.sensor, cfg.sensor_options) + "; column `sensor`: each sample's sensor as JSON "
            "(`psf.sensors.sensor_from_dict(json.loads(sensor))`)")


def dataset_card(cfg: DepthSceneConfig, manifest: dict) -> str:
    import datasets
    import yaml

    info = datasets.DatasetInfo(features=features(cfg.sensor is not None))
    front = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in manifest["splits"]]}],
        "dataset_info": {"features": info._to_yaml_dict()["features"]},
        "task_categories": ["image-to-image"],
        "tags": ["image-restoration", "deblurring", "defocus", "rgb-d", "synthetic", "restorelab"],
    }
    h, w = manifest["sensor_res"]
    d = manifest["depths_m"]
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        "# Synthetic depth-dependent blur dataset (layered scenes)", "",
        f"Made by restorelab (step 3, `--scenes layered`, version {manifest['restorelab']}).", "",
        "| split | examples |", "|---|---|", *[f"| {s} | {n} |" for s, n in manifest["splits"].items()], "",
        "## How it was made", "",
        f"- Scenes of {w}x{h} px: a background plane at {d[-1]:g} m and 1-{cfg.max_objects} objects (crops of "
        + ("scikit-image's sample images " + ", ".join(SCENE_IMAGES) if cfg.images == "builtin" else f"images from `{cfg.images}`")
        + f" cut by ellipses or rectangles) at distances uniform in 1/distance between {d[0]:g} and {d[-1]:g} m.",
        "- `gt`: the all-in-focus composite (8-bit PNG). `depth`: distance of the visible surface, 16-bit PNG in "
        "millimetres (metres = value / 1000). `layer_depths_m`: the layers' distances, far to near.",
        "- `lq`: each layer blurred by the PSF field of its depth (`psfs/psfs.h5`, planes at "
        + ", ".join(f"{v:g}" for v in d) + " m, interpolated in 1/distance), composited back to front with "
        "occlusion (`utils.layered_renderer`), "
        + ("in linear light" if cfg.render_space == "linear" else "in sRGB values")
        + f", {cfg.boundary} boundary; "
        + (f"noise `{cfg.noise}`" if cfg.sensor is None else _sensor_card(cfg)) + "; 8 bits.",
        "", "## Command", "", "```", cfg.command or "(Python API)", "```", "",
    ]
    return "\n".join(lines)

