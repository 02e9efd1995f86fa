"""Duplicates over a whole dataset: exact (same sha256) and near (CLIP-embedding cosine above a threshold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAME = "dedup"
VERSION = "1"
EXACT_DUPLICATE_OF = "exact_duplicate_of"  # key of the earliest sample with the same sha256, else null
NEAR_DUPLICATE_OF = "near_duplicate_of"  # key of the earliest sample with cosine >= threshold, else null
DEFAULT_THRESHOLD = 0.95
BLOCK = 2048  # rows compared per matrix product: bounds memory at BLOCK x N floats


def exact_duplicate_of(keys: Sequence[str], sha256s: Sequence[str | None]) -> list[str | None]:
    """For each key, the earliest key (in the given order) with the same sha256; None for the first or unknown."""
    first: dict[str, str] = {}
    result: list[str | None] = []
    for key, digest in zip(keys, sha256s, strict=True):
        if not digest:
            result.append(None)
            continue
        earlier = first.setdefault(digest, key)
        result.append(earlier if earlier != key else None)
    return result


def near_duplicate_of(
    keys: Sequence[str], embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD, block: int = BLOCK
) -> list[str | None]:
    """For each key, the earliest earlier key whose embedding has cosine >= threshold; None if there is none.

    Rows of `embeddings` may be missing (NaN): they neither match nor are matched. Exact search in
    blocks, O(N^2) work: fine for millions on a GPU-less node only with patience; for web scale,
    shard by source first or use an ANN index over the stored embeddings.
    """
    if len(keys) != len(embeddings):
        raise ValueError(f"{len(keys)} keys but {len(embeddings)} embeddings")
    vectors = np.asarray(embeddings, dtype=np.float32)
    valid = ~np.isnan(vectors).any(axis=1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.where(valid[:, None], vectors / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    result: list[str | None] = [None] * len(keys)
    for start in range(0, len(keys), block):
        stop = min(start + block, len(keys))
        similarity = vectors[start:stop] @ vectors[:stop].T  # only earlier (and same-block) rows can be the match
        rows = np.arange(start, stop)
        similarity[np.arange(stop)[None, :] >= rows[:, None]] = -np.inf
        similarity[:, ~valid[:stop]] = -np.inf
        hits = similarity >= threshold
        for offset in np.flatnonzero(hits.any(axis=1) & valid[start:stop]):
            result[start + offset] = keys[int(np.argmax(hits[offset]))]
    return result
