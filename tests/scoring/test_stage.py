"""The score stage on local Ray: every success sample scored once, failures as rows, resume, dedup, CLIP path."""

import os
import shutil
import sys
from dataclasses import dataclass

import duckdb
import pytest
import torch
from ray import cloudpickle

from curate.pipeline import score
from curate.scoring import registry
from curate.config import SelectSection
from curate.selection import select
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter
from curate.stage import Stage
from curate.stats.query import connect, run


def build_dataset(root, media_dir, names_by_shard):
    """A dataset folder written directly (no download): each name is a file of the demo corpus stored as
    a success row, so a broken file reaches the scorers the way a decoder-hostile file would."""
    folder = DatasetFolder(str(root))
    n = 0
    for sid, names in names_by_shard.items():
        writer = ShardWriter(folder, sid)
        for name in names:
            video = name.endswith(".mp4")
            path = os.path.join(media_dir, name)
            writer.add({"key": f"k{n:03d}", "row": n, "source": "urls", "modality": "video" if video else "image",
                        "caption": f"a red circle {n}", "status": "success", "sha256": name, "extra": "{}"},
                       path, "mp4" if video else "jpg")
            n += 1
        writer.add({"key": f"k{n:03d}", "row": n, "source": "urls", "modality": "video", "caption": "gone",
                    "status": "failed_to_download", "error_reason": "http_404", "extra": "{}"})
        n += 1
        writer.close()
    return str(root)


SHARDS = {"00000": ["video_000.mp4", "video_003.mp4", "broken_corrupt.mp4", "image_000.jpg"],
          "00001": ["video_001.mp4", "video_000.mp4", "image_001.jpg"]}


def scores_of(root):
    return {r["key"]: r for r in run(connect(root), "SELECT * FROM samples ORDER BY row").to_pylist()}


def test_weight_free_scores_dedup_and_resume(ray_local, demo_media, tmp_path):
    root = build_dataset(tmp_path / "ds", demo_media[0], SHARDS)
    summary = score(root, ["motion", "quality", "dedup"], batch_size=3)
    assert summary["scored_shards"] == 2 and summary["scorers"] == ["motion", "quality"]
    rows = scores_of(root)
    assert len(rows) == 9
    static, moving = rows["k001"], rows["k000"]  # video_003 is the demo's static clip
    assert static["motion_score"] == pytest.approx(0.0, abs=0.05) and static["static_frame_fraction"] == 1.0
    assert moving["motion_score"] > 1.0
    corrupt = rows["k002"]
    assert corrupt["motion_score"] is None and "decod" in corrupt["motion_score_error"].lower()
    assert rows["k003"]["motion_score"] is None and rows["k003"]["sharpness"] > 0  # image: no motion
    assert rows["k004"]["motion_score"] is None and rows["k004"]["motion_score_error"] is None  # failed row: not scored
    assert rows["k006"]["exact_duplicate_of"] == "k000"  # same file (sha256) in another shard
    for scorer in ("motion", "quality"):  # one folder per scorer, each sample once
        scored = duckdb.sql(f"SELECT key FROM read_parquet('{root}/scores/{scorer}/*.parquet')").fetchall()
        assert len(scored) == len({k for (k,) in scored}) == 7

    # a crash mid-shard leaves only a temporary file: the rerun redoes exactly that shard
    out = os.path.join(root, "scores", "motion")
    os.replace(os.path.join(out, "00001.parquet"), os.path.join(out, ".00001.parquet.tmp"))
    again = score(root, ["motion", "quality"])
    assert again["scored_shards"] == 1 and again["skipped_shards"] == 1
    assert not os.path.exists(os.path.join(out, ".00001.parquet.tmp"))  # the killed run's temporary is swept
    assert scores_of(root)["k005"]["motion_score"] == rows["k005"]["motion_score"]
    with pytest.raises(Exception, match="configuration differs"):
        score(root, ["motion", "quality"], frames=5)


def test_selection_count_equals_duckdb_count(ray_local, demo_media, tmp_path):
    root = build_dataset(tmp_path / "ds", demo_media[0], SHARDS)
    score(root, ["motion", "quality"])
    where = "(modality = 'image' OR motion_score > 1.0) AND sharpness > 1"
    (expected,) = connect(root).execute(f"SELECT count(*) FROM samples WHERE status = 'success' AND {where}").fetchone()
    summary = select(root, str(tmp_path / "sel"), SelectSection(where=where, video_size=(48, 32), image_size=(32, 32),
                                                             max_frames=8))
    assert summary["kept"] == expected >= 3
    out = run(connect(str(tmp_path / "sel")), "SELECT * FROM samples").to_pylist()
    assert len(out) == expected and all(r["status"] == "success" for r in out)
    videos = [r for r in out if r["modality"] == "video"]
    assert {(r["width"], r["height"], r["num_frames"]) for r in videos} == {(48, 32, 8)}
    assert {(r["width"], r["height"]) for r in out if r["modality"] == "image"} == {(32, 32)}
    top = select(root, str(tmp_path / "top"), SelectSection(where="TRUE", top=0.5, by="sharpness"))
    assert top["kept"] == 4  # ceil(0.5 * 7)


def test_clip_and_aesthetic_through_the_real_loading_path(ray_local, demo_media, tmp_path, tiny_clip_dir):
    root = build_dataset(tmp_path / "ds", demo_media[0], {"00000": ["video_000.mp4", "image_000.jpg"]})
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                              torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                              torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
    weights = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, weights)
    summary = score(root, ["clip", "aesthetic", "dedup"], clip_model=str(tiny_clip_dir), aesthetic_model=str(weights),
                    aesthetic_clip_model=str(tiny_clip_dir), aesthetic_custom_clip=True)
    assert summary["scored_shards"] == 1
    rows = scores_of(root)
    for key in ("k000", "k001"):
        assert -1 <= rows[key]["clip_score"] <= 1 and rows[key]["aesthetic_score"] is not None
        assert rows[key]["clip_score_error"] is None and rows[key]["aesthetic_score_error"] is None
    assert os.path.exists(os.path.join(root, "embeddings", "00000.parquet"))
    shutil.rmtree(os.path.join(root, "scores", "aesthetic"))
    with pytest.raises(FileNotFoundError):
        score(root, ["aesthetic"], aesthetic_clip_model=str(tiny_clip_dir), aesthetic_custom_clip=True,
              aesthetic_model=str(tmp_path / "missing.pth"))


def test_resume_after_kill_scores_every_key_once(demo_media, ray_address, tmp_path):
    """SIGKILL `curate score` once its first shard landed, rerun it: every success key scored exactly once. Both
    runs drive the session's Ray (weight-free scorers run as tasks): the kill takes the driver, Ray ends its job."""
    import signal
    import subprocess
    import sys
    import time

    names = ["video_000.mp4", "video_001.mp4", "video_002.mp4", "image_000.jpg"]
    root = build_dataset(tmp_path / "ds", demo_media[0], {f"{i:05d}": names for i in range(12)})
    cmd = [sys.executable, "-m", "curate.cli", "score", root, "--scorers", "motion,quality", "--batch-size", "1",
           "--ray-address", ray_address]
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, start_new_session=True)
    out = os.path.join(root, "scores", "motion")
    landed = lambda: os.path.isdir(out) and any(n.endswith(".parquet") for n in os.listdir(out))  # noqa: E731
    deadline = time.time() + 300  # seconds on an idle machine; minutes when it is shared
    while time.time() < deadline and not landed() and proc.poll() is None:
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert landed(), log.read_text()[-3000:]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    keys = [k for (k,) in duckdb.sql(f"SELECT key FROM read_parquet('{out}/*.parquet')").fetchall()]
    assert len(keys) == len(set(keys)) == 12 * len(names)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left behind


def test_rows_that_become_successes_are_scored_by_the_next_run(ray_local, media_server, demo_media, tmp_path):
    """download -> score -> retry-failed turns a failure into a success -> score again scores exactly that shard."""
    from curate.download.http import FetchPolicy
    from curate.download.shard import DownloadOptions
    from curate.download.retry import retry_failed
    from curate.download.stage import download

    late = "late_arrival_score.mp4"
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}\tcaption {n}\n" for n in ["video_000.mp4", "video_001.mp4", late]))
    out = str(tmp_path / "ds")
    download("urls", str(urls), out, shard_size=2,
             options=DownloadOptions(fetch=FetchPolicy(allow_private_addresses=True, retries=0, read_timeout=3)))
    first = score(out, ["motion"])
    assert first["scored_shards"] == 2
    before = scores_of(out)
    late_key = next(k for k, r in before.items() if r["url"].endswith(late))
    assert before[late_key]["status"] == "failed_to_download" and before[late_key]["motion_score"] is None
    shutil.copy(os.path.join(demo_media[0], "video_002.mp4"), os.path.join(demo_media[0], late))
    try:
        assert not retry_failed(out)["failed_shards"]
    finally:
        os.remove(os.path.join(demo_media[0], late))
    again = score(out, ["motion"])
    assert again["scored_shards"] == 1 and again["skipped_shards"] == 1
    after = scores_of(out)
    assert after[late_key]["status"] == "success" and after[late_key]["motion_score"] > 1.0
    assert score(out, ["motion"])["scored_shards"] == 0


def test_a_column_has_one_home_and_the_newer_run_wins_visibly(ray_local, demo_media, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.provenance import ProvenanceMismatch
    from curate.stats.query import column_sources

    root = build_dataset(tmp_path / "ds", demo_media[0], {"00000": ["video_000.mp4", "image_000.jpg"]})
    score(root, ["motion", "quality"])
    score(root, ["quality"])  # asking again for a scorer already done: nothing rescored, nothing refused
    with pytest.raises(ProvenanceMismatch):
        score(root, ["motion"], frames=5)  # motion's settings changed: refused, whatever else is asked
    score(root, ["motion"], frames=5, force=True)
    with open(os.path.join(root, "scores", "motion", "_provenance.json")) as f:
        record = json.load(f)
    assert record["config"]["frames"] == 5 and record["columns"] == ["motion_score", "motion_score_error"]
    assert os.path.exists(os.path.join(root, "scores", "quality", "00000.parquet"))  # quality left alone
    # a folder from an older layout that also holds motion_score: the newer folder's values are the ones shown
    legacy = os.path.join(root, "scores", "motion+quality")
    os.makedirs(legacy)
    pq.write_table(pa.table({"key": ["k000"], "motion_score": pa.array([99.0], pa.float32())}),
                   os.path.join(legacy, "00000.parquet"))
    with open(os.path.join(legacy, "_provenance.json"), "w") as f:
        json.dump({"created_at": "2000-01-01T00:00:00Z"}, f)
    con = connect(root)
    assert column_sources(con)["motion_score"] == os.path.join("scores", "motion")
    assert run(con, "SELECT motion_score FROM samples WHERE key = 'k000'").to_pylist()[0]["motion_score"] != 99.0
    with open(os.path.join(legacy, "_provenance.json"), "w") as f:
        json.dump({"created_at": "2999-01-01T00:00:00Z"}, f)
    con = connect(root)
    assert column_sources(con)["motion_score"] == os.path.join("scores", "motion+quality")
    assert run(con, "SELECT motion_score FROM samples WHERE key = 'k000'").to_pylist()[0]["motion_score"] == 99.0


@dataclass
class FlagStage(Stage):
    """A dataset-wide scorer's stage: unit "b" fails; its summary has a count and a timing."""

    root: str

    name = "flags"

    @property
    def provenance_path(self):
        return os.path.join(self.root, "flags_provenance.json")

    def todo(self):
        return ["a", "b"]

    def process(self, unit):
        if unit == "b":
            raise RuntimeError("unit b broke")
        return unit

    def finish(self, done, failures):
        return {**super().finish(done, failures), "flagged": len(done), "seconds": 0.25}


SPEC = registry.ScorerSpec("flags", ("flag",), registry.DATASET, lambda root, options: FlagStage(root),
                           reports=("flagged",))


def test_a_dataset_wide_scorer_adds_what_it_reports_and_its_failed_shards(ray_local, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SCORERS, "flags", __name__)  # this module is the scorer's one file
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import a test module
    try:
        summary = score(str(tmp_path), ["flags"])
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert summary["flagged"] == 1 and "seconds" not in summary and "ran" not in summary  # only what it reports
    assert [(f["shard"], "unit b broke" in f["error"]) for f in summary["failed_shards"]] == [("b", True)]
