"""Exact and near duplicates over a dataset, and the on-disk embedding store."""

import numpy as np
import pytest

from curate.scoring.dedup import exact_duplicate_of, near_duplicate_of
from curate.scoring.embeddings import align_embeddings, read_embeddings, write_embeddings


def test_exact_duplicates_point_at_the_first_copy():
    keys = ["a", "b", "c", "d", "e"]
    assert exact_duplicate_of(keys, ["x", "y", "x", None, "x"]) == [None, None, "a", None, "a"]


def embeddings_with_known_duplicates():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 16)).astype(np.float32)
    rows = [
        base[0],
        base[1],
        base[0] + 0.01 * rng.normal(size=16),  # near copy of a
        base[1] * 3.0,  # same direction as b: cosine 1
        np.full(16, np.nan),  # no embedding (failed sample)
        base[2],
        base[0] + 0.012 * rng.normal(size=16),  # near copy of a and of c: the earliest is a
    ]
    return ["a", "b", "c", "d", "e", "f", "g"], np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("block", [2, 3, 2048])
def test_near_duplicates_point_at_the_earliest_match(block):
    keys, vectors = embeddings_with_known_duplicates()
    assert near_duplicate_of(keys, vectors, threshold=0.95, block=block) == [None, None, "a", "b", None, None, "a"]


def test_threshold_above_one_finds_nothing():
    keys, vectors = embeddings_with_known_duplicates()
    assert near_duplicate_of(keys, vectors, threshold=1.01) == [None] * len(keys)


def test_embedding_store_round_trip(tmp_path):
    keys, vectors = embeddings_with_known_duplicates()
    first = write_embeddings(tmp_path / "emb" / "00000.parquet", keys[:4], vectors[:4], "tiny:ckpt")
    second = write_embeddings(tmp_path / "emb" / "00001.parquet", keys[4:], vectors[4:], "tiny:ckpt")
    assert sorted(path.name for path in (tmp_path / "emb").iterdir()) == ["00000.parquet", "00001.parquet"]
    read_keys, read_vectors, models = read_embeddings([first, second])
    assert read_keys == keys and models == {"tiny:ckpt"}
    np.testing.assert_array_equal(read_vectors, vectors)
    with pytest.raises(ValueError):
        write_embeddings(tmp_path / "bad.parquet", keys, vectors[:2], "tiny:ckpt")


def test_align_embeddings_fills_missing_keys_with_nan():
    keys, vectors = embeddings_with_known_duplicates()
    aligned = align_embeddings(["c", "zz", "a"], keys, vectors)
    np.testing.assert_array_equal(aligned[[0, 2]], vectors[[2, 0]])
    assert np.isnan(aligned[1]).all()
    assert near_duplicate_of(["c", "zz", "a"], aligned) == [None, None, "c"]
