"""The Frechet distance core against a closed form and against scipy.linalg.sqrtm (the pytorch-fid/StyleGAN-V way)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from curate.eval.frechet import GaussianStats, fit_gaussian, frechet_distance, trace_sqrt_product


def scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """StyleGAN-V's formula: sqrtm of the product, real part kept."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    var1, var2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    got = frechet_distance(GaussianStats(mu1, np.diag(var1), 100), GaussianStats(mu2, np.diag(var2), 100))
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n, d", [(500, 64), (2048, 400)])
def test_random_features_match_scipy_sqrtm(n, d):
    rng = np.random.default_rng(d)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, as real ones are
    x = rng.normal(size=(n, d)) @ mixing
    y = rng.normal(size=(n, d)) @ mixing * 1.2 + 0.3
    got = frechet_distance(fit_gaussian(x), fit_gaussian(y))
    assert got == pytest.approx(scipy_frechet(x, y), rel=1e-7)
    assert got > 0


def test_rank_deficient_covariances_stay_finite_and_agree_with_scipy():
    # fewer samples than dimensions: singular covariances, where sqrtm of the product has complex round-off
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 64)), rng.normal(size=(30, 64)) + 0.5
    got = frechet_distance(fit_gaussian(x), fit_gaussian(y))
    assert np.isfinite(got)
    assert got == pytest.approx(scipy_frechet(x, y), rel=1e-5)


def test_identical_sets_give_zero_and_the_distance_is_symmetric():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 32)), rng.normal(size=(300, 32)) * 2
    a, b = fit_gaussian(x), fit_gaussian(y)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_trace_sqrt_product_of_commuting_matrices():
    # for S1 = S2 = S, tr sqrt(S S) = tr S
    rng = np.random.default_rng(3)
    a = rng.normal(size=(16, 16))
    s = a @ a.T
    assert trace_sqrt_product(s, s) == pytest.approx(np.trace(s), rel=1e-10)


def test_fit_gaussian_rejects_a_single_sample():
    with pytest.raises(ValueError, match="N >= 2"):
        fit_gaussian(np.zeros((1, 8)))
