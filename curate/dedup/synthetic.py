"""Synthetic CLIP-like embeddings with planted near-duplicates, for the dedup benchmark and tests.

Rows are drawn around `n / per_topic` topic directions on the sphere (members of one topic sit at cosine ~0.5
from each other, far below any dedup threshold); a fraction of rows are then replaced by perturbed copies of
an earlier row, at cosine ~0.89-1.0 to it, so every threshold of the sweep has pairs near it.
"""

from __future__ import annotations

import numpy as np


def planted(n: int, dim: int = 512, seed: int = 0, copies: float = 0.1, per_topic: int = 200,
            start: int = 0, topics: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n, dim] rows, source index of each planted copy or -1). Rows `start..start+n` of a larger set
    share its `topics` (from topic_directions), so a dataset can be generated shard by shard."""
    rng = np.random.default_rng([seed, start])
    if topics is None:
        topics = topic_directions(max(1, n // per_topic), dim, seed)
    rows = topics[rng.integers(0, len(topics), n)] + rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    source = np.full(n, -1, np.int64)
    picked = np.flatnonzero(rng.random(n) < copies)
    picked = picked[picked > 0]
    source[picked] = (rng.random(len(picked)) * picked).astype(np.int64)
    noise = rng.uniform(0.05, 0.5, len(picked)).astype(np.float32) / np.sqrt(dim)
    for i, j, scale in zip(picked, source[picked], noise):  # in order: a copy of a copy copies the final row
        rows[i] = rows[j] + rng.normal(size=dim).astype(np.float32) * scale
    return rows.astype(np.float32), source


def topic_directions(count: int, dim: int, seed: int = 0) -> np.ndarray:
    topics = np.random.default_rng([seed, 1 << 40]).normal(size=(count, dim)).astype(np.float32)
    return topics / np.linalg.norm(topics, axis=1, keepdims=True)
