"""Benchmark the spatially varying renderers against the brute-force per-pixel scatter.

    python scripts/bench_render.py [--json PATH] [--size 512] [--grid 9] [--psf_size 33] [--n_basis 4 8 16]

Scene: a size×size×3 image (scikit-image's astronaut, or ``--image random``) blurred by a
grid×grid field of psf_size×psf_size elliptical, field-varying PSFs: ``--field gaussian``
(default) is step 1's ``gaussian`` type with its default parameters (radially oriented
ellipses, 0.8 px on axis to 2.5 × 1.5 px at the corner, width ∝ wavelength);
``--field coma`` is ``psf.example_fields.elliptical_gaussian_field`` (wider, 3.5 × 1.6 px at
the corner, coma-shifted: a harder field for a low-rank basis).

Methods, all timed in the same run on the same input, float32:
* ``brute_force``: every pixel scatters its own bilinearly interpolated PSF (the reference);
* ``basis`` K = ...: step 2's basis (``psf.basis.psf_basis``, ``--basis_method pca`` = mean +
  principal components, default, or ``svd``) rendered as ``render`` does: K dense coefficient
  maps with one FFT per component and channel, or, when that is less work (large K), the same
  sum on the node supports; ``basis_dense`` then also times the K-FFT evaluation;
* ``full``: the node PSFs themselves (K = N, exact), each convolved on its own support;
* ``tiles``: piecewise-constant field (nearest node), the classic fixed-tile approximation.

``seconds`` is the median wall-clock time of one render with a prepared ``SVRenderer``
(coefficient maps and kernel spectra built once, as a dataset generator does), ``cpu_s`` the
process CPU time of the same (all threads; steadier on a busy machine), ``prepare_s`` the
one-off preparation, ``psnr_vs_exact`` the PSNR (peak 1) against the brute force (null when
bit-identical). Timings depend on the machine and its load: re-run on a quiet machine and
report the command. On a busy machine use ``--threads 1``: with two threads every small
torch operation waits for the second, busy core and times grow by 10x or more.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from psf.field import PSFField  # noqa: E402
from utils.errors import ConfigError, run_cli  # noqa: E402
from psf.example_fields import elliptical_gaussian_field  # noqa: E402
from utils.sv_renderer import SVRenderer, render_brute_force  # noqa: E402


def make_field(kind: str, grid: int, psf_size: int, size: int) -> PSFField:
    if kind == "coma":
        return elliptical_gaussian_field(grid_shape=(grid, grid), psf_size=psf_size, sensor_res=(size, size))
    from psf.svpsf import PSFSimulator

    return PSFSimulator(psf_type="gaussian", grid_shape=(grid, grid), psf_size=psf_size, sensor_res=(size, size)).simulate()


def with_basis(field: PSFField, k: int, method: str) -> PSFField:
    """The field with step 2's K-element basis."""
    from psf.basis import psf_basis

    basis = psf_basis(field.psfs, n_basis=k, method=method)
    energy = basis.explained_energy.min().item()
    return field.with_basis(basis.basis_psfs.float(), basis.basis_coef.float(), basis_method=method, explained_energy=energy)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    mse = (a.double() - b.double()).square().mean().item()
    return None if mse == 0 else 10 * math.log10(1.0 / mse)


def test_image(kind: str, size: int) -> torch.Tensor:
    if kind == "random":
        return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    import cv2
    import skimage.data

    img = skimage.data.astronaut()
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def time_call(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Median wall-clock and process CPU seconds of ``repeats`` calls after a warm-up call."""
    out = fn()  # warm-up (allocator, FFT plans)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), out


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    field = make_field(args.field, args.grid, args.psf_size, args.size)
    x = test_image(args.image, args.size)
    with torch.no_grad():
        start, start_cpu = time.perf_counter(), time.process_time()
        exact = render_brute_force(x, field, args.boundary)
        brute_s, brute_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"brute force: {brute_s:.2f} s", flush=True)
        cases = []
        for k in args.n_basis:
            f = with_basis(field, k, args.basis_method)
            cases.append(("basis", k, f, "basis", "auto"))
            if SVRenderer(f, (args.size, args.size), args.boundary, "basis").strategy != "dense":
                cases.append(("basis_dense", k, f, "basis", "dense"))  # the K-FFT evaluation, for comparison
        cases += [("full", field.n_nodes, field, "full", "auto"), ("tiles", field.n_nodes, field, "tiles", "auto")]
        methods = []
        for name, k, f, method, strategy in cases:
            start = time.perf_counter()
            renderer = SVRenderer(f, (args.size, args.size), args.boundary, method, basis_strategy=strategy)
            prepare_s = time.perf_counter() - start
            seconds, cpu_s, out = time_call(lambda: renderer(x), args.repeats)
            entry = {"name": name, "K": k, "strategy": renderer.strategy, "seconds": seconds, "cpu_s": cpu_s,
                     "prepare_s": prepare_s, "speedup": brute_s / seconds, "cpu_speedup": brute_cpu / cpu_s,
                     "psnr_vs_exact": psnr(out, exact)}
            if method == "basis":
                entry["explained_energy"] = f.attrs["explained_energy"]
            methods.append(entry)
            print(f"{name:>11} K={k:<3d} {seconds * 1000:9.1f} ms  ({brute_s / seconds:7.0f}x)  "
                  f"{_fmt_psnr(entry['psnr_vs_exact'])}", flush=True)
    return {
        "brute_force_s": brute_s,
        "brute_force_cpu_s": brute_cpu,
        "methods": methods,
        "config": {"size": args.size, "channels": 3, "grid": [args.grid, args.grid], "psf_size": args.psf_size,
                   "image": args.image, "boundary": args.boundary, "dtype": "float32", "repeats": args.repeats,
                   "field": args.field, "basis_method": args.basis_method},
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "command": "python scripts/bench_render.py " + " ".join(sys.argv[1:]),
    }


def _fmt_psnr(value: float | None) -> str:
    return "identical" if value is None else f"{value:6.1f} dB"


def print_table(result: dict) -> None:
    brute = result["brute_force_s"]
    cfg = result["config"]
    print(f"\n{cfg['size']}x{cfg['size']}x3 {cfg['image']} image, {cfg['field']} field, {cfg['grid'][0]}x{cfg['grid'][1]} grid "
          f"of {cfg['psf_size']}x{cfg['psf_size']} PSFs, {cfg['basis_method']} basis, {result['machine']['threads']} threads, "
          f"torch {result['machine']['torch']}")
    print("| method | K | evaluated on | time / image | speed-up vs brute force (wall / CPU) | PSNR vs brute force | prepare |")
    print("|---|---|---|---|---|---|---|")
    print(f"| brute force | - | pixels | {brute:.2f} s | 1x | reference | - |")
    where = {"dense": "K dense FFTs / channel", "nodes": "node supports"}
    for m in result["methods"]:
        print(f"| {m['name']} | {m['K']} | {where[m['strategy']]} | {m['seconds'] * 1000:.1f} ms | "
              f"{m['speedup']:.0f}x / {m['cpu_speedup']:.0f}x | {_fmt_psnr(m['psnr_vs_exact']).strip()} | {m['prepare_s']:.2f} s |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--size", type=int, default=512, help="image side (default 512)")
    p.add_argument("--grid", type=int, default=9, help="nodes per side (default 9)")
    p.add_argument("--psf_size", type=int, default=33, help="PSF side, odd (default 33)")
    p.add_argument("--n_basis", type=int, nargs="+", default=[4, 8, 16], help="basis sizes K (default 4 8 16)")
    p.add_argument("--field", choices=("gaussian", "coma"), default="gaussian",
                   help="gaussian: step 1's default gaussian field; coma: a wider, coma-shifted field (default gaussian)")
    p.add_argument("--basis_method", choices=("pca", "svd"), default="pca", help="step 2's basis method (default pca)")
    p.add_argument("--image", choices=("astronaut", "random"), default="astronaut")
    p.add_argument("--boundary", choices=("reflect", "zero"), default="reflect")
    p.add_argument("--repeats", type=int, default=5, help="timed renders per method (median; default 5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.psf_size % 2 == 0 or args.grid < 2 or args.size < 2:
        raise ConfigError("--psf_size must be odd, --grid and --size >= 2")
    if any(not 1 <= k <= args.grid ** 2 for k in args.n_basis):
        raise ConfigError(f"--n_basis values must be in [1, {args.grid ** 2}]")
    result = run(args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
