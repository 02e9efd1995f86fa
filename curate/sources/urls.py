"""URL-list reader: a .txt (one URL per line, optional TAB caption), a .csv or a .parquet with url/caption columns
(local or in object storage, streamed)."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator

import pyarrow.parquet as pq

from curate import storage
from curate.shards.reader import modality_of
from curate.sources.sample import make_key, sample, url_digest


def _guess_modality(url: str | None, default: str) -> str:
    if default != "auto":
        return default
    return modality_of((url or "").split("?", 1)[0]) or "image"


def _records(path: str, url_column: str, caption_column: str) -> Iterator[dict]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        with contextlib.ExitStack() as stack:
            pf = pq.ParquetFile(stack.enter_context(storage.open(path, "rb")) if storage.is_remote(path) else path)
            if url_column not in pf.schema_arrow.names:
                raise ValueError(f"{path}: no {url_column!r} column (have {pf.schema_arrow.names})")
            for batch in pf.iter_batches():
                yield from batch.to_pylist()
    elif ext in (".csv", ".tsv"):
        with storage.open(path, "r", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            if url_column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no {url_column!r} column (have {reader.fieldnames})")
            yield from reader
    else:
        with storage.open(path, "r", encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if line.strip() and not line.startswith("#"):
                    url, _, caption = line.partition("\t")
                    yield {url_column: url.strip(), caption_column: caption}


def read(path: str, url_column: str = "url", caption_column: str = "caption", modality: str = "auto",
         batch_rows: int = 65536) -> Iterator[list[dict]]:
    """Modality `auto` takes video for video file extensions (.mp4, .webm, ...) and image otherwise."""
    if modality not in ("auto", "video", "image"):
        raise ValueError("modality must be auto, video or image")
    chunk = []
    for row, rec in enumerate(_records(path, url_column, caption_column)):
        url = rec.get(url_column)
        extra = {k: v for k, v in rec.items() if k not in (url_column, caption_column)}
        chunk.append(sample(key=make_key("", url_digest(url or f"row{row}")), row=row, source="urls",
                            modality=_guess_modality(url, modality), url=url, caption=rec.get(caption_column),
                            extra=extra))
        if len(chunk) >= batch_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
