"""Step 3's writer: a paired (gt, lq) Hugging Face dataset folder rendered from a PSF field.

The CLI is ``data_gen/3.generate_dataset_synthetic.py``; docs/data_generation.md is the user guide.

Pipeline per sample: source image -> crop with the sensor's aspect (centre crop for the first
sample of an image, seeded random crops after) -> resize to ``sensor_res`` -> quantise to
8 bits = ``gt`` -> ``lq = quantise(noise(render(gt)))`` (``utils.sv_renderer.simulate_capture``:
blur in linear light by default, Poisson-Gaussian noise in linear light or Gaussian in sRGB).

Layout written under ``--out``::

    generation.json                         manifest: every argument that affects the bytes
    psfs/psfs.h5                            byte copy of the PSF file; samples are rendered from it
                                            (several fields: psfs/NN-<name>.h5, one per --psf_data_path)
    data/{split}-{i:05d}-of-{n:05d}.parquet columns gt, lq (Image), key, metadata
    README.md                               dataset card (written last, by the merge step)

Several PSF fields (``--psf_data_path A B ...``): each sample is rendered with one of them,
assigned per split in a seeded shuffled order, cyclically, so every field gets an equal share
of every split (±1); the ``psf_file`` column names the sample's field.

Determinism: every sample has its own seeds derived from (seed, source index, sample index),
so which process renders it, and when, does not matter; rendering runs single-threaded.
Restartable: a shard file appears only complete (``utils.atomic``: temp name, fsync, rename) and is skipped when
present; a manifest mismatch refuses to mix two configurations in one folder. Job arrays:
task i of n renders the shards whose global index is i mod n; ``--merge`` then checks all
shards and writes the card. A single-process run is the same as n tasks + merge.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import __version__
from utils.atomic import atomic_create_text, atomic_path, atomic_write_text
from utils.errors import ConfigError, DataError

MANIFEST = "generation.json"
PSF_COPY = "psfs/psfs.h5"
FORMAT_VERSION = 1
PNG_COMPRESSION = 6
SPLIT_ORDER = ("train", "validation", "test")
ROWS_PER_GROUP = 100


# -- sources ---------------------------------------------------------------------------------------
# The images come from dataset/sources.py (the one list of built-ins and the one loader); step 3
# names a folder image by its relative path *with* the extension (as recorded in generation.json).
def step3_sources(images: str) -> list[dict]:
    """Sorted source descriptions ``{name, bytes}`` (bytes: file size, None for built-ins)."""
    from dataset.sources import list_sources

    if images == "builtin":
        return [{"name": name, "bytes": None} for name, _ in list_sources(images)]
    folder = Path(images)
    entries = [{"name": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size} for _, p in list_sources(images)]
    return sorted(entries, key=lambda s: s["name"])


def read_step3_source(images: str, name: str) -> np.ndarray:
    """Float32 RGB [0, 1] H×W×3 of one source (``images`` = 'builtin' or a folder)."""
    from dataset.sources import load_source

    return load_source(name, None if images == "builtin" else Path(images) / name)


def _probe(args) -> tuple[int, int]:
    images, name = args
    img = read_step3_source(images, name)
    return img.shape[0], img.shape[1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- configuration ---------------------------------------------------------------------------------
@dataclass
class GenerationConfig:
    """Everything that determines the output bytes (stored in generation.json)."""

    psf_data_path: str | list  # one PSF folder/file, or several (a dataset mixing fields)
    images: str
    seed: int = 0
    splits: dict | None = None  # split -> fraction, e.g. {"train": 0.9, "validation": 0.1}
    split_names: dict | None = None  # split -> explicit list of source names
    samples_per_image: int = 1
    min_crop: float = 0.5
    noise: str = "none"
    sigma: tuple = (0.0, 0.0)
    photons: tuple = (1000.0, 1000.0)
    read_noise: tuple = (0.0, 0.0)
    boundary: str = "reflect"
    render_space: str = "linear"
    method: str = "full"
    samples_per_shard: int = 256
    sensor: str | None = None  # psf.sensors kind (qis | raw) in place of the noise model
    sensor_options: dict | None = None  # psf.sensors.sample_sensor keywords

    def __post_init__(self):
        if isinstance(self.psf_data_path, (list, tuple)):
            paths = [str(p) for p in self.psf_data_path]
            # One path stays a string: a single-field dataset's manifest is unchanged.
            self.psf_data_path = paths[0] if len(paths) == 1 else paths
        splits = dict(self.splits or {"train": 0.9, "validation": 0.1})
        # One canonical order (train, validation, test, others sorted): shard numbering never
        # depends on how the splits were typed or on a JSON round trip.
        order = sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
        self.splits = {s: float(splits[s]) for s in order}
        self.split_names = {k: list(v) for k, v in (self.split_names or {}).items()}
        self.sigma, self.photons, self.read_noise = (tuple(float(v) for v in r) for r in (self.sigma, self.photons, self.read_noise))
        if self.sensor in (None, "none"):
            self.sensor = None
            if self.sensor_options:
                raise ConfigError("--sensor_options needs --sensor qis or raw")
            self.sensor_options = None
        else:
            from psf.sensors import check_sensor_options

            self.sensor_options = check_sensor_options(self.sensor, self.sensor_options)
        self.validate()

    def validate(self):
        from utils.noise import NOISE_KINDS
        from utils.sv_renderer import BOUNDARIES

        def bad(msg):
            raise ConfigError(msg)

        for name, frac in self.splits.items():
            if not name.replace("_", "").isalnum():
                bad(f"split name {name!r} must be letters, digits or '_'")
            if not 0 <= frac <= 1:
                bad(f"split fraction {name}={frac} must be in [0, 1]")
        if "train" not in self.splits:
            bad("--splits must include train (the split that takes the images left over)")
        if abs(sum(self.splits.values()) - 1) > 1e-6:
            bad(f"split fractions must sum to 1, got {sum(self.splits.values()):g} ({self._splits_arg()})")
        for name in self.split_names:
            if name not in self.splits:
                bad(f"--split_names names split {name!r}, which is not in --splits ({', '.join(self.splits)})")
        if self.samples_per_image < 1:
            bad(f"--samples_per_image must be >= 1, got {self.samples_per_image}")
        if not 0 < self.min_crop <= 1:
            bad(f"--min_crop must be in (0, 1], got {self.min_crop}")
        if self.noise not in NOISE_KINDS:
            bad(f"--noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")
        for name, (lo, hi) in (("sigma", self.sigma), ("photons", self.photons), ("read_noise", self.read_noise)):
            if lo < 0 or hi < lo:
                bad(f"--{name} range must satisfy 0 <= low <= high, got {lo:g} {hi:g}")
        if self.noise == "poisson_gaussian" and self.photons[0] <= 0:
            bad("--photons must be > 0 for poisson_gaussian noise")
        if self.sensor is not None and self.noise != "none":
            bad(f"--sensor {self.sensor} replaces the noise model; drop --noise {self.noise}")
        if self.boundary not in BOUNDARIES:
            bad(f"--boundary must be one of {', '.join(BOUNDARIES)}")
        if self.render_space not in ("linear", "srgb"):
            bad("--render_space must be linear or srgb")
        if self.method not in ("full", "basis", "tiles"):
            bad("--method must be full, basis or tiles")
        if self.samples_per_shard < 1:
            bad(f"--samples_per_shard must be >= 1, got {self.samples_per_shard}")
        if len(set(self.psf_paths)) != len(self.psf_paths):
            bad("--psf_data_path lists the same PSF path twice")

    @property
    def psf_paths(self) -> list[str]:
        return list(self.psf_data_path) if isinstance(self.psf_data_path, list) else [self.psf_data_path]

    def _splits_arg(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.splits.items())

    def as_dict(self) -> dict:
        # Without a sensor the sensor keys are left out: such a manifest is byte for byte what
        # earlier versions wrote, so their dataset folders still resume.
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if self.sensor is not None or k not in ("sensor", "sensor_options")}

    def command(self) -> str:
        """The command line that regenerates this dataset (any output folder)."""
        def rng(v):
            return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g} {v[1]:g}"

        parts = ["python data_gen/3.generate_dataset_synthetic.py", f"--psf_data_path {' '.join(self.psf_paths)}",
                 f"--images {self.images}", "--out DATASET_DIR", f"--seed {self.seed}", f"--splits {self._splits_arg()}"]
        parts += [f"--split_names {k}={','.join(v)}" for k, v in self.split_names.items()]
        parts += [f"--samples_per_image {self.samples_per_image}", f"--min_crop {self.min_crop:g}", f"--noise {self.noise}"]
        if self.noise == "gaussian":
            parts.append(f"--sigma {rng(self.sigma)}")
        if self.noise == "poisson_gaussian":
            parts += [f"--photons {rng(self.photons)}", f"--read_noise {rng(self.read_noise)}"]
        if self.sensor is not None:
            parts.append(f"--sensor {self.sensor}")
            if self.sensor_options:
                parts.append(f"--sensor_options '{json.dumps(self.sensor_options, sort_keys=True)}'")
        parts += [f"--boundary {self.boundary}", f"--render_space {self.render_space}", f"--method {self.method}",
                  f"--samples_per_shard {self.samples_per_shard}"]
        return " ".join(parts)


# -- the plan --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    split: str
    key: str
    source: str
    source_index: int
    index: int  # sample number within its source image
    height: int  # source size
    width: int
    field: int = 0  # which PSF field renders it (index into psf_copies)


def assign_splits(cfg: GenerationConfig, names: list[str]) -> dict[str, list[str]]:
    """Source names per split: explicit lists first, then a seeded shuffle cut by the fractions."""
    known = set(names)
    taken: dict[str, list[str]] = {s: [] for s in cfg.splits}
    used: set[str] = set()
    for split, wanted in cfg.split_names.items():
        for name in wanted:
            match = _match_source(name, names)
            if match is None:
                from utils.registry import closest

                guess = closest(name, sorted(known))
                raise ConfigError(f"--split_names {split}: no source image named {name!r}"
                                  + (f"; did you mean {guess!r}?" if guess else ""))
            if match in used:
                raise ConfigError(f"--split_names: {match!r} is listed twice")
            taken[split].append(match)
            used.add(match)
    rest = [n for n in names if n not in used]
    order = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5E11])).permutation(len(rest))
    rest = [rest[i] for i in order]
    free = [s for s in cfg.splits if s not in cfg.split_names]
    total = len(names)
    start = 0
    for split in free:
        if split == "train":
            continue
        frac = cfg.splits[split]
        n = min(len(rest) - start, max(1 if frac > 0 else 0, int(round(frac * total))))
        taken[split] += rest[start:start + n]
        start += n
    if "train" in free:
        taken["train"] += rest[start:]
    elif start < len(rest):
        taken["train"] += rest[start:]
    for split, members in taken.items():
        if not members and (cfg.splits[split] > 0 or split == "train"):
            raise ConfigError(f"split {split!r} gets no image ({total} source images for {cfg._splits_arg()})")
    return {s: sorted(m) for s, m in taken.items() if m}


def _match_source(name: str, names: list[str]) -> str | None:
    if name in names:
        return name
    stems = [n for n in names if n.rsplit(".", 1)[0] == name]
    return stems[0] if len(stems) == 1 else None


def make_plan(cfg: GenerationConfig, sources: list[dict]) -> dict[str, list[Sample]]:
    index = {s["name"]: i for i, s in enumerate(sources)}
    stems = [s["name"].rsplit(".", 1)[0] if cfg.images != "builtin" else s["name"] for s in sources]
    clash = {st for st in stems if stems.count(st) > 1}  # a.png and a.jpg: keep the extension in the key
    plan = {}
    for split, names in assign_splits(cfg, [s["name"] for s in sources]).items():
        samples = []
        for name in names:
            src, stem = sources[index[name]], stems[index[name]]
            base = (name.replace(".", "_") if stem in clash else stem).replace("/", "__")
            for j in range(cfg.samples_per_image):
                samples.append(Sample(split, f"{base}_{j:03d}", name, index[name], j, src["height"], src["width"]))
        plan[split] = _assign_fields(cfg, split, samples)
    return plan


def _assign_fields(cfg: GenerationConfig, split: str, samples: list[Sample]) -> list[Sample]:
    """Several fields: a seeded shuffle of the split's samples takes fields 0, 1, ..., n-1, 0, ...
    in turn, so each field gets an equal share (±1) of every split."""
    from dataclasses import replace

    n = len(cfg.psf_paths)
    if n == 1:
        return samples
    seed = [cfg.seed, 0xF1E1D, *split.encode()]
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(len(samples))
    fields = np.empty(len(samples), dtype=np.int64)
    fields[order] = np.arange(len(samples)) % n
    return [replace(sample, field=int(f)) for sample, f in zip(samples, fields)]


def psf_copies(cfg: GenerationConfig) -> list[str]:
    """Relative paths of the PSF files inside the dataset, in ``--psf_data_path`` order:
    ``psfs/psfs.h5`` for one field, ``psfs/NN-<name>.h5`` for several."""
    import re

    paths = cfg.psf_paths
    if len(paths) == 1:
        return [PSF_COPY]
    out = []
    for i, path in enumerate(paths):
        p = Path(path)
        name = p.stem if p.suffix in (".h5", ".hdf5") and p.stem != "psfs" else (p.parent.name if p.suffix else p.name)
        out.append(f"psfs/{i:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'field'}.h5")
    return out


def shard_files(cfg: GenerationConfig, plan: dict[str, list[Sample]]) -> list[tuple[str, list[Sample]]]:
    """(relative path, samples) of every output shard, in a fixed global order."""
    out = []
    for split in cfg.splits:
        samples = plan.get(split, [])
        n = -(-len(samples) // cfg.samples_per_shard)
        for i in range(n):
            out.append((f"data/{split}-{i:05d}-of-{n:05d}.parquet",
                        samples[i * cfg.samples_per_shard:(i + 1) * cfg.samples_per_shard]))
    return out


def sample_seeds(seed: int, sample: Sample) -> tuple[int, int]:
    """(crop/parameter seed, noise seed) of one sample, independent of splits and processes."""
    a, b = np.random.SeedSequence([seed, sample.source_index, sample.index]).generate_state(2, dtype=np.uint32)
    return int(a), int(b)


def crop_box(sample: Sample, sensor_res: tuple[int, int], min_crop: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) in the source: the largest window with the sensor's aspect ratio (centred)
    for the first sample of an image, a random window of side ∈ [min_crop, 1] × that after."""
    hs, ws = sensor_res
    scale_max = min(sample.height / hs, sample.width / ws)
    u_scale, u_x, u_y = rng.random(3)
    scale = scale_max if sample.index == 0 else scale_max * (min_crop + (1 - min_crop) * u_scale)
    w = max(1, min(sample.width, int(round(ws * scale))))
    h = max(1, min(sample.height, int(round(hs * scale))))
    if sample.index == 0:
        x0, y0 = (sample.width - w) // 2, (sample.height - h) // 2
    else:
        x0, y0 = int(u_x * (sample.width - w + 1)), int(u_y * (sample.height - h + 1))
    return x0, y0, w, h


# -- rendering (runs in worker processes) --------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(cfg_dict: dict, psf_files: list[str]):
    import cv2
    import torch

    from psf.field import load_psf_field
    from utils.sv_renderer import SVRenderer

    torch.set_num_threads(1)  # identical arithmetic in every process
    cv2.setNumThreads(1)
    cfg = GenerationConfig(**cfg_dict)
    fields = [load_psf_field(path) for path in psf_files]
    # float64: MKL's FFT may differ in the last bit with memory alignment; in float64 that can
    # no longer move a pixel across a rounding boundary, so bytes are reproducible.
    renderers = [SVRenderer(f, f.sensor_res, cfg.boundary, cfg.method, dtype=torch.float64) for f in fields]
    _WORKER.update(cfg=cfg, fields=fields, renderers=renderers, copies=psf_copies(cfg))


def render_sample(sample: Sample) -> dict:
    """One row: encoded gt/lq PNGs and the sample's metadata."""
    import cv2
    import torch

    from utils.image_io import image_to_tensor, quantize_levels
    from utils.noise import sample_noise_model
    from utils.sv_renderer import simulate_capture

    cfg = _WORKER["cfg"]
    field, renderer = _WORKER["fields"][sample.field], _WORKER["renderers"][sample.field]
    hs, ws = field.sensor_res
    param_seed, noise_seed = sample_seeds(cfg.seed, sample)
    rng = np.random.default_rng(param_seed)
    x0, y0, w, h = crop_box(sample, (hs, ws), cfg.min_crop, rng)
    img = read_step3_source(cfg.images, sample.source)
    if img.shape[:2] != (sample.height, sample.width):
        raise DataError(f"{sample.source} is now {img.shape[1]}x{img.shape[0]}, was {sample.width}x{sample.height} "
                        "when this dataset was started; use a new --out")
    crop = img[y0:y0 + h, x0:x0 + w]
    interp = cv2.INTER_AREA if w >= ws else cv2.INTER_CUBIC
    gt = quantize_levels(cv2.resize(crop, (ws, hs), interpolation=interp), 8)
    if cfg.sensor is None:
        noise = sample_noise_model(cfg.noise, cfg.sigma, cfg.photons, cfg.read_noise,
                                   generator=torch.Generator().manual_seed(param_seed))
    else:  # a simulated sensor (QIS or CMOS RAW) in place of the noise model, drawn per sample
        from psf.sensors import sample_sensor

        noise = sample_sensor(cfg.sensor, torch.Generator().manual_seed(param_seed), **cfg.sensor_options)
    gt_t = image_to_tensor(gt.astype(np.float32) / 255.0)[None].double()
    lq_t = simulate_capture(gt_t, renderer, noise, torch.Generator().manual_seed(noise_seed),
                            linear_light=cfg.render_space == "linear", bits=8)
    lq = np.round(lq_t[0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
    if cfg.sensor is not None:
        return {**_row(sample, gt, lq, (x0, y0, w, h), noise.kind, 0.0, 0.0, 0.0, noise_seed, cfg),
                "sensor": json.dumps(noise.as_dict(), sort_keys=True)}
    return _row(sample, gt, lq, (x0, y0, w, h), noise.kind, noise.sigma, noise.photons, noise.read_noise, noise_seed, cfg)


def _row(sample, gt, lq, box, kind, sigma, photons, read_noise, noise_seed, cfg) -> dict:
    return {
        "gt": {"bytes": encode_png(gt), "path": None},
        "lq": {"bytes": encode_png(lq), "path": None},
        "key": sample.key,
        "source": sample.source if cfg.images != "builtin" else f"skimage.data.{sample.source}",
        "crop_box": list(box),
        "noise": kind,
        "sigma": sigma,
        "photons": photons,
        "read_noise": read_noise,
        "noise_seed": noise_seed,
        "psf_file": _WORKER["copies"][sample.field],
    }


def encode_png(rgb_uint8: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb_uint8[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise DataError("PNG encoding failed")
    return buf.tobytes()


def features(sensor: bool = False):
    """The columns; ``sensor=True`` (a ``--sensor`` dataset) adds ``sensor``, the sample's sensor as
    JSON (``psf.sensors.sensor_from_dict(json.loads(...))`` rebuilds it)."""
    import datasets

    extra = {"sensor": datasets.Value("string")} if sensor else {}
    return datasets.Features({
        "gt": datasets.Image(), "lq": datasets.Image(), "key": datasets.Value("string"),
        "source": datasets.Value("string"), "crop_box": datasets.Sequence(datasets.Value("int32")),
        "noise": datasets.Value("string"), "sigma": datasets.Value("float64"), "photons": datasets.Value("float64"),
        "read_noise": datasets.Value("float64"), "noise_seed": datasets.Value("int64"), "psf_file": datasets.Value("string"),
        **extra,
    })


def write_shard(rows: list[dict], path: Path) -> None:
    """Write one parquet shard atomically (hidden temp name in the same folder, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features(sensor=bool(rows) and "sensor" in rows[0]).arrow_schema
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path, suffix=".tmp") as tmp:
        pq.write_table(table, tmp, row_group_size=ROWS_PER_GROUP)


# -- the run ---------------------------------------------------------------------------------------------
def _software() -> dict:
    import cv2
    import pyarrow
    import torch

    return {"restorelab": __version__, "torch": torch.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "pyarrow": pyarrow.__version__}


def prepare(cfg: GenerationConfig, out: Path, workers: int) -> dict:
    """Validate inputs, then create (or check) the manifest and the PSF copy. Returns the manifest."""
    from psf.field import load_psf_field, resolve_psf_path

    psf_paths = [resolve_psf_path(p) for p in cfg.psf_paths]
    fields = [load_psf_field(p) for p in psf_paths]  # validates the files before anything is written
    for path, field in zip(psf_paths, fields):
        if cfg.method == "basis" and not field.has_basis:
            raise ConfigError(f"--method basis but {path} has no basis (run data_gen/2.generate_basis_psfs.py)")
        first = fields[0]
        if (field.sensor_res, field.c_out, field.c_in) != (first.sensor_res, first.c_out, first.c_in):
            raise ConfigError(f"the PSF fields must share the sensor resolution and channel layout: {psf_paths[0]} has "
                              f"{tuple(first.sensor_res)} [C_out={first.c_out}, C_in={first.c_in}], {path} has "
                              f"{tuple(field.sensor_res)} [C_out={field.c_out}, C_in={field.c_in}]")
    field = fields[0]
    if cfg.sensor == "raw" and cfg.sensor_options.get("bayer", True) and any(v % 2 for v in field.sensor_res):
        raise ConfigError(f"--sensor raw samples a 2x2 Bayer mosaic: the sensor resolution {tuple(field.sensor_res)} "
                          "must be even (or pass --sensor_options '{\"bayer\": false}')")
    sources = step3_sources(cfg.images)
    existing = _read_manifest(out)
    if existing is not None and [(s["name"], s["bytes"]) for s in existing["sources"]] == [(s["name"], s["bytes"]) for s in sources]:
        sources = existing["sources"]  # sizes already probed
    else:
        sources = _probe_sizes(cfg.images, sources, workers)
    manifest = {
        "format": FORMAT_VERSION,
        "config": cfg.as_dict(),
        "psf_sha256": sha256_file(psf_paths[0]) if len(psf_paths) == 1 else [sha256_file(p) for p in psf_paths],
        "sensor_res": list(field.sensor_res),
        "sources": sources,
        "software": _software(),
    }
    plan = make_plan(cfg, sources)
    manifest["splits"] = {s: {"num_examples": len(v), "num_shards": -(-len(v) // cfg.samples_per_shard)} for s, v in plan.items()}
    if len(psf_paths) > 1:
        manifest["psf_files"] = psf_copies(cfg)
    if existing is not None:
        _check_same(existing, manifest, out)
        return existing
    if out.exists():
        # Only what a concurrent task of the same run may have made so far is tolerated.
        foreign = [p.name for p in out.iterdir() if p.name != "psfs" and not p.name.startswith(f".{MANIFEST}.")]
        if foreign:
            # Tasks of a job array start together: another one may have created the manifest (and
            # started its shards) while this one checked the images. A manifest is created whole
            # (link below) before anything else, so read it again before calling the folder foreign.
            existing = _read_manifest(out)
            if existing is None:
                raise DataError(f"--out {out} exists and is not empty (and has no {MANIFEST}); choose a new folder")
            _check_same(existing, manifest, out)
            return existing
    out.mkdir(parents=True, exist_ok=True)
    for psf_path, rel in zip(psf_paths, psf_copies(cfg)):
        copy = out / rel
        if not copy.exists():
            with atomic_path(copy, suffix=".tmp") as tmp:
                shutil.copyfile(psf_path, tmp)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if not atomic_create_text(out / MANIFEST, text):  # a concurrent task of the job array won the race
        _check_same(_read_manifest(out), manifest, out)
    return manifest


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is corrupt ({exc}); choose a new --out") from None


def _check_same(existing: dict, new: dict, out: Path) -> None:
    for key in ("format", "config", "psf_sha256", "sources", "software"):
        if existing.get(key) != new.get(key):
            if key == "config":
                diff = [f"{k}: {existing['config'].get(k)!r} -> {v!r}" for k, v in new["config"].items()
                        if existing["config"].get(k) != v]
                what = "arguments differ (" + "; ".join(diff) + ")"
            else:
                what = {"psf_sha256": "the PSF file changed", "sources": "the source images changed",
                        "software": "the software versions changed", "format": "the format version changed"}[key]
            raise DataError(f"{out} was started with other inputs: {what}; resume with the original "
                            f"arguments or use a new --out")


def _probe_sizes(images: str, sources: list[dict], workers: int) -> list[dict]:
    """Decode every source once (fails early on an unreadable file) and record its size."""
    from tqdm import tqdm

    jobs = [(images, s["name"]) for s in sources]
    if workers > 1:
        with _pool(workers) as pool:
            sizes = list(tqdm(pool.map(_probe, jobs), total=len(jobs), desc="checking images", unit="img"))
    else:
        sizes = [_probe(j) for j in tqdm(jobs, desc="checking images", unit="img")]
    return [{**s, "height": h, "width": w} for s, (h, w) in zip(sources, sizes)]


def _pool(workers: int, initializer=None, initargs=()):
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs)


def generate(cfg: GenerationConfig, out: Path, workers: int = 2, task_index: int = 0, num_tasks: int = 1,
             progress: bool = True) -> bool:
    """Render this task's missing shards; with one task also finalise. Returns True when complete."""
    from tqdm import tqdm

    if not 0 <= task_index < num_tasks:
        raise ConfigError(f"--task_index must be in [0, {num_tasks}), got {task_index}")
    out = Path(out)
    manifest = prepare(cfg, out, workers)
    plan = make_plan(cfg, manifest["sources"])
    shards = [(out / rel, samples) for u, (rel, samples) in enumerate(shard_files(cfg, plan)) if u % num_tasks == task_index]
    todo = [(path, samples) for path, samples in shards if not path.is_file()]
    total = sum(len(s) for _, s in todo)
    if todo:
        flat = [s for _, samples in todo for s in samples]
        initargs = (cfg.as_dict(), [str(out / rel) for rel in psf_copies(cfg)])
        bar = tqdm(total=total, desc=f"rendering (task {task_index + 1}/{num_tasks})", unit="img", disable=not progress)
        if workers > 1:
            pool = _pool(workers, _init_worker, initargs)
            try:
                _write_all(todo, pool.map(render_sample, flat), bar)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # do not render the rest after a failure
                raise
            pool.shutdown()
        else:
            import cv2
            import torch

            threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
            _init_worker(*initargs)
            try:
                _write_all(todo, map(render_sample, flat), bar)
            finally:
                torch.set_num_threads(threads)
                cv2.setNumThreads(cv_threads)
                _WORKER.clear()
        bar.close()
    if num_tasks == 1:
        finalize(out)
        return True
    return False


def _write_all(todo, rows, bar) -> None:
    rows = iter(rows)
    for path, samples in todo:
        batch = []
        for _ in samples:
            batch.append(next(rows))
            bar.update(1)
        write_shard(batch, path)


def finalize(out: Path) -> None:
    """Check every shard is there, drop stale temp files, write the dataset card."""
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        raise DataError(f"{out} has no {MANIFEST}: nothing to merge (run the generation first)")
    cfg = GenerationConfig(**manifest["config"])
    plan = make_plan(cfg, manifest["sources"])
    files = shard_files(cfg, plan)
    missing = [rel for rel, _ in files if not (out / rel).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(files)} shards are missing (first: {missing[0]}); "
                        "run the remaining tasks (or a single run without --task_index) before --merge")
    for stale in (out / "data").glob(".*.tmp"):
        stale.unlink()
    from psf.field import load_psf_field

    fields = [load_psf_field(out / rel) for rel in psf_copies(cfg)]
    atomic_write_text(out / "README.md", dataset_card(cfg, manifest, fields))


def _field_text(field, rel: str, sha256: str) -> str:
    return (f"`{rel}` (sha256 `{sha256}`; type `{field.psf_type}`, {field.grid_shape[0]}x{field.grid_shape[1]} nodes, "
            f"{field.psf_size}x{field.psf_size} px PSFs, {'cross-talk' if field.c_in > 1 else 'per-channel'} "
            f"{field.channel_order})")


def dataset_card(cfg: GenerationConfig, manifest: dict, fields) -> str:
    import datasets
    import yaml

    splits = {s: manifest["splits"][s] for s in cfg.splits if s in manifest["splits"]}
    info = datasets.DatasetInfo(features=features(sensor=cfg.sensor is not None))
    info_yaml = {"features": info._to_yaml_dict()["features"]}  # split sizes are in the table below
    front = {
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
        "dataset_info": info_yaml,
        "task_categories": ["image-to-image"],
        "tags": ["image-restoration", "deblurring", "spatially-varying-blur", "synthetic", "restorelab"],
    }
    hs, ws = manifest["sensor_res"]
    noise = {"none": "none",
             "gaussian": f"Gaussian in sRGB, sigma {_range(cfg.sigma)} (uniform per sample)",
             "poisson_gaussian": f"Poisson-Gaussian in linear light, {_range(cfg.photons)} photo-electrons at white "
                                 f"(log-uniform per sample), read noise {_range(cfg.read_noise)} e- rms"}[cfg.noise]
    if cfg.sensor is not None:
        noise = sensor_text(cfg.sensor, cfg.sensor_options)
    copies = psf_copies(cfg)
    shas = manifest["psf_sha256"] if isinstance(manifest["psf_sha256"], list) else [manifest["psf_sha256"]]
    if len(fields) == 1:
        blur_text = "the spatially varying PSF field in " + _field_text(fields[0], copies[0], shas[0])
    else:
        blur_text = (f"one of {len(fields)} spatially varying PSF fields (column `psf_file`; each field renders an "
                     "equal share of every split, assigned in a seeded order): "
                     + "; ".join(_field_text(f, rel, sha) for f, rel, sha in zip(fields, copies, shas)))
    from dataset.sources import BUILTIN_IMAGES

    source = ("scikit-image's built-in images (`skimage.data`: " + ", ".join(BUILTIN_IMAGES) + ")"
              if cfg.images == "builtin" else f"{len(manifest['sources'])} images from `{cfg.images}`")
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        "# Synthetic spatially varying blur dataset", "",
        "Pairs of sharp (`gt`) and degraded (`lq`) images made by restorelab "
        f"(step 3, `data_gen/3.generate_dataset_synthetic.py`, version {manifest['software']['restorelab']}).", "",
        "| split | examples |", "|---|---|",
        *[f"| {s} | {v['num_examples']} |" for s, v in splits.items()], "",
        "## How it was made", "",
        f"- Sources: {source}; split by image (seed {cfg.seed}).",
        "- `gt`: a crop with the sensor's aspect ratio (the largest centred window for the first sample of an image"
        + (f", then {cfg.samples_per_image - 1} random window{'s' if cfg.samples_per_image > 2 else ''} of "
           f"{cfg.min_crop:g}-1x that size" if cfg.samples_per_image > 1 else "")
        + f"), resized to {ws}x{hs} (area / bicubic), stored as 8-bit PNG.",
        f"- `lq`: the stored `gt` blurred by {blur_text}, {cfg.method} renderer, {cfg.boundary} boundary, in "
        + ("linear light (IEC 61966-2-1 sRGB decoding before, encoding after)" if cfg.render_space == "linear" else "sRGB values")
        + f"; noise: {noise}; quantised to 8 bits (round half to even).",
        "- Per-sample columns: `key`, `source`, `crop_box` (x0, y0, w, h in the source), `noise`, `sigma`, `photons`, "
        "`read_noise`, `noise_seed` (a `torch.Generator` seed), `psf_file`"
        + (", `sensor` (the sample's sensor parameters as JSON, `psf.sensors` `as_dict()`; `noise` holds the sensor "
           "kind and `sigma`, `photons`, `read_noise` are 0)." if cfg.sensor is not None else "."),
        "- Reproduce an `lq` from its `gt` (float64 [1, 3, H, W] in [0, 1]): `utils.sv_renderer.simulate_capture(gt, "
        f"SVRenderer(load_psf_field(psf_file), ({hs}, {ws}), '{cfg.boundary}', '{cfg.method}', dtype=torch.float64), "
        + ("psf.sensors.sensor_from_dict(json.loads(sensor))" if cfg.sensor is not None
           else "NoiseModel(noise, sigma, photons, read_noise)")
        + ", torch.Generator().manual_seed(noise_seed), "
        f"linear_light={cfg.render_space == 'linear'}, bits=8)` returns it exactly (8-bit levels / 255).",
        "",
        "## Command", "", "```", cfg.command(), "```", "",
        f"`{MANIFEST}` records every argument, the source list and the software versions.", "",
    ]
    return "\n".join(lines)


def sensor_text(kind: str, options: dict) -> str:
    """One sentence of the dataset card on a ``--sensor`` capture."""
    opts = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"
    if kind == "qis":
        return ("a simulated quanta image sensor (`psf.sensors.QISSensor`, drawn per sample by "
                f"`psf.sensors.sample_sensor('qis', ...)`, {opts}; photons per pixel at white log-uniform in its range): "
                "Poisson photon counts with quantum efficiency, dark counts and read noise, "
                "1-bit or multi-bit readout averaged over frames, stored as readout / (2^bits - 1) with no tone curve")
    return ("a simulated CMOS RAW capture (`psf.sensors.RawSensor`, drawn per sample by "
            f"`psf.sensors.sample_sensor('raw', ...)`, {opts}): un-processed to RAW (inverse tone curve, gamma, colour "
            "matrix and white-balance gains of a random camera, Bayer mosaic), scaled by the exposure, shot and read "
            "noise, processed back (bilinear demosaicing, gains, colour matrix, gamma, tone curve)")


def _range(v) -> str:
    return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g}-{v[1]:g}"
