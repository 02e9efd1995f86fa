"""Fixtures for the media tests: short H.264 clips with B-frames, written the ways the toolkit writes them."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def b_frame_clips(tmp_path_factory) -> dict[str, tuple[str, int]]:
    """{name: (path, frames)}: 4- and 8-frame 8 fps clips of the toy world (a degraded red square moving right),
    written by PyAV as `curate generate` writes samples, by the ffmpeg CLI as the world writes its videos, and
    re-encoded by the select stage's resize (faststart); libx264's defaults put B-frames in all of them."""
    import torch

    from curate.demo import world
    from curate.media.transcode import resize_center_crop, write_mp4
    from curate.train.sample import write_video

    root = tmp_path_factory.mktemp("b_frames")
    rng = np.random.default_rng(0)
    frames, _ = world.clean_clip("square", "red", "right", rng)
    frames, _ = world.degrade_video(frames, rng)
    clips = {}
    for n in (4, 8):
        pyav, cli, selected = (str(root / f"{kind}_{n}.mp4") for kind in ("pyav", "ffmpeg", "select"))
        write_video(torch.as_tensor(frames[:n]), pyav, world.FPS)
        write_mp4(cli, list(frames[:n]), fps=world.FPS, crf=34)
        resize_center_crop(cli, selected, world.SIZE, world.SIZE, max_frames=n)
        clips.update({f"pyav_{n}": (pyav, n), f"ffmpeg_{n}": (cli, n), f"select_{n}": (selected, n)})
    return clips
