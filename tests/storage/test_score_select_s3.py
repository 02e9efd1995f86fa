"""score, dedup, select, stats, query and report with the dataset folder in S3 (moto on 127.0.0.1): the same values,
the same kept keys and the same query answers as the same steps on a local copy; resume, refusal and --force as
locally; nothing written outside the dataset and output prefixes."""

from __future__ import annotations

import os
import shutil

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from curate import storage
from curate.config import SelectSection
from curate.provenance import ProvenanceMismatch
from curate.pipeline import score
from curate.selection import select
from curate import report
from curate.stats.query import QueryError, column_sources, connect, run
from curate.stats.summary import summarize

# video_003 is static; video_000 twice under two URLs (an exact duplicate: the server ignores the query); one 404
NAMES = ["video_000.mp4", "video_003.mp4", "image_000.jpg", "video_001.mp4", "video_000.mp4?copy=2", "image_001.jpg",
         "broken_missing.mp4"]
SCORERS = ["clip", "aesthetic", "motion", "quality", "dedup"]
WHERE = "(modality = 'image' OR motion_score > 1.0) AND exact_duplicate_of IS NULL"
SECTION = SelectSection(where=WHERE, video_size=(32, 32), image_size=(32, 32), max_frames=8)
QUERY = ("SELECT key, status, modality, motion_score, sharpness, clip_score, aesthetic_score, exact_duplicate_of, "
         "near_duplicate_of FROM samples ORDER BY key")


def bucket_of(url: str) -> str:
    return url[len("s3://"):].split("/", 1)[0]


def objects(bucket_url: str) -> dict[str, str]:
    """Every object of the bucket: key -> ETag, listed with boto3 (not through our code)."""
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket_of(bucket_url))
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def upload_folder(local: str, url: str) -> None:
    s3, bucket = boto3.client("s3"), bucket_of(url)
    prefix = url[len("s3://"):].split("/", 1)[1]
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            s3.upload_file(path, bucket, f"{prefix}/{os.path.relpath(path, local)}")


@pytest.fixture(scope="module")
def downloaded(media_server, tmp_path_factory, ray_local):
    """A small dataset folder downloaded once from the loopback media server (3 shards, one row a 404)."""
    from curate.download.http import FetchPolicy
    from curate.download.shard import DownloadOptions
    from curate.download.stage import download

    base = tmp_path_factory.mktemp("downloaded")
    urls = base / "urls.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}\tcaption of {n}\n" for n in NAMES))
    download("urls", str(urls), str(base / "ds"), shard_size=3,
             options=DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0, read_timeout=3)))
    return str(base / "ds")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny randomly initialised CLIP saved as open_clip saves a model folder, and an aesthetic MLP of the
    LAION predictor's layout: the real loading code runs (as in tests/scoring)."""
    from tiny_clip import random_folder

    folder = random_folder(tmp_path_factory.mktemp("models"))
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                              torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                              torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
    weights = folder / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, weights)
    return {"clip_model": str(folder), "aesthetic_model": str(weights), "aesthetic_clip_model": str(folder),
            "aesthetic_custom_clip": True}


def rows_close(a: list[dict], b: list[dict]) -> None:
    """Equal rows; floats to 1e-5 (the actor pool may batch samples of several shards differently)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], (float, list)):
                np.testing.assert_allclose(y[k], x[k], rtol=1e-5, atol=1e-6, err_msg=k)
            else:
                assert x[k] == y[k], k


def score_tables(root: str) -> dict[str, list[dict]]:
    """scores/<scorer>/<sid>.parquet and embeddings/<sid>.parquet, relative name -> rows."""
    names = storage.glob(storage.join(root, "scores", "*", "*.parquet")) + storage.glob(
        storage.join(root, "embeddings", "*.parquet"))
    return {n[len(root) + 1:]: storage.read_table(n).to_pylist() for n in names}


def test_score_select_query_report_on_s3_equal_local(downloaded, models, s3_bucket, tmp_path):
    local, remote = str(tmp_path / "ds"), f"{s3_bucket}/ds"
    shutil.copytree(downloaded, local)
    upload_folder(downloaded, remote)
    uploaded = objects(s3_bucket)

    here = score(local, SCORERS, batch_size=4, **models)
    there = score(remote, SCORERS, batch_size=4, **models)
    assert here == there and there["scored_shards"] == 3 and there["duplicates_flagged"] >= 1
    ours, theirs = score_tables(local), score_tables(remote)
    assert sorted(theirs) == sorted(ours)
    assert {"scores/clip/00000.parquet", "scores/dedup/all.parquet", "embeddings/00001.parquet"} <= set(ours)
    for name in ours:
        rows_close(ours[name], theirs[name])
    # each score table records the content digest of the manifest rows it scored, in S3 as locally
    for name in ("scores/motion/00000.parquet", "scores/clip/00002.parquet"):
        local_meta = pq.read_schema(os.path.join(local, name)).metadata[b"curate.content"]
        assert storage.read_schema(f"{remote}/{name}").metadata[b"curate.content"] == local_meta

    # stats, query, column sources: the same answers from S3 as from the local folder
    rows_close(run(connect(local), QUERY).to_pylist(), run(connect(remote), QUERY).to_pylist())
    remote_rows = {r["key"]: r for r in run(connect(remote), QUERY).to_pylist()}
    assert len(remote_rows) == len(NAMES) and sum(r["status"] == "success" for r in remote_rows.values()) == 6
    assert sum(r["exact_duplicate_of"] is not None for r in remote_rows.values()) == 1
    assert all(r["clip_score"] is not None for r in remote_rows.values() if r["status"] == "success")
    assert summarize(remote) == summarize(local)
    assert column_sources(connect(remote))["motion_score"] == "scores/motion"
    with pytest.raises(QueryError):  # the session reads only inside the dataset prefix, in S3 as locally
        run(connect(remote), f"SELECT * FROM read_parquet('{s3_bucket}/elsewhere.parquet')")

    # rerun: everything skipped, no object rewritten
    before = objects(s3_bucket)
    again = score(remote, SCORERS, batch_size=4, **models)
    assert again["scored_shards"] == 0 and again["skipped_shards"] == 3
    after = objects(s3_bucket)
    assert {k: v for k, v in after.items() if not k.endswith("_provenance.json")} == \
        {k: v for k, v in before.items() if not k.endswith("_provenance.json")}

    # select: the same kept keys and the same re-encoded geometry; the out folder in S3 too
    kept_here = select(local, str(tmp_path / "sel"), SECTION)
    kept_there = select(remote, f"{s3_bucket}/sel", SECTION)
    assert kept_here["kept"] == kept_there["kept"] >= 3 and kept_here["shards"] == kept_there["shards"]
    pick = "SELECT key, modality, width, height, num_frames, status FROM samples ORDER BY key"
    selected = run(connect(f"{s3_bucket}/sel"), pick).to_pylist()
    assert selected == run(connect(str(tmp_path / "sel")), pick).to_pylist()
    assert {(r["width"], r["height"]) for r in selected} == {(32, 32)}
    assert all(r["status"] == "success" for r in selected)
    expected = {k for k, r in remote_rows.items() if r["status"] == "success" and r["exact_duplicate_of"] is None
                and (r["modality"] == "image" or (r["motion_score"] or 0) > 1.0)}
    assert {r["key"] for r in selected} == expected
    assert select(remote, f"{s3_bucket}/sel", SECTION)["kept"] == kept_there["kept"]  # resumed: nothing to do

    # report: the same counts, thumbnails read from the tars in S3, the page published to S3
    report.write(remote, f"{s3_bucket}/reports/ds.html", WHERE)
    page = storage.read_bytes(f"{s3_bucket}/reports/ds.html").decode()
    assert page.count("data:image/png;base64,") == report.build(local, WHERE).count("data:image/png;base64,") > 5

    written = set(objects(s3_bucket)) - set(uploaded)
    assert written and all(k.startswith(("ds/scores/", "ds/embeddings/", "sel/", "reports/")) for k in written), written
    assert not [k for k in written if ".tmp" in k or "/." in k]  # no temporary object ever published
    assert {k for k in written if k.startswith("sel/")} >= {"sel/provenance.json", "sel/shards/00000.parquet"}


def test_resume_content_digest_refusal_and_force_on_s3(downloaded, s3_bucket, tmp_path):
    remote = f"{s3_bucket}/ds"
    upload_folder(downloaded, remote)
    assert score(remote, ["motion", "quality"], batch_size=4)["scored_shards"] == 3
    reference = score_tables(remote)

    # a crash before a shard's table was uploaded: the rerun scores exactly that shard, to the same values
    storage.remove(f"{remote}/scores/motion/00001.parquet")
    resumed = score(remote, ["motion", "quality"], batch_size=4)
    assert resumed["scored_shards"] == 1 and resumed["skipped_shards"] == 2
    rows_close(score_tables(remote)["scores/motion/00001.parquet"], reference["scores/motion/00001.parquet"])

    # a shard whose success rows changed (as retry-failed does) is scored again, by its content digest
    manifest = storage.read_table(f"{remote}/shards/00002.parquet")
    status = manifest.column("status").to_pylist()
    status[status.index("success")] = "failed_to_decode"
    column = manifest.schema.get_field_index("status")
    storage.write_table(manifest.set_column(column, manifest.schema.field(column), pa.array(status, pa.string())),
                        f"{remote}/shards/00002.parquet")
    changed = score(remote, ["motion"], batch_size=4)
    assert changed["scored_shards"] == 1 and changed["skipped_shards"] == 2
    assert len(storage.read_table(f"{remote}/scores/motion/00002.parquet")) == \
        len(reference["scores/motion/00002.parquet"]) - 1

    # other settings: refused, whatever else is asked; --force starts that scorer over
    with pytest.raises(ProvenanceMismatch):
        score(remote, ["motion"], frames=5)
    forced = score(remote, ["motion"], frames=5, force=True)
    assert forced["scored_shards"] == 3
    assert storage.read_json(f"{remote}/scores/motion/_provenance.json")["config"]["frames"] == 5
    assert storage.exists(f"{remote}/scores/quality/00000.parquet")  # quality left alone
    assert all(k.startswith("ds/") for k in objects(s3_bucket))
