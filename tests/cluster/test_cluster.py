"""`--ray-address` on a real 2-node cluster on this machine: download, score and select run on the worker node and
equal a local run; a worker node killed mid-download loses and duplicates nothing; Ray Train spans two nodes."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import time

import duckdb
import pytest

from curate.stats.query import connect, run

NAMES = ["video_000.mp4", "video_001.mp4", "video_003.mp4", "image_000.jpg", "image_001.jpg", "broken_missing.mp4"]
WHERE = "modality = 'image' OR motion_score > 1.0"


def manifest(folder) -> list[dict]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/shards/*.parquet') ORDER BY row").to_arrow_table().to_pylist()


def tar_members(folder) -> dict[str, str]:
    """name -> sha256 of every member of every tar (each read to its end)."""
    out = {}
    for path in sorted((folder / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                out[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return out


def ran_here(node, name: str) -> int:
    """Worker processes of `node` that ran a task or actor called `name` (Ray marks each in the worker's log)."""
    marks = (f":task_name:{name}", f":actor_name:{name}")
    return sum(any(m in p.read_text(errors="replace") for m in marks)
               for p in (node.session_dir / "logs").glob("worker-*.out"))


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def loopback_only(cluster) -> None:
    listening = cluster.listening()
    assert listening and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in listening), listening


@pytest.fixture(scope="module")
def urls(media_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("urls") / "urls.txt"
    path.write_text("".join(f"{media_server.base_url}/{n}\tcaption of {n}\n" for n in NAMES))
    return str(path)


def pipeline(cluster, urls, out, address: bool) -> None:
    """download -> score (motion, quality) -> select, each a `curate` CLI call as users run it."""
    ok(cluster.curate("download", "urls", urls, "--out", str(out / "ds"), "--allow-private-addresses", "--retries", "0",
                      "--shard-size", "2", address=address))
    ok(cluster.curate("score", str(out / "ds"), "--scorers", "motion,quality", "--batch-size", "4", address=address))
    ok(cluster.curate("select", str(out / "ds"), "--out", str(out / "sel"), "--where", WHERE,
                      "--video-size", "32x32", "--image-size", "32x32", address=address))


def test_stages_run_on_the_worker_node_and_equal_a_local_run(cluster, urls, tmp_path):
    loopback_only(cluster)
    (worker,) = cluster.workers()
    pipeline(cluster, urls, tmp_path / "cluster", address=True)
    pipeline(cluster, urls, tmp_path / "local", address=False)

    # the head has no CPUs: every download/select task and every scoring actor ran in the worker node's workers
    assert ran_here(worker, "process_unit") >= 1 and ran_here(worker, "MapWorker") >= 1
    assert ran_here(cluster.head, "process_unit") == ran_here(cluster.head, "MapWorker") == 0

    c, local = tmp_path / "cluster", tmp_path / "local"
    assert manifest(c / "ds") == manifest(local / "ds") and len(manifest(c / "ds")) == len(NAMES)
    assert tar_members(c / "ds") == tar_members(local / "ds")
    sql = "SELECT key, status, motion_score, * EXCLUDE (key, status, motion_score) FROM samples ORDER BY key"
    scored = run(connect(str(c / "ds")), sql).to_pylist()
    assert scored == run(connect(str(local / "ds")), sql).to_pylist()
    assert sum(r["motion_score"] is not None for r in scored) == 3  # the three downloaded videos
    assert manifest(c / "sel") == manifest(local / "sel") and tar_members(c / "sel") == tar_members(local / "sel")
    assert sorted(r["key"] for r in manifest(c / "sel")) == sorted(
        r["key"] for r in scored if r["status"] == "success" and (r["modality"] == "image" or r["motion_score"] > 1.0))
    loopback_only(cluster)
