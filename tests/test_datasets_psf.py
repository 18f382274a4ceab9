"""PSF keys of samples (psf, basis_psfs, basis_coef), checked against an independent scatter.

The lq images here are rendered by a brute-force per-pixel scatter written in this file
(DESIGN.md semantics: bilinear node interpolation in grid-index space, source p spreads
psf[k//2+dy, k//2+dx] to p+(dy, dx)). A sample's PSF keys must re-create its own lq:
``lq = Σ_K basis_psfs[K] ∗ (basis_coef[K] ⊙ gt)`` in the interior of every crop, whatever the
crop position and flips, and ``psf`` must be the interpolated PSF at the crop centre.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dataset import create_dataset
from dataset.psf_keys import psf_keys_for
from psf.field import PSFField, default_H_img, save_psf_field
from utils.errors import ConfigError, DataError

SENSOR = (30, 36)


def random_field(grid=(3, 3), k=7, seed=0, basis_k=None):
    """Asymmetric random PSFs; with ``basis_k`` they are exact convex mixtures of basis_k kernels."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    if basis_k is None:
        psfs = torch.rand(3, 1, n, k, k, generator=g) ** 3
        psfs = psfs / psfs.sum(dim=(-2, -1), keepdim=True)
        basis = coef = None
    else:
        basis = torch.rand(3, 1, basis_k, k, k, generator=g) ** 3
        basis = basis / basis.sum(dim=(-2, -1), keepdim=True)
        coef = torch.rand(3, 1, basis_k, n, generator=g)
        coef = coef / coef.sum(dim=2, keepdim=True)
        psfs = torch.einsum("oikn,oikyx->oinyx", coef, basis)
    field = PSFField(psfs=psfs.float(), grid_shape=grid, sensor_res=SENSOR, H_img=default_H_img(grid, SENSOR),
                     H_obj=np.eye(3), psf_type="test")
    return field if basis is None else field.with_basis(basis.float(), coef.float())


def pixel_psfs(field, h, w, top=0, left=0):
    """[C, k, k, h, w]: the bilinearly interpolated PSF of every pixel (DESIGN.md), computed here."""
    gh, gw = field.grid_shape
    hs, ws = field.sensor_res
    ys, xs = torch.meshgrid(torch.arange(top, top + h, dtype=torch.float64),
                            torch.arange(left, left + w, dtype=torch.float64), indexing="ij")
    col = (xs * (gw - 1) / (ws - 1)).clamp(0, gw - 1)
    row = (ys * (gh - 1) / (hs - 1)).clamp(0, gh - 1)
    c0, r0 = col.floor().long().clamp(max=gw - 2), row.floor().long().clamp(max=gh - 2)
    fc, fr = col - c0, row - r0
    psfs = field.psfs[:, 0].double()  # [C, N, k, k]
    out = 0
    for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        node = (r0 + dr) * gw + (c0 + dc)
        out = out + psfs[:, node].permute(0, 3, 4, 1, 2) * wgt
    return out  # [C, k, k, h, w]


def scatter(x, maps):
    """Scatter-form blur with zero boundary: x [C, H, W], maps [C, k, k, H, W] per-source-pixel PSFs."""
    c, k = maps.shape[0], maps.shape[1]
    r = k // 2
    h, w = x.shape[-2:]
    out = torch.zeros(c, h + 2 * r, w + 2 * r, dtype=torch.float64)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[:, r + dy:r + dy + h, r + dx:r + dx + w] += x.double() * maps[:, r + dy, r + dx]
    return out[:, r:r + h, r:r + w]


def write_16bit(path, chw):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.round(chw.clamp(0, 1).numpy().transpose(1, 2, 0) * 65535).astype(np.uint16)
    assert cv2.imwrite(str(path), arr[:, :, ::-1])


def make_psf_folder(root, field, n_images=2, seed=0):
    """root/{gt,lq}/ 16-bit PNGs (lq = brute-force blur of gt) and root/psfs/psfs.h5."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n_images):
        gt = torch.round(torch.rand(3, *SENSOR, generator=g) * 65535) / 65535
        lq = scatter(gt, pixel_psfs(field, *SENSOR)).float()
        write_16bit(root / "gt" / f"im{i}.png", gt)
        write_16bit(root / "lq" / f"im{i}.png", lq)
    save_psf_field(field, root / "psfs")


def check_sample(sample, field, crop=None, atol=2e-4):
    """The sample's own PSF keys re-create its lq (interior), and psf is the crop-centre PSF."""
    gt, lq, basis, coef = sample["gt"], sample["lq"], sample["basis_psfs"], sample["basis_coef"]
    r = basis.shape[-1] // 2
    maps = torch.einsum("oikhw,oikyx->oyxhw", coef.double(), basis.double())  # [C, k, k, h, w]
    recon = scatter(gt, maps)
    torch.testing.assert_close(recon[:, r:-r, r:-r], lq.double()[:, r:-r, r:-r], atol=atol, rtol=0)
    assert sample["psf"].shape == basis.shape[:2] + basis.shape[-2:]


def test_psf_keys_for_input_keys():
    assert psf_keys_for(("lq",)) == []
    assert psf_keys_for(("lq", "basis_coef", "basis_psfs")) == ["basis_psfs", "basis_coef"]
    assert psf_keys_for(("psf", "lq")) == ["psf"]


@pytest.mark.parametrize("basis_k", [None, 2])
def test_folder_psf_keys_recreate_lq_under_crops_and_flips(tmp_path, basis_k):
    field = random_field(basis_k=basis_k)
    make_psf_folder(tmp_path, field)
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": 16, "seed": 4,
                         "psf_keys": ["psf", "basis_psfs", "basis_coef"]})
    ds.pairs = ds.pairs * 6
    k_expected = basis_k or 9  # full rank without a basis: K = N
    for i in range(len(ds)):
        s = ds[i]
        assert s["basis_psfs"].shape == (3, 1, k_expected, 7, 7)
        assert s["basis_coef"].shape == (3, 1, k_expected, 16, 16)
        check_sample(s, field)


def test_centre_psf_is_interpolated_psf_at_crop_centre(tmp_path):
    field = random_field()
    make_psf_folder(tmp_path, field, n_images=1)
    # 15x15 centre crop of 30x36: top 7, left 10, centre pixel (row 14, col 17) exactly.
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val",
                         "crop_size": 15, "psf_keys": ["psf"]})
    s = ds[0]
    assert set(s) == {"gt", "lq", "key", "psf"}
    expected = pixel_psfs(field, 1, 1, top=14, left=17)[..., 0, 0]  # [C, k, k]
    torch.testing.assert_close(s["psf"][:, 0].double(), expected, atol=1e-6, rtol=0)
    # Even crop 16x16 (top 7, left 10): its centre (x 17.5, y 14.5) lies between pixels, exactly
    # on the middle node of the 3x3 grid (nodes at x 0, 17.5, 35 and y 0, 14.5, 29).
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val",
                         "crop_size": 16, "psf_keys": ["psf"]})
    torch.testing.assert_close(ds[0]["psf"][:, 0], field.psfs[:, 0, 4], atol=1e-6, rtol=0)


def test_flipped_sample_gets_flipped_centre_psf(tmp_path):
    """With flips, psf must equal the crop-centre PSF of the unflipped image, flipped the same way."""
    field = random_field()
    make_psf_folder(tmp_path, field, n_images=1)
    ds = create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "crop_size": 15, "seed": 1,
                         "psf_keys": ["psf", "basis_psfs", "basis_coef"]})
    ds.pairs = ds.pairs * 12
    from dataset.base import Geometry

    flips_seen = set()
    for i in range(len(ds)):
        geometry = ds.draw_geometry(SENSOR, ds.generator(i), "x")
        s = ds[i]
        check_sample(s, field)
        centre = pixel_psfs(field, 1, 1, top=geometry.top + 7, left=geometry.left + 7)[..., 0, 0]
        torch.testing.assert_close(s["psf"][:, 0].double(), geometry.apply_transform(centre), atol=1e-6, rtol=0)
        assert isinstance(geometry, Geometry)
        flips_seen.add((geometry.hflip, geometry.vflip, geometry.transpose))
    assert len(flips_seen) >= 4


def test_hf_mixed_fields_padded_to_common_k(tmp_path):
    import datasets

    fields = {"a.h5": random_field(grid=(2, 2), k=5, seed=1), "sub/b.h5": random_field(grid=(3, 3), k=7, seed=2, basis_k=3)}
    root = tmp_path / "mixed"
    (root / "data").mkdir(parents=True)
    for name, f in fields.items():
        save_psf_field(f, root / "psfs" / name)
    g = torch.Generator().manual_seed(0)
    rows = {"gt": [], "lq": [], "key": [], "psf_file": []}
    for i, name in enumerate(["a.h5", "sub/b.h5", "psfs/a.h5"]):
        gt = torch.round(torch.rand(3, *SENSOR, generator=g) * 65535) / 65535
        field = fields[name.removeprefix("psfs/")]
        lq = scatter(gt, pixel_psfs(field, *SENSOR)).float()
        for col, img in (("gt", gt), ("lq", lq)):
            arr = np.round(img.clamp(0, 1).numpy().transpose(1, 2, 0) * 65535).astype(np.uint16)
            rows[col].append({"bytes": cv2.imencode(".png", arr[:, :, ::-1])[1].tobytes(), "path": None})
        rows["key"].append(f"s{i}")
        rows["psf_file"].append(name)
    feats = datasets.Features({"gt": datasets.Image(), "lq": datasets.Image(), "key": datasets.Value("string"),
                               "psf_file": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))

    ds = create_dataset({"type": "HFDataset", "path": str(root), "cache_dir": str(tmp_path / "cache"), "crop_size": 14,
                         "psf_keys": ["psf", "basis_psfs", "basis_coef"]})
    assert ds.psf_attacher.n_basis == 4 and ds.psf_attacher.psf_size == 7  # max(N=4, K=3), max(5, 7)
    for i, name in enumerate(["a.h5", "sub/b.h5", "a.h5"]):
        s = ds[i]
        assert s["basis_psfs"].shape == (3, 1, 4, 7, 7) and s["basis_coef"].shape == (3, 1, 4, 14, 14)
        check_sample(s, fields[name])
    assert torch.equal(ds[1]["basis_coef"][:, :, 3], torch.zeros(3, 1, 14, 14))  # padded K is zero
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["basis_coef"].shape == (3, 3, 1, 4, 14, 14) and batch["psf"].shape == (3, 3, 1, 7, 7)

    # Several PSF files and no column naming them: refuse to guess.
    with pytest.raises(DataError, match=r"2 PSF files .* but no 'which' column"):
        create_dataset({"type": "HFDataset", "path": str(root), "cache_dir": str(tmp_path / "cache"),
                        "psf_keys": ["psf"], "psf_file_key": "which"})


def test_psf_key_errors(tmp_path):
    field = random_field()
    make_psf_folder(tmp_path, field, n_images=1)
    with pytest.raises(ConfigError, match=r"psf_keys: unknown key\(s\) 'kernel'"):
        create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "psf_keys": ["kernel"]})
    with pytest.raises(DataError, match="PSF file or folder not found"):
        create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "psf_keys": ["psf"],
                        "psf_path": str(tmp_path / "none.h5")})
    save_psf_field(field, tmp_path / "psfs" / "second.h5")
    with pytest.raises(DataError, match="2 PSF files found .*set psf_path"):
        create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "psf_keys": ["psf"]})
    # Without psf_keys the PSF folder is never read.
    assert "psf" not in create_dataset({"type": "PairedFolderDataset", "root": str(tmp_path), "phase": "val"})[0]
