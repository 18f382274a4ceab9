#!/usr/bin/env python
"""Restore your own images (no ground truth) with a trained network.

    python scripts/restore.py --model DIR_OR_HUB_ID --input FILE_OR_DIR --output DIR
        [--tile N] [--overlap N] [--blend N] [--psf_data_path DIR] [--device cpu|cuda|auto]

--model     a save_pretrained folder (an experiment's best/ or last/; with several exported
            networks, the folder's net/ is used) or a Hugging Face Hub id USER/NAME [--revision R],
            resolved through the Hugging Face cache (HF_HOME / HF_HUB_CACHE); with HF_HUB_OFFLINE=1
            only the cache is used.
--input     an image file, or a folder searched recursively; outputs keep the relative paths
            and are written as 8-bit PNG (FILE.jpg -> OUTPUT/FILE.png).
--tile N    restore by N×N tiles (any image size in bounded memory; utils.tiling.tiled_predict).
            Default overlap: 2 × the network's receptive radius with no cross-fade when the
            network declares one (then tiled = whole-image output up to float error), else N/8
            with a cross-fade over half of it (seams hidden, not exact).
--psf_data_path DIR
            for networks conditioned on the PSF (inputs basis_psfs/basis_coef or psf): the folder
            (or file) with the lens's psfs.h5 (data_gen steps 1-2). Image pixel (x, y) must be
            sensor pixel (x, y): the image must have the field's sensor size.

Unreadable inputs: every readable image is restored first; then one line
`error: cannot read image ...` per unreadable file and exit code 2. Every output is written
to a temporary file and renamed, so an interrupted run never leaves a half-written image.
"""
from __future__ import annotations

import argparse
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.errors import ConfigError, DataError, run_cli  # noqa: E402

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RESTORABLE_KINDS = ("image", "autoencoder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="save_pretrained folder or Hugging Face Hub id USER/NAME")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit; default main)")
    parser.add_argument("--input", required=True, help="image file or folder (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (created; relative paths kept, .png)")
    parser.add_argument("--tile", type=int, default=None, help="tile size in input pixels (default: whole images)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap in input pixels (see below)")
    parser.add_argument("--blend", type=int, default=None, help="cross-fade width inside the overlap (default: see below)")
    parser.add_argument("--psf_data_path", default=None, help="folder or .h5 with the PSF field, for PSF-conditioned networks")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# -- the model ------------------------------------------------------------------------------------------
def resolve_model(model: str, revision: str | None = None) -> Path:
    """A local save_pretrained folder for ``model`` (a folder, or a Hub id through the HF cache)."""
    path = Path(model).expanduser()
    if path.exists():
        folder = path
    elif HUB_ID.match(model):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

        try:  # honours HF_HUB_OFFLINE / HF_HUB_CACHE / HF_HOME
            folder = Path(snapshot_download(model, revision=revision))
        except LocalEntryNotFoundError as exc:
            raise DataError(f"model {model} is not in the Hugging Face cache and the Hub cannot be reached "
                            f"(HF_HUB_OFFLINE is set or no network): {str(exc).splitlines()[0]}") from None
        except RepositoryNotFoundError:
            raise DataError(f"model {model}: no such repository on the Hugging Face Hub (or no access)") from None
        except (HfHubHTTPError, OSError) as exc:
            raise DataError(f"model {model}: download failed: {str(exc).splitlines()[0]}") from None
    else:
        raise DataError(f"model not found: {model} is neither a folder nor a Hub id USER/NAME")
    if not (folder / "config.json").is_file() and (folder / "net" / "config.json").is_file():
        folder = folder / "net"  # an export of several networks: the restoring one is "net"
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} is not a save_pretrained folder (no config.json)")
    return folder


def load_network(folder: Path, device):
    """``AutoModel.from_pretrained(folder)`` after the lab registered its networks."""
    import json

    from transformers import AutoModel

    import models.archs  # noqa: F401 (registers the lab's networks with transformers' Auto classes)

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    try:
        net = AutoModel.from_pretrained(folder)
    except (ValueError, KeyError) as exc:
        if "model type" in str(exc) or isinstance(exc, KeyError):
            raise DataError(f"{folder}: model_type {model_type!r} is not a restorelab network") from None
        raise
    if not hasattr(net, "io"):
        raise DataError(f"{folder}: {type(net).__name__} is not a restorelab network")
    return net.to(device).eval()


# -- PSF conditioning -----------------------------------------------------------------------------------
class PSFInputs:
    """``basis_psfs``/``basis_coef``/``psf`` for a whole image, from the PSF field in ``path``
    (the keys training builds with dataset/psf_keys.py, for the full sensor)."""

    def __init__(self, path, keys):
        from dataset.psf_keys import PSFAttacher, load_psf_fields

        fields = load_psf_fields(path)
        if len(fields) != 1:
            raise DataError(f"--psf_data_path {path} holds {len(fields)} PSF files ({', '.join(fields)}); "
                            f"point it at the one that matches the images")
        (self.name, self.field), = fields.items()
        self.attacher = PSFAttacher(fields, keys)

    def for_image(self, height: int, width: int) -> dict:
        from dataset.base import Geometry

        sensor = tuple(int(v) for v in self.field.sensor_res)
        if (height, width) != sensor:
            raise DataError(f"the image is {height}x{width} but the PSF field's sensor is {sensor[0]}x{sensor[1]}: "
                            f"restore.py needs image pixel = sensor pixel")
        sample: dict = {}
        self.attacher.attach(sample, self.name, Geometry(0, 0, height, width))
        return {k: v[None] for k, v in sample.items()}


# -- restoring ------------------------------------------------------------------------------------------
def tile_settings(io, tile: int | None, overlap: int | None, blend: int | None):
    """``(tile, overlap, blend)`` with the documented defaults (``--help``)."""
    if tile is None:
        return None
    if overlap is None:
        if io.receptive_radius is not None:
            overlap = 2 * io.receptive_radius
            blend = 0 if blend is None else blend
        else:
            overlap = tile // 8
    if 2 * overlap > tile:
        raise ConfigError(f"--overlap {overlap} is more than half of --tile {tile} "
                          f"(the network's receptive radius is {io.receptive_radius}: use a larger --tile)")
    return tile, overlap, blend


def restore_tensor(net, lq, extra: dict | None = None, tiling=None):
    """The network's restoration of ``lq`` (1×C×H×W in [0, 1]), whole or by tiles."""
    import torch

    from utils.tiling import tiled_predict

    io = net.io
    inputs = {io.main_input: lq, **(extra or {})}
    with torch.inference_mode():
        if tiling is None:
            return net(**inputs)
        tile, overlap, blend = tiling
        return tiled_predict(net, inputs, io, tile, overlap, blend=blend)


def list_inputs(path: Path) -> list[tuple[Path, Path]]:
    """``(file, relative output path)`` for every input image."""
    from utils.image_io import IMAGE_EXTENSIONS, list_images

    if path.is_file():
        return [(path, Path(path.name).with_suffix(".png"))]
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
        jobs = [(f, f.relative_to(path).with_suffix(".png")) for f in files]
        seen: dict[Path, Path] = {}
        for f, rel in jobs:
            if rel in seen:
                raise DataError(f"{seen[rel]} and {f} would both be written to {rel}; rename one")
            seen[rel] = f
        return jobs
    raise DataError(f"input not found: {path}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory.
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the fallback elsewhere, but on Linux it also
    carries the peak of the parent process that forked this one (kept across exec), so a script
    started from a big process would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tile is not None and args.tile < 1:
        raise ConfigError(f"--tile must be positive, got {args.tile}")
    if args.tile is None and (args.overlap is not None or args.blend is not None):
        raise ConfigError("--overlap/--blend need --tile")

    import torch
    from tqdm import tqdm

    from utils.image_io import image_to_tensor, read_image, write_image

    start = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device is available")
    jobs = list_inputs(Path(args.input))
    folder = resolve_model(args.model, args.revision)
    net = load_network(folder, device)
    io = net.io
    if io.kind not in RESTORABLE_KINDS:
        raise ConfigError(f"{folder}: a {io.kind} network does not restore single images "
                          f"(restore.py handles kinds: {', '.join(RESTORABLE_KINDS)})")
    conditioning = [k for k in io.inputs if k != io.main_input]
    psf = None
    if conditioning:
        psf_keys = {"basis_psfs", "basis_coef", "psf"}
        if not set(conditioning) <= psf_keys:
            raise ConfigError(f"{folder}: the network also needs {', '.join(conditioning)}, which restore.py "
                              f"cannot provide (supported: the PSF inputs {', '.join(sorted(psf_keys))})")
        if args.psf_data_path is None:
            raise ConfigError(f"{folder}: the network is conditioned on the PSF ({', '.join(conditioning)}); "
                              f"pass --psf_data_path DIR with the lens's psfs.h5")
        psf = PSFInputs(args.psf_data_path, conditioning)
    tiling = tile_settings(io, args.tile, args.overlap, args.blend)
    channels = getattr(net.config, "in_channels", getattr(net.config, "img_channel",
                       getattr(net.config, "inp_channels", 3)))

    out_root = Path(args.output)
    failures: list[str] = []
    written = 0
    for file, rel in tqdm(jobs, desc="restoring", unit="image", file=sys.stderr, disable=args.quiet):
        try:
            img = read_image(file, channels=channels)
        except DataError as exc:
            failures.append(str(exc))
            continue
        lq = image_to_tensor(img)[None].to(device)
        extra = {k: v.to(device) for k, v in psf.for_image(*lq.shape[-2:]).items()} if psf else None
        out = restore_tensor(net, lq, extra, tiling)
        write_image(out_root / rel, out[0].clamp(0, 1).cpu())
        written += 1
        del lq, out
    how = f"tiles {tiling[0]} overlap {tiling[1]}" if tiling else "whole images"
    print(f"restored {written} of {len(jobs)} image(s) into {out_root} ({how}, {device}) in "
          f"{time.perf_counter() - start:.1f} s; peak RSS {peak_rss_mb():.0f} MB", file=sys.stderr)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    return 2 if failures else 0


if __name__ == "__main__":
    run_cli(main)
