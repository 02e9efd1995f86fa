"""split_shard (no Ray): clips frame-exact and within shots, captions carried, failures as one row per parent,
images and failed rows passed through."""

from __future__ import annotations

import numpy as np
import pytest
from split_dataset import make_dataset

from curate.config import ConfigError, SplitSection
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
    windows = [(r["clip_start_frame"], r["clip_end_frame"]) for r in clips]
    assert synthetic.crossings(windows, video.transitions) == 0
    source = decode_frames(path, lambda n: list(range(n)))
    media = {s.key: s.media for s in reader.samples(out, "00000")}
    for row in clips:
        start, end = row["clip_start_frame"], row["clip_end_frame"]
        assert row["key"] == clip_key("edited", start, end) and row["parent_key"] == "edited"
        assert row["caption"] == "a cat" and row["caption_source"] == "parent" and row["detector"] == "content"
        assert row["clip_start_s"] == pytest.approx(start / 12.0) and row["clip_end_s"] == pytest.approx(end / 12.0)
        clip = decode(media[row["key"]], lambda n: list(range(n)))
        assert clip.count == end - start == row["num_frames"]
    fast = decode_frames(media[clips[0]["key"]], lambda n: [0, n - 1])  # the fast pan: frames tell apart
    start, end = clips[0]["clip_start_frame"], clips[0]["clip_end_frame"]
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
