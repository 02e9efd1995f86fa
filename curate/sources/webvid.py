"""WebVid-10M reader: the distributed CSVs (videoid, contentUrl, duration, page_dir, name), streamed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from curate.sources.sample import make_key, sample, url_digest

COLUMNS = ["videoid", "contentUrl", "duration", "page_dir", "name"]
_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def parse_duration(text: str | None) -> float | None:
    """Seconds from an ISO-8601 duration (PT00H00M11S) or a plain number of seconds; None if neither."""
    if not text:
        return None
    text = text.strip()
    match = _ISO_DURATION.match(text)
    if match and text not in ("P", "PT"):
        d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
        return d * 86400 + h * 3600 + m * 60 + s
    try:
        return float(text)
    except ValueError:
        return None


def read(path: str, block_rows_hint: int = 1 << 20) -> Iterator[list[dict]]:
    """Yield chunks of sample rows. Streams with pyarrow's CSV reader: the 2.7 GB train CSV is never
    held in memory, and quoted captions with commas, quotes and newlines parse as real CSV."""
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=True,
                                   include_columns=None)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    read_opts = pacsv.ReadOptions(block_size=block_rows_hint * 8)
    reader = pacsv.open_csv(path, read_options=read_opts, parse_options=parse, convert_options=convert)
    missing = [c for c in ("videoid", "contentUrl") if c not in reader.schema.names]
    if missing:
        raise ValueError(f"{path}: not a WebVid CSV, missing columns {missing} (have {reader.schema.names})")
    row = 0
    for batch in reader:
        cols = batch.to_pydict()
        n = batch.num_rows
        get = lambda c: cols.get(c) or [None] * n  # noqa: E731 - optional columns
        chunk = []
        for videoid, url, duration, page_dir, name in zip(get("videoid"), get("contentUrl"), get("duration"),
                                                          get("page_dir"), get("name")):
            vid = (videoid or "").strip()
            key = make_key("webvid_", vid) if vid else make_key("webvid_url_", url_digest(url or f"row{row}"))
            error = None if vid else "missing videoid"
            chunk.append(sample(
                key=key, row=row, source="webvid", modality="video", url=url, caption=name,
                extra={"videoid": vid or None, "duration": duration, "duration_s": parse_duration(duration),
                       "page_dir": page_dir},
                input_error=error))
            row += 1
        yield chunk
