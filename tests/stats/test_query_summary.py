import pytest

from curate import schema
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter
from curate.stats.query import QueryError, connect, run
from curate.stats.summary import render, summarize


@pytest.fixture()
def dataset(tmp_path):
    folder = DatasetFolder(str(tmp_path / "ds"))
    media = tmp_path / "m.mp4"
    media.write_bytes(b"x")
    for sid, offset in (("00000", 0), ("00001", 3)):
        writer = ShardWriter(folder, sid)
        for i in range(3):
            n = offset + i
            ok = n % 2 == 0
            writer.add({"key": f"k{n}", "row": n, "source": "webvid" if n < 4 else "laion-coco",
                        "modality": "video" if n < 4 else "image", "caption": f"c{n}",
                        "status": "success" if ok else "failed_to_download",
                        "error_reason": None if ok else "http_404", "width": 100 + n, "height": 50,
                        "fps": 8.0 if n < 4 else None, "duration": 2.0 if n < 4 else None, "num_frames": 16,
                        "size_bytes": 1, "extra": "{}"}, str(media) if ok else None, "mp4" if ok else None)
        writer.close()
    return folder.root


def test_samples_view_and_parameters(dataset):
    con = connect(dataset)
    table = run(con, "SELECT key FROM samples WHERE status = ? ORDER BY row", ["success"])
    assert table.column("key").to_pylist() == ["k0", "k2", "k4"]
    assert set(schema.load("manifest").names) <= set(run(con, "SELECT * FROM samples LIMIT 1").column_names)


def test_score_tables_are_joined_by_key(dataset, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import os

    os.makedirs(os.path.join(dataset, "scores", "motion"))
    pq.write_table(pa.table({"key": ["k0", "k2"], "motion_score": [0.0, 2.5]}),
                   os.path.join(dataset, "scores", "motion", "00000.parquet"))
    con = connect(dataset)
    got = run(con, "SELECT key, motion_score FROM samples ORDER BY row").to_pylist()
    assert got[0] == {"key": "k0", "motion_score": 0.0} and got[1]["motion_score"] is None
    assert len(got) == 6


@pytest.mark.parametrize("sql", [
    "DROP VIEW samples", "COPY (SELECT 1) TO '/tmp/x.csv'", "ATTACH '/tmp/x.db'", "SELECT 1; SELECT 2",
    "INSTALL httpfs", "PRAGMA version", "CREATE TABLE t AS SELECT 1",
])
def test_only_single_selects(dataset, sql):
    with pytest.raises(QueryError):
        run(connect(dataset), sql)


def test_reading_outside_the_folder_is_refused(dataset):
    with pytest.raises(QueryError):
        run(connect(dataset), "SELECT * FROM read_csv('/etc/passwd')")


def test_bad_sql_is_a_query_error(dataset):
    with pytest.raises(QueryError):
        run(connect(dataset), "SELECT nope FROM samples")


def test_summary(dataset):
    s = summarize(dataset)
    assert s["samples"] == 6 and s["success_rate"] == 0.5
    assert s["status"] == {"success": 3, "failed_to_download": 3}
    assert s["source"] == {"webvid": 4, "laion-coco": 2}
    assert s["error_reason"] == {"http_404": 3}
    assert s["source_status"]["webvid"] == {"success": 2, "failed_to_download": 2}
    assert s["distributions"]["video"]["width"]["p50"] == 101.0
    assert "success rate: 50.0%" in render(s)
