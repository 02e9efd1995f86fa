"""Frame geometry: sizes and crop offsets against torchvision, and ffmpeg/PIL/torch resizes that use them."""

import io
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from curate.media.geometry import (
    center_crop_box,
    cover_size,
    even_fit_within_size,
    ffmpeg_cover_crop,
    ffmpeg_fit_within,
    fit_within_size,
    longer_side_size,
)
from curate.media.transcode import image_resize_center_crop
from curate.train.data import resize_center_crop

# tall, wide, square, tiny, odd, a half-pixel tie in the crop offset, above a decode cap
SIZES = [(240, 320), (320, 240), (224, 224), (7, 5), (333, 501), (225, 300), (1081, 1919), (600, 61)]


def torchvision_cover(height, width, target):
    return tuple(v2.Resize(target, antialias=True)(torch.zeros(1, height, width)).shape[-2:])


def torchvision_crop_offset(height, width, crop_h, crop_w):
    """(top, left) that CenterCrop picks, read off a tensor whose values are their own row/column index."""
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    cropped = v2.CenterCrop((crop_h, crop_w))(torch.stack([rows, cols]))
    return int(cropped[0, 0, 0]), int(cropped[1, 0, 0])


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("target", [224, 336])
def test_cover_and_crop_equal_torchvision(height, width, target):
    cover = cover_size(height, width, target, target)
    assert cover == torchvision_cover(height, width, target)
    assert center_crop_box(*cover, target, target) == torchvision_crop_offset(*cover, target, target)


@pytest.mark.parametrize("height, width", SIZES)
def test_center_crop_offsets_equal_torchvision_for_any_box(height, width):
    for crop_h, crop_w in [(1, 1), (height // 2 + 1, width // 3 + 1), (height, width), (max(1, height - 3), width)]:
        assert center_crop_box(height, width, crop_h, crop_w) == torchvision_crop_offset(height, width, crop_h, crop_w)


def test_longer_side_sizes():
    assert longer_side_size(48, 64, 128) == (96, 128)  # enlarged
    assert longer_side_size(1080, 1920, 128) == (72, 128)
    assert longer_side_size(3, 1000, 128) == (1, 128)  # never 0
    assert fit_within_size(48, 64, 128) == (48, 64)  # never enlarged
    assert fit_within_size(1920, 1080, 512) == (512, 288)


def index_png(height, width, axis=1, step=1) -> bytes:
    """A grey PNG whose pixel values are step x their column (axis=1) or row (axis=0) index: crops can be
    located by reading a pixel."""
    index = np.arange(height if axis == 0 else width) * step % 256
    values = index[:, None] if axis == 0 else index[None, :]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(values, (height, width)), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def ffmpeg_png(data: bytes, filters: str) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "png_pipe", "-i", "-", "-vf", filters,
                          "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-pix_fmt", "gray", "-"],
                         input=data, capture_output=True, check=True).stdout
    return np.asarray(Image.open(io.BytesIO(out)))


@pytest.mark.parametrize("height, width", [(240, 320), (320, 240), (97, 155), (50, 201)])
def test_ffmpeg_cover_crop_computes_the_python_sizes_and_offsets(height, width):
    target_h, target_w = 40, 64
    scale, crop = ffmpeg_cover_crop(target_h, target_w).split(",crop=")
    crop = "crop=" + crop
    cover_h, cover_w = cover_size(height, width, target_h, target_w)
    assert ffmpeg_png(index_png(height, width), scale).shape == (cover_h, cover_w)
    # the crop alone, on an input at the cover size: the first pixel tells the offset
    top, left = center_crop_box(cover_h, cover_w, target_h, target_w)
    for axis, offset in ((0, top), (1, left)):
        cropped = ffmpeg_png(index_png(cover_h, cover_w, axis), crop)
        assert cropped.shape == (target_h, target_w) and int(cropped[0, 0]) == offset


@pytest.mark.parametrize("height, width, axis, offset", [
    (40, 71, 1, 4),  # cover = the input; (71 - 64) / 2 = 3.5 rounds to 4, as torchvision's CenterCrop
    (40, 69, 1, 2),  # 2.5 rounds to 2
    (75, 64, 0, 18),  # 17.5 -> 18
    (42, 64, 0, 1),
])
def test_ffmpeg_crop_offsets_round_halves_like_torchvision(height, width, axis, offset):
    assert center_crop_box(height, width, 40, 64)[axis] == offset
    cropped = ffmpeg_png(index_png(height, width, axis), ffmpeg_cover_crop(40, 64))
    assert cropped.shape == (40, 64) and int(cropped[0, 0]) == offset


@pytest.mark.parametrize("height, width, max_side", [
    (1080, 1920, 128), (1920, 1080, 255), (721, 1281, 255), (500, 333, 128), (300, 300, 255), (11, 900, 255)])
def test_ffmpeg_fit_within_computes_even_fit_within_size(height, width, max_side):
    expected = even_fit_within_size(height, width, max_side)
    assert all(side % 2 == 0 and side >= 2 for side in expected)
    plain = fit_within_size(height, width, max_side)
    assert all(abs(a - b) <= (1 if max_side % 2 == 0 else 2) for a, b in zip(expected, plain))
    assert ffmpeg_png(index_png(height, width), ffmpeg_fit_within(max_side)).shape == expected


@pytest.mark.parametrize("height, width, axis, offset", [(40, 71, 1, 4), (40, 69, 1, 2), (75, 64, 0, 18)])
def test_image_resize_center_crop_takes_the_crop_where_geometry_says(tmp_path, height, width, axis, offset):
    """Inputs already at their cover size (no resampling): the first row/column's values give the offset."""
    src, dst = tmp_path / "in.png", tmp_path / "out.jpg"
    src.write_bytes(index_png(height, width, axis, step=3))
    assert image_resize_center_crop(str(src), str(dst), 64, 40) == (64, 40)
    with Image.open(dst) as out:
        pixels = np.asarray(out.convert("L"), np.float64)
    assert pixels.shape == (40, 64)
    edge = pixels[:, 0] if axis == 1 else pixels[0, :]
    assert edge.mean() == pytest.approx(3 * offset, abs=1.0)  # JPEG q95 on a ramp: within a grey level


@pytest.mark.parametrize("height, width", [(240, 320), (321, 240), (225, 300), (17, 23)])
def test_trainer_resize_equals_torchvision_resize_and_center_crop(height, width):
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    ours = resize_center_crop(frames, 64, 64)
    reference = v2.CenterCrop(64)(v2.Resize(64, antialias=True)(frames.permute(0, 3, 1, 2)))  # uint8, as the loader
    expected = (reference.float() / 127.5 - 1).permute(1, 0, 2, 3)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_transcodes_write_the_geometry_sizes(tmp_path):
    """The H.264 re-encodes end to end on an odd-sized source (4:4:4, so libx264 accepts it)."""
    import av

    from curate.media.transcode import cap_resolution
    from curate.media.transcode import resize_center_crop as transcode_cover_crop

    src, small, cropped = (str(tmp_path / name) for name in ("src.mp4", "small.mp4", "crop.mp4"))
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc=size=321x181:rate=8:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", src], check=True)
    cap_resolution(src, small, 128)
    transcode_cover_crop(src, cropped, 64, 40, max_frames=4)

    def size(path):
        with av.open(path) as container:
            stream = container.streams.video[0]
            return stream.codec_context.height, stream.codec_context.width, stream.frames

    assert size(small)[:2] == even_fit_within_size(181, 321, 128) == (72, 128)
    assert size(cropped) == (40, 64, 4)
