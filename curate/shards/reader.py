"""The one way to read a dataset folder: its success rows, and each row's media (and caption) out of the shard tars,
local or in object storage.

Every stage that looks inside shards reads through here: `samples()` streams a shard's tar once, in tar order,
for stages that touch every sample; `member_spans()` + `read_member()` are the random-access path (thumbnails,
evaluation clips in manifest order, the study's videos), one ranged read per member; `scan_members()` is the bare
header scan under both (the training loader keeps its results in flat arrays). A row listed as success whose media
is absent from its tar is yielded with `media=None`, so a caller records it as a failure row instead of losing it.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from curate import storage
from curate.shards.folder import DatasetFolder

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "m4v", "gif")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
# Remote header scans hop from header to header; a jump past the buffered block costs a GET (~latency), a
# block costs its bytes (~block / bandwidth). A block near latency x bandwidth (~30 ms x ~60 MB/s on S3) balances
# the two: small media (images) share a GET, large media are jumped over.
_SCAN_BLOCK = 2 * 1024 * 1024


def modality_of(name: str) -> str | None:
    """'video' / 'image' for a media file name or extension ("a/clip.MP4", ".mp4", "mp4"), None otherwise."""
    ext = name.rpartition(".")[2].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None


@dataclass
class ShardSample:
    """One success row of a shard with its bytes: `media` is None when the tar lacks it."""

    shard: str
    row: dict  # the manifest row (the columns asked for, always with key/modality/status)
    extension: str | None  # the media member's extension ("mp4", "jpg", ...)
    media: bytes | None
    caption_text: str | None = None  # KEY.txt, when asked for with captions=True

    @property
    def key(self) -> str:
        return self.row["key"]


@dataclass(frozen=True)
class Span:
    """Where a member's bytes lie in its tar: read with storage.read_range(tar, offset, offset + size)."""

    tar: str
    offset: int
    size: int


_ALWAYS = ("key", "modality", "status")


def manifest_columns(root: str, sid: str) -> list[str]:
    """The column names of a shard's manifest (its footer only)."""
    return storage.read_schema(DatasetFolder(root).manifest(sid)).names


def manifest_rows(root: str, sid: str, columns: Iterable[str] | None = None, status: str | None = "success") -> list[dict]:
    """A shard's manifest rows (status == `status`; None: all), in manifest order, with `columns` (None: all)."""
    wanted = None if columns is None else list(dict.fromkeys([*_ALWAYS, *columns]))
    if wanted is not None:
        present = set(manifest_columns(root, sid))
        wanted = [c for c in wanted if c in present]
    rows = storage.read_table(DatasetFolder(root).manifest(sid), columns=wanted).to_pylist()
    return [r for r in rows if status is None or r.get("status") == status]


def success_rows(root: str, columns: Iterable[str] | None = None, shards: Iterable[str] | None = None) -> list[dict]:
    """Every complete shard's success rows, each with a "shard" field, shard by shard in manifest order."""
    out = []
    for sid in shards if shards is not None else DatasetFolder(root).complete_shards():
        out.extend(dict(row, shard=sid) for row in manifest_rows(root, sid, columns))
    return out


def _split(name: str) -> tuple[str, str]:
    # rpartition, not Path(...).name: pathlib interns every part, a table that never shrinks again
    key, _, ext = name.rpartition("/")[2].partition(".")
    return key, ext.lower()


def _open_tar(path: str, stack: contextlib.ExitStack) -> tarfile.TarFile:
    if not storage.is_remote(path):
        return stack.enter_context(tarfile.open(path))
    raw = stack.enter_context(storage.open(path, "rb", block_size=_SCAN_BLOCK))
    return stack.enter_context(tarfile.open(fileobj=raw))


def scan_members(tar_path: str) -> Iterator[tuple[str, str, int, int]]:
    """(key, extension, data offset, size) of every file in a tar, in tar order: its headers only (remotely
    through buffered ranged reads that jump over large bodies)."""
    with contextlib.ExitStack() as stack:
        for member in _open_tar(str(tar_path), stack):
            if member.isfile():
                yield *_split(member.name), member.offset_data, member.size


def samples(root: str, sid: str, columns: Iterable[str] | None = None, *, keys: Iterable[str] | None = None,
            captions: bool = False) -> Iterator[ShardSample]:
    """The shard's success rows (only `keys` when given) with their media, streaming the tar once in tar order;
    rows whose media the tar lacks come last with media=None. Reads nothing but this shard."""
    rows = {r["key"]: r for r in manifest_rows(root, sid, columns)}
    if keys is not None:
        wanted = set(keys)
        rows = {k: r for k, r in rows.items() if k in wanted}
    pending: dict[str, ShardSample] = {}
    with contextlib.ExitStack() as stack:
        tar = _open_tar(DatasetFolder(root).tar(sid), stack)
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split(member.name)
            if ext in MEDIA_EXTENSIONS and key in rows:
                sample = ShardSample(sid, rows.pop(key), ext, tar.extractfile(member).read())
                if captions:
                    pending[key] = sample  # its KEY.txt follows the media in our shards
                    continue
                yield sample
            elif ext == "txt" and key in pending:
                sample = pending.pop(key)
                sample.caption_text = tar.extractfile(member).read().decode("utf-8", "replace")
                yield sample
        if captions:
            yield from pending.values()  # media without a KEY.txt
        for row in rows.values():
            yield ShardSample(sid, row, None, None)


def member_spans(root: str, sid: str) -> dict[str, dict[str, Span]]:
    """key -> {extension: Span} for every file in a shard's tar (one header scan, ranged reads remotely)."""
    path = DatasetFolder(root).tar(sid)
    spans: dict[str, dict[str, Span]] = {}
    for key, ext, offset, size in scan_members(path):
        spans.setdefault(key, {})[ext] = Span(path, offset, size)
    return spans


def media_span(members: dict[str, Span]) -> tuple[str, Span] | None:
    """(extension, span) of a sample's media member among its members, None when it has none."""
    return next(((ext, span) for ext, span in members.items() if ext in MEDIA_EXTENSIONS), None)


def read_member(span: Span) -> bytes:
    """A member's bytes (one ranged read)."""
    return storage.read_range(span.tar, span.offset, span.offset + span.size)


def read_media(root: str, sid: str, key: str) -> tuple[str, bytes] | None:
    """(extension, bytes) of one sample's media, None when its shard has none (one scan + one ranged read)."""
    found = media_span(member_spans(root, sid).get(key, {}))
    return None if found is None else (found[0], read_member(found[1]))
