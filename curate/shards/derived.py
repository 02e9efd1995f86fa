"""Tables derived per shard (scores/<scorer>/, captions/<run>/): the shard content each covers, recorded in the
table so a changed shard is done again."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from curate import storage

CONTENT_KEY = b"curate.content"  # table metadata: digest of the manifest rows it covers


def shard_content(manifest_path: str) -> tuple[str, int]:
    """(digest of the shard's success rows as (key, sha256) pairs, their count): what a derived table covers."""
    table = storage.read_table(manifest_path, columns=["key", "sha256", "status"])
    pairs = sorted((k, d or "") for k, d, s in zip(*(table.column(c).to_pylist() for c in ("key", "sha256", "status")))
                   if s == "success")
    digest = hashlib.sha256("\n".join(f"{k}\t{d}" for k, d in pairs).encode()).hexdigest()
    return digest, len(pairs)


def stored_content(path: str) -> str | None:
    try:
        meta = storage.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = meta.get(CONTENT_KEY)
    return value.decode() if value else None


def write_table(path: str, table: pa.Table, content: str | None = None) -> None:
    if content is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CONTENT_KEY: content.encode()})
    storage.write_table(table, path)


def stale_shards(folder: str, content: dict[str, tuple[str, int]]) -> list[str]:
    """Shards of `content` (shard_content per shard) whose table in `folder` is missing or covers other content."""
    written = set(storage.glob(storage.join(folder, "*.parquet")))  # one listing, then one footer per table
    return [sid for sid, (digest, _) in content.items()
            if storage.join(folder, f"{sid}.parquet") not in written
            or stored_content(storage.join(folder, f"{sid}.parquet")) != digest]
