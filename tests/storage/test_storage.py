"""curate.storage against a real S3 server (moto on 127.0.0.1) and the local disk: same calls, same results."""

from __future__ import annotations

import json
import os
import socket

import boto3
import pyarrow as pa
import pytest

from curate import storage


def _keys(bucket_url: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket_url[len("s3://"):])
    return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    return str(tmp_path / "ds") if request.param == "local" else request.getfixturevalue("s3_bucket") + "/ds"


def test_write_read_glob_remove(root):
    table = pa.table({"key": ["a", "b"], "n": [1, 2]})
    storage.write_table(table, storage.join(root, "shards", "00000.parquet"))
    storage.write_json(storage.join(root, "shards", "00000_stats.json"), {"count": 2})
    storage.write_bytes(storage.join(root, "shards", "00000.tar"), b"x" * 10)
    found = storage.glob(storage.join(root, "shards", "*.parquet"))
    assert found == [storage.join(root, "shards", "00000.parquet")]
    assert storage.read_table(found[0]).equals(table)
    assert storage.read_json(storage.join(root, "shards", "00000_stats.json")) == {"count": 2}
    assert storage.size(storage.join(root, "shards", "00000.tar")) == 10
    assert storage.isdir(storage.join(root, "shards")) and storage.exists(found[0])
    assert [storage.basename(p) for p in storage.walk_files(root)] == ["00000.parquet", "00000.tar", "00000_stats.json"]
    storage.remove(storage.join(root, "shards"), recursive=True)
    assert storage.walk_files(root) == [] and not storage.exists(found[0])
    storage.remove(storage.join(root, "missing.json"))  # a missing path is not an error


def test_remote_publication_leaves_no_partial_or_temporary_object(s3_bucket, tmp_path):
    root = s3_bucket + "/ds"
    staged = os.path.join(storage.staging_dir(root), "big.tmp")
    with open(staged, "wb") as f:
        f.write(os.urandom(3 << 20))
    storage.put(staged, root + "/big.bin")
    assert not os.path.exists(staged)
    storage.write_table(pa.table({"x": [1]}), root + "/t.parquet")
    assert _keys(s3_bucket) == ["ds/big.bin", "ds/t.parquet"]


def test_duckdb_reads_s3_through_fsspec_without_extensions(s3_bucket):
    root = s3_bucket + "/ds"
    for i in range(3):
        storage.write_table(pa.table({"key": [f"k{i}"], "n": [i]}), f"{root}/shards/{i:05d}.parquet")
    con = storage.duckdb_connect(root)
    assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchall() == [(False,)]
    total = con.execute("SELECT sum(n), count(*) FROM read_parquet(?, union_by_name = true)",
                        [f"{root}/shards/*.parquet"]).fetchall()
    assert total == [(3, 3)]
    loaded = con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
    assert ("httpfs",) not in loaded


def test_local_copy_and_open_give_the_same_bytes(s3_bucket):
    url = s3_bucket + "/blob.bin"
    data = json.dumps({"k": list(range(100))}).encode()
    storage.write_bytes(url, data)
    with storage.local_copy(url) as path:
        assert open(path, "rb").read() == data
    assert not os.path.exists(path)
    with storage.open(url) as f:
        f.seek(5)
        assert f.read(5) == data[5:10]
    with pytest.raises(ValueError):
        storage.open(url, "wb")


def test_join_keeps_urls_and_local_paths_apart():
    assert storage.join("s3://b/ds/", "shards", "x.tar") == "s3://b/ds/shards/x.tar"
    assert storage.parent("s3://b/ds/shards/x.tar") == "s3://b/ds/shards"
    assert storage.join("/data/ds", "shards") == "/data/ds/shards"
    assert storage.is_remote("gs://b/x") and not storage.is_remote("/x") and not storage.is_remote("file:///x")


def test_the_guard_refuses_any_address_but_loopback():
    with pytest.raises(AssertionError, match="only 127.0.0.1"):
        socket.getaddrinfo("s3.amazonaws.com", 443)  # refused before any lookup happens
    with pytest.raises(AssertionError, match="only 127.0.0.1"):
        socket.socket().connect(("192.0.2.1", 9))  # TEST-NET-1 literal; refused before any packet


def test_a_shard_rewritten_after_a_crash_mid_upload_leaves_no_unfinished_upload(s3_bucket):
    """A writer killed during a multipart upload leaves invisible parts; writing that shard again aborts them
    (and only those of that shard)."""
    from curate.shards.folder import DatasetFolder
    from curate.shards.writer import ShardWriter

    client, bucket = boto3.client("s3"), s3_bucket[len("s3://"):]
    for key in ("ds/shards/00000.tar", "ds/shards/00001.tar"):
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    ShardWriter(DatasetFolder(s3_bucket + "/ds"), "00000").close()
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["ds/shards/00001.tar"]
    assert _keys(s3_bucket) == ["ds/shards/00000.parquet", "ds/shards/00000.tar", "ds/shards/00000_stats.json"]
