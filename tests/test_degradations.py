"""utils/degradations.py against BasicSR/Real-ESRGAN fixtures (../shared/fixtures/sr), PIL's libjpeg,
skimage's Lab, OpenCV, and the statistics of the draws."""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import degradations as D

FIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "sr"


def _kernels():
    return json.loads((FIX / "realesrgan_kernels.json").read_text())


FUNCS = {"bivariate_Gaussian": D.bivariate_gaussian, "bivariate_generalized_Gaussian": D.bivariate_generalized_gaussian,
         "bivariate_plateau": D.bivariate_plateau, "circular_lowpass_kernel": D.circular_lowpass_kernel}


def test_fixed_kernels_match_basicsr():
    data = _kernels()
    n = 0
    for name, cases in data["cases"].items():
        for case in cases:
            args = case["args"]
            if name == "circular_lowpass_kernel":
                k = D.circular_lowpass_kernel(args["cutoff"], args["kernel_size"], pad_to=args["pad_to"])
            else:
                a = dict(args)
                k = FUNCS[name](**{"kernel_size": a.pop("kernel_size"), **a})
            ref = np.array(case["kernel"])
            assert k.shape == ref.shape, case["call"]
            assert np.abs(k - ref).max() < 1e-6, case["call"]
            if "sigma_matrix2" in case:
                s = D.sigma_matrix2(args["sig_x"], args["sig_y"], args["theta"])
                assert np.abs(s - np.array(case["sigma_matrix2"])).max() < 1e-12
            n += 1
    assert n == 18


def test_random_mixed_kernel_draws_match_basicsr():
    data = _kernels()
    types = {"bivariate_Gaussian": ("iso", "aniso"), "bivariate_generalized_Gaussian": ("generalized_iso", "generalized_aniso"),
             "bivariate_plateau": ("plateau_iso", "plateau_aniso")}
    for entry in data["random_mixed_kernels"]:
        call = entry["drawn_inner_call"]
        a = call["positional_args"]
        iso = call["kwargs"]["isotropic"]
        t = types[call["function"]][0 if iso else 1]
        assert t == entry["drawn_kernel_type"]
        params = {"type": t, "size": a[0], "sig_x": a[1], "sig_y": a[2], "theta": a[3]}
        if len(a) > 4:
            params["beta"] = a[4]
        ref = np.array(entry["kernel"])
        assert np.abs(D.make_kernel(params) - ref).max() < 1e-6, entry["seed"]


def test_filter2d_and_usm_match_basicsr():
    from safetensors.torch import load_file

    f = load_file(str(FIX / "usm_sharp.safetensors"))
    for case in ("single", "batch"):
        out = D.filter2D(f[f"filter2D.{case}.img"], f[f"filter2D.{case}.kernel"])
        assert (out - f[f"filter2D.{case}.output"]).abs().max() < 1e-6
    usm = D.USMSharp(radius=50)
    assert (usm.kernel - f["usm.kernel"]).abs().max() < 1e-6
    assert (D.filter2D(f["usm.input"], usm.kernel) - f["usm.blur"]).abs().max() < 1e-6
    assert (usm(f["usm.input"]) - f["usm.output"]).abs().max() < 1e-6


def test_gaussian_blur_equals_opencv():
    import cv2

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 40, 36, generator=g)
    k = torch.from_numpy(D.bivariate_gaussian(11, 1.7, 1.7, 0.0, True)).float()
    ours = D.filter2D(img, k[None])[0].permute(1, 2, 0).numpy()
    ref = cv2.GaussianBlur(img[0].permute(1, 2, 0).numpy(), (11, 11), 1.7, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - ref).max() < 1e-5


def test_sinc_kernel_is_a_lowpass():
    k = D.circular_lowpass_kernel(math.pi / 2, 21)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(256, 256))))
    f = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi
    r = np.hypot(*np.meshgrid(f, f))
    assert np.median(spectrum[r < 0.6 * math.pi / 2]) > 0.9
    assert np.median(spectrum[r > 1.4 * math.pi / 2]) < 0.1


def test_aniso_kernel_second_moments():
    k = D.bivariate_gaussian(41, 3.0, 1.2, 0.6, False)
    grid = D.mesh_grid(41)
    cov = np.einsum("ij,ija,ijb->ab", k, grid, grid)
    ref = D.sigma_matrix2(3.0, 1.2, 0.6)
    assert np.abs(cov - ref).max() / np.abs(ref).max() < 0.02


def test_matlab_resize_is_utils_imresize(monkeypatch):
    """The ``matlab`` resize mode goes through utils.imresize (the BasicSR/Octave-exact one)."""
    from safetensors.torch import load_file

    import utils.imresize

    calls = []
    real = utils.imresize.imresize
    monkeypatch.setattr(utils.imresize, "imresize", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    f = load_file(str(FIX / "basicsr_imresize.safetensors"))
    x = f["astronaut.rgb_chw"]
    out = D.resize(x, (16, 16), "matlab")
    assert calls == [0.25]
    assert (out - f["astronaut.rgb.imresize.scale_1_4"]).abs().max() < 1e-6
    op = D.Resize({"op": "resize", "to_scale": 0.5, "modes": ["matlab"]}, "t")
    d = op.draw(torch.Generator().manual_seed(0), (64, 64), (64, 64))
    assert (op.apply(x, d, None) - f["astronaut.rgb.imresize.scale_1_2"]).abs().max() < 1e-6


def test_area_resize_equals_opencv():
    import cv2

    x = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(1))
    for s in (2, 4):
        ours = D.resize(x, (64 // s, 48 // s), "area").permute(1, 2, 0).numpy()
        ref = cv2.resize(x.permute(1, 2, 0).numpy(), (48 // s, 64 // s), interpolation=cv2.INTER_AREA)
        assert np.abs(ours - ref).max() < 1e-6


def _pil_jpeg(u8: np.ndarray, q: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf))


@pytest.mark.parametrize("q", [10, 30, 50, 70, 95])
def test_jpeg_equals_pil_byte_for_byte(q):
    import skimage.data

    rgb = skimage.data.astronaut()[100:196, 150:262]
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float() / 255
    out = D.jpeg(x, q)
    assert np.array_equal(np.round(out.numpy() * 255).astype(np.uint8).transpose(1, 2, 0), _pil_jpeg(rgb, q))
    gray = skimage.data.camera()[100:164, 100:180]
    out = D.jpeg(torch.from_numpy(gray[None].copy()).float() / 255, q)
    assert np.array_equal(np.round(out[0].numpy() * 255).astype(np.uint8), _pil_jpeg(gray, q))


def test_jpeg_of_over_range_input_is_jpeg_of_clamped_rounded():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 32, 40, generator=g) * 1.4 - 0.2      # values in [-0.2, 1.2]
    x[:, :16, :16] = 1.1
    x[:, 16:32, :16] = -0.1
    ref_u8 = np.clip(np.round(x.double().numpy() * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    out = D.jpeg(x, 70)
    assert np.array_equal(np.round(out.numpy() * 255).astype(np.uint8).transpose(1, 2, 0), _pil_jpeg(ref_u8, 70))
    # a wrap-around (x·255 as uint8) would turn 1.1 into a dark pixel
    assert out[:, 2:14, 2:14].min() > 0.8 and out[:, 18:30, 2:14].max() < 0.2


def test_grayscale_matches_pil_convert_L():
    import skimage.data
    from PIL import Image

    rgb = skimage.data.coffee()[:64, :64]
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float() / 255
    ours = D.to_gray(x)[0].numpy() * 255
    ref = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float64)
    assert np.abs(ours - ref).max() <= 1.0


def test_lab_matches_skimage_and_round_trips():
    import skimage.color

    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[:, 0, 0] = 0
    x[:, 0, 1] = 1
    lab = D.rgb_to_lab(x)
    ref = skimage.color.rgb2lab(x.permute(1, 2, 0).numpy())
    assert np.abs(lab.permute(1, 2, 0).numpy() - ref).max() < 1e-3
    assert (D.lab_to_rgb(lab) - x).abs().max() < 1e-5
    for v in (0.0, 1.0):  # gradients finite on black and white
        y = torch.full((1, 3, 8, 8), v, requires_grad=True)
        D.rgb_to_lab(y)[:, 1:].abs().sum().backward()
        assert torch.isfinite(y.grad).all()


def test_gaussian_noise_statistics():
    x = torch.full((3, 128, 128), 0.5)
    op = D.Noise({"op": "noise", "sigma": 10, "gray_prob": 0.0}, "t")
    g = torch.Generator().manual_seed(0)
    out = op.apply(x, {"kind": "gaussian", "gray": False, "sigma": 10.0}, g) - x
    assert abs(out.std().item() * 255 / 10 - 1) < 0.02
    c = np.corrcoef(out.reshape(3, -1).numpy())
    assert np.abs(c[0, 1:]).max() < 0.02
    out = op.apply(x, {"kind": "gaussian", "gray": True, "sigma": 10.0}, g) - x
    assert np.corrcoef(out.reshape(3, -1).numpy())[0, 1] > 0.99


def test_poisson_noise_variance():
    """BasicSR's Poisson model: noise = (poisson(img·v)/v − img)·scale with v the level count
    rounded up to a power of 2, so var = img·scale²/v."""
    op = D.Noise({"op": "noise", "kinds": ["poisson"]}, "t")
    g = torch.Generator().manual_seed(0)
    img = torch.cat([torch.full((3, 64, 64), lv) for lv in (0.2, 0.5, 0.8)], dim=1)  # 3 levels -> v = 4
    for scale in (0.5, 1.0, 2.0):
        noise = op.apply(img, {"kind": "poisson", "gray": False, "scale": scale}, g) - img
        for i, lv in enumerate((0.2, 0.5, 0.8)):
            n = noise[:, 64 * i:64 * (i + 1)]
            lvq = round(lv * 255) / 255
            expected = lvq * scale ** 2 / 4
            # clipping to [0, 1] trims the high tail for bright levels: compare only unclipped cases
            if lvq + 3 * math.sqrt(expected) < 1:
                assert abs(n.var().item() / expected - 1) < 0.05, (scale, lv)


def test_op_frequencies_over_10000_draws():
    pipe = D.DegradationPipeline({"preset": "realesrgan", "scale": 4})
    counts, n = Counter(), 10000
    kinds, resize_dirs, kernel_types = Counter(), Counter(), Counter()
    for i in range(n):
        rec = pipe.draw(torch.Generator().manual_seed(i), (256, 256))
        assert [d["op"] for d in rec] == [s["op"] for s in pipe.specs]  # order as configured
        for j, d in enumerate(rec):
            counts[j] += d["applied"]
        kinds[rec[2]["kind"]] += 1
        resize_dirs[rec[1]["direction"]] += 1
        kernel_types["sinc" if rec[0]["type"] == "sinc" else "other"] += 1
        assert rec[7]["out_size"] == [64, 64]
    for j, spec in enumerate(pipe.specs):
        assert abs(counts[j] / n - spec.get("p", 1.0)) <= 0.02, spec["op"]
    assert abs(kinds["gaussian"] / n - 0.5) <= 0.02
    for k, p in zip(("up", "down", "keep"), (0.2, 0.7, 0.1)):
        assert abs(resize_dirs[k] / n - p) <= 0.02
    assert abs(kernel_types["sinc"] / n - 0.1) <= 0.02


def test_realesrgan_preset_x4_gives_8bit_quarter_size():
    import skimage.data

    gt = torch.from_numpy(skimage.data.astronaut()[:256, :256].transpose(2, 0, 1).copy()).float() / 255
    pipe = D.DegradationPipeline({"preset": "realesrgan", "scale": 4})
    lq, rec = pipe(gt, torch.Generator().manual_seed(5))
    assert lq.shape == (3, 64, 64)
    assert torch.equal(lq, torch.round(lq * 255) / 255)
    lq2, rec2 = pipe(gt, torch.Generator().manual_seed(5))
    assert torch.equal(lq, lq2) and rec == rec2
    json.dumps(rec)


def test_config_errors_name_the_op():
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="blurr"):
        D.DegradationPipeline([{"op": "blurr"}])
    with pytest.raises(ConfigError, match=r"degradations\[0\].*sigmaa"):
        D.DegradationPipeline([{"op": "noise", "sigmaa": 3}])
