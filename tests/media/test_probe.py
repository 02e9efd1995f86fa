import os

import pytest

from curate.demo.corpus import huge_png_header
from curate.media.probe import ProbeError, probe_image, probe_video


def test_probe_video(demo_media):
    info = probe_video(os.path.join(demo_media[0], "video_000.mp4"))
    assert (info.width, info.height, info.fps, info.num_frames, info.codec) == (160, 96, 8.0, 24, "h264")
    assert info.duration == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("name", ["broken_corrupt.mp4", "broken_truncated.mp4", "broken_empty.mp4"])
def test_broken_videos(demo_media, name):
    with pytest.raises(ProbeError) as info:
        probe_video(os.path.join(demo_media[0], name))
    assert info.value.reason == "corrupt"


def test_pixel_cap_refuses_before_decoding(tmp_path, demo_media):
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header(40000, 40000))
    with pytest.raises(ProbeError) as info:
        probe_image(str(path))
    assert info.value.reason == "pixel_cap"
    with pytest.raises(ProbeError) as info:
        probe_video(os.path.join(demo_media[0], "video_000.mp4"), max_pixels=100 * 100)
    assert info.value.reason == "pixel_cap"


def test_truncated_image(tmp_path, demo_media):
    data = open(os.path.join(demo_media[0], "image_000.jpg"), "rb").read()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ProbeError) as info:
        probe_image(str(tmp_path / "t.jpg"))
    assert info.value.reason == "corrupt"
    assert probe_image(os.path.join(demo_media[0], "image_000.jpg")).codec == "jpeg"
