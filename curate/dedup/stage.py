"""The dedup stage: exact (sha256) and near (clustered CLIP-embedding search) duplicate flags over a dataset.

Rows are ranked once in DuckDB (best by `keep_best` first, else earliest in dataset order): the rank decides
which copy is kept, for sha256 groups by a window function and for near-duplicates by near.resolve. The near
search streams the per-shard embedding files: one Ray task per file draws a sample that trains the k-means
centroids, one task per file assigns its rows to their nearest clusters (scratch files sorted by cluster), one
task per group of clusters reads just those clusters' rows (ranged reads) and finds the pairs inside them, and
the driver keeps only the pairs. Memory follows the largest cluster group.
Scratch lives in scores/dedup/_work/ (a dataset folder may be an object-store URL) and is removed at the end:
per embedding file, members/<file>.vectors (float32 unit rows), .members (MEMBER records) and .offsets (int64
[clusters + 1]: cluster c's rows are offsets[c]:offsets[c + 1]), raw so a task reads a byte range of each, and
primary/<file>.parquet (rank, nearest cluster) for the output's cluster column.
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
from curate.scoring.embeddings import EMBEDDING, KEY, sample_file, vectors_of
from curate.scoring.registry import DATASET, ScorerSpec
from curate.shards.folder import DatasetFolder
from curate.stage import Resources, Stage

CONTENT_KEY = b"curate.content"  # output metadata: the inputs (and settings) it was computed from
SWEEP_KEY = b"curate.sweep"  # output metadata: {threshold: rows flagged} for `curate report`
UNIT_ROWS = 60_000  # cluster memberships per pair-search task (~120 MB of 512-d rows)
SAMPLE_ROWS = 200_000  # most embeddings read to train the centroids
MEMBER = np.dtype([("cluster", "<i4"), ("primary", "?"), ("rank", "<i8")])  # one row in one probed cluster


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
    """Every success row of `samples` with its rank (0 = kept first) and the key its sha256 group keeps, in shard
    order (a task reading one shard's ranks reads one or two row groups)."""
    best = f'"{keep_best}" DESC NULLS LAST, ' if keep_best else ""
    return (f"SELECT key, shard, row, rank, CASE WHEN sha256 IS NOT NULL AND first_key <> key THEN first_key END "
            f"AS exact_duplicate_of FROM (SELECT *, first_value(key) OVER (PARTITION BY sha256 ORDER BY rank) "
            f"AS first_key FROM (SELECT key, shard, row, sha256, row_number() OVER (ORDER BY {best}shard, row, key) "
            f"- 1 AS rank FROM samples WHERE status = 'success')) ORDER BY shard, row")


def keep_best_choices(columns: dict[str, str]) -> list[str]:
    """Numeric score columns of `samples` that can rank copies (from DuckDB's column types)."""
    numeric = ("FLOAT", "DOUBLE", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "DECIMAL", "REAL", "HUGEINT")
    return sorted(c for c, t in columns.items() if t.upper().startswith(numeric) and c != "row"
                  and c not in dedup.COLUMNS)  # not the stage's own output


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


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
        self.dim = 0
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
        """Rank the rows, train the centroids on a sample (a task per shard file draws its part), assign every
        embedding (a task per file); returns the cluster groups to search, (first, end) cluster ids each."""
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
        self.dim = storage.read_schema(files[0]).field(EMBEDDING).type.list_size
        self.clusters = near.cluster_count(total, self.target_cluster, self.exact_limit)
        centroids = np.zeros((1, self.dim), np.float32)
        if self.clusters > 1:
            fraction = min(1.0, min(SAMPLE_ROWS, self.clusters * near.SAMPLE_PER_CLUSTER) / total)
            parts = _tasks(sample_part, [(f, fraction, i) for i, f in enumerate(files)], "dedup: sample")
            unit, valid = near.unit_rows(np.concatenate([rows for _, rows in sorted(parts, key=lambda p: p[0])]))
            centroids = near.train_centroids(unit[valid], self.clusters, total, 4 * self.target_cluster)
        self.clusters = len(centroids)
        self.seconds["train"] = time.perf_counter() - started - self.seconds["rank"]
        storage.write_bytes(storage.join(self.work_dir, "centroids.npy"), _npy(centroids))
        storage.makedirs(storage.join(self.work_dir, "members"))
        sizes = _tasks(assign_file, [(f, self) for f in files], "dedup: assign")
        size = np.sum([members for members, _ in sizes], axis=0)
        primary = np.sum([first for _, first in sizes], axis=0)
        # the pair search compares each cluster's primary rows with each other and with the rows probed in
        self.sizes = {"largest_cluster": int(size.max()),
                      "search_work": int((primary * (primary - 1) // 2 + primary * (size - primary)).sum())}
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

    def scratch(self, path: str, kind: str) -> str:
        """_work/members/<embedding file>.<kind>: vectors, members or offsets."""
        return storage.join(self.work_dir, "members", f"{storage.basename(path)[: -len('.parquet')]}.{kind}")

    def assign(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """One embedding file -> its scratch: every (row, probed cluster) membership sorted by cluster, the unit
        row with it; returns the memberships and the primary rows per cluster (for sizing the groups)."""
        table = storage.read_table(path, columns=[KEY, EMBEDDING])
        ranks = storage.read_table(storage.join(self.work_dir, "ranks.parquet"), columns=["key", "rank"],
                                   filters=[("shard", "=", storage.basename(path)[: -len(".parquet")])])
        where = pc.index_in(table.column(KEY), value_set=ranks.column("key"))
        unit, valid = near.unit_rows(vectors_of(table))
        keep = valid & where.is_valid().to_numpy(zero_copy_only=False)  # rows no longer in the manifests drop out
        rank = ranks.column("rank").to_numpy()[where.fill_null(0).to_numpy()[keep]]
        unit = unit[keep]
        centroids = np.load(io.BytesIO(storage.read_bytes(storage.join(self.work_dir, "centroids.npy"))))
        labels = near.assign(unit, centroids, self.probes)
        clusters, primary, rows = near.memberships(labels)
        order = np.argsort(clusters, kind="stable")
        rows = rows[order]
        members = np.empty(len(order), MEMBER)
        members["cluster"], members["primary"], members["rank"] = clusters[order], primary[order], rank[rows]
        storage.write_bytes(self.scratch(path, "vectors"), unit[rows])
        storage.write_bytes(self.scratch(path, "members"), members)
        nearest = pa.table({"rank": pa.array(rank, pa.int64()), "cluster": pa.array(labels[:, 0], pa.int32())})
        storage.write_table(nearest, storage.join(self.work_dir, "primary", storage.basename(path)))
        offsets = np.searchsorted(members["cluster"], np.arange(len(centroids) + 1)).astype("<i8")
        storage.write_bytes(self.scratch(path, "offsets"), offsets)  # last: the file's scratch is whole
        return (np.bincount(clusters, minlength=len(centroids)),
                np.bincount(clusters[primary], minlength=len(centroids)))

    def cluster_rows(self, offsets_path: str, first: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(MEMBER records, unit rows) of clusters [first, end) in one file's scratch: three ranged reads."""
        offsets = np.frombuffer(storage.read_range(offsets_path, 8 * first, 8 * end + 8), "<i8")
        lo, hi = int(offsets[0]), int(offsets[-1])
        base = offsets_path[: -len("offsets")]
        if hi == lo:
            return np.zeros(0, MEMBER), np.zeros((0, self.dim), np.float32)
        size = MEMBER.itemsize
        members = np.frombuffer(storage.read_range(base + "members", lo * size, hi * size), MEMBER)
        row = 4 * self.dim
        vectors = np.frombuffer(storage.read_range(base + "vectors", lo * row, hi * row), np.float32)
        return members, vectors.reshape(hi - lo, self.dim)

    def process(self, unit: tuple[int, int]) -> int:
        """Pairs inside clusters [first, end): read those rows from every file's scratch, search, write the pairs."""
        first, end = unit
        parts = [self.cluster_rows(p, first, end)
                 for p in storage.glob(storage.join(self.work_dir, "members", "*.offsets"))]
        members = np.concatenate([m for m, _ in parts]) if parts else np.zeros(0, MEMBER)
        pairs = near.Pairs.empty()
        if len(members):
            pairs = near.pairs_in_clusters(members["cluster"], members["primary"], np.arange(len(members)),
                                           members["rank"], np.concatenate([v for _, v in parts]),
                                           self.search_threshold)
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
        assigned = storage.glob(storage.join(self.work_dir, "primary", "*.parquet"))
        cluster, params = ("c.cluster", [ranks, ranks, assigned]) if assigned else ("NULL::INTEGER", [ranks, ranks])
        clusters = "LEFT JOIN read_parquet(?) c ON c.rank = r.rank"
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


def _tasks(fn, jobs: list[tuple], desc: str) -> list:
    """Results of fn(*job) as Ray tasks (in completion order), each job an embedding file first; the first failure
    stops the run."""
    results, failures = engine.run_tasks(fn, jobs, desc=desc, label=lambda job: storage.basename(job[0]))
    if failures:
        raise RuntimeError(f"{desc} failed: {failures[0][0]}: {failures[0][1]}")
    return results


def sample_part(path: str, fraction: float, index: int) -> tuple[int, np.ndarray]:
    """Ray task body: (file index, its share of the centroids' training sample)."""
    return index, sample_file(path, fraction, 0, index)


def assign_file(path: str, stage: DedupStage) -> tuple[np.ndarray, np.ndarray]:
    """Ray task body for the assignment pass."""
    return stage.assign(path)


# Dedup compares every sample with the others: a stage of its own, after the per-sample scorers (it reads the CLIP
# embeddings the clip scorer stored; weights of its own it has none).
SPEC = ScorerSpec(dedup.NAME, dedup.COLUMNS, DATASET,
                  lambda root, options: DedupStage(root, options.dedup_threshold, options.keep_best),
                  options={"dedup_threshold": dedup.DEFAULT_THRESHOLD, "keep_best": None},
                  reports=("duplicates_flagged", "exact_duplicates", "near_duplicates"))
