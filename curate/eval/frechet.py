"""Frechet distance between two Gaussians fitted to feature sets (the core of FVD), in float64."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COVARIANCE = "unbiased sample covariance (divides by N-1, numpy.cov), float64"
TRACE_SQRT = ("tr sqrt(S1 S2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2) (symmetric eigendecompositions, "
              "round-off negative eigenvalues clipped to 0)")


@dataclass(frozen=True)
class GaussianStats:
    mu: np.ndarray  # [D]
    sigma: np.ndarray  # [D,D]
    count: int


def fit_gaussian(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance of [N,D] features (as StyleGAN-V, VideoGPT and pytorch-fid do)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need [N,D] features with N >= 2, got shape {features.shape}")
    return GaussianStats(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) for covariance matrices S1, S2.

    S1 S2 is similar to the symmetric PSD matrix S1^1/2 S2 S1^1/2, so its eigenvalues are real and >= 0: taking
    them from a symmetric eigendecomposition avoids the complex round-off that scipy.linalg.sqrtm(S1 @ S2)
    returns (pytorch-fid and StyleGAN-V keep its real part; TF-GAN and VideoGPT use this symmetric form).
    Eigenvalues that round-off makes slightly negative (rank-deficient covariances, N <= D) count as 0.
    """
    root = _symmetric_sqrt(np.asarray(sigma1, np.float64))
    inner = root @ np.asarray(sigma2, np.float64) @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2); >= 0 up to round-off."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {a.mu.shape} vs {b.mu.shape}")
    mean_term = float(np.sum((a.mu - b.mu) ** 2))
    return mean_term + float(np.trace(a.sigma) + np.trace(b.sigma)) - 2.0 * trace_sqrt_product(a.sigma, b.sigma)
