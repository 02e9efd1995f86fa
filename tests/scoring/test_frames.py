"""Frame sampling through the one decoder, and crash-isolated decoding."""

import io

import numpy as np
import pytest
from decode_crashers import abort_decode, abort_on_marker, hang_decode
from PIL import Image
from synthetic_media import encode_mp4

from curate.scoring.frames import (
    FrameDecodeError,
    IsolatedDecoder,
    decode_isolated,
    decode_media,
    fit_within,
    frame_indices,
    load_image,
    resize_frames,
    sample_frames,
    to_grey,
)


def ramp_video(num_frames=10):
    """Frame i is a flat grey of level 20 * i, so a decoded frame tells which index it came from."""
    levels = (np.arange(num_frames) * 20 + 10).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, 48, 64, 3)).copy(), levels


def test_frame_indices():
    assert frame_indices(10) == [0, 4, 9]
    assert frame_indices(9, k=5, positions="uniform") == [0, 2, 4, 6, 8]
    assert frame_indices(2) == [0, 1]
    assert frame_indices(1, k=4, positions="uniform") == [0]
    with pytest.raises(ValueError):
        frame_indices(10, positions="random")


def test_sample_frames_first_middle_last_from_bytes_and_path(tmp_path):
    frames, levels = ramp_video()
    data = encode_mp4(frames)
    sampled = sample_frames(data)
    assert sampled.shape == (3, 48, 64, 3) and sampled.dtype == np.uint8
    np.testing.assert_allclose(sampled.reshape(3, -1).mean(axis=1), levels[[0, 4, 9]], atol=3)
    path = tmp_path / "ramp.mp4"
    path.write_bytes(data)
    np.testing.assert_array_equal(sample_frames(path, k=5, positions="uniform")[[0, -1]], sampled[[0, -1]])


def test_corrupt_video_raises_frame_decode_error():
    data = encode_mp4(ramp_video()[0])
    for corrupt in (data[: len(data) // 3], b"not a video at all"):
        with pytest.raises(FrameDecodeError):
            sample_frames(corrupt)


def test_decode_media_downscales_to_max_side():
    frames, _ = ramp_video()
    data = encode_mp4(np.repeat(frames, 2, axis=2))  # 48 x 128
    assert decode_media(data, "video").shape == (3, 48, 128, 3)
    assert decode_media(data, "video", max_side=64).shape == (3, 24, 64, 3)
    assert decode_isolated(data, max_side=256).shape == (3, 48, 128, 3)  # never upscaled


def test_fit_within_and_resize_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 333, 501, 3), dtype=np.uint8)
    assert fit_within(frames, 128).shape == (2, 85, 128, 3)  # 333 * 128 / 501 = 85.08
    assert fit_within(frames, 1000) is frames
    # shrinking averages areas: a 2x2 checkerboard halves to flat grey
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 255
    assert np.all(np.abs(resize_frames(checker[None].astype(np.uint8), 32, 32).astype(int) - 128) <= 1)
    # enlarging interpolates: a ramp stays a ramp (no repeated blocks)
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))[None]
    row = resize_frames(ramp, 8, 32)[0, 4].astype(int)
    assert len(set(row.tolist())) > 16 and np.all(np.diff(row) >= 0)


def test_to_grey_is_bt601_luma_as_pil():
    frames = np.random.default_rng(1).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    reference = np.stack([np.asarray(Image.fromarray(frame).convert("L")) for frame in frames])
    assert np.abs(to_grey(frames).astype(int) - reference).max() <= 1


def test_load_image():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="JPEG")
    frames = load_image(buffer.getvalue())
    assert frames.shape == (1, 30, 40, 3)
    with pytest.raises(FrameDecodeError):
        load_image(b"\xff\xd8 truncated")


def test_decode_isolated_matches_in_process_and_reports_corrupt_files():
    data = encode_mp4(ramp_video()[0])
    np.testing.assert_array_equal(decode_isolated(data), sample_frames(data))
    with pytest.raises(FrameDecodeError, match="could not be decoded: decord.*PyAV"):
        decode_isolated(data[:300])


def test_crash_in_decoder_costs_one_sample_only():
    data = encode_mp4(ramp_video()[0])
    with IsolatedDecoder(timeout_s=60, decode=abort_on_marker) as decoder:
        assert decoder.decode(data).shape[0] == 3
        with pytest.raises(FrameDecodeError, match="crashed.*SIGABRT"):
            decoder.decode(b"abort")
        assert decoder.decode(data).shape[0] == 3  # a fresh child took over


def test_abort_and_timeout_become_errors():
    with IsolatedDecoder(decode=abort_decode) as decoder:
        with pytest.raises(FrameDecodeError, match="crashed"):
            decoder.decode(b"x")
    with IsolatedDecoder(timeout_s=1, decode=hang_decode) as decoder:
        with pytest.raises(FrameDecodeError, match="timed out"):
            decoder.decode(b"x")


def test_sample_frames_decodes_widths_decord_cannot_copy():
    """decord 0.6 fails on 16 px wide videos; scoring decodes them through the one decoder's PyAV fallback."""
    frames, levels = ramp_video()
    sampled = sample_frames(encode_mp4(np.ascontiguousarray(frames[:, :16, :16])))
    assert sampled.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(sampled.reshape(3, -1).mean(axis=1), levels[[0, 4, 9]], atol=3)
