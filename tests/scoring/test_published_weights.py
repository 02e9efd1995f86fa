"""Published weights files: explicit path, caches, checksums, and a clear error when offline and missing."""

import hashlib

import pytest

from curate.scoring import published_weights
from curate.scoring.published_weights import AESTHETIC_V2_L14, KnownFile, resolve_known_file
from curate.weightfile import WeightsMismatch, WeightsMissing, curate_cache_dir


def known_file_for(content: bytes, filename="model.pth") -> KnownFile:
    return KnownFile(filename, "https://example.invalid/" + filename, len(content),
                     hashlib.sha256(content).hexdigest(), None, "test")


def test_explicit_path_wins_and_missing_explicit_path_is_named(empty_caches):
    path = empty_caches / "mine.pth"
    path.write_bytes(b"weights")
    assert resolve_known_file(AESTHETIC_V2_L14, path) == path
    with pytest.raises(WeightsMissing, match="nowhere.pth"):
        resolve_known_file(AESTHETIC_V2_L14, empty_caches / "nowhere.pth")


def test_cache_hit_is_verified_against_the_published_checksum(empty_caches):
    known = known_file_for(b"the published bytes")
    cached = curate_cache_dir() / known.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the published bytes")
    assert resolve_known_file(known) == cached
    cached.write_bytes(b"the published bytez")
    with pytest.raises(WeightsMismatch, match="sha256"):
        resolve_known_file(known)
    cached.write_bytes(b"short")
    with pytest.raises(WeightsMismatch, match="bytes"):
        resolve_known_file(known)


def test_md5_is_checked_where_no_sha256_is_published(empty_caches):
    content = b"released head"
    known = KnownFile("head.pth", "https://example.invalid/head.pth", None, None,
                      hashlib.md5(content).hexdigest(), "test")
    cached = curate_cache_dir() / known.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)
    assert resolve_known_file(known) == cached
    cached.write_bytes(b"another head!")
    with pytest.raises(WeightsMismatch, match="md5"):
        resolve_known_file(known)


def test_offline_and_missing_says_what_and_where(empty_caches, monkeypatch):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as error:
        resolve_known_file(AESTHETIC_V2_L14, what="LAION aesthetic predictor v2")
    message = str(error.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in message and "3,714,759 bytes" in message
    assert str(curate_cache_dir() / AESTHETIC_V2_L14.filename) in message
    assert AESTHETIC_V2_L14.url in message and "offline" in message


def test_failed_download_is_a_missing_weights_error(empty_caches, monkeypatch):
    def unreachable(url, target):
        raise OSError("network is unreachable")

    monkeypatch.setattr(published_weights, "fetch", unreachable)
    with pytest.raises(WeightsMissing, match="download failed: network is unreachable"):
        resolve_known_file(AESTHETIC_V2_L14)


def test_download_lands_in_the_cache_and_is_verified(empty_caches, monkeypatch):
    known = known_file_for(b"downloaded bytes")

    def serve(url, target):
        assert url == known.url
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"downloaded bytes")
        return target

    monkeypatch.setattr(published_weights, "fetch", serve)
    assert resolve_known_file(known) == curate_cache_dir() / known.filename
