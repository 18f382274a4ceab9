"""The PSF scripts through their command lines: outputs, attributes, one-line errors, nothing partial."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from psf.field import load_psf_field, save_psf_field
from psf.real import write_synthetic_captures
from psf.svpsf import PSFSimulator

ROOT = Path(__file__).resolve().parent.parent
STEP1 = ROOT / "data_gen" / "1.generate_psfs_synthetic.py"
STEP2 = ROOT / "data_gen" / "2.generate_basis_psfs.py"
REAL = ROOT / "data_gen" / "generate_psfs_real.py"
SMALL = ["--grid", "3", "4", "--psf_size", "11", "--sensor_res", "60", "80"]


def run(script, *args):
    """A real process: interpreter start, imports, exit code."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def script(monkeypatch, capsys):
    """Run a script file in this process (same code path as ``python script ...``, without paying
    for a new interpreter and torch import on every error case)."""

    def call(path, *args):
        monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(str(path), run_name="__main__")
        out = capsys.readouterr()
        return Result(exc.value.code or 0, out.out, out.err)

    return call


def one_line_error(proc, pattern):
    """Non-zero exit and exactly one ``error: ...`` line last on stderr (progress bars may precede it)."""
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("error: "), proc.stderr
    assert sum(ln.startswith("error") for ln in lines) == 1, proc.stderr
    assert pattern in lines[-1], lines[-1]


def test_help(script):
    proc = run(STEP1, "--help")
    assert proc.returncode == 0 and "--seidel" in proc.stdout and "W040" in proc.stdout
    for path, words in [(STEP2, "--n_basis"), (REAL, "--captures")]:
        res = script(path, "--help")
        assert res.returncode == 0 and words in res.stdout


@pytest.mark.slow
def test_step1_then_step2(tmp_path, script):
    out = tmp_path / "seidel"
    proc = run(STEP1, "--psf_type", "seidel", "--save_dir", out, *SMALL, "--seed", "5", "--f_number", "4",
               "--pixel_pitch_um", "1.5", "--seidel", "W040=0.5", "W131=0.4", "W222=0.3")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["psf_grid.png", "psfs.h5"]
    field = load_psf_field(out)
    assert field.psfs.shape == (3, 1, 12, 11, 11) and field.psf_type == "seidel"
    assert field.attrs["wavelengths_nm"] == [610.0, 530.0, 470.0] and field.attrs["pixel_pitch_um"] == 1.5
    assert field.attrs["seed"] == 5 and field.attrs["generator"].startswith("restorelab ")
    args = json.loads(field.attrs["args"]) if isinstance(field.attrs["args"], str) else field.attrs["args"]
    assert "--seidel W040=0.5" in args["command"] and args["seidel"] == {"W040": 0.5, "W131": 0.4, "W222": 0.3}
    with h5py.File(out / "psfs.h5") as f:
        assert f["psfs"].dtype == np.float32 and f["H_obj"].dtype == np.float64
    # the same command reproduces the same PSFs
    again = tmp_path / "again"
    script(STEP1, "--psf_type", "seidel", "--save_dir", again, *SMALL, "--seed", "5", "--f_number", "4",
        "--pixel_pitch_um", "1.5", "--seidel", "W040=0.5", "W131=0.4", "W222=0.3", "--no_previews")
    assert torch.equal(load_psf_field(again).psfs, field.psfs)
    assert torch.equal(PSFSimulator.from_config(field.attrs["args"]).simulate().psfs, field.psfs)

    proc = run(STEP2, "--psf_data_path", out, "--n_basis", "12")
    assert proc.returncode == 0, proc.stderr
    assert "K=12 of N=12" in proc.stdout
    full = load_psf_field(out)
    rec = torch.einsum("abkn,abkij->abnij", full.basis_coef.double(), full.basis_psfs.double())
    assert float((rec - full.psfs.double()).abs().max()) <= 1e-5
    assert {"basis_psfs.png", "basis_coef.png", "explained_energy.png"} <= {p.name for p in out.iterdir()}

    proc = script(STEP2, "--psf_data_path", out / "psfs.h5", "--energy", "0.999")
    assert proc.returncode == 0, proc.stderr
    chosen = load_psf_field(out)
    assert 1 <= chosen.n_basis < 12 and min(chosen.attrs["explained_energy"]) >= 0.999

    before = (out / "psfs.h5").read_bytes()
    one_line_error(script(STEP2, "--psf_data_path", out, "--n_basis", "13"), "K=13 is larger than the number of node PSFs N=12")
    assert (out / "psfs.h5").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("psf_type,extra", [("gaussian", ["--lateral_color_px", "0.5", "0", "-0.5"]),
                                            ("zernike", ["--zernike_rms", "0.1"]),
                                            ("motion", ["--length_px", "6", "--roll_deg", "2"])])
def test_step1_types(tmp_path, script, psf_type, extra):
    proc = script(STEP1, "--psf_type", psf_type, "--save_dir", tmp_path / "o", *SMALL, *extra)
    assert proc.returncode == 0, proc.stderr
    field = load_psf_field(tmp_path / "o")
    assert field.psf_type == psf_type and field.normalized
    sums = field.psfs.double().sum(dim=(-2, -1))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_step1_bad_input(tmp_path, script):
    out = tmp_path / "o"
    one_line_error(script(STEP1, "--psf_type", "seidle", "--save_dir", out), "invalid choice: 'seidle'")
    one_line_error(script(STEP1, "--psf_type", "seidel", "--save_dir", out, "--seidel", "W13=0.1"),
                   "did you mean 'W131'")
    one_line_error(script(STEP1, "--psf_type", "gaussian", "--save_dir", out, "--seidel", "W040=1"),
                   "--seidel applies to --psf_type seidel")
    one_line_error(script(STEP1, "--psf_type", "gaussian", "--save_dir", out, "--psf_size", "12"), "odd")
    one_line_error(script(STEP1, "--psf_type", "seidel", "--save_dir", out, "--seidel", "W040"), "expected NAME=VALUE")
    assert not out.exists()  # nothing written on failure
    script(STEP1, "--psf_type", "gaussian", "--save_dir", out, *SMALL)
    one_line_error(script(STEP1, "--psf_type", "gaussian", "--save_dir", out, *SMALL), "pass --overwrite")
    assert script(STEP1, "--psf_type", "gaussian", "--save_dir", out, *SMALL, "--overwrite").returncode == 0


def test_step2_bad_input(tmp_path, script):
    one_line_error(script(STEP2, "--psf_data_path", tmp_path / "none"), "PSF file not found")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "psfs.h5").write_text("nope")
    one_line_error(script(STEP2, "--psf_data_path", tmp_path / "junk"), "not a readable HDF5 file")
    field = PSFSimulator("gaussian", grid_shape=(2, 3), psf_size=7, sensor_res=(20, 30)).simulate()
    path = save_psf_field(field, tmp_path / "bad")
    with h5py.File(path, "a") as f:
        data = f["psfs"][()]
        del f["psfs"]
        f["psfs"] = data[:, :, :, :6, :6]
    one_line_error(script(STEP2, "--psf_data_path", path), "odd size")
    one_line_error(script(STEP2, "--psf_data_path", path, "--n_basis", "2", "--energy", "0.9"), "not allowed with")


def test_real_cli(tmp_path, script):
    truth = PSFSimulator("gaussian", grid_shape=(2, 3), psf_size=15, sensor_res=(90, 120),
                         H_img=np.array([[40.0, 0, 20], [0, 40.0, 25], [0, 0, 1]])).simulate()
    write_synthetic_captures(truth, tmp_path / "caps", noise_sigma=0.001)
    proc = run(REAL, "--captures", tmp_path / "caps", "--save_dir", tmp_path / "out", "--psf_size", "15",
               "--wavelengths_nm", "610", "530", "470")
    assert proc.returncode == 0, proc.stderr
    field = load_psf_field(tmp_path / "out")
    assert field.psfs.shape == (3, 1, 6, 15, 15) and field.psf_type == "real"
    assert float((field.psfs - truth.psfs).abs().max()) < 0.05 * float(truth.psfs.max())
    (tmp_path / "empty").mkdir()
    one_line_error(script(REAL, "--captures", tmp_path / "empty", "--save_dir", tmp_path / "o2"), "no capture images")
    (tmp_path / "caps" / "psf_01_02.png").write_bytes(b"\x89PNG broken")
    one_line_error(script(REAL, "--captures", tmp_path / "caps", "--save_dir", tmp_path / "o3", "--psf_size", "15"),
                   "cannot read image")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def write_design_psf_file(path, attrs):
    """A PSF file written with h5py alone, as DESIGN.md ("PSF file (HDF5)") describes it."""
    gh, gw, k = 2, 3, 7
    yy, xx = np.mgrid[-3:4, -3:4]
    psf = np.exp(-(xx**2 + yy**2) / 2.0)
    psfs = np.broadcast_to(psf / psf.sum(), (3, 1, gh * gw, k, k)).astype(np.float32)
    H_img = np.array([[14.5, 0, 0], [0, 19.0, 0], [0, 0, 1]], dtype=np.float64)
    with h5py.File(path, "w") as f:
        f.create_dataset("psfs", data=psfs, compression="gzip", chunks=True)
        cols, rows = np.meshgrid(np.arange(gw), np.arange(gh))
        f.create_dataset("positions", data=np.stack([cols.ravel() * 14.5, rows.ravel() * 19.0], 1).astype(np.float32))
        f.create_dataset("H_img", data=H_img)
        f.create_dataset("H_obj", data=np.eye(3))
        f.attrs.update({"psf_type": "measured", "grid_shape": np.array([gh, gw]), "psf_size": k,
                        "sensor_res": np.array([39, 30]), "channel_order": "RGB", "normalized": True, **attrs})


def test_step2_keeps_the_stored_form_of_attributes(tmp_path, script):
    """JSON-text attributes (``args`` = "{}", an empty list, a dict) are written back as the same text,
    native arrays as arrays; an empty dict read back used to crash the save ("Object dtype")."""
    path = tmp_path / "psfs.h5"
    json_attrs = {"args": "{}", "history": "[]", "lens": '{"f_mm": 4.2}', "steps": "[1, 2]"}
    write_design_psf_file(path, {**json_attrs, "wavelengths_nm": np.array([610.0, 550.0, 465.0]),
                                 "pixel_pitch_um": 1.4, "seed": 3, "note": "[not json"})
    res = script(STEP2, "--psf_data_path", tmp_path, "--n_basis", "2", "--no_figures")
    assert res.returncode == 0, res.stderr
    with h5py.File(path) as f:
        for key, text in json_attrs.items():
            value = f.attrs[key]
            assert isinstance(value, str) and json.loads(value) == json.loads(text), (key, value)
        np.testing.assert_array_equal(f.attrs["wavelengths_nm"], [610.0, 550.0, 465.0])
        assert f.attrs["pixel_pitch_um"] == 1.4 and f.attrs["seed"] == 3 and f.attrs["note"] == "[not json"
        assert f.attrs["n_basis"] == 2 and f["basis_psfs"].shape == (3, 1, 2, 7, 7)
    assert load_psf_field(path).attrs["args"] == {}
