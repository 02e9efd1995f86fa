"""Writes one shard: NNNNN.tar (WebDataset members) + NNNNN.parquet manifest + NNNNN_stats.json, atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Callable

import pyarrow.parquet as pq

from curate import schema, storage
from curate.shards.folder import DatasetFolder
from curate.shards.tarout import TarOutput

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")
# KEY.json: the same keys with the same JSON types in every sample of every shard, never null, so that clients
# inferring one schema from the first samples (Hugging Face datasets, Ray Data) read every shard.
# "Not applicable / unknown" is "" for strings and 0 for numbers (an image: fps 0.0, duration 0.0,
# num_frames 1; local media: url ""). `extra` is the source's columns as JSON text: their keys and types vary
# by source and row. schemas/manifest.yaml documents the same.
METADATA_TYPES = {"key": str, "source": str, "modality": str, "url": str, "width": int, "height": int,
                  "fps": float, "num_frames": int, "duration": float, "codec": str, "size_bytes": int,
                  "sha256": str, "extra": str}
_EMPTY = {str: "", int: 0, float: 0.0}


def member_name(key: str, ext: str) -> str:
    """Tar member names are only ever KEY.EXT with a checked key: no paths, no dots, no traversal."""
    if not _SAFE_KEY.match(key) or not _SAFE_EXT.match(ext):
        raise ValueError(f"unsafe tar member name {key!r}.{ext!r}")
    return f"{key}.{ext}"


def sample_metadata(row: dict) -> bytes:
    """The {key}.json member of a success row: METADATA_TYPES, nulls written as that type's empty value."""
    meta = {}
    for name, kind in METADATA_TYPES.items():
        value = row.get(name)
        meta[name] = _EMPTY[kind] if value is None else kind(value)
    meta["extra"] = meta["extra"] or "{}"
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _check_members(members: list[tarfile.TarInfo], media_sizes: dict[str, int | None], path: str) -> None:
    """Another writer's tar may hold exactly KEY.EXT, KEY.txt and KEY.json regular files of the given keys;
    records each key's media size."""
    for member in members:
        key, _, ext = member.name.partition(".")
        if not member.isfile() or key not in media_sizes or member_name(key, ext or "?") != member.name:
            raise ValueError(f"{path}: unexpected tar member {member.name!r}")
        if ext not in ("txt", "json"):
            media_sizes[key] = member.size
    missing = [key for key, size in media_sizes.items() if size is None]
    if missing:
        raise ValueError(f"{path}: no media member for {missing[:5]}")


class ShardWriter:
    """Collect rows (every input row, success or not) and media files; `close()` publishes the shard.
    Order of publication: tar, stats, then the parquet, whose presence marks the shard complete. Files are
    staged beside the shard (local folder) or in a local temporary folder (object store: uploaded whole)."""

    def __init__(self, folder: DatasetFolder, sid: str):
        self.folder, self.sid = folder, sid
        storage.abort_unfinished_uploads(storage.join(folder.shards_dir, f"{sid}."))  # a killed writer's parts
        self._staging = storage.staging_dir(folder.shards_dir)
        self._tmp_tar = os.path.join(self._staging, f".{sid}.tar.tmp")
        self.rows: list[dict] = []
        self.started = time.time()
        self._tar = TarOutput(self._tmp_tar, mtime=int(self.started))

    def add(self, row: dict, media_path: str | None = None, ext: str | None = None) -> None:
        """Any row; success rows come with their media file."""
        row = dict(row, shard=self.sid)
        if row.get("status") == "success":
            if media_path is None or ext is None:
                raise ValueError(f"{row['key']}: a success row needs its media")
            self._tar.add_file(member_name(row["key"], ext), media_path)
            self._tar.add_bytes(member_name(row["key"], "txt"), (row.get("caption") or "").encode("utf-8"))
            self._tar.add_bytes(member_name(row["key"], "json"), sample_metadata(row))
        self.rows.append(row)

    def add_tar(self, path: str, rows: list[dict]) -> None:
        """Success `rows` whose members (KEY.EXT, KEY.txt, KEY.json) another writer already wrote to the tar at
        `path` (img2dataset's shard). While this shard's tar is still empty that file becomes it (moved, not
        copied: no image is read or written again); otherwise its members are copied in. The member set is
        checked against the rows either way; each row gets its media member's size."""
        sizes: dict[str, int | None] = {row["key"]: None for row in rows}
        if not self._tar.members:
            self._tar.close()
            os.replace(path, self._tmp_tar)
            self._tar = TarOutput(self._tmp_tar, append=True, mtime=int(self.started))
            _check_members(self._tar.members, sizes, path)
        else:
            with tarfile.open(path) as src:
                members = src.getmembers()
                _check_members(members, sizes, path)
                for member in members:
                    self._tar.add_bytes(member.name, src.extractfile(member).read())
        self.rows.extend(dict(row, shard=self.sid, size_bytes=sizes[row["key"]]) for row in rows)

    def close(self) -> dict:
        self._tar.close()
        self.rows.sort(key=lambda r: r["row"])
        table = schema.table("manifest", self.rows)
        tmp_parquet = os.path.join(self._staging, f".{self.sid}.parquet.tmp")
        pq.write_table(table, tmp_parquet, compression="zstd")
        statuses = Counter(r["status"] for r in self.rows)
        reasons = Counter(r.get("error_reason") for r in self.rows if r["status"] != "success")
        stats = {"count": len(self.rows), "successes": statuses.get("success", 0),
                 "failed": len(self.rows) - statuses.get("success", 0), "status_dict": dict(statuses),
                 "error_reasons": dict(reasons),
                 # which WebDataset columns the tar has: clients load image and video shards separately
                 "modalities": dict(Counter(r["modality"] for r in self.rows if r["status"] == "success")),
                 "start_time": self.started, "end_time": time.time(),
                 "duration": time.time() - self.started}
        storage.put(self._tmp_tar, self.folder.tar(self.sid))
        storage.write_json(self.folder.stats(self.sid), stats)
        storage.put(tmp_parquet, self.folder.manifest(self.sid))
        self._drop_staging()
        return stats

    def abort(self) -> None:
        self._tar.close()
        if os.path.exists(self._tmp_tar):
            os.remove(self._tmp_tar)
        self._drop_staging()

    def _drop_staging(self) -> None:
        if storage.is_remote(self.folder.shards_dir):
            shutil.rmtree(self._staging, ignore_errors=True)


def build_shard(root: str, sid: str, body: Callable[[str, ShardWriter], None]) -> dict:
    """Run `body(work, writer)` to fill shard `sid` of the dataset at `root`, with a scratch folder
    root/_work/sid (the engine removes root/_work once a run's units are done); publishes the shard when body returns, leaves nothing (no tar, no scratch) when it
    raises. Returns the shard's stats. For an object-store root the scratch folder is local."""
    if storage.is_remote(root):
        work = storage.scratch_dir("work")
    else:
        work = os.path.join(DatasetFolder(root).work_dir, sid)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    writer = ShardWriter(DatasetFolder(root), sid)
    try:
        body(work, writer)
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
