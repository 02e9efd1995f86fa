"""The stored search index: exact for small sets, IVF beyond; built once, rebuilt when the embeddings change."""

import numpy as np

from curate.dedup.synthetic import planted
from curate.scoring.embeddings import write_embeddings
from curate.search.index import open_index


def write_shards(root, vectors, model="tiny:ckpt", per_shard=1000):
    keys = [f"k{i:05d}" for i in range(len(vectors))]
    for start in range(0, len(vectors), per_shard):
        write_embeddings(root / "embeddings" / f"{start // per_shard:05d}.parquet", keys[start:start + per_shard],
                         vectors[start:start + per_shard], model)
    return keys


def test_ivf_index_finds_the_stored_row_first_and_is_reused(tmp_path):
    vectors, _ = planted(3000, dim=32, seed=5, per_topic=100, copies=0.0)
    keys = write_shards(tmp_path, vectors)
    index = open_index(str(tmp_path), exact_limit=500)
    assert type(index.index).__name__ == "IndexIVFFlat" and index.model == "tiny:ckpt"
    hits = index.search(vectors[[10, 2500]], top=3)
    assert [h[0][:2] for h in hits] == [(keys[10], "00000"), (keys[2500], "00002")]
    assert abs(hits[0][0][2] - 1.0) < 1e-5 and hits[0][0][2] >= hits[0][1][2] >= hits[0][2][2]
    stored = (tmp_path / "embeddings" / "_index" / "index.faiss").stat().st_mtime_ns
    again = open_index(str(tmp_path), exact_limit=500)
    assert (tmp_path / "embeddings" / "_index" / "index.faiss").stat().st_mtime_ns == stored  # loaded, not rebuilt
    assert again.search(vectors[[10]], top=1)[0][0][0] == keys[10]


def test_changed_embeddings_rebuild_the_index(tmp_path):
    vectors, _ = planted(300, dim=16, seed=6, per_topic=30, copies=0.0)
    write_shards(tmp_path, vectors, per_shard=100)
    first = open_index(str(tmp_path))
    assert type(first.index).__name__ == "IndexFlatIP" and len(first.keys) == 300
    newcomer = np.random.default_rng(1).normal(size=(1, 16)).astype(np.float32)
    write_embeddings(tmp_path / "embeddings" / "00003.parquet", ["fresh"], newcomer, "tiny:ckpt")
    second = open_index(str(tmp_path))
    assert second.digest != first.digest and second.search(newcomer, top=1)[0][0][0] == "fresh"
