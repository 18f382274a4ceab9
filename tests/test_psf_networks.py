"""MultiWienerNet and the PSF-conditioned (semi-blind) NAFNetPSF / RestormerPSF.

References: the Wiener network (itself tested against closed forms in test_wiener.py), the
official NAFNet / Restormer outputs in shared/fixtures (produced by the upstream code), and
invariances the design promises (zero basis elements, choice of basis).
"""
from __future__ import annotations

import json

import cv2
import pytest
import skimage.data
import torch
from safetensors.torch import load_file

from models.archs import define_network
from utils.errors import DataError
from psf.basis import psf_basis
from psf.example_fields import elliptical_gaussian_field
from utils.sv_renderer import coef_maps, render


def astronaut(size=48) -> torch.Tensor:
    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def field_keys(field, h, w, dtype=torch.float32):
    basis = field.basis_psfs if field.has_basis else field.psfs
    return {"basis_psfs": basis.to(dtype)[None], "basis_coef": coef_maps(field, h, w, dtype=dtype)[None]}


def pad_k(keys: dict, extra: int) -> dict:
    """Append ``extra`` zero basis elements, as a dataset mixing fields does."""
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, extra))  # noqa: E731
    return {k: pad(v) for k, v in keys.items()}


@pytest.fixture(scope="module")
def case():
    x = astronaut(48)
    field = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=9, sensor_res=(48, 48), sigma_center=0.8,
                                      sigma_radial=2.0, sigma_tangential=1.1, coma_shift=0.8)
    y = render(x, field)
    return x, y, field


# -- MultiWienerNet ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["components", "regions"])
@pytest.mark.parametrize("regularizer", ["identity", "laplacian"])
def test_multiwiener_at_init_is_the_wiener_network(case, mode, regularizer):
    x, y, field = case
    keys = field_keys(field, 48, 48, torch.float64)
    common = {"mode": mode, "nsr": 3e-3, "regions": [3, 3], "regularizer": regularizer}
    wiener = define_network({"type": "Wiener", **common}).double().eval()
    net = define_network({"type": "MultiWienerNet", **common, "n_basis": 12, "psf_size": 11,
                          "refiner": {"width": 8, "depth": 2}}).double().eval()
    with torch.no_grad():
        expected = wiener(y.double(), **keys)
        stage1 = net.deconvolve(y.double(), **keys)  # K 9 -> 12 and k 9 -> 11 zero-padded inside
        out = net(y.double(), **keys)
    assert torch.allclose(stage1, expected, atol=1e-12, rtol=0)
    assert torch.equal(out, stage1)  # the refiner starts at zero


def test_multiwiener_learns_filters_and_refiner(case):
    x, y, field = case
    keys = field_keys(field, 48, 48)
    torch.manual_seed(0)
    net = define_network({"type": "MultiWienerNet", "mode": "components", "n_basis": 9, "psf_size": 9, "nsr": 1e-1,
                          "refiner": {"width": 8, "depth": 2}}).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = (net(y, **keys) - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert net.filter_delta.abs().sum() > 0 and net.log_nsr.grad is not None
    assert losses[-1] < 0.9 * losses[0]


def test_multiwiener_errors(case):
    x, y, field = case
    net = define_network({"type": "MultiWienerNet", "n_basis": 4, "psf_size": 9})
    with pytest.raises(DataError, match="n_basis=4"):
        net(y, **field_keys(field, 48, 48))
    with pytest.raises(ValueError, match="needs the batch keys"):
        net(y)


# -- PSF-conditioned networks --------------------------------------------------------------------------
def perturbed(name, **options):
    """A conditioned network whose FiLM layers are no longer zero (so the PSF matters)."""
    torch.manual_seed(0)
    net = define_network({"type": name, **options}).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.startswith(("film", "films")):
                p.add_(0.05 * torch.randn_like(p))
    return net


TINY = {"NAFNetPSF": dict(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], middle_blk_num=1, cond_dim=8, psf_size=15),
        "RestormerPSF": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4], cond_dim=8,
                             psf_size=15)}


@pytest.mark.parametrize("name", list(TINY))
def test_zero_basis_elements_and_the_choice_of_basis_change_nothing(case, name):
    x, y, field = case
    net = perturbed(name, **TINY[name])
    nodal = field_keys(field, 48, 48)
    b = psf_basis(field.psfs, n_basis=field.n_nodes, method="pca")  # the same field, another basis
    pca = field_keys(field.with_basis(b.basis_psfs.float(), b.basis_coef.float()), 48, 48)
    other = elliptical_gaussian_field(grid_shape=(3, 3), psf_size=9, sensor_res=(48, 48), sigma_center=2.0,
                                      sigma_radial=2.0, sigma_tangential=2.0, coma_shift=0.0)
    with torch.no_grad():
        out = net(y, **nodal)
        padded = net(y, **pad_k(nodal, 7))
        # A smaller kernel is zero-padded by the dataset; same field, bigger k: same output.
        big_k = {"basis_psfs": torch.nn.functional.pad(nodal["basis_psfs"], (2, 2, 2, 2)), "basis_coef": nodal["basis_coef"]}
        out_pca, out_big_k = net(y, **pca), net(y, **big_k)
        out_other = net(y, **field_keys(other, 48, 48))
    assert torch.allclose(padded, out, atol=1e-6, rtol=0), (padded - out).abs().max()
    assert torch.allclose(out_big_k, out, atol=1e-6, rtol=0)
    assert torch.allclose(out_pca, out, atol=2e-5, rtol=0), (out_pca - out).abs().max()
    assert (out_other - out).abs().max() > 1e-3  # ... while another lens does change it


def official_fixture(fixtures_dir, stem):
    tensors = load_file(str(fixtures_dir / f"{stem}.safetensors"))
    meta = json.loads((fixtures_dir / f"{stem}.json").read_text())
    state = {k.removeprefix("state_dict."): v.float() for k, v in tensors.items() if k.startswith("state_dict.")}
    return state, tensors["input"].float(), tensors["output"].float(), meta["constructor_kwargs"]


@pytest.mark.parametrize("name,stem", [("NAFNetPSF", "nafnet_official_w8"), ("RestormerPSF", "restormer_official_small")])
def test_starts_from_an_official_checkpoint_as_the_official_network(fixtures_dir, name, stem):
    """Official weights load into the backbone; with the conditioning at its identity start the
    output is the upstream code's output, whatever the PSFs."""
    state, x, y_ref, kwargs = official_fixture(fixtures_dir, stem)
    net = define_network({"type": name, **kwargs, "cond_dim": 8, "psf_size": 9}).eval()
    net.load_official_state_dict({"params": state})
    inputs = net.example_inputs(batch_size=x.shape[0], size=x.shape[-1])
    assert x.shape[-1] == x.shape[-2]
    with torch.no_grad():
        out = net(x, basis_psfs=inputs["basis_psfs"], basis_coef=inputs["basis_coef"])
    assert (out - y_ref).abs().max() < 1e-5
    bad = dict(state)
    bad.pop(next(iter(bad)))
    with pytest.raises(DataError, match="missing"):
        net.load_official_state_dict(bad)
