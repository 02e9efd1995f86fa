import os
import threading

import pytest

from curate.demo.corpus import huge_png_header
from curate.media.probe import ProbeError, ProbePool, ProbeWorker, probe_image, probe_video_unsafe


@pytest.fixture(scope="module")
def pool():
    with ProbePool(1) as p:
        yield p


def test_probe_video(demo_media, pool):
    info = pool.probe_video(os.path.join(demo_media[0], "video_000.mp4"))
    assert (info.width, info.height, info.fps, info.num_frames, info.codec) == (160, 96, 8.0, 24, "h264")
    assert info.duration == pytest.approx(3.0, abs=0.01)
    assert probe_video_unsafe(os.path.join(demo_media[0], "video_000.mp4")) == info


@pytest.mark.parametrize("name", ["broken_corrupt.mp4", "broken_truncated.mp4", "broken_empty.mp4"])
def test_broken_videos(demo_media, pool, name):
    with pytest.raises(ProbeError) as info:
        pool.probe_video(os.path.join(demo_media[0], name))
    assert info.value.reason == "corrupt"


def test_image_is_not_a_video(demo_media, pool):
    with pytest.raises(ProbeError):
        pool.probe_video(os.path.join(demo_media[0], "broken_huge.png"))


def test_pixel_cap_refuses_before_decoding(tmp_path, demo_media, pool):
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header(40000, 40000))
    with pytest.raises(ProbeError) as info:
        probe_image(str(path))
    assert info.value.reason == "pixel_cap"
    with pytest.raises(ProbeError) as info:
        pool.probe_video(os.path.join(demo_media[0], "video_000.mp4"), max_pixels=100 * 100)
    assert info.value.reason == "pixel_cap"


def test_truncated_image(tmp_path, demo_media):
    data = open(os.path.join(demo_media[0], "image_000.jpg"), "rb").read()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ProbeError) as info:
        probe_image(str(tmp_path / "t.jpg"))
    assert info.value.reason == "corrupt"
    assert probe_image(os.path.join(demo_media[0], "image_000.jpg")).codec == "jpeg"


def test_hung_or_crashed_decoder_fails_one_file_and_recovers(tmp_path, demo_media):
    """A FIFO nobody writes to blocks the decoder forever: first by timeout, then killed mid-probe.

    No budget here has to cover a child's start-up (0.7-1.4 s on a loaded machine): the hang lasts forever,
    so the short timeout fires whenever the child gets there, the probes that must succeed get a minute,
    and the kill waits until the child has really opened the FIFO, not for a fixed delay."""
    fifo = str(tmp_path / "never.mp4")
    os.mkfifo(fifo)
    good = os.path.join(demo_media[0], "video_001.mp4")
    worker = ProbeWorker(timeout=1.0)
    try:
        with pytest.raises(ProbeError) as info:
            worker.probe(fifo, 10**8)
        assert info.value.reason == "probe_timeout"
        worker._worker.timeout = 60.0  # the recovery starts a fresh child: no tight budget for that
        assert worker.probe(good, 10**8).num_frames == 24  # a fresh child took over

        def kill_once_the_child_reads_the_fifo():
            writer = os.open(fifo, os.O_WRONLY)  # returns once the child has opened the FIFO for reading
            try:
                worker._worker.kill_child()
            finally:
                os.close(writer)

        killer = threading.Thread(target=kill_once_the_child_reads_the_fifo, daemon=True)
        killer.start()
        with pytest.raises(ProbeError) as info:
            worker.probe(fifo, 10**8)
        killer.join()
        assert info.value.reason == "corrupt" and "crashed" in str(info.value)  # a crash, not the 60 s timeout
        assert worker.probe(good, 10**8).width == 160
    finally:
        worker.close()


def test_faststart_file_cut_short_after_its_header(tmp_path, demo_media, pool):
    """With the index first (faststart), the frame count comes from the header: the tail check must
    notice that the frames it promises are not in the file."""
    import subprocess

    src = os.path.join(demo_media[0], "video_000.mp4")
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c", "copy", "-movflags", "+faststart", str(fast)],
                   check=True)
    assert pool.probe_video(str(fast)).num_frames == 24
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ProbeError) as info:
        pool.probe_video(str(cut))
    assert info.value.reason == "corrupt"


def test_decode_check_catches_a_valid_index_over_broken_frames(tmp_path, demo_media, pool):
    """The container probe trusts the index (and finds every packet there); only decoding shows that the
    frame data is zeros. Download does that only with decode_check."""
    import subprocess

    src = os.path.join(demo_media[0], "video_000.mp4")
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c", "copy", "-movflags", "+faststart", str(fast)],
                   check=True)
    data = bytearray(fast.read_bytes())
    mdat = data.index(b"mdat") + 4
    data[mdat:] = bytes(len(data) - mdat)
    broken = tmp_path / "zeros.mp4"
    broken.write_bytes(bytes(data))
    assert pool.probe_video(str(broken), decode_check=False).num_frames == 24
    with pytest.raises(ProbeError) as info:
        pool.probe_video(str(broken), decode_check=True)
    assert info.value.reason == "corrupt"


def test_short_b_frame_clips_pass_the_tail_check(b_frame_clips, pool):
    """4- and 8-frame H.264 clips with B-frames: the last packet in decode order is shown early (a B-frame
    half a 4-frame clip before the end), which a presentation-time bar called truncation."""
    from ffprobe_facts import ffprobe_stream

    for name, (path, frames) in b_frame_clips.items():
        facts = ffprobe_stream(path)
        assert facts["b_frames"] > 0, name  # the case under test
        for info in (pool.probe_video(path), probe_video_unsafe(path, decode_check=False)):
            assert (info.num_frames, info.fps) == (frames, float(facts["avg_frame_rate"])), name


def _cuts(data: bytes, last_packet: int) -> dict[str, bytes]:
    return {"last byte": data[:-1], "last packet": data[:-last_packet], "a third": data[: len(data) * 2 // 3]}


def test_short_b_frame_clips_cut_short_are_corrupt(b_frame_clips, tmp_path):
    """Index first (faststart), so the header survives the cut and promises every frame; losing the last
    packet (in decode order a B-frame shown mid-clip), part of it, or a third of the file is caught."""
    import subprocess

    import av

    for name, (path, _) in b_frame_clips.items():
        fast = tmp_path / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-c", "copy", "-movflags", "+faststart",
                        str(fast)], check=True)
        with av.open(str(fast)) as container:
            packets = [p for p in container.demux(container.streams.video[0]) if p.size]
        assert packets[-1].pts < max(p.pts for p in packets), name  # the last one read is not the last shown
        for cut, data in _cuts(fast.read_bytes(), packets[-1].size).items():
            short = tmp_path / "short.mp4"
            short.write_bytes(data)
            with pytest.raises(ProbeError) as info:
                probe_video_unsafe(str(short), decode_check=False)
            assert info.value.reason == "corrupt", (name, cut)
