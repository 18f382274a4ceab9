"""Step 3: render a paired (gt, lq) dataset from a PSF field into a Hugging Face dataset folder.

    python data_gen/3.generate_dataset_synthetic.py --psf_data_path DIR --images DIR|builtin --out DIR [--seed S]

Writes ``data/{split}-XXXXX-of-XXXXX.parquet`` (``gt``/``lq`` images + metadata), ``README.md``
(dataset card), ``psfs/psfs.h5`` (the PSF file used; with several ``--psf_data_path``,
``psfs/NN-<name>.h5`` each) and ``generation.json`` (the manifest).
With ``--scenes layered`` and a depth-aware PSF file (step 1 with ``--object_distance_m D1 D2 ...``)
it writes synthetic layered RGB-D scenes instead: ``gt``, ``lq`` and a ``depth`` map per sample
(data_gen/depth_dataset.py). ``--sensor qis|raw`` (with ``--sensor_options JSON``) captures through a
simulated quanta image sensor or CMOS RAW pipeline instead of ``--noise`` (low-light datasets: few
photons per pixel, or a short RAW exposure). Same arguments -> identical bytes. Interrupted runs resume where they stopped. For a Slurm
job array run task i with ``--task_index i --num_tasks n``, then once ``--merge --out DIR``.
See docs/data_generation.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.errors import ConfigError, run_cli  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through run_cli instead of usage + message
        raise ConfigError(f"{message} (see --help)")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Example: python data_gen/3.generate_dataset_synthetic.py --psf_data_path psf_data/seidel "
                       "--images builtin --out datasets_out/seidel --noise poisson_gaussian --photons 300 3000 --read_noise 2")
    io = p.add_argument_group("inputs and output")
    io.add_argument("--psf_data_path", nargs="+", metavar="PATH",
                    help="folder holding psfs.h5 (steps 1/2), or the .h5 file itself; several paths make a dataset "
                         "mixing PSF fields (each sample rendered with one, equal shares per split)")
    io.add_argument("--images", help="'builtin' (scikit-image's sample images) or a folder of images (searched recursively)")
    io.add_argument("--out", required=True, help="dataset folder to create (or to resume)")
    io.add_argument("--seed", type=int, default=0, help="seed of splits, crops and noise (default 0)")
    sp = p.add_argument_group("samples and splits")
    sp.add_argument("--splits", default="train=0.9,validation=0.1",
                    help="fractions of source images per split, e.g. train=0.8,validation=0.1,test=0.1 (default: %(default)s)")
    sp.add_argument("--split_names", action="append", default=[], metavar="SPLIT=NAMES",
                    help="put these source images in SPLIT: comma-separated names (file name, with or without "
                         "extension) or @FILE with one name per line; repeatable; the rest is split by --splits")
    sp.add_argument("--samples_per_image", type=int, default=1,
                    help="samples per source image: the centred crop, then random crops (default 1)")
    sp.add_argument("--min_crop", type=float, default=0.5,
                    help="smallest random crop, as a fraction of the largest window with the sensor's aspect (default 0.5)")
    sp.add_argument("--samples_per_shard", type=int, default=256, help="rows per parquet file (default 256)")
    dg = p.add_argument_group("degradation")
    dg.add_argument("--noise", default="none", choices=("none", "gaussian", "poisson_gaussian"), help="noise model (default none)")
    dg.add_argument("--sigma", type=float, nargs="+", default=[0.01], metavar="S",
                    help="gaussian: std in [0,1] sRGB units, one value or LOW HIGH (uniform per sample; default 0.01)")
    dg.add_argument("--photons", type=float, nargs="+", default=[1000.0], metavar="P",
                    help="poisson_gaussian: photo-electrons at white, one value or LOW HIGH (log-uniform; default 1000)")
    dg.add_argument("--read_noise", type=float, nargs="+", default=[2.0], metavar="E",
                    help="poisson_gaussian: read noise in electrons rms, one value or LOW HIGH (default 2)")
    dg.add_argument("--sensor", default="none", choices=("none", "qis", "raw"),
                    help="simulate a sensor in place of --noise (psf/sensors.py): qis (quanta image sensor: photon "
                         "counts, 1-bit or multi-bit readout) or raw (CMOS RAW: un-process to a Bayer RAW, shot and "
                         "read noise, process back); parameters drawn per sample (default none)")
    dg.add_argument("--sensor_options", default=None, metavar="JSON",
                    help="psf.sensors.sample_sensor keywords as a JSON mapping; qis: photons_per_pixel (value or "
                         "[low, high], log-uniform; default [1, 10]), bits, frames, quantum_efficiency, dark_counts, "
                         "read_noise; raw: exposure (value or [low, high], log-uniform; default 1), digital_gain "
                         "(true: brighten back by 1/exposure), bayer. Low light, e.g. "
                         "--sensor raw --sensor_options '{\"exposure\": [0.02, 0.1], \"digital_gain\": true}'")
    dg.add_argument("--boundary", default="reflect", choices=("reflect", "zero"), help="image border model (default reflect)")
    dg.add_argument("--render_space", default="linear", choices=("linear", "srgb"),
                    help="blur linear light (physically right, default) or the sRGB values")
    dg.add_argument("--method", default="full", choices=("full", "basis", "tiles"),
                    help="renderer: full (exact, default), basis (the file's low-rank basis), tiles (piecewise constant)")
    ly = p.add_argument_group("layered RGB-D scenes (depth-aware PSF files)")
    ly.add_argument("--scenes", default="crops", choices=("crops", "layered"),
                    help="crops: flat crops of the images (default); layered: synthetic scenes of objects at several "
                         "depths, blurred per depth with occlusion, a depth map stored with each sample")
    ly.add_argument("--n_scenes", default="train=90,validation=10", metavar="SPLIT=N,...",
                    help="layered: scenes per split (default: %(default)s)")
    ly.add_argument("--max_objects", type=int, default=3, help="layered: objects in front of the background (1..N, default 3)")
    rn = p.add_argument_group("running")
    rn.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default: up to 2)")
    rn.add_argument("--task_index", type=int, default=0, help="this task's index in a job array (0-based)")
    rn.add_argument("--num_tasks", type=int, default=1,
                    help="tasks in the job array; task i renders shards i, i+n, ...; finish with --merge")
    rn.add_argument("--merge", action="store_true", help="check that every shard is there and write the dataset card")
    args = p.parse_args(argv)
    if not args.merge and (args.psf_data_path is None or args.images is None):
        p.error("--psf_data_path and --images are required (except with --merge)")
    if args.workers < 1 or args.num_tasks < 1:
        p.error("--workers and --num_tasks must be >= 1")
    return args


def _range(values: list[float], name: str) -> tuple[float, float]:
    if len(values) > 2:
        raise ConfigError(f"--{name} takes one value or LOW HIGH, got {len(values)} values")
    return (values[0], values[-1])


def _sensor_options(args) -> dict | None:
    if args.sensor_options is None:
        return None
    import json

    try:
        options = json.loads(args.sensor_options)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--sensor_options is not JSON ({exc.msg}): {args.sensor_options!r}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"--sensor_options must be a JSON mapping like '{{\"photons_per_pixel\": [1, 10]}}', "
                          f"got {args.sensor_options!r}")
    return options


def _splits(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        name, eq, frac = part.partition("=")
        try:
            out[name.strip()] = float(frac)
        except ValueError:
            raise ConfigError(f"--splits: expected NAME=FRACTION, got {part!r}") from None
        if not eq:
            raise ConfigError(f"--splits: expected NAME=FRACTION, got {part!r}")
    return out


def _split_names(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        split, eq, names = item.partition("=")
        if not eq or not names:
            raise ConfigError(f"--split_names: expected SPLIT=NAME,NAME or SPLIT=@FILE, got {item!r}")
        if names.startswith("@"):
            path = Path(names[1:])
            if not path.is_file():
                raise ConfigError(f"--split_names {split}: list file not found: {path}")
            values = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        else:
            values = [n.strip() for n in names.split(",") if n.strip()]
        out.setdefault(split.strip(), []).extend(values)
    return out


def _layered(args, out: Path) -> int:
    import shlex

    from data_gen.depth_dataset import DepthSceneConfig, build_depth_dataset

    if args.merge or args.num_tasks > 1:
        raise ConfigError("--scenes layered runs as one task (no --merge / --num_tasks)")
    if len(args.psf_data_path) != 1:
        raise ConfigError("--scenes layered takes one depth-aware --psf_data_path")
    counts = {}
    for name, frac in _splits(args.n_scenes).items():
        if frac != int(frac) or frac < 1:
            raise ConfigError(f"--n_scenes: {name}={frac:g} is not a positive whole number of scenes")
        counts[name] = int(frac)
    cfg = DepthSceneConfig(
        psf_data_path=args.psf_data_path[0], images=args.images, splits=counts, seed=args.seed,
        max_objects=args.max_objects, noise=args.noise,
        sigma=_range(args.sigma, "sigma") if args.noise == "gaussian" else (0.0, 0.0),
        photons=_range(args.photons, "photons") if args.noise == "poisson_gaussian" else (0.0, 0.0),
        read_noise=_range(args.read_noise, "read_noise") if args.noise == "poisson_gaussian" else (0.0, 0.0),
        boundary=args.boundary, render_space=args.render_space,
        sensor=args.sensor, sensor_options=_sensor_options(args),
        command=shlex.join(["python", "data_gen/3.generate_dataset_synthetic.py", *sys.argv[1:]]))
    build_depth_dataset(cfg, out)
    print(f"dataset complete: {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from data_gen.step3_writer import GenerationConfig, finalize, generate

    out = Path(args.out)
    if args.scenes == "layered":
        return _layered(args, out)
    if args.merge:
        finalize(out)
        print(f"dataset complete: {out}")
        return 0
    cfg = GenerationConfig(
        psf_data_path=args.psf_data_path, images=args.images, seed=args.seed, splits=_splits(args.splits),
        split_names=_split_names(args.split_names), samples_per_image=args.samples_per_image, min_crop=args.min_crop,
        noise=args.noise, sigma=_range(args.sigma, "sigma") if args.noise == "gaussian" else (0.0, 0.0),
        photons=_range(args.photons, "photons") if args.noise == "poisson_gaussian" else (0.0, 0.0),
        read_noise=_range(args.read_noise, "read_noise") if args.noise == "poisson_gaussian" else (0.0, 0.0),
        boundary=args.boundary, render_space=args.render_space, method=args.method,
        samples_per_shard=args.samples_per_shard, sensor=args.sensor, sensor_options=_sensor_options(args))
    done = generate(cfg, out, workers=args.workers, task_index=args.task_index, num_tasks=args.num_tasks)
    print(f"dataset complete: {out}" if done else
          f"task {args.task_index + 1}/{args.num_tasks} done; when every task has finished run: "
          f"python data_gen/3.generate_dataset_synthetic.py --merge --out {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
