"""The dedup stage: exact (sha256) and near (clustered CLIP-embedding search) duplicate flags over a dataset.

Rows are ranked once in DuckDB (best by `keep_best` first, else earliest in dataset order): the rank decides
which copy is kept, for sha256 groups by a window function and for near-duplicates by near.resolve. The near
search streams the per-shard embedding files: a sample trains the k-means centroids, one Ray task per shard
assigns its rows to their nearest clusters (scratch files sorted by cluster), one task per group of clusters
finds the pairs inside them, and the driver keeps only the pairs. Memory follows the largest cluster group.
Scratch lives in scores/dedup/_work/ (a dataset folder may be an object-store URL) and is removed at the end.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import dedup, engine, storage
from curate.dedup import near
from curate.scoring.embeddings import EMBEDDING, read_embeddings, sample_embeddings
from curate.scoring.registry import DATASET, ScorerSpec
from curate.shards.folder import DatasetFolder
from curate.stage import Resources, Stage

CONTENT_KEY = b"curate.content"  # output metadata: the inputs (and settings) it was computed from
SWEEP_KEY = b"curate.sweep"  # output metadata: {threshold: rows flagged} for `curate report`
UNIT_ROWS = 60_000  # cluster memberships per pair-search task (~120 MB of 512-d rows)
SAMPLE_ROWS = 200_000  # most embeddings read to train the centroids


def write_query(con, sql: str, params: list, dest: str, metadata: dict | None = None) -> int:
    """Stream a DuckDB query's result into a Parquet file published whole at `dest` (record batches, no
    Python loop over rows, memory bounded by a batch). Returns the row count."""
    reader = con.sql(sql, params=params or None).to_arrow_reader(65_536)
    schema = reader.schema.with_metadata(metadata or {})
    staged = os.path.join(storage.staging_dir(storage.parent(dest)), f".{storage.basename(dest)}.tmp{os.getpid()}")
    rows = 0
    try:
        with pq.ParquetWriter(staged, schema) as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch], schema))
                rows += batch.num_rows
        storage.put(staged, dest)
    finally:
        if os.path.exists(staged):
            os.remove(staged)
    return rows


def ranked_sql(keep_best: str | None) -> str:
    """Every success row of `samples` with its rank (0 = kept first) and the key its sha256 group keeps."""
    best = f'"{keep_best}" DESC NULLS LAST, ' if keep_best else ""
    return (f"SELECT key, shard, row, rank, CASE WHEN sha256 IS NOT NULL AND first_key <> key THEN first_key END "
            f"AS exact_duplicate_of FROM (SELECT *, first_value(key) OVER (PARTITION BY sha256 ORDER BY rank) "
            f"AS first_key FROM (SELECT key, shard, row, sha256, row_number() OVER (ORDER BY {best}shard, row, key) "
            f"- 1 AS rank FROM samples WHERE status = 'success'))")


def keep_best_choices(columns: dict[str, str]) -> list[str]:
    """Numeric score columns of `samples` that can rank copies (from DuckDB's column types)."""
    numeric = ("FLOAT", "DOUBLE", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "DECIMAL", "REAL", "HUGEINT")
    return sorted(c for c, t in columns.items() if t.upper().startswith(numeric) and c != "row"
                  and c not in dedup.COLUMNS)  # not the stage's own output


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _fixed_list(unit: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(unit, np.float32).reshape(-1)),
                                             unit.shape[1])


@dataclass
class DedupStage(Stage):
    """Exact and near duplicate flags for every success row: scores/dedup/all.parquet."""

    root: str
    threshold: float = dedup.DEFAULT_THRESHOLD
    keep_best: str | None = None
    probes: int = near.PROBES
    target_cluster: int = near.TARGET_CLUSTER
    exact_limit: int = near.EXACT_LIMIT

    name = "dedup"
    resources = Resources(cpus=1)

    def __post_init__(self):
        self.root = storage.absolute(self.root)
        self.folder = DatasetFolder(self.root)
        self.inputs = (self.folder.shards_dir, self.embeddings_dir)
        self.outputs = (self.out_dir,)
        self.clusters = 1
        self.planned = False
        self.seconds: dict[str, float] = {}  # per phase, in the summary
        self.searching: float | None = None
        self.sizes: dict[str, int] = {}

    @property
    def out_dir(self) -> str:
        return storage.join(self.root, "scores", dedup.NAME)

    @property
    def work_dir(self) -> str:
        return storage.join(self.out_dir, "_work")

    @property
    def embeddings_dir(self) -> str:
        return storage.join(self.root, "embeddings")

    @property
    def provenance_path(self) -> str:
        return storage.join(self.out_dir, "_provenance.json")

    def config(self) -> dict:
        return {"threshold": self.threshold, "keep_best": self.keep_best, "probes": self.probes}

    def connect(self):
        from curate.stats.query import connect

        return connect(self.root)

    def check(self) -> None:
        if not self.folder.complete_shards():
            raise FileNotFoundError(f"{self.root} has no complete shards to deduplicate")
        if self.keep_best:
            columns = dict(self.connect().execute("SELECT column_name, column_type FROM (DESCRIBE samples)").fetchall())
            choices = keep_best_choices(columns)
            if self.keep_best not in choices:
                raise ValueError(f"--keep-best {self.keep_best!r} is not a numeric column of samples; choose from "
                                 f"{', '.join(choices) or '(none: run curate score first)'}")

    def reset(self) -> None:
        storage.remove(self.out_dir, recursive=True)

    def embedding_files(self) -> list[str]:
        return storage.glob(storage.join(self.embeddings_dir, "*.parquet"))

    def content(self) -> str:
        from curate.provenance import files_fingerprint

        files = storage.glob(self.folder.manifest_glob()) + self.embedding_files()
        if self.keep_best:  # the ranking column's tables are inputs too
            files += [p for p in storage.glob(storage.join(self.root, "scores", "*", "*.parquet"))
                      if storage.parent(p) != self.out_dir]
        return files_fingerprint(self.root, files) + "|" + json.dumps(self.config(), sort_keys=True)

    def todo(self) -> list:
        output = storage.join(self.out_dir, "all.parquet")
        try:
            stored = (storage.read_schema(output).metadata or {}).get(CONTENT_KEY) if storage.exists(output) else None
        except (OSError, pa.ArrowInvalid):
            stored = None
        self.current = self.content()
        if stored and stored.decode() == self.current:
            return []
        return self.plan()

    # -- the run: rank, train, assign (tasks), pairs per cluster group (tasks), resolve and write (driver) --

    def plan(self) -> list[tuple[int, int]]:
        """Rank the rows, train the centroids on a sample, assign every embedding (a task per shard file);
        returns the cluster groups to search, (first, end) cluster ids each."""
        self.planned = True
        started = time.perf_counter()
        storage.remove(self.work_dir, recursive=True)
        storage.makedirs(self.work_dir)
        write_query(self.connect(), ranked_sql(self.keep_best), [], storage.join(self.work_dir, "ranks.parquet"))
        self.seconds["rank"] = time.perf_counter() - started
        files = self.embedding_files()
        if not files:
            return []
        total = sum(pq.ParquetFile(storage.open(f)).metadata.num_rows for f in files)
        self.clusters = near.cluster_count(total, self.target_cluster, self.exact_limit)
        centroids = np.zeros((1, 1), np.float32)
        if self.clusters > 1:
            sample = sample_embeddings(files, min(SAMPLE_ROWS, self.clusters * near.SAMPLE_PER_CLUSTER))
            unit, valid = near.unit_rows(sample)
            centroids = near.train_centroids(unit[valid], self.clusters, total, 4 * self.target_cluster)
        self.clusters = len(centroids)
        self.seconds["train"] = time.perf_counter() - started - self.seconds["rank"]
        storage.write_bytes(storage.join(self.work_dir, "centroids.npy"), _npy(centroids))
        sizes, failures = engine.run_tasks(assign_file, [(self, f) for f in files], desc="dedup: assign",
                                           label=lambda job: storage.basename(job[1]))
        if failures:
            raise RuntimeError(f"assigning embeddings failed: {failures[0][0]}: {failures[0][1]}")
        size = np.sum([members for members, _ in sizes], axis=0)
        primary = np.sum([first for _, first in sizes], axis=0)
        # the pair search compares each cluster's primary rows with all its members
        self.sizes = {"largest_cluster": int(size.max()), "search_work": int((size * primary).sum())}
        units, start, held = [], 0, 0
        for c, n in enumerate(size):
            if held and held + n > UNIT_ROWS:
                units.append((start, c))
                start, held = c, 0
            held += int(n)
        units.append((start, len(size)))
        self.seconds["assign"] = time.perf_counter() - started - self.seconds["rank"] - self.seconds["train"]
        self.searching = time.perf_counter()
        return units

    def assign(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """One embedding file -> _work/assign/<file>: (cluster, primary, rank, unit embedding) per probed cluster,
        sorted by cluster; returns the memberships and the primary rows per cluster (for sizing the groups)."""
        keys, vectors, _ = read_embeddings([path])
        ranks = storage.read_table(storage.join(self.work_dir, "ranks.parquet"), columns=["key", "rank"],
                                   filters=[("shard", "=", storage.basename(path)[: -len(".parquet")])])
        where = pc.index_in(pa.array(keys, pa.string()), value_set=ranks.column("key"))
        unit, valid = near.unit_rows(vectors)
        keep = valid & where.is_valid().to_numpy(zero_copy_only=False)  # rows no longer in the manifests drop out
        rank = ranks.column("rank").to_numpy()[where.fill_null(0).to_numpy()[keep]]
        unit = unit[keep]
        centroids = np.load(io.BytesIO(storage.read_bytes(storage.join(self.work_dir, "centroids.npy"))))
        labels = near.assign(unit, centroids, self.probes)
        clusters, primary, ids, rows = near.memberships(rank, unit, labels)
        order = np.argsort(clusters, kind="stable")
        table = pa.table({"cluster": pa.array(clusters[order], pa.int32()), "primary": pa.array(primary[order]),
                          "rank": pa.array(ids[order], pa.int64()), EMBEDDING: _fixed_list(unit[rows[order]])})
        storage.write_table(table, storage.join(self.work_dir, "assign", storage.basename(path)), row_group_size=4096)
        return (np.bincount(clusters, minlength=len(centroids)),
                np.bincount(clusters[primary], minlength=len(centroids)))

    def process(self, unit: tuple[int, int]) -> int:
        """Pairs inside clusters [first, end): read those rows from every assign file, search, write the pairs."""
        first, end = unit
        parts = [storage.read_table(p, filters=[("cluster", ">=", first), ("cluster", "<", end)])
                 for p in storage.glob(storage.join(self.work_dir, "assign", "*.parquet"))]
        table = pa.concat_tables(parts) if parts else None
        pairs = near.Pairs.empty()
        if table is not None and len(table):
            column = table.column(EMBEDDING).combine_chunks()
            vectors = column.values.to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
            pairs = near.pairs_in_clusters(table.column("cluster").to_numpy(), table.column("primary").to_numpy(),
                                           table.column("rank").to_numpy(), vectors, self.search_threshold)
        storage.write_table(pa.table({"a": pairs.a, "b": pairs.b, "similarity": pairs.similarity}),
                            storage.join(self.work_dir, "pairs", f"{first:08d}.parquet"))
        return len(pairs)

    @property
    def search_threshold(self) -> float:
        """Pairs are kept down to the lowest threshold of the sweep, so `curate report` can show it."""
        return min(self.threshold, *dedup.SWEEP)

    def finish(self, done: list, failures: list) -> dict:
        summary = super().finish(done, failures)
        if failures:
            return summary
        output = storage.join(self.out_dir, "all.parquet")
        if self.planned:
            if self.searching is not None:
                self.seconds["pairs"] = time.perf_counter() - self.searching
            started = time.perf_counter()
            summary.update(self.publish(output))
            self.seconds["resolve_write"] = time.perf_counter() - started
            summary["seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
        con = storage.duckdb_connect(output)
        exact, near_ = con.execute("SELECT count(exact_duplicate_of), count(near_duplicate_of) FROM read_parquet(?)",
                                   [output]).fetchall()[0]
        summary.update(duplicates_flagged=exact + near_, exact_duplicates=exact, near_duplicates=near_,
                       sweep=stored_sweep(output))
        return summary

    def publish(self, output: str) -> dict:
        """Resolve the pairs and write the output table (DuckDB joins, streamed); drop the scratch."""
        paths = storage.glob(storage.join(self.work_dir, "pairs", "*.parquet"))
        tables = [storage.read_table(p) for p in paths]
        pairs = near.Pairs.concat([near.Pairs(t.column("a").to_numpy(), t.column("b").to_numpy(),
                                              t.column("similarity").to_numpy()) for t in tables])
        flagged, kept, similarity = near.resolve(pairs.at(self.threshold))
        con = self.connect()
        con.register("flagged", pa.table({"rank": flagged, "kept": kept, "similarity": similarity}))
        ranks = storage.join(self.work_dir, "ranks.parquet")
        assigned = storage.glob(storage.join(self.work_dir, "assign", "*.parquet"))
        cluster, params = ("c.cluster", [ranks, ranks, assigned]) if assigned else ("NULL::INTEGER", [ranks, ranks])
        clusters = "LEFT JOIN (SELECT rank, cluster FROM read_parquet(?) WHERE \"primary\") c ON c.rank = r.rank"
        sql = (f"SELECT r.key, r.exact_duplicate_of, k.key AS near_duplicate_of, f.similarity AS "
               f"near_duplicate_similarity, {cluster} AS near_duplicate_cluster FROM read_parquet(?) r "
               f"LEFT JOIN flagged f ON f.rank = r.rank LEFT JOIN read_parquet(?) k ON k.rank = f.kept "
               f"{clusters if assigned else ''} ORDER BY r.rank")
        sweep = {f"{t:.2f}": n for t, n in near.sweep(pairs, dedup.SWEEP).items()}
        write_query(con, sql, params, output, {CONTENT_KEY: self.current.encode(), SWEEP_KEY: json.dumps(sweep)})
        storage.remove(self.work_dir, recursive=True)
        return {"clusters": self.clusters, **self.sizes, "pairs_found": len(pairs)}


def stored_sweep(output: str) -> dict[str, int]:
    """{threshold: rows flagged} recorded with a dedup output table ({} when there is none)."""
    if not storage.exists(output):
        return {}
    return json.loads((storage.read_schema(output).metadata or {}).get(SWEEP_KEY, b"{}"))


def assign_file(stage: DedupStage, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Ray task body for the assignment pass."""
    return stage.assign(path)


# Dedup compares every sample with the others: a stage of its own, after the per-sample scorers (it reads the CLIP
# embeddings the clip scorer stored; weights of its own it has none).
SPEC = ScorerSpec(dedup.NAME, dedup.COLUMNS, DATASET,
                  lambda root, options: DedupStage(root, options.dedup_threshold, options.keep_best),
                  options={"dedup_threshold": dedup.DEFAULT_THRESHOLD, "keep_best": None},
                  reports=("duplicates_flagged", "exact_duplicates", "near_duplicates"))
