"""split_shard (no Ray): clips frame-exact and within shots, captions carried, failures as one row per parent,
images and failed rows passed through."""

from __future__ import annotations

import numpy as np
import pytest
from split_dataset import make_dataset

from curate.config import ConfigError
from curate.split.options import SplitSection
from curate.media.video_frames import decode, decode_frames
from curate.shards import reader
from curate.split import synthetic
from curate.split.stage import clip_key, split_shard



def _nearest(frame: np.ndarray, source: np.ndarray, around: int) -> int:
    """The source frame index near `around` that `frame` is closest to (mean absolute error)."""
    near = [i for i in range(around - 2, around + 3) if 0 <= i < len(source)]
    return min(near, key=lambda i: np.abs(frame.astype(np.int16) - source[i].astype(np.int16)).mean())


@pytest.fixture(scope="module")
def split_out(edited, tmp_path_factory):
    path, video = edited
    root = tmp_path_factory.mktemp("split")
    truncated = root / "truncated.mp4"
    data = open(path, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    image = root / "still.jpg"
    from PIL import Image

    Image.fromarray(video.frames[0]).save(image)
    facts = {"fps": 12.0, "num_frames": len(video.frames), "width": 64, "height": 48, "codec": "h264"}
    make_dataset(str(root / "in"), [[("edited", path, "a cat"), ("gone", None, "lost")],
                                    [("truncated", str(truncated), "half", facts), ("garbage", path, None,
                                                                                    dict(facts, num_frames=500))],
                                    [("still", str(image), "an image")]])
    section = SplitSection(detector="content", min_clip=1.0)
    out = str(root / "out")
    stats = [split_shard(str(root / "in"), out, sid, section) for sid in ("00000", "00001", "00002")]
    rows = {sid: reader.manifest_rows(out, sid, status=None) for sid in ("00000", "00001", "00002")}
    return out, rows, stats, video, path


def test_clips_are_frame_exact_single_shots_with_the_parent_caption(split_out):
    out, rows, _, video, path = split_out
    clips = [r for r in rows["00000"] if r["status"] == "success"]
    assert len(clips) >= 2
    windows = [(r["window_start_frame"], r["window_end_frame"]) for r in clips]
    assert synthetic.crossings(windows, video.transitions) == 0
    source = decode_frames(path, lambda n: list(range(n)))
    media = {s.key: s.media for s in reader.samples(out, "00000")}
    for row in clips:
        start, end = row["window_start_frame"], row["window_end_frame"]
        assert row["key"] == clip_key("edited", start, end) and row["parent_key"] == "edited"
        assert row["caption"] == "a cat" and row["caption_source"] == "parent" and row["detector"] == "content"
        assert row["window_start"] == pytest.approx(start / 12.0) and row["window_end"] == pytest.approx(end / 12.0)
        clip = decode(media[row["key"]], lambda n: list(range(n)))
        assert clip.count == end - start == row["num_frames"]
    fast = decode_frames(media[clips[0]["key"]], lambda n: [0, n - 1])  # the fast pan: frames tell apart
    start, end = clips[0]["window_start_frame"], clips[0]["window_end_frame"]
    assert _nearest(fast[0], source, start) == start and _nearest(fast[1], source, end - 1) == end - 1
    static = [r["static"] for r in clips]
    assert static[-1] and not static[0]  # the last shot holds still, the first pans


def test_failed_rows_pass_through_and_bad_videos_are_one_row_each(split_out):
    _, rows, _, _, _ = split_out
    gone = [r for r in rows["00000"] if r["key"] == "gone"]
    assert [(r["status"], r["error_reason"]) for r in gone] == [("failed_to_download", "http_404")]
    bad = {r["key"]: (r["status"], r["error_reason"], r["parent_key"]) for r in rows["00001"]}
    assert bad == {"truncated": ("failed_to_decode", "corrupt", "truncated"),
                   "garbage": ("failed_to_decode", "corrupt", "garbage")}


def test_images_pass_through(split_out):
    out, rows, _, _, _ = split_out
    (row,) = rows["00002"]
    assert row["key"] == "still" and row["status"] == "success" and row["caption_source"] is None
    assert next(reader.samples(out, "00002")).extension == "jpg"


def test_bad_settings_name_the_choices():
    with pytest.raises(ConfigError, match="transnetv2, content, adaptive, source"):
        SplitSection(detector="magic")
    with pytest.raises(ConfigError, match="exact, keyframe"):
        SplitSection(cut="fast")
    with pytest.raises(ConfigError, match="max_side needs cut: exact"):
        SplitSection(cut="keyframe", max_side=64)


def test_kill_then_rerun_gives_every_clip_once(edited, tmp_path):
    """SIGKILL `curate split` after its first shard landed, rerun the same command: each shard's clips once, as
    an uninterrupted split gives them; a bad setting is exit 2 naming the choices."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path, _ = edited
    make_dataset(str(tmp_path / "in"), [[(f"v{i}", path, f"caption {i}")] for i in range(4)])
    reference = tmp_path / "reference"
    section = SplitSection(detector="content", min_clip=1.0)
    split_shard(str(tmp_path / "in"), str(reference), "00000", section)
    windows = [k.removeprefix("v0") for k in (r["key"] for r in reader.manifest_rows(str(reference), "00000"))]
    out = tmp_path / "clips"
    cmd = [sys.executable, "-m", "curate.cli", "split", str(tmp_path / "in"), "--out", str(out),
           "--detector", "content", "--min-clip", "1"]
    from typer.testing import CliRunner

    from curate.cli import app

    bad = CliRunner().invoke(app, cmd[3:-4] + ["--detector", "magic"])
    assert bad.exit_code == 2 and "transnetv2, content, adaptive, source" in bad.output
    env = dict(os.environ, CURATE_RAY_NUM_CPUS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("shards/*.parquet")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(list(out.glob("shards/*.parquet"))) < 4
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    keys = [r["key"] for r in reader.success_rows(str(out))]
    assert sorted(keys) == sorted(f"v{i}{w}" for i in range(4) for w in windows)
    assert reader.manifest_rows(str(out), "00003")[0]["caption"] == "caption 3"


def test_source_windows_are_cut_with_their_own_captions(edited, tmp_path):
    """--detector source: a whole video's extra.windows (as download panda70m --whole-videos keeps them)."""
    import json

    path, _ = edited
    extra = json.dumps({"windows": [[0.5, 2.0, "first", 0.5], [3.0, 4.5, "second", 0.25]]})
    facts = {"fps": 12.0, "num_frames": 90, "width": 64, "height": 48, "codec": "h264", "extra": extra}
    make_dataset(str(tmp_path / "in"), [[("panda_x", path, "", facts), ("plain", path, "whole")]])
    split_shard(str(tmp_path / "in"), str(tmp_path / "out"), "00000", SplitSection(detector="source"))
    rows = reader.manifest_rows(str(tmp_path / "out"), "00000", status=None)
    got = [(r["key"], r["status"], r["caption"], r["caption_source"], r["matching_score"], r["num_frames"])
           for r in rows]
    assert got == [("panda_x_0000006_0000024", "success", "first", "window", 0.5, 18),
                   ("panda_x_0000036_0000054", "success", "second", "window", 0.25, 18),
                   ("plain", "no_clips", "whole", None, None, 90)]
    keyframe = str(tmp_path / "keyframe")
    split_shard(str(tmp_path / "in"), keyframe, "00000", SplitSection(detector="source", cut="keyframe"))
    copies = reader.manifest_rows(keyframe, "00000")
    # a stream copy starts at the keyframe at or before the window (here the first frame): never later, never short
    assert [r["key"] for r in copies] == [g[0] for g in got[:2]] and all(r["num_frames"] >= 18 for r in copies)


def test_clip_keys_are_stable_and_fit_a_tar_member_name():
    assert clip_key("panda_x", 6, 24) == "panda_x_0000006_0000024"
    long = "k" * 120
    assert clip_key(long, 0, 5) == clip_key(long, 0, 5) != clip_key(long, 0, 6)
    assert len(clip_key(long, 0, 5)) <= 128
