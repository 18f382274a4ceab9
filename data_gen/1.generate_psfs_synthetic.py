#!/usr/bin/env python
"""Step 1: simulate a spatially varying PSF field and write DIR/psfs.h5 (+ DIR/psf_grid.png).

    python data_gen/1.generate_psfs_synthetic.py --psf_type TYPE --save_dir DIR [--grid GH GW] [--psf_size k]
        [--sensor_res H W] [--seed S] [type options]

Examples:
    --psf_type gaussian --sigma_px 0.8 --sigma_corner_radial_px 3 --lateral_color_px 0.5 0 -0.5
    --psf_type seidel --f_number 2.8 --pixel_pitch_um 2 --seidel W040=1 W020=-1 W131=1.5 W222=1 W220=0.5
    --psf_type zernike --f_number 4 --zernike_rms 0.2      (random, smooth over the field, seeded)
    --psf_type zernike --zernike 4=0.1 11=0.05             (same Noll coefficients, waves RMS, at every node)
    --psf_type motion --length_px 15 --roll_deg 1          (one camera-shake trajectory)
    --psf_type seidel --f_number 4 --focal_length_mm 25 --focus_distance_m 2 --object_distance_m 1 1.5 2 4 8
                                                           (thin-lens depth stack: psfs [C, 1, D, N, k, k])
    --psf_type seidel --lateral_color 0.002 0 -0.002 --axial_color_waves 0.3 0 -0.3   (chromatic aberration)
    --psf_type phase_mask --mask_profile hyperbolic --mask_aperture_mm 1 --mask_focal_length_mm 10

Units: wavelengths in nm (one per channel, RGB order: red first), pitch in um, Seidel/Zernike
coefficients in waves at --reference_wavelength_nm. Conventions and sources: docs/optics.md.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402

from psf.output import OneLineParser  # noqa: E402
from utils.errors import ConfigError, run_cli  # noqa: E402

# CLI flag -> (psf types it applies to, option name of the type's dataclass)
TYPE_FLAGS = {
    "f_number": (("seidel", "zernike"), "f_number"),
    "reference_wavelength_nm": (("seidel", "zernike"), "reference_wavelength_nm"),
    "seidel": (("seidel",), "seidel"),
    "focal_length_mm": (("seidel", "zernike"), "focal_length_mm"),
    "focus_distance_m": (("seidel", "zernike"), "focus_distance_m"),
    "object_distance_m": (("seidel", "zernike"), "object_distance_m"),
    "abbe_number": (("seidel",), "abbe_number"),
    "refractive_index_d": (("seidel",), "refractive_index_d"),
    "axial_color_waves": (("seidel",), "axial_color_waves"),
    "lateral_color": (("seidel",), "lateral_color"),
    "zernike": (("zernike",), "coefficients"),
    "zernike_map": (("zernike",), "coefficient_map"),
    "zernike_rms": (("zernike",), "rms_waves"),
    "zernike_min_noll": (("zernike",), "min_noll"),
    "zernike_max_noll": (("zernike",), "max_noll"),
    "zernike_field_order": (("zernike",), "field_order"),
    "sigma_px": (("gaussian",), "sigma_px"),
    "sigma_corner_radial_px": (("gaussian",), "sigma_corner_radial_px"),
    "sigma_corner_tangential_px": (("gaussian",), "sigma_corner_tangential_px"),
    "field_exponent": (("gaussian",), "field_exponent"),
    "channel_scale": (("gaussian",), "channel_scale"),
    "lateral_color_px": (("gaussian",), "lateral_color_px"),
    "length_px": (("motion",), "length_px"),
    "roll_deg": (("motion",), "roll_deg"),
    "anxiety": (("motion",), "anxiety"),
    "n_steps": (("motion",), "n_steps"),
}
# phase_mask flags (prefixed --mask_ so they never clash with the lens options of other types)
TYPE_FLAGS.update({f"mask_{name}": (("phase_mask",), name) for name in (
    "profile", "aperture_mm", "focal_length_mm", "focus_depth_mm", "object_depth_mm", "design_wavelength_nm",
    "dispersion", "cubic_waves", "depth_range_mm", "axicon_angle_deg", "propagation", "oversample")})
TYPE_FLAGS.update({"phase_map": (("phase_mask",), "phase_map"), "amplitude_map": (("phase_mask",), "amplitude_map")})


def add_phase_mask_args(p) -> None:
    from psf.phase_mask import DISPERSIONS, PROFILES, PROPAGATIONS

    g = p.add_argument_group("phase_mask (thin mask + wave propagation; lengths in mm)")
    g.add_argument("--mask_profile", choices=PROFILES, help="lens profile (default hyperbolic)")
    g.add_argument("--mask_aperture_mm", type=float, help="clear diameter D (default 1)")
    g.add_argument("--mask_focal_length_mm", type=float, help="mask-to-sensor distance (default 10)")
    g.add_argument("--mask_focus_depth_mm", type=float, help="object depth the profile focuses (default infinity)")
    g.add_argument("--mask_object_depth_mm", type=float, nargs="+", metavar="MM",
                   help="depth(s) of the point sources (default the focus depth); several (increasing) write a "
                        "depth stack psfs [C, 1, D, N, k, k] + depths_m")
    g.add_argument("--mask_design_wavelength_nm", type=float, help="design wavelength of the profile (default 550)")
    g.add_argument("--mask_dispersion", choices=DISPERSIONS, help="phase vs wavelength (default diffractive)")
    g.add_argument("--mask_cubic_waves", type=float, help="cubic: alpha in waves at the edge (default 20)")
    g.add_argument("--mask_depth_range_mm", type=float, nargs=2, metavar=("NEAR", "FAR"), help="log_asphere depths")
    g.add_argument("--mask_axicon_angle_deg", type=float, help="axicon cone angle (default atan(R / f))")
    g.add_argument("--mask_propagation", choices=PROPAGATIONS, help="asm (default) or fresnel")
    g.add_argument("--mask_oversample", type=int, help="odd fine samples per pixel (default: automatic)")
    g.add_argument("--phase_map", metavar="NPY|IMAGE", help="user phase over the aperture square (.npy radians, "
                   "or an image: 0..max -> [0, 2 pi)), added to the profile")
    g.add_argument("--amplitude_map", metavar="NPY|IMAGE", help="user amplitude over the aperture square ([0, 1])")


def key_value(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': {value!r} is not a number") from None


def parse_args(argv=None):
    from psf.svpsf import DEFAULT_WAVELENGTHS_NM, PSF_TYPE_NAMES

    doc = __doc__.split("\n\n", 1)
    p = OneLineParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--psf_type", required=True, choices=PSF_TYPE_NAMES)
    p.add_argument("--save_dir", required=True, help="output folder (psfs.h5, psf_grid.png)")
    p.add_argument("--grid", nargs=2, type=int, default=[9, 9], metavar=("GH", "GW"), help="grid nodes (default 9 9)")
    p.add_argument("--psf_size", type=int, default=33, help="odd PSF window k in pixels (default 33)")
    p.add_argument("--sensor_res", nargs=2, type=int, default=[512, 512], metavar=("H", "W"), help="default 512 512")
    p.add_argument("--seed", type=int, default=0, help="seed of the random types (zernike random, motion)")
    p.add_argument("--wavelengths_nm", nargs="+", type=float, default=list(DEFAULT_WAVELENGTHS_NM),
                   help="one per channel in channel order (default 610 530 470 = R G B)")
    p.add_argument("--pixel_pitch_um", type=float, default=2.0, help="sensor pixel pitch (default 2.0 um)")
    p.add_argument("--channel_order", default=None, help="channel names (default RGB for 3 channels, L for 1)")
    p.add_argument("--magnification", type=float, default=None,
                   help="lateral magnification, sets H_obj (grid -> object plane mm); default -0.1, or the thin "
                        "lens's -v_f / s_f with --focal_length_mm")
    p.add_argument("--device", default="cpu", help="torch device for the FFTs (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/psfs.h5")
    p.add_argument("--no_previews", action="store_true", help="skip psf_grid.png")
    add_phase_mask_args(p)

    g = p.add_argument_group("seidel / zernike (wave optics)")
    g.add_argument("--f_number", type=float, help="working f-number N (default 2.8)")
    g.add_argument("--reference_wavelength_nm", type=float, help="wavelength of the coefficients (default 550)")
    g.add_argument("--seidel", nargs="+", type=key_value, metavar="Wnnn=WAVES",
                   help="Seidel coefficients in waves: W020 W040 W131 W222 W220 W311 (missing = 0)")
    g.add_argument("--focal_length_mm", type=float,
                   help="thin-lens depth model: focal length; --f_number is then the lens f-number f/D and "
                        "diffraction uses the working f-number v_f/D (docs/optics.md, Depth)")
    g.add_argument("--focus_distance_m", type=float, help="thin lens: focus distance (metres)")
    g.add_argument("--object_distance_m", nargs="+", type=float, metavar="M",
                   help="thin lens: object distance(s); several (increasing) write a depth stack "
                        "psfs [C_out, C_in, D, N, k, k] + depths_m (default: the focus distance)")
    g.add_argument("--abbe_number", type=float, help="seidel: axial colour of a thin lens of this glass (V_d)")
    g.add_argument("--refractive_index_d", type=float, help="seidel: the glass's n_d (default 1.5168, N-BK7)")
    g.add_argument("--axial_color_waves", nargs="+", type=float, metavar="W",
                   help="seidel: per-channel extra defocus W020 (waves at the reference wavelength)")
    g.add_argument("--lateral_color", nargs="+", type=float, metavar="DM",
                   help="seidel: per-channel relative magnification m_c/m_ref - 1 (lateral colour)")
    g.add_argument("--zernike", nargs="+", type=key_value, metavar="J=WAVES",
                   help="Noll-indexed coefficients (waves RMS), the same at every node")
    g.add_argument("--zernike_map", metavar="NPY", help="per-node Noll coefficients [N, J] or [GH, GW, J] (.npy)")
    g.add_argument("--zernike_rms", type=float, help="random field: mean total RMS wavefront error (default 0.15)")
    g.add_argument("--zernike_min_noll", type=int, help="random field: first Noll mode (default 4)")
    g.add_argument("--zernike_max_noll", type=int, help="random field: last Noll mode (default 15)")
    g.add_argument("--zernike_field_order", type=int, help="random field: polynomial degree over the field (default 2)")

    g = p.add_argument_group("gaussian (pixels; h = 1 at the sensor corner)")
    g.add_argument("--sigma_px", type=float, help="on-axis sigma (default 0.8)")
    g.add_argument("--sigma_corner_radial_px", type=float, help="radial sigma at the corner (default 2.5)")
    g.add_argument("--sigma_corner_tangential_px", type=float, help="tangential sigma at the corner (default 1.5)")
    g.add_argument("--field_exponent", type=float, help="sigma grows as h**exponent (default 2)")
    g.add_argument("--channel_scale", nargs="+", type=float, help="per-channel width factor (default lambda/median)")
    g.add_argument("--lateral_color_px", nargs="+", type=float, help="per-channel outward shift at h = 1 (default 0)")

    g = p.add_argument_group("motion (camera shake)")
    g.add_argument("--length_px", type=float, help="path length of the translation (default 15)")
    g.add_argument("--roll_deg", type=float, help="peak-to-peak roll about the optical axis (default 0.5)")
    g.add_argument("--anxiety", type=float, help="erraticness of the walk (default 0.005)")
    g.add_argument("--n_steps", type=int, help="time samples (default 2000)")
    return p.parse_args(argv)


def type_options(args) -> dict:
    options = {}
    for flag, (types, name) in TYPE_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.psf_type not in types:
            raise ConfigError(f"--{flag} applies to --psf_type {' or '.join(types)}, not {args.psf_type}")
        if flag in ("seidel", "zernike"):
            value = dict(value)
            if flag == "zernike":
                try:
                    value = {int(j): v for j, v in value.items()}
                except ValueError:
                    raise ConfigError(f"--zernike keys are Noll indices (integers), got {list(value)}") from None
        if flag == "object_distance_m" and len(value) == 1:
            value = value[0]  # one distance: a single-plane field
        options[name] = value
    return options


def main() -> int:
    args = parse_args()
    from psf.depth import DepthPSFField, save_depth_psf_field
    from psf.field import save_psf_field
    from psf.output import staged_output
    from psf.svpsf import PSFSimulator

    sim = PSFSimulator(psf_type=args.psf_type, grid_shape=args.grid, psf_size=args.psf_size,
                       sensor_res=args.sensor_res, seed=args.seed, wavelengths_nm=args.wavelengths_nm,
                       pixel_pitch_um=args.pixel_pitch_um, channel_order=args.channel_order,
                       magnification=args.magnification, device=args.device, **type_options(args))
    command = shlex.join(["data_gen/1.generate_psfs_synthetic.py", *sys.argv[1:]])
    with staged_output(args.save_dir, overwrite=args.overwrite) as stage:
        field = sim.simulate(progress=True, extra_attrs={"args": json.dumps({"command": command, **sim.config()})})
        stack = field if isinstance(field, DepthPSFField) else None
        if not args.no_previews:
            from psf.preview import save_psf_grid

            if stack is None:
                save_psf_grid(field, stage / "psf_grid.png")
            else:
                for d in range(stack.n_depths):
                    save_psf_grid(stack.plane(d), stage / f"psf_grid_depth{d:02d}.png")
        path = save_psf_field(field, stage / "psfs.h5") if stack is None else save_depth_psf_field(stack, stage / "psfs.h5")
    energy = field.attrs["window_energy_min"]
    depths = "" if stack is None else f" at {len(stack.depths_m)} depths {stack.depths_m.tolist()} m"
    print(f"{Path(args.save_dir) / path.name}: {field.psf_type} PSFs {list(field.psfs.shape)} "
          f"({field.channel_order}){depths}, min energy inside the window {energy:.4f}")
    if energy < 0.95:
        print(f"warning: a PSF loses {100 * (1 - energy):.1f}% of its energy outside the {field.psf_size} px window "
              "(stored PSFs are renormalised); consider a larger --psf_size", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
