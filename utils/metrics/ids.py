"""P-IDS and U-IDS: the paired/unpaired Inception Discriminative Scores (Zhao et al., "Large
Scale Image Completion via Co-Modulated GANs", ICLR 2021), as MAT evaluates them
(``evaluatoin/cal_fid_pids_uids.py``, ``metrics/inception_discriminative_score.py``).

A linear SVM is fitted to separate real features (label 1) from fake ones (label 0):
scikit-learn's ``LinearSVC(dual=False)`` defaults, i.e. the primal problem

    min_w  ½‖w‖² + C Σᵢ max(0, 1 − yᵢ wᵀx̃ᵢ)²,   x̃ = [x, 1] (the bias is regularised too,
                                                     liblinear's intercept_scaling = 1), C = 1,

solved here exactly by Newton's method on its (piecewise quadratic) objective in float64, with
no scikit-learn needed (tests check it against scikit-learn).

* U-IDS = 1 − the SVM's accuracy on the very features it was fitted on (misclassification
  rate): ≈ 0.5 when fakes are indistinguishable from reals, 0 when separable.
* P-IDS = the fraction of index-paired samples whose fake scores higher than its real
  (d(fake_i) > d(real_i), d the SVM decision value): ≈ 0.5 at best, 0 when separable.

Features are typically 2048-d Inception pool features (``utils.metrics.fid.extract_features``)
of real and inpainted images, row i of each from the same image.
"""
from __future__ import annotations

import numpy as np

from utils.metrics.common import MetricInputError


def fit_linear_svm(x: np.ndarray, y: np.ndarray, c: float = 1.0, tol: float = 1e-10, max_iter: int = 100):
    """(w, b) of the L2-regularised squared-hinge linear SVM (module docstring); y in {0, 1}."""
    x = np.asarray(x, np.float64)
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    xa = np.hstack([x, np.ones((len(x), 1))])
    d = xa.shape[1]
    w = np.zeros(d)

    def objective(v):
        margin = 1 - s * (xa @ v)
        return 0.5 * v @ v + c * np.sum(np.maximum(margin, 0) ** 2)

    f = objective(w)
    for _ in range(max_iter):
        margin = 1 - s * (xa @ w)
        act = margin > 0
        grad = w - 2 * c * xa[act].T @ (s[act] * margin[act])
        if np.linalg.norm(grad) <= tol * max(1.0, np.linalg.norm(w)):
            break
        hess = np.eye(d) + 2 * c * xa[act].T @ xa[act]
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking (Armijo) line search
            cand = w - t * step
            fc = objective(cand)
            if fc <= f - 1e-4 * t * grad @ step or t < 1e-12:
                break
            t *= 0.5
        if f - fc <= 1e-16 * max(1.0, abs(f)):
            w, f = cand, fc
            break
        w, f = cand, fc
    return w[:-1], float(w[-1])


def ids_scores(real_features, fake_features) -> tuple[float, float]:
    """(P-IDS, U-IDS) of index-paired feature sets (N×D each)."""
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(fake_features, np.float64)
    if real.ndim != 2 or real.shape != fake.shape or len(real) < 2:
        raise MetricInputError(f"IDS needs two N×D feature sets of equal shape (N >= 2), got {real.shape} and {fake.shape}")
    x = np.vstack([real, fake])
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    w, b = fit_linear_svm(x, y)
    d_real, d_fake = real @ w + b, fake @ w + b
    accuracy = np.mean(np.concatenate([d_real > 0, d_fake <= 0]))
    u_ids = float(1.0 - accuracy)
    p_ids = float(np.mean(d_fake > d_real))
    return p_ids, u_ids
