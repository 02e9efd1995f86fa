"""The near-duplicate search: clustered (k-means, multi-probe) against exact, and which copy is kept."""

import numpy as np
import pytest

from curate.dedup import near
from curate.dedup.synthetic import planted


def as_set(pairs: near.Pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.a.tolist(), pairs.b.tolist()))


@pytest.fixture(scope="module")
def rows():
    vectors, source = planted(3000, dim=64, seed=1, per_topic=100)
    return np.arange(len(vectors)), vectors, source


def test_clustered_search_finds_exactly_the_exact_pairs(rows):
    ids, vectors, source = rows
    exact = near.pairs_within(ids, near.unit_rows(vectors)[0], 0.9)
    clustered = near.clustered_pairs(ids, vectors, 0.9, clusters=12, probes=2)
    unit = near.unit_rows(vectors)[0]
    copies = [i for i in np.flatnonzero(source >= 0) if unit[i] @ unit[source[i]] >= 0.9]
    assert len(copies) > 200 and {(int(source[i]), int(i)) for i in copies} <= as_set(exact)  # planted: found
    assert as_set(clustered) == as_set(exact)
    np.testing.assert_allclose(clustered.similarity, exact.similarity, atol=1e-5)
    for got, want in zip(near.resolve(clustered.at(0.95)), near.resolve(exact.at(0.95))):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_more_probes_find_more_boundary_pairs(rows):
    ids, vectors, _ = rows
    exact = as_set(near.pairs_within(ids, near.unit_rows(vectors)[0], 0.9))
    found = [as_set(near.clustered_pairs(ids, vectors, 0.9, clusters=150, probes=p)) for p in (1, 2, 3)]
    assert all(pairs <= exact for pairs in found)
    assert len(exact - found[0]) > len(exact - found[1]) > len(exact - found[2])


def test_oversized_clusters_are_split():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1, 32)) + 0.05 * rng.normal(size=(900, 32))
    small = rng.normal(size=(100, 32))
    sample = near.unit_rows(np.concatenate([big, small]).astype(np.float32))[0]
    centroids = near.train_centroids(sample, 2, expected_rows=1000, max_cluster=200)
    sizes = np.bincount(near.assign(sample, centroids, 1)[:, 0], minlength=len(centroids))
    assert len(centroids) > 2 and sizes.max() <= 400


def test_missing_rows_neither_match_nor_are_matched():
    unit, valid = near.unit_rows(np.array([[1, 0], [np.nan, 1], [0, 0], [1, 0.01]], np.float32))
    assert valid.tolist() == [True, False, False, True]
    assert as_set(near.clustered_pairs(np.arange(4), np.array([[1, 0], [np.nan, 1], [0, 0], [1, 0.01]]), 0.9)) == \
        {(0, 3)}


def test_every_flagged_row_points_to_a_kept_row():
    # 0~1, 1~2 (a chain, 0 and 2 apart), 3~4: 1 goes to 0; 2 stays (its only neighbour is dropped); 4 goes to 3
    pairs = near.Pairs(np.array([0, 1, 3]), np.array([1, 2, 4]), np.array([0.96, 0.97, 0.99], np.float32))
    flagged, kept, similarity = near.resolve(pairs)
    assert flagged.tolist() == [1, 4] and kept.tolist() == [0, 3]
    np.testing.assert_allclose(similarity, [0.96, 0.99])


def test_the_best_ranked_kept_neighbour_is_the_kept_copy():
    pairs = near.Pairs(np.array([0, 1, 2]), np.array([3, 3, 3]), np.array([0.95, 0.99, 0.97], np.float32))
    assert near.resolve(pairs)[1].tolist() == [0]


def test_sweep_counts_fall_as_the_threshold_rises(rows):
    ids, vectors, _ = rows
    counts = near.sweep(near.pairs_within(ids, near.unit_rows(vectors)[0], 0.9), (0.9, 0.95, 0.99))
    assert counts[0.9] > counts[0.95] > counts[0.99] > 0


def test_many_centroids_are_searched_through_hnsw_with_the_same_nearest(rows):
    _, vectors, _ = rows
    unit = near.unit_rows(vectors)[0]
    centroids = near.train_centroids(unit, 64, len(unit), 400)
    flat = near.assign(unit, centroids, 2)
    graph = near.assign(unit, centroids, 2, flat_limit=8)
    assert (graph[:, 0] == flat[:, 0]).mean() > 0.99


def test_pair_ids_must_fit_the_pair_key():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        near.Pairs.concat([near.Pairs(np.array([0]), np.array([1 << 31]), np.array([0.99], np.float32))])


def test_training_leaves_faiss_threads_as_they_were(rows):
    import faiss

    before = faiss.omp_get_max_threads()
    near.train_centroids(near.unit_rows(rows[1])[0], 8, 3000, 1000)
    assert faiss.omp_get_max_threads() == before
