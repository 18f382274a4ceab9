"""PSF field HDF5 io: round trip, schema, validation messages, atomic write."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from psf.field import PSFField, default_H_img, load_psf_field, save_psf_field
from utils.errors import DataError


def make_field(c_out=3, c_in=1, grid=(3, 4), k=7, sensor=(60, 80)):
    g = torch.Generator().manual_seed(0)
    psfs = torch.rand(c_out, c_in, grid[0] * grid[1], k, k, generator=g)
    psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
    return PSFField(psfs=psfs, grid_shape=grid, sensor_res=sensor, H_img=default_H_img(grid, sensor),
                    H_obj=np.diag([0.1, 0.1, 1.0]), psf_type="test", attrs={"seed": 3, "wavelengths_nm": [610.0, 530.0, 470.0]})


def test_round_trip_and_schema(tmp_path):
    f = make_field()
    path = save_psf_field(f, tmp_path)
    assert path.name == "psfs.h5"
    g = load_psf_field(tmp_path)
    assert torch.equal(f.psfs, g.psfs)
    assert g.grid_shape == (3, 4) and g.sensor_res == (60, 80) and g.attrs["seed"] == 3
    assert g.attrs["wavelengths_nm"] == [610.0, 530.0, 470.0]
    with h5py.File(path) as h:
        assert h["psfs"].dtype == np.float32 and h["psfs"].compression == "gzip"
        assert h["H_img"].dtype == np.float64
        pos = h["positions"][()]
    # Corner to corner: node (0,0) at pixel (0,0), last node at (W-1, H-1), row-major.
    np.testing.assert_allclose(pos[0], [0, 0])
    np.testing.assert_allclose(pos[3], [79, 0])
    np.testing.assert_allclose(pos[-1], [79, 59])
    assert not list(tmp_path.glob(".psfs.*"))  # no temp file left behind


def test_basis_validation(tmp_path):
    f = make_field()
    n = f.n_nodes
    with pytest.raises(DataError, match=r"K=13 basis PSFs is more than the N=12"):
        f.with_basis(torch.zeros(3, 1, 13, 7, 7), torch.zeros(3, 1, 13, n))
    with pytest.raises(DataError, match=r"'basis_coef' must be \[3, 1, 4, 12\]"):
        f.with_basis(torch.zeros(3, 1, 4, 7, 7), torch.zeros(3, 1, 4, n - 1))
    g = f.with_basis(torch.zeros(3, 1, 4, 7, 7), torch.zeros(3, 1, 4, n), basis_method="svd", explained_energy=0.9)
    save_psf_field(g, tmp_path / "b.h5")
    h = load_psf_field(tmp_path / "b.h5")
    assert h.n_basis == 4 and h.attrs["basis_method"] == "svd"


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="PSF file not found"):
        load_psf_field(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_psf_field(tmp_path / "junk.h5")
    path = save_psf_field(make_field(), tmp_path / "x.h5")
    with h5py.File(path, "a") as h:
        data = h["psfs"][()]
        del h["psfs"]
        h["psfs"] = data[:, :, :-1]
    with pytest.raises(DataError, match=r"N=11 node PSFs but grid_shape \(3, 4\) needs 12"):
        load_psf_field(path)


def test_even_kernel_rejected():
    f = make_field(k=6)
    with pytest.raises(DataError, match="odd size"):
        f.validate()
