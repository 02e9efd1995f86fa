"""cut_clip: frame-exact windows (first and last frame are the source's frames at the window, not a neighbour's)."""

from __future__ import annotations

import numpy as np
import pytest

from curate.media.transcode import write_mp4
from curate.media.cut import cut_clip
from curate.media.transcode import TranscodeError
from curate.media.video_frames import decode, decode_frames

FPS, FRAMES = 24, 90


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[str, np.ndarray]:
    """A 90-frame 24 fps clip where every frame is its own smooth random pattern (survives H.264, unlike its
    neighbours); returns the path and its decoded frames."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (FRAMES, 6, 8, 3), dtype=np.uint8)
    frames = [np.kron(f, np.ones((8, 8, 1), dtype=np.uint8))for f in coarse]
    path = str(tmp_path_factory.mktemp("cut") / "src.mp4")
    write_mp4(path, [np.ascontiguousarray(f) for f in frames], fps=FPS, crf=16)
    return path, decode_frames(path, lambda n: list(range(n)))


def _nearest(frame: np.ndarray, decoded: np.ndarray, around: int) -> int:
    """The source index in around-2..around+2 whose frame `frame` matches best."""
    candidates = [i for i in range(around - 2, around + 3) if 0 <= i < len(decoded)]
    return max(candidates, key=lambda i: _psnr(frame, decoded[i]))


@pytest.mark.parametrize("start,end", [(0, 10), (37, 61), (80, 90), (45, 46)])
def test_exact_cut_has_the_window_frames(source, tmp_path, start, end):
    path, decoded = source
    dst = str(tmp_path / "clip.mp4")
    cut_clip(path, start, end, dst, fps=FPS)
    clip = decode(dst, lambda n: list(range(n)))
    assert clip.count == end - start
    assert clip.frames.shape[1:] == (48, 64, 3)  # source size kept
    assert _nearest(clip.frames[0], decoded, start) == start
    assert _nearest(clip.frames[-1], decoded, end - 1) == end - 1
    assert _psnr(clip.frames[0], decoded[start]) > 30


def test_max_side_scales(source, tmp_path):
    path, _ = source
    dst = str(tmp_path / "small.mp4")
    cut_clip(path, 5, 15, dst, fps=FPS, max_side=32)
    clip = decode(dst, lambda n: [0])
    assert clip.count == 10 and max(clip.frames.shape[1:3]) <= 32


def test_keyframe_copy_starts_at_or_before_the_window(source, tmp_path):
    path, decoded = source
    dst = str(tmp_path / "copy.mp4")
    cut_clip(path, 0, 30, dst, fps=FPS, mode="keyframe")
    clip = decode(dst, lambda n: [0])
    assert 28 <= clip.count <= 32
    assert _nearest(clip.frames[0], decoded, 0) == 0


def test_bad_window_mode_and_source(source, tmp_path):
    path, _ = source
    with pytest.raises(ValueError, match="mode must be one of exact, keyframe"):
        cut_clip(path, 0, 5, str(tmp_path / "x.mp4"), fps=FPS, mode="fast")
    with pytest.raises(ValueError, match="bad window"):
        cut_clip(path, 5, 5, str(tmp_path / "x.mp4"), fps=FPS)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(TranscodeError):
        cut_clip(str(broken), 0, 5, str(tmp_path / "x.mp4"), fps=FPS)


@pytest.mark.parametrize("name", ["pyav_8", "ffmpeg_8"])
def test_exact_cut_of_b_frame_clips(b_frame_clips, tmp_path, name):
    """Clips written the toolkit's ways (B-frames; PyAV's start offset): the window is still exact."""
    path, count = b_frame_clips[name]
    decoded = decode(path, lambda n: list(range(n)))
    dst = str(tmp_path / "clip.mp4")
    cut_clip(path, 3, 6, dst, fps=decoded.fps)
    clip = decode_frames(dst, lambda n: list(range(n)))
    assert len(clip) == 3
    assert _nearest(clip[0], decoded.frames, 3) == 3 and _nearest(clip[-1], decoded.frames, 5) == 5
