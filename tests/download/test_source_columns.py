"""Source columns users filter on reach the manifest as typed columns: a predicate over them just works."""

import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema
from curate.download.http import FetchPolicy
from curate.download.plan import build_plan
from curate.download.shard import DownloadOptions, download_shard, retry_shard
from curate.predicate import check_predicate
from curate.shards.folder import DatasetFolder, shard_id
from curate.sources.sample import SOURCE_COLUMNS
from curate.stats.query import connect, run

OPTIONS = DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0), probe_workers=1).to_dict()


def download(root, source, input_path):
    folder = DatasetFolder(str(root))
    build_plan(folder, source, str(input_path), {}, shard_size=100)
    download_shard(folder.root, 0, shard_id(0), OPTIONS)
    return folder


def test_source_columns_are_in_both_schemas():
    for table in ("samples", "manifest"):
        names = schema.load(table).names
        assert set(SOURCE_COLUMNS) <= set(names), table


def test_laion_aesthetics_predicate_over_a_downloaded_folder(media_server, tmp_path):
    """The improved_aesthetics layout (float32 scores), images served locally; the predicate of the issue runs
    against the `samples` view exactly as `curate select --where` checks and runs it."""
    names = ["image_000.jpg", "image_001.jpg", "image_002.jpg", "image_003.jpg", "broken_missing.jpg"]
    pq.write_table(pa.table({
        "URL": [f"{media_server.base_url}/{n}" for n in names], "TEXT": [f"text {n}" for n in names],
        "WIDTH": pa.array([128.0, 128.0, 128.0, 128.0, 64.0]), "HEIGHT": pa.array([96.0, 96.0, 96.0, 96.0, 64.0]),
        "similarity": [0.3, 0.3, 0.3, 0.3, 0.3],
        "punsafe": pa.array([0.01, 0.5, 0.02, 0.03, 0.0], pa.float32()),
        "pwatermark": pa.array([0.1, 0.1, 0.7, 0.2, 0.0], pa.float32()),
        "AESTHETIC_SCORE": pa.array([6.0, 6.8, 6.3, 5.9, 7.0], pa.float32()),
    }), tmp_path / "part-0.parquet")
    folder = download(tmp_path / "ds", "laion-aesthetics", tmp_path / "part-0.parquet")
    types = pq.read_schema(folder.manifest(shard_id(0)))
    assert types.field("laion_aesthetic").type == pa.float64() and types.field("source_width").type == pa.int64()
    con = connect(folder.root)
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    where = check_predicate("punsafe < 0.1 AND pwatermark < 0.5 AND laion_aesthetic >= 6", columns)
    kept = run(con, f"SELECT url FROM samples WHERE status = 'success' AND ({where})").column("url").to_pylist()
    assert [u.rsplit("/", 1)[1] for u in kept] == ["image_000.jpg"]
    failed = run(con, "SELECT status, laion_aesthetic, source_width FROM samples WHERE url LIKE '%broken%'")
    assert failed.to_pylist() == [{"status": "failed_to_download", "laion_aesthetic": 7.0, "source_width": 64}]


def test_webvid_columns_over_a_downloaded_folder(media_server, tmp_path):
    csv = tmp_path / "results_2M_val.csv"
    csv.write_text("videoid,name,page_idx,page_dir,duration,contentUrl\n"
                   f'1,"a square, moving",1,000001_000050,PT00H00M03S,{media_server.base_url}/video_000.mp4\n'
                   f"2,a circle,2,000001_000050,PT00H00M40S,{media_server.base_url}/video_001.mp4\n"
                   f"3,gone,3,000051_000100,PT00H00M05S,{media_server.base_url}/broken_missing.mp4\n")
    folder = download(tmp_path / "ds", "webvid", csv)
    con = connect(folder.root)
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    where = check_predicate("source_duration < 30 AND page_idx = 1 AND page_dir = '000001_000050'", columns)
    rows = run(con, f"SELECT key, status, punsafe FROM samples WHERE {where}").to_pylist()
    assert rows == [{"key": "webvid_1", "status": "success", "punsafe": None}]
    # retry-failed re-attempts the failed row; its typed columns survive the retry
    retry_shard(folder.root, shard_id(0), OPTIONS)
    rows = pq.read_table(folder.manifest(shard_id(0))).to_pylist()
    assert [(r["key"], r["status"], r["page_idx"], r["source_duration"], r["page_dir"]) for r in rows] == [
        ("webvid_1", "success", 1, 3.0, "000001_000050"), ("webvid_2", "success", 2, 40.0, "000001_000050"),
        ("webvid_3", "failed_to_download", 3, 5.0, "000051_000100")]


def test_openvid_from_zip_parts_and_predicate_over_its_scores(demo_media, tmp_path):
    """Videos read straight from an OpenVid_partN.zip (never extracted), scores typed: the issue's predicate
    selects by them; a corrupt member and an absent one are failure rows."""
    import zipfile

    media = demo_media[0]
    with zipfile.ZipFile(tmp_path / "OpenVid_part0.zip", "w") as zf:
        zf.write(f"{media}/video_000.mp4", "video/v0.mp4")
        zf.write(f"{media}/video_001.mp4", "video/v1.mp4")
        zf.writestr("video/bad.mp4", b"not an mp4")
    csv = tmp_path / "OpenVid-1M.csv"
    csv.write_text("video,caption,aesthetic score,motion score,temporal consistency score,camera motion,frame,fps,"
                   "seconds\n"
                   'v0.mp4,"a square, moving",5.5,2.0,0.99,static,24,8,3.0\n'
                   "v1.mp4,a circle,4.0,9.0,0.95,static,24,8,3.0\n"
                   "bad.mp4,broken,6.0,1.0,0.9,static,24,8,3.0\n"
                   "gone.mp4,absent,6.0,1.0,0.9,pan,24,8,3.0\n")
    folder = DatasetFolder(str(tmp_path / "ds"))
    build_plan(folder, "openvid", str(csv), {"videos": str(tmp_path)}, shard_size=100)
    download_shard(folder.root, 0, shard_id(0), OPTIONS)
    assert not [p for p in tmp_path.rglob("v0.mp4")]  # nothing extracted beside the archive
    con = connect(folder.root)
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    where = check_predicate("openvid_aesthetic >= 5 AND camera_motion = 'static'", columns)
    rows = run(con, f"SELECT key, status, error_reason, width FROM samples WHERE {where} ORDER BY key").to_pylist()
    assert rows == [{"key": "openvid_bad", "status": "failed_to_decode", "error_reason": rows[0]["error_reason"],
                     "width": None},
                    {"key": "openvid_v0", "status": "success", "error_reason": None, "width": 160}]
    gone = run(con, "SELECT status FROM samples WHERE key = 'openvid_gone'").column("status").to_pylist()
    assert gone == ["invalid_input"]
