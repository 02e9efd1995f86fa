"""The dedup stage on a small dataset folder: sha256 groups in DuckDB, the clustered path through Ray (the same
flags as exact search), the scratch each cluster group reads, keep-best, resume, and bad --keep-best refused."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate import engine, storage
from curate.cli import app
from curate.dedup import near
from curate.dedup.stage import DedupStage, ranked_sql, stored_sweep
from curate.dedup.synthetic import planted
from curate.scoring.embeddings import write_embeddings
from curate.stats.query import connect, run

ROWS, SHARD = 400, 200


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two shards; rows 7 and 300 share media (sha256 and embedding); aesthetic_score decides keep-best."""
    root = tmp_path_factory.mktemp("dedup_ds")
    vectors, _ = planted(ROWS, dim=32, seed=3, per_topic=40, copies=0.15)
    vectors[300] = vectors[7]
    keys = [f"k{i:04d}" for i in range(ROWS)]
    digests = [f"sha{i}" for i in range(ROWS)]
    digests[300] = digests[7]
    status = ["success"] * ROWS
    status[11] = "error"  # a failed row: no media, no embedding, not in the output
    digests[11] = None
    scores = np.random.default_rng(0).random(ROWS)
    for shard in range(ROWS // SHARD):
        rows = range(shard * SHARD, (shard + 1) * SHARD)
        sid = f"{shard:05d}"
        (root / "shards").mkdir(exist_ok=True)
        pq.write_table(pa.table({"key": [keys[i] for i in rows], "row": list(rows), "shard": [sid] * SHARD,
                                 "status": [status[i] for i in rows], "sha256": [digests[i] for i in rows]}),
                       root / "shards" / f"{sid}.parquet")
        (root / "scores" / "aesthetic").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"key": [keys[i] for i in rows], "aesthetic_score": scores[list(rows)]}),
                       root / "scores" / "aesthetic" / f"{sid}.parquet")
        ok = [i for i in rows if status[i] == "success"]
        write_embeddings(root / "embeddings" / f"{sid}.parquet", [keys[i] for i in ok], vectors[ok], "tiny:ckpt")
    return {"root": str(root), "keys": keys, "vectors": vectors, "scores": scores, "ok": status}


def expected(data, threshold: float, keep_best: bool) -> dict[str, tuple[str, float]]:
    """{flagged key: (kept key, similarity)} by exact search over all rows."""
    ok = [i for i, s in enumerate(data["ok"]) if s == "success"]
    order = sorted(ok, key=lambda i: (-data["scores"][i], i)) if keep_best else ok
    rank = {i: r for r, i in enumerate(order)}
    ids = np.array([rank[i] for i in ok])
    pairs = near.pairs_within(ids, near.unit_rows(data["vectors"][ok])[0], threshold)
    flagged, kept, similarity = near.resolve(pairs)
    return {data["keys"][order[f]]: (data["keys"][order[k]], s) for f, k, s in zip(flagged, kept, similarity)}


@pytest.mark.parametrize("keep_best", [None, "aesthetic_score"])
def test_sha256_duplicates_and_ranks_in_duckdb(dataset, keep_best):
    rows = {r["key"]: r for r in run(connect(dataset["root"]), ranked_sql(keep_best)).to_pylist()}
    assert "k0011" not in rows and len(rows) == ROWS - 1
    scores = dataset["scores"]
    first, second = ("k0007", "k0300") if not keep_best or scores[7] >= scores[300] else ("k0300", "k0007")
    assert rows[second]["exact_duplicate_of"] == first and rows[first]["exact_duplicate_of"] is None
    assert sum(r["exact_duplicate_of"] is not None for r in rows.values()) == 1
    best = max(rows, key=lambda k: scores[int(k[1:])]) if keep_best else "k0000"
    assert rows[best]["rank"] == 0 and sorted(r["rank"] for r in rows.values()) == list(range(ROWS - 1))


def test_clustered_stage_flags_what_exact_search_flags(dataset, ray_local):
    stage = DedupStage(dataset["root"], 0.95, "aesthetic_score", exact_limit=50, target_cluster=40)
    summary = engine.run_stage(stage)
    assert summary["clusters"] > 4 and summary["exact_duplicates"] == 1
    table = storage.read_table(storage.join(dataset["root"], "scores", "dedup", "all.parquet")).to_pylist()
    got = {r["key"]: (r["near_duplicate_of"], r["near_duplicate_similarity"]) for r in table if r["near_duplicate_of"]}
    want = expected(dataset, 0.95, keep_best=True)
    assert got.keys() == want.keys() and len(want) > 20
    assert all(got[k][0] == want[k][0] and abs(got[k][1] - want[k][1]) < 1e-5 for k in want)
    kept = {r["key"] for r in table if r["near_duplicate_of"] is None}
    assert all(v[0] in kept for v in got.values())  # flagged rows point to a kept copy
    assert all(r["near_duplicate_cluster"] is not None for r in table)
    sweep = stored_sweep(storage.join(dataset["root"], "scores", "dedup", "all.parquet"))
    assert sweep["0.95"] == len(want) and sweep["0.90"] > sweep["0.95"] > sweep["0.99"]
    again = engine.run_stage(DedupStage(dataset["root"], 0.95, "aesthetic_score", exact_limit=50, target_cluster=40))
    assert again["ran"] == 0 and again["near_duplicates"] == len(want)  # unchanged inputs: nothing recomputed


def test_keep_best_must_be_a_numeric_column(dataset):
    result = CliRunner().invoke(app, ["score", dataset["root"], "--scorers", "dedup", "--keep-best", "caption"])
    assert result.exit_code == 2 and "aesthetic_score" in result.output


def test_each_cluster_group_reads_exactly_its_memberships(dataset, ray_local, tmp_path, monkeypatch):
    """The scratch a pair task reads by byte ranges: every (row, probed cluster) membership once, in the group
    of its cluster, with the row's own unit embedding."""
    monkeypatch.setattr("curate.dedup.stage.UNIT_ROWS", 150)  # several groups of clusters
    stage = DedupStage(str(tmp_path / "copy"), 0.95, exact_limit=50, target_cluster=40)
    shutil.copytree(dataset["root"], stage.root, ignore=shutil.ignore_patterns("scores"))
    groups = stage.plan()
    assert len(groups) > 1 and groups[0][0] == 0 and groups[-1][1] == stage.clusters
    offsets = storage.glob(storage.join(stage.work_dir, "members", "*.offsets"))
    assert len(offsets) == ROWS // SHARD
    row_of_rank = {r["rank"]: int(r["key"][1:]) for r in run(connect(stage.root), ranked_sql(None)).to_pylist()}
    unit = near.unit_rows(dataset["vectors"])[0]
    seen = []
    for first, end in groups:
        for path in offsets:
            members, vectors = stage.cluster_rows(path, first, end)
            assert ((members["cluster"] >= first) & (members["cluster"] < end)).all()
            seen += [(int(m["rank"]), int(m["cluster"]), bool(m["primary"])) for m in members]
            np.testing.assert_allclose(vectors, unit[[row_of_rank[int(r)] for r in members["rank"]]], atol=1e-6)
    assert len(seen) == len(set(seen)) == (ROWS - 1) * stage.probes  # each row in its nearest clusters, once each
    assert sorted(r for r, _, primary in seen if primary) == list(range(ROWS - 1))  # one nearest cluster per row
