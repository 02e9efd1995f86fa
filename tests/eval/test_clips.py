"""Evaluation clips decode at any width: decord where it can, PyAV where its frame copy fails (16, 48 px ...)."""

import subprocess

import numpy as np
import pytest
from synthetic_media import encode_mp4

from curate.eval.clips import decode_clip, iter_clips
from curate.scoring.frames import FrameDecodeError


def moving_bars(frames: int, height: int, width: int) -> np.ndarray:
    """Colour bars sliding one pixel a frame: every frame and every column differs."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    x = x + t
    return np.stack([(x * 37) % 256, (y * 53) % 256, ((x + y) * 11) % 256], axis=-1).astype(np.uint8)


def ffmpeg_rgb(media: bytes, height: int, width: int) -> np.ndarray:
    """Every frame as the ffmpeg binary decodes it to rgb24: the reference."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         input=media, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


@pytest.mark.parametrize("width,height", [(100, 60), (16, 16), (48, 32), (32, 32)])
def test_any_width_decodes_as_ffmpeg_does(width, height):
    media = encode_mp4(moving_bars(9, height, width))
    clip = decode_clip(media, "video", frames=4, stride=2, exact=True)
    assert clip.shape == (4, height, width, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, ffmpeg_rgb(media, height, width)[[0, 2, 4, 6]])


def test_short_and_broken_videos_are_errors_on_the_fallback_path_too():
    with pytest.raises(FrameDecodeError, match="3 frames"):
        decode_clip(encode_mp4(moving_bars(3, 16, 16)), "video", frames=4, stride=1, exact=True)
    assert decode_clip(encode_mp4(moving_bars(3, 16, 16)), "video", frames=4, stride=1, exact=False).shape[0] == 3
    with pytest.raises(FrameDecodeError):
        decode_clip(b"\x00\x00\x00\x18ftypmp42 not really a video", "video", frames=4, stride=1, exact=True)


def test_a_folder_of_16_px_clips_yields_frames(folder_factory):
    root = folder_factory("toy", [{"key": f"v{i}", "frames": moving_bars(8, 16, 16)} for i in range(2)])
    clips = list(iter_clips(root, frames=8))
    assert [c.error for c in clips] == [None, None]
    assert all(c.frames.shape == (8, 16, 16, 3) for c in clips)
