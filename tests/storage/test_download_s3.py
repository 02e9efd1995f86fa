"""Download with the source metadata and the dataset in object storage (a real S3 server, moto on 127.0.0.1):
the same rows as a local download, nothing outside the dataset prefix, resume, a crash mid-upload, retry-failed."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import sources, storage
from curate.download.http import FetchPolicy
from curate.download.shard import DownloadOptions
from curate.download.retry import retry_failed
from curate.download.stage import download

LOCAL = DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0, read_timeout=3, max_bytes=2 << 20))
WEBVID_HEADER = ["videoid", "contentUrl", "duration", "page_dir", "name"]


def bucket_of(url: str) -> str:
    return url[len("s3://"):].split("/", 1)[0]


def objects(bucket_url: str) -> dict[str, bytes]:
    """Every object of the bucket, key -> bytes, read with boto3 (not through our code)."""
    s3, bucket = boto3.client("s3"), bucket_of(bucket_url)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def upload(bucket_url: str, key: str, path: str) -> str:
    boto3.client("s3").upload_file(path, bucket_of(bucket_url), key)
    return f"{bucket_url}/{key}"


def webvid_csv(path, server, names) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(WEBVID_HEADER)
        for i, name in enumerate(names):
            vid = "" if name is None else str(1000 + (i if name != "dup" else 0))
            url = f"{server.base_url}/{name if name not in (None, 'dup') else 'video_000.mp4'}"
            w.writerow([vid, url, "PT00H00M03S", "000001_000050", f'clip {i}, "quoted"'])
    return str(path)


def manifest_rows(files: dict[str, bytes], prefix: str) -> list[dict]:
    rows = [r for k, data in sorted(files.items()) if k.startswith(prefix + "shards/") and k.endswith(".parquet")
            for r in pq.read_table(pa.BufferReader(data)).to_pylist()]
    return sorted(rows, key=lambda r: r["row"])


def local_manifest_rows(out) -> list[dict]:
    rows = [r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return sorted(rows, key=lambda r: r["row"])


def check_tars(files: dict[str, bytes], prefix: str, rows: list[dict]) -> None:
    """Every tar object reads to the end and holds media + txt + json for exactly the success rows of its shard's
    manifest, media bytes matching the manifest's sha256 and size."""
    by_key = {r["key"]: r for r in rows}
    tars = sorted(k for k in files if k.startswith(prefix + "shards/") and k.endswith(".tar"))
    manifests = sorted(k for k in files if k.startswith(prefix + "shards/") and k.endswith(".parquet"))
    assert [k[:-4] for k in tars] == [k[:-8] for k in manifests]  # a tar exactly for every complete shard
    for key in tars:
        sid = key.rsplit("/", 1)[1][:-4]
        members = {}
        with tarfile.open(fileobj=io.BytesIO(files[key])) as tar:
            for member in tar:
                members[member.name] = tar.extractfile(member).read()
        success = {r["key"] for r in rows if r["shard"] == sid and r["status"] == "success"}
        assert {name.split(".")[0] for name in members} == success and len(members) == 3 * len(success)
        for name, data in members.items():
            k, ext = name.split(".")
            if ext == "json":
                assert json.loads(data)["key"] == k
            elif ext != "txt":
                assert hashlib.sha256(data).hexdigest() == by_key[k]["sha256"] and len(data) == by_key[k]["size_bytes"]


NAMES = ["video_000.mp4", "video_001.mp4", "broken_missing.mp4", "video_002.mp4", "broken_corrupt.mp4", "dup",
         None, "video_003.mp4", "video_004.mp4", "broken_truncated.mp4"]


def test_csv_in_s3_to_dataset_in_s3_equals_local_and_resumes(ray_local, media_server, s3_bucket, tmp_path):
    csv_path = webvid_csv(tmp_path / "webvid.csv", media_server, NAMES)
    remote_csv = upload(s3_bucket, "meta/webvid.csv", csv_path)
    out = f"{s3_bucket}/datasets/webvid"
    summary = download("webvid", remote_csv, out, options=LOCAL, shard_size=4)
    local = download("webvid", csv_path, str(tmp_path / "ds"), options=LOCAL, shard_size=4)
    assert summary == local and summary["shards"] == 3 and summary["ran"] == 3

    files = objects(s3_bucket)
    prefix = "datasets/webvid/"
    assert set(files) == {"meta/webvid.csv", prefix + "provenance.json", prefix + "_plan/samples.parquet",
                          *(prefix + f"shards/0000{i}{ext}" for i in range(3) for ext in (".tar", ".parquet",
                                                                                           "_stats.json"))}
    rows = manifest_rows(files, prefix)
    assert rows == local_manifest_rows(tmp_path / "ds")
    assert [r["row"] for r in rows] == list(range(len(NAMES)))
    assert [r["status"] for r in rows] == ["success", "success", "failed_to_download", "success", "failed_to_decode",
                                           "duplicate", "invalid_input", "success", "success", "failed_to_decode"]
    check_tars(files, prefix, rows)
    plan = pq.read_table(pa.BufferReader(files[prefix + "_plan/samples.parquet"]))
    assert plan.num_rows == len(NAMES) and sorted(set(plan.column("shard_no").to_pylist())) == [0, 1, 2]
    record = json.loads(files[prefix + "provenance.json"])
    assert record["complete"] and record["input"] == remote_csv
    local_record = json.loads((tmp_path / "ds" / "provenance.json").read_text())
    assert record["input_fingerprint"] == local_record["input_fingerprint"]  # same bytes, same fingerprint

    again = download("webvid", remote_csv, out, options=LOCAL, shard_size=4)
    assert again["skipped"] == 3 and again["ran"] == 0
    after = objects(s3_bucket)
    assert set(after) == set(files)
    assert all(after[k] == files[k] for k in files if "/shards/" in k)


def test_crash_mid_upload_then_resume_every_row_once(ray_address, media_server, s3_bucket, tmp_path):
    """SIGKILL the CLI's process group as soon as the first tar object is in the bucket, rerun the same command.
    Both runs drive the session's Ray (its workers have the same S3 endpoint): the kill takes the driver."""
    # shards 0-1 are quick, so a tar lands early; shards 2-4 each hold one slow body (2 s, not a video: a row
    # that fails to decode), so the kill comes mid-run
    names = [f"slow/body_{i}.mp4" if i in (7, 10, 13) else f"video_00{i % 5}.mp4" for i in range(15)]
    csv_path = tmp_path / "webvid.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(WEBVID_HEADER)
        w.writerows([str(2000 + i), f"{media_server.base_url}/{n}?i={i}", "PT3S", "p", f"c{i}"]
                    for i, n in enumerate(names))
    remote_csv = upload(s3_bucket, "in/webvid.csv", str(csv_path))
    out = f"{s3_bucket}/ds"
    cmd = [sys.executable, "-m", "curate.cli", "download", "webvid", remote_csv, "--out", out,
           "--allow-private-addresses", "--shard-size", "3", "--thread-count", "1", "--retries", "0",
           "--ray-address", ray_address]
    s3, bucket = boto3.client("s3"), bucket_of(s3_bucket)

    def keys(suffix: str) -> list[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="ds/shards/").get("Contents", [])
        return sorted(o["Key"] for o in listing if o["Key"].endswith(suffix))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not keys(".tar") and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert keys(".tar"), err.decode(errors="replace")[-2000:]
    assert len(keys(".parquet")) < 5  # killed mid-run

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    files = objects(s3_bucket)
    rows = manifest_rows(files, "ds/")
    assert [r["row"] for r in rows] == list(range(15)) and len({r["key"] for r in rows}) == 15
    assert [r["row"] for r in rows if r["status"] != "success"] == [7, 10, 13]
    check_tars(files, "ds/", rows)
    assert sorted(k for k in files if k.startswith("ds/shards/")) == sorted(
        f"ds/shards/0000{i}{ext}" for i in range(5) for ext in (".tar", ".parquet", "_stats.json"))
    assert set(files) - {k for k in files if k.startswith("ds/shards/")} == {
        "in/webvid.csv", "ds/provenance.json", "ds/_plan/samples.parquet"}
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # no unfinished upload either


def test_retry_failed_on_an_s3_dataset(ray_local, media_server, demo_media, s3_bucket, tmp_path):
    late = "late_arrival_s3.mp4"
    csv_path = webvid_csv(tmp_path / "w.csv", media_server, ["video_002.mp4", late, "broken_corrupt.mp4"])
    out = f"{s3_bucket}/ds"
    download("webvid", upload(s3_bucket, "in/w.csv", csv_path), out, options=LOCAL)
    before = {r["key"]: r for r in manifest_rows(objects(s3_bucket), "ds/")}
    shutil.copy(os.path.join(demo_media[0], "video_003.mp4"), os.path.join(demo_media[0], late))
    try:
        summary = retry_failed(out)
    finally:
        os.remove(os.path.join(demo_media[0], late))
    assert summary["shards_retried"] == 1 and not summary["failed_shards"]
    files = objects(s3_bucket)
    after = {r["key"]: r for r in manifest_rows(files, "ds/")}
    assert set(after) == set(before)
    statuses = {r["url"].rsplit("/", 1)[1]: r["status"] for r in after.values()}
    assert statuses == {"video_002.mp4": "success", late: "success", "broken_corrupt.mp4": "failed_to_decode"}
    kept = next(k for k, r in before.items() if r["url"].endswith("video_002.mp4"))
    assert after[kept]["sha256"] == before[kept]["sha256"]
    check_tars(files, "ds/", list(after.values()))
    assert json.loads(files["ds/provenance.json"])["stage"] == "retry-failed"
    assert not [k for k in files if not k.startswith(("ds/", "in/"))]


def test_image_urls_through_img2dataset_into_s3(ray_local, media_server, s3_bucket, tmp_path):
    """img2dataset writes into the shard task's local scratch folder; its tar becomes the shard's tar object."""
    urls = tmp_path / "images.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}\tcaption {n}\n"
                            for n in ("image_000.jpg", "image_001.jpg", "broken_missing.jpg")))
    download("urls", upload(s3_bucket, "in/images.txt", str(urls)), f"{s3_bucket}/img", options=LOCAL)
    files = objects(s3_bucket)
    rows = manifest_rows(files, "img/")
    assert [(r["status"], r["error_reason"]) for r in rows] == [("success", None), ("success", None),
                                                                ("failed_to_download", "http_404")]
    assert rows[0]["width"] == 128 and rows[0]["codec"] == "jpeg"
    check_tars(files, "img/", rows)
    assert not [k for k in files if not k.startswith(("in/", "img/"))]


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_journeydb_archives_and_a_media_folder_in_s3(ray_local, demo_media, s3_bucket, tmp_path):
    """Annotations (.jsonl.tgz) with the image archives beside them, and a folder with sidecar captions: read from
    the bucket (no local copy of the inputs), downloaded into it."""
    media = demo_media[0]
    jdb = tmp_path / "jdb"
    (jdb / "imgs").mkdir(parents=True)
    with tarfile.open(jdb / "imgs" / "000.tgz", "w:gz") as tar:
        for i in range(2):
            add(tar, f"000/img{i}.jpg", open(os.path.join(media, f"image_00{i}.jpg"), "rb").read())
    lines = [{"img_path": f"./000/img{i}.jpg", "prompt": f"prompt {i}"} for i in range(3)]  # img2 is missing
    with tarfile.open(jdb / "anno.jsonl.tgz", "w:gz") as tar:
        add(tar, "anno.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(media, "video_000.mp4"), folder / "sub" / "clip.mp4")
    (folder / "sub" / "clip.txt").write_text("a clip\n")
    shutil.copy(os.path.join(media, "image_001.jpg"), folder / "b.jpg")
    for path in [jdb / "imgs" / "000.tgz", jdb / "anno.jsonl.tgz", folder / "sub" / "clip.mp4",
                 folder / "sub" / "clip.txt", folder / "b.jpg"]:
        upload(s3_bucket, "in/" + str(path.relative_to(tmp_path)), str(path))

    download("journeydb", f"{s3_bucket}/in/jdb/anno.jsonl.tgz", f"{s3_bucket}/jdb", options=LOCAL)
    download("folder", f"{s3_bucket}/in/folder", f"{s3_bucket}/folder", options=LOCAL)
    files = objects(s3_bucket)
    jdb_rows = manifest_rows(files, "jdb/")
    assert [(r["key"], r["status"]) for r in jdb_rows] == [("jdb_000_img0", "success"), ("jdb_000_img1", "success"),
                                                           ("jdb_000_img2", "failed_to_download")]
    assert jdb_rows[0]["path"] == f"{s3_bucket}/in/jdb/imgs/000.tgz::000/img0.jpg"
    check_tars(files, "jdb/", jdb_rows)
    folder_rows = manifest_rows(files, "folder/")
    local_keys = [r["key"] for chunk in sources.read("folder", str(folder)) for r in chunk]
    assert [r["key"] for r in folder_rows] == local_keys and len(local_keys) == 2
    assert [(r["status"], r["caption"]) for r in folder_rows] == [("success", ""), ("success", "a clip")]
    check_tars(files, "folder/", folder_rows)
    assert not [k for k in files if not k.startswith(("in/", "jdb/", "folder/"))]


@pytest.mark.parametrize("source,name", [("laion-coco", "part.parquet"), ("urls", "list.txt"),
                                         ("urls", "list.csv"), ("msrvtt", "MSRVTT_data.json")])
def test_readers_stream_s3_like_local_disk(s3_bucket, tmp_path, source, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"URL": ["https://h.test/a.jpg", "https://h.test/b.jpg"], "top_caption": ["a", "b"],
                                 "punsafe": [0.1, 0.2]}), path, row_group_size=1)
    elif name.endswith(".txt"):
        path.write_text("https://h.test/v.mp4\tcap, one\r\n# c\nhttps://h.test/i.jpg\n")
    elif name.endswith(".csv"):
        path.write_text('url,caption,license\nhttps://h.test/a.webm,"x, ""y""",cc\n')
    else:
        (tmp_path / "videos").mkdir()
        (tmp_path / "videos" / "video0.mp4").write_bytes(b"x")
        upload(s3_bucket, "m/videos/video0.mp4", str(tmp_path / "videos" / "video0.mp4"))
        path.write_text(json.dumps({"videos": [{"video_id": "video0"}, {"video_id": "video1"}],
                                    "sentences": [{"sen_id": 0, "video_id": "video0", "caption": "c"}]}))
    remote = upload(s3_bucket, f"m/{name}", str(path))
    local_rows = [r for chunk in sources.read(source, str(path)) for r in chunk]
    remote_rows = [r for chunk in sources.read(source, remote) for r in chunk]
    if source == "msrvtt":  # the video's path is where it lives
        assert [r["path"] for r in remote_rows] == [f"{s3_bucket}/m/videos/video0.mp4", None]
        for r in local_rows + remote_rows:
            r.pop("path")
            r["input_error"] = (r["input_error"] or "").split(" not found")[0]
    assert remote_rows == local_rows and len(local_rows) >= 1
    assert storage.exists(remote)
