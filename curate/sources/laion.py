"""LAION-COCO and LAION-Aesthetics V2 readers: their parquet files (one file, a folder or a glob; local or in
object storage), streamed."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.sources.sample import make_key, sample, url_digest

COCO_CAPTION_COLUMNS = ("top_caption", "TEXT")
AESTHETIC_SCORE_COLUMNS = ("AESTHETIC_SCORE", "aesthetic")


def parquet_files(path: str) -> list[str]:
    if storage.isdir(path):
        files = [f for f in storage.walk_files(path)
                 if f.endswith(".parquet") and not storage.basename(f).startswith(".")]
    else:
        files = storage.glob(path) if any(ch in path for ch in "*?[") else [path]
    if not files:
        raise FileNotFoundError(f"no parquet files at {path}")
    return files


# typed column <- the LAION column(s) it is read from, first present wins
TYPED_COLUMNS = {"laion_aesthetic": AESTHETIC_SCORE_COLUMNS, "punsafe": ("punsafe",), "pwatermark": ("pwatermark",),
                 "similarity": ("similarity",), "source_width": ("WIDTH",), "source_height": ("HEIGHT",)}
_INTEGER = ("source_width", "source_height")  # LAION-Aesthetics lists them as float64


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _typed(name: str, value, single: bool):
    """A source value as its typed column's value: numbers only (a stray string or NaN becomes null). A float32
    value becomes the float64 of its shortest decimal (AESTHETIC_SCORE 6.7, not 6.699999809), so a predicate
    `laion_aesthetic >= 6.7` keeps the rows the source lists as 6.7."""
    value = _clean(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if name in _INTEGER:
        return int(round(value))
    return float(str(np.float32(value))) if single else float(value)


def _rows(path: str, source: str, caption_column: str, batch_rows: int) -> Iterator[list[dict]]:
    row = 0
    for file in parquet_files(path):
        with contextlib.ExitStack() as stack:
            # object storage: ranged reads of the footer and of one row group at a time, no local copy
            pf = pq.ParquetFile(stack.enter_context(storage.open(file, "rb")) if storage.is_remote(file) else file)
            names = pf.schema_arrow.names
            url_col = "URL" if "URL" in names else ("url" if "url" in names else None)
            if url_col is None:
                raise ValueError(f"{file}: no URL column (have {names})")
            if caption_column not in names:
                raise ValueError(f"{file}: caption column {caption_column!r} not found (have {names})")
            typed = {}  # typed column -> (its LAION column in this file, is it float32)
            for name, candidates in TYPED_COLUMNS.items():
                column = next((c for c in candidates if c in names), None)
                if column is not None:
                    typed[name] = (column, pf.schema_arrow.field(column).type in (pa.float32(), pa.float16()))
            extras = [c for c in names if c not in (url_col, caption_column)]
            for batch in pf.iter_batches(batch_size=batch_rows):
                cols = batch.to_pydict()
                chunk = []
                for i, url in enumerate(cols[url_col]):
                    extra = {c: _clean(cols[c][i]) for c in extras}
                    columns = {name: _typed(name, cols[c][i], single) for name, (c, single) in typed.items()}
                    chunk.append(sample(key=make_key("", url_digest(url or f"{file}:{row}")), row=row, source=source,
                                        modality="image", url=url, caption=cols[caption_column][i], extra=extra,
                                        columns=columns))
                    row += 1
                yield chunk


def read_coco(path: str, caption_column: str = "top_caption", batch_rows: int = 65536) -> Iterator[list[dict]]:
    """LAION-COCO: the synthetic BLIP caption (top_caption) by default, as the paper trains on; TEXT is the alt-text."""
    return _rows(path, "laion-coco", caption_column, batch_rows)


def read_aesthetics(path: str, caption_column: str = "TEXT", batch_rows: int = 65536) -> Iterator[list[dict]]:
    """LAION-Aesthetics V2: the score column (AESTHETIC_SCORE, or `aesthetic` in laion2B-en derivatives) becomes
    `laion_aesthetic`; like punsafe, pwatermark, similarity, WIDTH/HEIGHT it also stays in extra."""
    return _rows(path, "laion-aesthetics", caption_column, batch_rows)
