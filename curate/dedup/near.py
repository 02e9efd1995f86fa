"""Near-duplicate search over embeddings: spherical k-means clusters (FAISS), multi-probe assignment, exact
pairs at a cosine threshold inside each cluster, and the greedy choice of which copy is kept.

Rows are identified by their rank (0 = the copy to keep first: the earliest, or the best by a column), so a
pair (a, b) always has a < b and the kept copy of a group is its best-ranked member. A pair straddling two
clusters is still found when the primary (nearest) cluster of one row is among the `probes` nearest
clusters of the other: each cluster compares its primary rows against every row probed into it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

BLOCK = 2048  # query rows per matrix product: bounds memory at BLOCK x cluster-size floats
# clusters each row is searched in: its nearest and the next two (boundary pairs). Recall of the pairs at 0.95 on
# the benchmark's planted copies, 2 -> 3 probes: 0.995 -> 1.000 at 200k rows, 0.976 -> 0.994 at 1M (more clusters,
# more boundaries), for ~1.2x the CPU time in memory
PROBES = 3
TARGET_CLUSTER = 1000  # rows per k-means cluster aimed for (before multi-probe copies)
EXACT_LIMIT = 20_000  # up to this many rows one cluster holds them all: exact search
SAMPLE_PER_CLUSTER = 64  # training rows per centroid (FAISS warns below 39)
# up to this many centroids rows are assigned by exact search (BLAS), beyond through HNSW. Measured with 10,053
# centroids, one thread: exact 84 us a row, HNSW (efSearch 128) 460 us and a different nearest centroid for 22%
FLAT_ASSIGN = 65_536


@dataclass(frozen=True)
class Pairs:
    """Near-duplicate pairs: ranks a < b and their cosine similarity."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray

    @staticmethod
    def empty() -> Pairs:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    @staticmethod
    def concat(parts: Sequence[Pairs]) -> Pairs:
        """All parts, each pair once (multi-probe finds a pair in every cluster both rows share)."""
        if not parts:
            return Pairs.empty()
        a = np.concatenate([p.a for p in parts]).astype(np.int64)
        b = np.concatenate([p.b for p in parts]).astype(np.int64)
        similarity = np.concatenate([p.similarity for p in parts]).astype(np.float32)
        if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= 1 << 31):
            raise ValueError("pair ids must be row ranks in [0, 2**31): they are packed into one int64 key")
        _, first = np.unique(a << 32 | b, return_index=True)  # one int64 key per pair: sorted by (a, b)
        return Pairs(a[first], b[first], similarity[first])

    def at(self, threshold: float) -> Pairs:
        keep = self.similarity >= threshold
        return Pairs(self.a[keep], self.b[keep], self.similarity[keep])

    def __len__(self) -> int:
        return len(self.a)


def unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised float32 rows, mask of usable rows): rows with NaN or zero norm neither match nor are matched."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    valid = np.isfinite(norms) & (norms > 0)
    unit = np.where(valid[:, None], vectors / np.where(valid, norms, 1.0)[:, None], 0.0).astype(np.float32)
    return unit, valid


def _hits(similarity: np.ndarray, q_ids: np.ndarray, r_ids: np.ndarray, threshold: float) -> Pairs:
    rows, cols = np.nonzero(similarity >= threshold)
    a, b = q_ids[rows], r_ids[cols]
    other = a != b
    a, b, s = a[other], b[other], similarity[rows[other], cols[other]]
    return Pairs(np.minimum(a, b), np.maximum(a, b), s.astype(np.float32))


def pairs_within(ids: np.ndarray, unit: np.ndarray, threshold: float, block: int = BLOCK) -> Pairs:
    """Every pair of rows at cosine >= threshold: exact search, the upper triangle in blocks."""
    parts = []
    for start in range(0, len(ids), block):
        stop = min(start + block, len(ids))
        similarity = unit[start:stop] @ unit[start:].T
        below = np.tri(stop - start, dtype=bool)  # the diagonal block's lower triangle: each pair once, never (i, i)
        similarity[:, : stop - start][below] = -np.inf
        parts.append(_hits(similarity, ids[start:stop], ids[start:], threshold))
    return Pairs.concat(parts)


def pairs_between(q_ids: np.ndarray, q_unit: np.ndarray, r_ids: np.ndarray, r_unit: np.ndarray,
                  threshold: float, block: int = BLOCK) -> Pairs:
    """Pairs (query row, reference row) at cosine >= threshold, a row never with itself; may repeat a pair."""
    parts = [_hits(q_unit[s:s + block] @ r_unit.T, q_ids[s:s + block], r_ids, threshold)
             for s in range(0, len(q_ids), block)]
    return Pairs.concat(parts)


def pairs_in_clusters(clusters: np.ndarray, primary: np.ndarray, rows: np.ndarray, ids: np.ndarray,
                      unit: np.ndarray, threshold: float) -> Pairs:
    """Pairs inside each cluster: memberships (cluster, primary?, row of `ids`/`unit`) -> each cluster's primary
    rows with each other (the triangle) and against the rows probed into it. Rows are gathered one cluster at a
    time: memory follows the largest cluster."""
    order = np.lexsort((~primary, clusters))  # by cluster, its primary rows first
    clusters, primary, rows = clusters[order], primary[order], rows[order]
    bounds = np.flatnonzero(np.diff(clusters)) + 1
    parts = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(clusters)]):
        mid = lo + int(primary[lo:hi].sum())
        if mid == lo:
            continue
        first, probed = rows[lo:mid], rows[mid:hi]
        parts.append(pairs_within(ids[first], unit[first], threshold))
        if len(probed):
            parts.append(pairs_between(ids[first], unit[first], ids[probed], unit[probed], threshold))
    return Pairs.concat(parts)


def cluster_count(rows: int, target: int = TARGET_CLUSTER, exact_limit: int = EXACT_LIMIT) -> int:
    """How many k-means clusters for `rows` rows: one (exact search) for small datasets."""
    return 1 if rows <= exact_limit else math.ceil(rows / target)


def _kmeans(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    kmeans = faiss.Kmeans(sample.shape[1], k, niter=20, spherical=True, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=SAMPLE_PER_CLUSTER * 4)
    kmeans.train(np.ascontiguousarray(sample, np.float32))
    return kmeans.centroids


@contextmanager
def one_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread: k-means over a sample is small work in many short parallel regions, whose
    threads wait for each other at every barrier (measured: 8x the wall time with 2 threads on a loaded 2-core
    machine, for the same result)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def train_centroids(sample: np.ndarray, clusters: int, expected_rows: int, max_cluster: int,
                    seed: int = 0) -> np.ndarray:
    """About `clusters` spherical k-means centroids from a sample of unit rows, trained in two levels (sqrt(k)
    clusters, each split to the mean size: the cost of k-means over sqrt(k), not k, centroids); a cluster the
    sample predicts to exceed `max_cluster` of `expected_rows` is split again (so no cluster task holds more)."""
    if clusters <= 1 or len(sample) < 2:
        return np.zeros((1, sample.shape[1]), np.float32)  # one cluster: every row's nearest
    with one_thread():
        return _train(sample, clusters, expected_rows, max_cluster, seed)


def _train(sample: np.ndarray, clusters: int, expected_rows: int, max_cluster: int, seed: int) -> np.ndarray:
    scale = expected_rows / len(sample)
    target = max(1.0, len(sample) / clusters)  # sample rows per cluster
    limit = max(1.0, max_cluster / scale)  # sample rows a cluster may reach
    top = _kmeans(sample, min(math.ceil(math.sqrt(clusters)), len(sample)), seed)
    labels = assign(sample, top, 1)[:, 0]
    leaves = [leaf for c in range(len(top)) for leaf in
              _split(sample[labels == c], top[c:c + 1], math.ceil((labels == c).sum() / target), limit, seed)]
    return np.concatenate(leaves).astype(np.float32)


def _split(members: np.ndarray, centroid: np.ndarray, parts: int, limit: float, seed: int,
           depth: int = 0) -> list[np.ndarray]:
    if (parts <= 1 and len(members) <= limit) or len(members) < 2 or depth > 4:
        return [centroid]
    centroids = _kmeans(members, min(max(parts, 2), len(members)), seed)
    labels = assign(members, centroids, 1)[:, 0]
    if np.bincount(labels).max() == len(members):  # k-means could not split it
        return [centroid]
    return [leaf for c in range(len(centroids))
            for leaf in _split(members[labels == c], centroids[c:c + 1], 1, limit, seed, depth + 1)]


def assign(unit: np.ndarray, centroids: np.ndarray, probes: int = PROBES, flat_limit: int = FLAT_ASSIGN) -> np.ndarray:
    """[n, probes] nearest centroids (by inner product) of each row, nearest first: exact over up to
    `flat_limit` centroids, through an HNSW graph beyond (the flat cost, rows x clusters, would dominate)."""
    import faiss

    probes = min(probes, len(centroids))
    if len(centroids) == 1:
        return np.zeros((len(unit), 1), np.int64)
    if len(centroids) > flat_limit:
        index = faiss.IndexHNSWFlat(centroids.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    _, labels = index.search(np.ascontiguousarray(unit, np.float32), probes)
    return labels


def memberships(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, primary?, row) for every (row, probed cluster) of [n, probes] labels: the rows a cluster reads."""
    n, probes = labels.shape
    return labels.reshape(-1), np.tile(np.arange(probes) == 0, n), np.repeat(np.arange(n), probes)


def clustered_pairs(ids: np.ndarray, vectors: np.ndarray, threshold: float, *, clusters: int | None = None,
                    probes: int = PROBES, max_cluster: int | None = None, sample: int | None = None,
                    seed: int = 0) -> Pairs:
    """The clustered search on rows held in memory (the stage streams the same steps over shard files)."""
    unit, valid = unit_rows(vectors)
    if not valid.all():
        ids, unit = np.asarray(ids)[valid], unit[valid]
    ids = np.asarray(ids)
    k = clusters or cluster_count(len(ids))
    if k <= 1:
        return pairs_within(ids, unit, threshold)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), min(len(ids), sample or k * SAMPLE_PER_CLUSTER), replace=False)
    centroids = train_centroids(unit[picked], k, len(ids), max_cluster or 4 * TARGET_CLUSTER, seed)
    return pairs_in_clusters(*memberships(assign(unit, centroids, probes)), ids, unit, threshold)


def resolve(pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged id, kept id, similarity) in id order: rows are taken best rank first; a row with a near-duplicate
    among the rows already kept is flagged and points to the best-ranked of them, so every flagged row points to
    a kept row and no two kept rows are near-duplicates."""
    order = np.lexsort((pairs.a, pairs.b))
    a, b, similarity = pairs.a[order], pairs.b[order], pairs.similarity[order]
    flagged: dict[int, tuple[int, float]] = {}
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if len(b) else []
    for lo, hi in zip(starts, list(starts[1:]) + [len(b)]):
        for i in range(lo, hi):  # a ascending: the first kept neighbour is the best-ranked one
            if int(a[i]) not in flagged:
                flagged[int(b[lo])] = (int(a[i]), float(similarity[i]))
                break
    rows = np.fromiter(flagged, np.int64, len(flagged))
    return (rows, np.array([flagged[r][0] for r in rows], np.int64),
            np.array([flagged[r][1] for r in rows], np.float32))


def sweep(pairs: Pairs, thresholds: Sequence[float]) -> dict[float, int]:
    """Rows flagged at each threshold (the same pairs, fewer as the threshold rises)."""
    return {t: len(resolve(pairs.at(t))[0]) for t in thresholds}
