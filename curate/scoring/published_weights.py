"""The published weights files the scorers use (name, URL, size, checksums) and how one is found: an explicit
path, a cache, or a download, verified against the published checksum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curate.weightfile import WeightsMismatch, WeightsMissing, curate_cache_dir, downloads_allowed, fetch, file_digest


@dataclass(frozen=True)
class KnownFile:
    """A published weights file; checksums are the published values, None where none was found."""

    filename: str
    url: str
    size: int | None
    sha256: str | None
    md5: str | None
    checksum_source: str


# Size from the predictor's own repository; no published sha256 was found. The md5 is the one the
# EasyAnimate project publishes for its mirror of this file (aigc-apps/EasyAnimate, video_caption).
AESTHETIC_V2_L14 = KnownFile(
    filename="sac+logos+ava1-l14-linearMSE.pth",
    url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth",
    size=3_714_759,
    sha256=None,
    md5="b1047fd767a00134b8fd6529bf19521a",
    checksum_source="size: improved-aesthetic-predictor repository; md5: EasyAnimate mirror; no published sha256",
)


def open_clip_cache_dir() -> Path:
    return Path.home() / ".cache" / "clip"


def verify(path: Path, known: KnownFile) -> None:
    """Check a file against its published size and checksum (whichever are known)."""
    size = path.stat().st_size
    if known.size is not None and size != known.size:
        raise WeightsMismatch(f"{path} is {size:,} bytes; the published {known.filename} is {known.size:,} bytes")
    for algorithm, expected in (("sha256", known.sha256), ("md5", known.md5)):
        if expected:
            digest = file_digest(path, algorithm)
            if digest != expected:
                raise WeightsMismatch(f"{path} has {algorithm} {digest}; the published {known.filename} has {expected}")
            return


def resolve_known_file(known: KnownFile, explicit: str | Path | None = None, what: str = "model") -> Path:
    """Path of a known weights file: explicit path, else a cache, else a download; verified against its checksum."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsMissing(f"{what} weights not found at {path}")
        return path
    candidates = [directory / known.filename for directory in (curate_cache_dir(), open_clip_cache_dir())]
    for path in candidates:
        if path.is_file():
            verify(path, known)
            return path
    target = candidates[0]
    if not downloads_allowed():
        raise WeightsMissing(_missing_message(what, known, candidates, "downloads are disabled (offline)"))
    try:
        fetch(known.url, target)
    except OSError as error:
        raise WeightsMissing(_missing_message(what, known, candidates, f"download failed: {error}")) from error
    verify(target, known)
    return target


def _missing_message(what: str, known: KnownFile, looked: list[Path], why: str) -> str:
    size = f" ({known.size:,} bytes)" if known.size else ""
    places = ", ".join(str(path) for path in looked)
    return (
        f"{what} weights {known.filename}{size} not found and {why}. Looked at: {places}. "
        f"Download {known.url} and put it at {looked[0]}, or pass its path explicitly."
    )
