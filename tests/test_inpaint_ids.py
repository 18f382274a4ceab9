"""P-IDS/U-IDS (utils/metrics/ids.py): identical feature distributions give ≈ 0.5, separated
ones ≈ 0, and the SVM equals scikit-learn's LinearSVC(dual=False) on the same features."""
import numpy as np
import pytest

from utils.metrics.ids import fit_linear_svm, ids_scores


def _features(seed, n=1500, d=8, shift=0.0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(n, d)) + shift
    return real, fake


def test_identical_distributions_give_one_half():
    p, u = ids_scores(*_features(0))
    assert abs(p - 0.5) < 0.05 and abs(u - 0.5) < 0.05


def test_separated_distributions_give_zero():
    p, u = ids_scores(*_features(1, shift=10.0))
    assert p == 0.0 and u == 0.0


def test_partly_separated_in_between():
    p, u = ids_scores(*_features(2, shift=0.5))
    assert 0.05 < u < 0.45 and 0.05 < p < 0.45


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_matches_scikit_learn_linear_svc(shift):
    svm_mod = pytest.importorskip("sklearn.svm")
    real, fake = _features(3, n=600, d=16, shift=shift)
    x = np.vstack([real, fake])
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    svc = svm_mod.LinearSVC(dual=False, tol=1e-10, max_iter=10000).fit(x, y)
    w, b = fit_linear_svm(x, y)
    np.testing.assert_allclose(w, svc.coef_[0], rtol=1e-5, atol=1e-6)
    assert b == pytest.approx(svc.intercept_[0], rel=1e-5, abs=1e-6)
    # the scores as MAT computes them with scikit-learn
    u_ref = 1 - svc.score(x, y)
    p_ref = np.mean(svc.decision_function(fake) > svc.decision_function(real))
    p, u = ids_scores(real, fake)
    assert u == pytest.approx(u_ref, abs=1e-12) and p == pytest.approx(p_ref, abs=1e-12)
