"""FID and KID with a pure-torch Inception-v3 (the "FID Inception" of pytorch-fid).

* FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule...", NeurIPS 2017, eq. 6):
  ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½) over 2048-d pool3 features, Σ with N − 1 (as np.cov).
  Tr((Σ₁Σ₂)^½) is computed as Σ √λᵢ(Σ₁^½ Σ₂ Σ₁^½) in float64 (symmetric, no complex round-off).
* KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018, eq. 4): unbiased MMD² with the
  kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets (torch-fidelity / clean-fid
  defaults: 100 subsets of min(1000, N) images); reported with its standard deviation.
* Network: torchvision's Inception-v3 layout with the FID patches of pytorch-fid (average pools
  that exclude padding, max pool in the last block, 1008 logits), inputs [0, 1] resized to
  299×299 bilinearly and mapped to [-1, 1]. The weights (``pt_inception-2015-12-05-6726825d.pth``,
  ported from TensorFlow's FID graph) are never downloaded here: pass their path or put the file
  in the torch hub cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import DataError
from utils.metrics.common import MetricInputError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    # TensorFlow's average pool ignores the zero padding (pytorch-fid's FID patch).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for k in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{k}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for k in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{k}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        # pytorch-fid: the last block of the TF graph max-pools where the paper average-pools.
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID; ``forward(x)`` with B×3×H×W in [0, 1] -> B×2048 pool3 features.

    Parameter names follow torchvision's ``Inception3`` so pytorch-fid's weight file loads as is.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, 1008)  # unused for features; kept so the weight file loads strictly
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise MetricInputError(f"FID Inception expects B×3×H×W images, got {tuple(x.shape)}")
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def find_fid_weights() -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    return path if path.is_file() else None


def load_fid_inception(weights: str | os.PathLike | None = None, device=None) -> FIDInceptionV3:
    """The FID Inception with pytorch-fid's weights from ``weights`` or the torch hub cache."""
    if weights is None:
        weights = find_fid_weights()
        if weights is None:
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise DataError(
                f"FID Inception weights not found (they are never downloaded here): download "
                f"{FID_WEIGHTS_URL} and pass its path (--fid_weights FILE) or put it in {hub}/"
            )
    path = Path(weights)
    if not path.is_file():
        raise DataError(f"FID Inception weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise DataError(f"cannot read FID Inception weights {path}: {exc}") from None
    model = FIDInceptionV3()
    expected = model.state_dict()
    # Files saved before BatchNorm counted batches have no num_batches_tracked (unused at eval).
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataError(
            f"{path} is not pytorch-fid's FID Inception ({FID_WEIGHTS_FILE}): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    model.load_state_dict({**{k: expected[k] for k in optional}, **state}, strict=True)
    return model.to(device) if device is not None else model


# ---------------------------------------------------------------------------------------------
# distribution distances on features
# ---------------------------------------------------------------------------------------------
def _as_features(f) -> torch.Tensor:
    f = torch.as_tensor(f).to(torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise MetricInputError(f"features must be an N×D array with N >= 2, got shape {tuple(f.shape)}")
    return f


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] (N − 1 normalisation, as np.cov) in float64."""
    f = _as_features(features)
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982), float64."""
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise MetricInputError(f"mismatched statistics: {tuple(mu1.shape)}, {tuple(s1.shape)}, {tuple(mu2.shape)}, {tuple(s2.shape)}")
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)


def fid_from_features(features1, features2) -> float:
    """FID of two feature sets (N₁×D, N₂×D)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with k(a, b) = (aᵀb / d + 1)³ between equal-size samples x, y (m×d)."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off_diag = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(off_diag - 2 * kxy.mean())


def kid_from_features(features1, features2, n_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) of two feature sets; subsets drawn without replacement."""
    f1, f2 = _as_features(features1), _as_features(features2)
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise MetricInputError("KID needs at least 2 images per set")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_subsets):
        i1 = torch.randperm(f1.shape[0], generator=g)[:m]
        i2 = torch.randperm(f2.shape[0], generator=g)[:m]
        values.append(polynomial_mmd2_unbiased(f1[i1], f2[i2]))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())


def resize_for_inception(img: torch.Tensor) -> torch.Tensor:
    """C×H×W [0, 1] -> 3×299×299, bilinear (align_corners=False), as pytorch-fid resizes."""
    return F.interpolate(img[None].float(), size=(299, 299), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def extract_features(model: nn.Module, images, batch_size: int = 32, device=None) -> torch.Tensor:
    """Features of an iterable of C×H×W [0, 1] tensors (any sizes: each is resized), N×D float64."""
    device = device if device is not None else next(model.parameters()).device
    feats, batch = [], []
    for img in images:
        batch.append(resize_for_inception(img))
        if len(batch) == batch_size:
            feats.append(model(torch.stack(batch).to(device)).double().cpu())
            batch = []
    if batch:
        feats.append(model(torch.stack(batch).to(device)).double().cpu())
    if not feats:
        raise MetricInputError("no images to extract features from")
    return torch.cat(feats)
