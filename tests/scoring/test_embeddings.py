"""The on-disk embedding store: one Parquet file per shard (key, embedding, model)."""

import numpy as np
import pytest

from curate.scoring.embeddings import read_embeddings, write_embeddings


def test_embedding_store_round_trip(tmp_path):
    keys = ["a", "b", "c", "d", "e"]
    vectors = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    first = write_embeddings(tmp_path / "emb" / "00000.parquet", keys[:3], vectors[:3], "tiny:ckpt")
    second = write_embeddings(tmp_path / "emb" / "00001.parquet", keys[3:], vectors[3:], "tiny:ckpt")
    assert sorted(path.name for path in (tmp_path / "emb").iterdir()) == ["00000.parquet", "00001.parquet"]
    read_keys, read_vectors, models = read_embeddings([first, second])
    assert read_keys == keys and models == {"tiny:ckpt"}
    np.testing.assert_array_equal(read_vectors, vectors)
    with pytest.raises(ValueError):
        write_embeddings(tmp_path / "bad.parquet", keys, vectors[:2], "tiny:ckpt")
