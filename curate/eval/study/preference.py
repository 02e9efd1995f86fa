"""Preference statistics: the Wilson score interval for one pair, Bradley-Terry strengths with a bootstrap for many."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927); (nan, nan) when n is 0. Unlike the
    normal approximation it stays inside [0, 1] and behaves at 0/n and n/n."""
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bradley_terry(wins: np.ndarray, prior: float = 0.0, iterations: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths (mean 0) maximising the Bradley-Terry likelihood P(i beats j) = s_i / (s_i + s_j), where
    wins[i, j] counts i's wins over j; Hunter's (2004) MM iteration. `prior` adds that many virtual wins each
    way to every compared pair, which keeps strengths finite when a model never wins or never loses (the
    maximum-likelihood estimate then does not exist); 0 gives the plain MLE."""
    wins = np.asarray(wins, dtype=float)
    games = wins + wins.T
    wins = wins + prior * (games > 0)
    games = wins + wins.T
    won = wins.sum(axis=1)
    strength = np.ones(len(wins))
    for _ in range(iterations):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = np.where(denominator > 0, won / np.where(denominator > 0, denominator, 1), strength)
        updated = np.maximum(updated, 1e-300)
        updated /= np.exp(np.log(updated).mean())
        if np.max(np.abs(np.log(updated) - np.log(strength))) < tol:
            strength = updated
            break
        strength = updated
    log_strength = np.log(strength)
    return log_strength - log_strength.mean()


def bootstrap_bradley_terry(wins: np.ndarray, prior: float = 0.5, samples: int = 1000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals (low, high) of each log-strength, resampling the decisive votes with replacement:
    a resample of all N votes is a multinomial draw over the cells of the win matrix."""
    wins = np.asarray(wins, dtype=float)
    total = int(wins.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, (wins / total).ravel(), size=samples).reshape(samples, *wins.shape)
    fits = np.stack([bradley_terry(d, prior=prior, iterations=2000, tol=1e-8) for d in draws])
    alpha = (1 - confidence) / 2
    return np.quantile(fits, alpha, axis=0), np.quantile(fits, 1 - alpha, axis=0)
