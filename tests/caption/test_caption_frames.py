"""A sample's frames for the model: evenly spaced, in order, downscaled, JPEG; a broken file fails that sample only."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest
from caption_data import clip

from curate.caption.frames import FrameDecodeFailed, FramePool, caption_frames
from curate.demo.chat_server import dominant_colour
from curate.media.transcode import write_mp4


def test_caption_frames_are_evenly_spaced_in_order(tmp_path):
    path = tmp_path / "v.mp4"
    write_mp4(str(path), clip(["red"] * 3 + ["green"] * 3 + ["blue"] * 3, size=64))  # 9 frames
    jpegs = caption_frames(path.read_bytes(), "video", 3, 32)
    assert [dominant_colour(j) for j in jpegs] == ["red", "green", "blue"]  # frames 0, 4, 8
    assert cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR).shape == (32, 32, 3)
    assert len(caption_frames(path.read_bytes(), "video", 20, 64)) == 9  # a short video: each frame once


def test_pool_fails_a_broken_file_and_goes_on(tmp_path):
    path = tmp_path / "v.mp4"
    write_mp4(str(path), clip(["green"] * 4))
    image = cv2.imencode(".png", np.full((8, 8, 3), (40, 70, 220)[::-1], np.uint8))[1].tobytes()

    async def go(pool):
        with pytest.raises(FrameDecodeFailed):
            await pool.frames(b"not a video at all", "video")
        return [await pool.frames(path.read_bytes(), "video"), await pool.frames(image, "image")]

    pool = FramePool(1, 2, 64)
    try:
        video, picture = asyncio.run(go(pool))
    finally:
        pool.close()
    assert [dominant_colour(j) for j in video] == ["green", "green"]
    assert [dominant_colour(j) for j in picture] == ["blue"]
