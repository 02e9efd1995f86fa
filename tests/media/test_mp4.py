import os
import struct
import subprocess

import pytest

from curate.media.mp4 import MAX_TOP_LEVEL_BOXES, probe_mp4
from curate.media.probe import ProbeError, probe_video_unsafe

CAP = 8192 * 8192


def faststart(src, dest):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c", "copy", "-movflags", "+faststart", str(dest)],
                   check=True)
    return dest


@pytest.mark.parametrize("layout", ["as written", "faststart"])
def test_same_facts_as_the_pyav_probe(demo_media, tmp_path, layout):
    for name in sorted(n for n in os.listdir(demo_media[0]) if n.startswith("video_")):
        path = os.path.join(demo_media[0], name)
        if layout == "faststart":
            path = str(faststart(path, tmp_path / name))
        assert probe_mp4(path, CAP) == probe_video_unsafe(path, CAP, decode_check=False), name


@pytest.mark.parametrize("layout", ["as written", "faststart"])
def test_truncated_files_are_corrupt(demo_media, tmp_path, layout):
    path = os.path.join(demo_media[0], "video_000.mp4")
    if layout == "faststart":
        path = str(faststart(path, tmp_path / "fast.mp4"))
    data = open(path, "rb").read()
    for keep in (len(data) - 1, len(data) * 2 // 3, 700):
        cut = tmp_path / "cut.mp4"
        cut.write_bytes(data[:keep])
        with pytest.raises(ProbeError) as info:
            probe_mp4(str(cut), CAP)
        assert info.value.reason == "corrupt"


def test_last_samples_missing_is_corrupt_even_when_boxes_add_up(demo_media, tmp_path):
    """A faststart file whose mdat box was shortened consistently: only the sample tables show the loss."""
    data = bytearray(open(faststart(os.path.join(demo_media[0], "video_000.mp4"), tmp_path / "f.mp4"), "rb").read())
    mdat = data.index(b"mdat") - 4
    size = struct.unpack_from(">I", data, mdat)[0]
    struct.pack_into(">I", data, mdat, size - 1000)
    short = tmp_path / "short.mp4"
    short.write_bytes(bytes(data[: mdat + size - 1000]))
    with pytest.raises(ProbeError, match="last frames are missing"):
        probe_mp4(str(short), CAP)


def test_huge_dimensions_hit_the_pixel_cap(demo_media, tmp_path):
    data = bytearray(open(os.path.join(demo_media[0], "video_000.mp4"), "rb").read())
    entry = data.index(b"stsd") + 12  # the first sample entry
    assert data[entry + 4:entry + 8] == b"avc1"
    struct.pack_into(">HH", data, entry + 32, 40000, 40000)
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(data))
    with pytest.raises(ProbeError) as info:
        probe_mp4(str(big), CAP)
    assert info.value.reason == "pixel_cap"


def test_what_it_cannot_read_goes_to_pyav(demo_media, tmp_path):
    """None means: ask the isolated PyAV probe (not an MP4, a fragmented one, an unknown codec, too many boxes)."""
    src = os.path.join(demo_media[0], "video_000.mp4")
    cases = {}
    cases["webm"] = tmp_path / "v.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c:v", "libvpx", "-b:v", "100k", str(cases["webm"])],
                   check=True)
    cases["fragmented"] = tmp_path / "frag.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c", "copy", "-movflags", "frag_keyframe+empty_moov",
                    str(cases["fragmented"])], check=True)
    cases["unknown codec"] = tmp_path / "mjpeg.mp4"
    data = bytearray(open(src, "rb").read())
    entry = data.index(b"stsd") + 12
    data[entry + 4:entry + 8] = b"zzzz"
    cases["unknown codec"].write_bytes(bytes(data))
    cases["many boxes"] = tmp_path / "free.mp4"
    ftyp = struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0)
    cases["many boxes"].write_bytes(ftyp + struct.pack(">I4s", 8, b"free") * (MAX_TOP_LEVEL_BOXES + 5))
    cases["empty"] = tmp_path / "empty.mp4"
    cases["empty"].write_bytes(b"")
    assert {name: probe_mp4(str(path), CAP) for name, path in cases.items()} == dict.fromkeys(cases)


def test_index_shorter_than_it_claims_is_corrupt(demo_media, tmp_path):
    data = bytearray(open(os.path.join(demo_media[0], "video_000.mp4"), "rb").read())
    stsz = data.index(b"stsz")
    struct.pack_into(">I", data, stsz + 12, 10**9)  # sample_count far beyond the box
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(ProbeError) as info:
        probe_mp4(str(bad), CAP)
    assert info.value.reason == "corrupt"


def test_rate_of_short_b_frame_clips_matches_ffprobe(b_frame_clips):
    """Rate and duration come from the samples' own durations (stts), as ffprobe's avg_frame_rate does: the
    media header's duration of PyAV's 4-frame clip also counts the B-frames' display offsets (0.625 s at
    8 fps, which read as 6.4 fps)."""
    from ffprobe_facts import ffprobe_stream

    header_seconds = {}
    for name, (path, frames) in b_frame_clips.items():
        facts = ffprobe_stream(path)
        info = probe_mp4(path, CAP)
        assert info.num_frames == facts["nb_frames"] == frames, name
        assert info.fps == float(facts["avg_frame_rate"]) == float(facts["r_frame_rate"]) == 8.0, name
        assert info.duration == pytest.approx(facts["duration"], abs=1e-6), name
        assert info == probe_video_unsafe(path, CAP, decode_check=False), name
        data = open(path, "rb").read()
        mdhd = data.index(b"mdhd") + 4
        timescale, duration = struct.unpack_from(">II", data, mdhd + 12)
        header_seconds[name] = duration / timescale
    assert header_seconds["pyav_4"] == 0.625  # the case under test: the header alone says 6.4 fps
