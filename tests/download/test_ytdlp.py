"""yt-dlp for video pages, tested against a loopback server (no internet): a URL without a media extension."""

import shutil
import sys

import pytest

from curate.demo import server
from curate.download.http import FetchError, FetchPolicy
from curate.download.ytdlp import fetch_page_video, is_direct_media

LOCAL = FetchPolicy(allow_private_addresses=True, retries=0, read_timeout=5)


@pytest.fixture
def page_server(demo_media, tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(f"{demo_media[0]}/video_001.mp4", root / "watch")  # served as application/octet-stream
    srv = server.start(str(root))
    yield srv
    srv.shutdown()


def test_is_direct_media():
    assert is_direct_media("https://cdn.test/a/b.MP4?sig=1") and is_direct_media("http://x.test/v.webm")
    assert not is_direct_media("https://www.youtube.com/watch?v=abc") and not is_direct_media("https://x.test/v")


def test_page_video_downloaded_by_ytdlp_over_loopback(page_server, demo_media, tmp_path):
    path = fetch_page_video(f"{page_server.base_url}/watch?v=abc", str(tmp_path / "parent"), LOCAL)
    assert path.startswith(str(tmp_path / "parent."))
    assert open(path, "rb").read() == open(f"{demo_media[0]}/video_001.mp4", "rb").read()


def test_limits_and_failures_are_fetch_errors(page_server, tmp_path, monkeypatch):
    url = f"{page_server.base_url}/watch?v=abc"
    with pytest.raises(FetchError) as refused:
        fetch_page_video(url, str(tmp_path / "a"), FetchPolicy(retries=0))
    assert refused.value.reason == "private_address" and page_server.hits.get("/watch") is None
    with pytest.raises(FetchError) as capped:
        fetch_page_video(url, str(tmp_path / "b"), FetchPolicy(allow_private_addresses=True, retries=0, max_bytes=100))
    assert capped.value.reason == "byte_cap"
    with pytest.raises(FetchError) as missing:
        fetch_page_video(f"{page_server.base_url}/nothing-here", str(tmp_path / "c"), LOCAL)
    assert missing.value.reason == "ytdlp_error"
    monkeypatch.setitem(sys.modules, "yt_dlp", None)
    with pytest.raises(FetchError) as absent:
        fetch_page_video(url, str(tmp_path / "d"), LOCAL)
    assert absent.value.reason == "ytdlp_missing" and "curate[youtube]" in str(absent.value)
