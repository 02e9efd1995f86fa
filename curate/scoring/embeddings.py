"""Stored CLIP embeddings: one Parquet file per shard (key, embedding, model), for dedup and retrieval; local
paths or object-store URLs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate import storage

KEY = "key"
EMBEDDING = "embedding"
MODEL = "model"


def write_embeddings(path: str | Path, keys: Sequence[str], embeddings: np.ndarray, model: str) -> str:
    """Publish atomically (storage.write_table); embeddings float32 [N,D] as fixed-size lists."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise ValueError(f"need [N,D] embeddings for {len(keys)} keys, got {vectors.shape}")
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({KEY: pa.array(list(keys), pa.string()), EMBEDDING: column,
                      MODEL: pa.array([model] * len(keys), pa.string())})
    storage.write_table(table, str(path))
    return str(path)


def read_embeddings(paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray, set[str]]:
    """Keys, float32 [N,D] embeddings and the set of models that produced them, concatenated in path order."""
    keys: list[str] = []
    blocks: list[np.ndarray] = []
    models: set[str] = set()
    for path in paths:
        table = storage.read_table(str(path))
        keys.extend(table.column(KEY).to_pylist())
        blocks.append(vectors_of(table))
        models.update(table.column(MODEL).unique().to_pylist())
    if not blocks:
        return [], np.zeros((0, 0), np.float32), models
    return keys, np.concatenate(blocks).astype(np.float32, copy=False), models


def vectors_of(table: pa.Table) -> np.ndarray:
    """The float32 [N,D] embeddings of a table read from an embeddings file."""
    column = table.column(EMBEDDING).combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size).astype(
        np.float32, copy=False)


def read_vectors(path: str | Path) -> np.ndarray:
    """One file's embeddings: the embedding column only (keys and model are not decoded)."""
    return vectors_of(storage.read_table(str(path), columns=[EMBEDDING]))


def sample_file(path: str | Path, fraction: float, seed: int, index: int) -> np.ndarray:
    """Each row of the `index`-th file with probability `fraction` (its own seed: files can be read in any order
    or in parallel and the sample is the same)."""
    vectors = read_vectors(path)
    return vectors[np.random.default_rng([seed, index]).random(len(vectors)) < fraction]


def sample_embeddings(paths: Sequence[str | Path], rows: int, seed: int = 0) -> np.ndarray:
    """About `rows` embeddings drawn uniformly from all files, read one file at a time (memory: one file plus
    the sample), e.g. to train k-means centroids."""
    import pyarrow.parquet as pq

    total = sum(pq.ParquetFile(storage.open(str(p))).metadata.num_rows for p in paths)
    fraction = min(1.0, rows / max(total, 1))
    picked = [sample_file(path, fraction, seed, i) for i, path in enumerate(paths)]
    return np.concatenate(picked) if picked else np.zeros((0, 0), np.float32)
