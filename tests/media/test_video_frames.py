"""stream_frames: frames in order, at an exact size when asked (a shot detector's input)."""

from __future__ import annotations

from curate.media.video_frames import decode_frames, stream_frames


def test_stream_frames_at_an_exact_size(b_frame_clips):
    path, count = b_frame_clips["ffmpeg_8"]
    frames = list(stream_frames(path, size=(27, 48)))
    assert [i for i, _, _ in frames] == list(range(count))
    assert all(f.shape == (27, 48, 3) for _, _, f in frames)
    full = decode_frames(path, lambda n: [3])[0]
    small = frames[3][2]
    # the scaled frame is the full one's picture: its mean colour, not another frame's
    assert abs(float(small.mean()) - float(full.mean())) < 4
    assert [t for _, t, _ in frames] == sorted(t for _, t, _ in frames)
