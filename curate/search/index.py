"""The search index over a dataset's stored CLIP embeddings: FAISS inner product on unit rows (exact for small
datasets, IVF over the dedup stage's kind of k-means clusters beyond), built once and stored beside the
embeddings in embeddings/_index/, rebuilt only when the embedding files' content digest changes.

    from curate.search.index import open_index
    index = open_index("data/webvid")          # builds or loads embeddings/_index/
    index.search(query_vectors, top=20)        # [[(key, cosine), ...] per query]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate import storage
from curate.dedup import near
from curate.scoring.embeddings import read_embeddings, sample_embeddings

INDEX_DIR = "_index"
NPROBE = 8  # IVF clusters searched per query


@dataclass
class SearchIndex:
    """A loaded index: FAISS ids are positions in `keys`."""

    index: object  # faiss.Index
    keys: list[str]
    shards: list[str]
    model: str
    digest: str

    def search(self, queries: np.ndarray, top: int = 20) -> list[list[tuple[str, str, float]]]:
        """Per query row, the `top` nearest stored embeddings as (key, shard, cosine), best first."""
        unit, _ = near.unit_rows(np.atleast_2d(queries))
        if unit.shape[1] != self.index.d:
            raise ValueError(f"query embeddings have {unit.shape[1]} dimensions, the index {self.index.d}")
        scores, ids = self.index.search(unit, min(top, len(self.keys)))
        return [[(self.keys[i], self.shards[i], float(s)) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, ids)]


def embeddings_digest(root: str) -> tuple[str, list[str]]:
    """(content digest of the embedding files, their paths): the index is keyed by it."""
    from curate.provenance import files_fingerprint

    files = storage.glob(storage.join(root, "embeddings", "*.parquet"))
    return files_fingerprint(root, files), files


def _paths(root: str) -> dict[str, str]:
    folder = storage.join(root, "embeddings", INDEX_DIR)
    return {name: storage.join(folder, name) for name in ("index.faiss", "keys.parquet", "meta.json")}


def build(root: str, files: list[str], digest: str, exact_limit: int = near.EXACT_LIMIT) -> SearchIndex:
    """Index every embedding file (read one at a time) and store it; meta.json is written last."""
    import faiss

    if not files:
        raise FileNotFoundError(f"{root} has no stored embeddings: run curate score --scorers clip first")
    rows = sum(len(storage.read_table(f, columns=["key"])) for f in files)
    clusters = near.cluster_count(rows, exact_limit=exact_limit)
    dim = None
    keys: list[str] = []
    shards: list[str] = []
    models: set[str] = set()
    index = None
    for path in files:
        file_keys, vectors, file_models = read_embeddings([path])
        unit, _ = near.unit_rows(vectors)
        if index is None:
            dim = unit.shape[1]
            if clusters > 1:
                sample, _ = near.unit_rows(sample_embeddings(files, clusters * near.SAMPLE_PER_CLUSTER))
                quantizer = faiss.IndexFlatIP(dim)
                quantizer.add(near.train_centroids(sample, clusters, rows, 4 * near.TARGET_CLUSTER))
                index = faiss.IndexIVFFlat(quantizer, dim, quantizer.ntotal, faiss.METRIC_INNER_PRODUCT)
                index.nprobe = NPROBE
            else:
                index = faiss.IndexFlatIP(dim)
        index.add(unit)
        keys.extend(file_keys)
        shards.extend([storage.basename(path)[: -len(".parquet")]] * len(file_keys))
        models |= file_models
    if len(models) != 1:
        raise ValueError(f"the embeddings come from several CLIP models ({', '.join(sorted(models))}): rescore "
                         "with one (curate score --scorers clip --force)")
    model = models.pop()
    paths = _paths(root)
    storage.makedirs(storage.parent(paths["index.faiss"]))
    storage.write_bytes(paths["index.faiss"], faiss.serialize_index(index).tobytes())
    storage.write_table(pa.table({"key": keys, "shard": shards}), paths["keys.parquet"])
    storage.write_json(paths["meta.json"], {"digest": digest, "model": model, "rows": len(keys), "dim": dim,
                                            "kind": type(index).__name__})
    return SearchIndex(index, keys, shards, model, digest)


def open_index(root: str, exact_limit: int = near.EXACT_LIMIT) -> SearchIndex:
    """The stored index of `root`'s embeddings, built first when missing or when the embeddings changed."""
    import faiss

    root = storage.absolute(root)
    digest, files = embeddings_digest(root)
    paths = _paths(root)
    if storage.exists(paths["meta.json"]):
        meta = storage.read_json(paths["meta.json"])
        if meta["digest"] == digest:
            index = faiss.deserialize_index(np.frombuffer(storage.read_bytes(paths["index.faiss"]), np.uint8))
            if isinstance(index, faiss.IndexIVF):
                index.nprobe = NPROBE
            table = storage.read_table(paths["keys.parquet"])
            return SearchIndex(index, table.column("key").to_pylist(), table.column("shard").to_pylist(),
                               meta["model"], digest)
    return build(root, files, digest, exact_limit)
