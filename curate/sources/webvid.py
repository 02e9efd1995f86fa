"""WebVid-10M reader: the distributed CSVs (videoid, contentUrl, duration, page_dir, name; the 2M CSVs add
page_idx and order the columns differently), streamed."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from curate import storage
from curate.sources.sample import make_key, sample, url_digest

URL, CAPTION = "contentUrl", "name"
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


def _integer(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def read(path: str, block_rows_hint: int = 1 << 20) -> Iterator[list[dict]]:
    """Yield chunks of sample rows. Streams with pyarrow's CSV reader: the 2.7 GB train CSV is never
    held in memory (nor copied to local disk when it lives in object storage: it is read as one sequential
    stream), and quoted captions with commas, quotes and newlines parse as real CSV. Every column is
    read as text (no type guessed from the first block), kept verbatim in extra but for contentUrl and name;
    duration, page_dir and page_idx are also typed columns."""
    with storage.open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        header = next(csv.reader(text), [])
        text.detach()  # the binary stream goes on to pyarrow, rewound
        missing = [c for c in ("videoid", URL) if c not in header]
        if missing:
            raise ValueError(f"{path}: not a WebVid CSV, missing columns {missing} (have {header})")
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=True)
        parse = pacsv.ParseOptions(newlines_in_values=True)
        read_opts = pacsv.ReadOptions(block_size=block_rows_hint * 8)
        raw.seek(0)
        reader = pacsv.open_csv(raw if storage.is_remote(path) else storage.local_path(path), read_options=read_opts,
                                parse_options=parse, convert_options=convert)
        yield from _chunks(reader)


def _chunks(reader) -> Iterator[list[dict]]:
    row = 0
    for batch in reader:
        cols = batch.to_pydict()
        extras = [c for c in cols if c not in (URL, CAPTION)]
        chunk = []
        for i in range(batch.num_rows):
            extra = {c: cols[c][i] for c in extras}
            url, vid = cols[URL][i], (extra["videoid"] or "").strip()
            key = make_key("webvid_", vid) if vid else make_key("webvid_url_", url_digest(url or f"row{row}"))
            columns = {"source_duration": parse_duration(extra.get("duration")), "page_dir": extra.get("page_dir"),
                       "page_idx": _integer(extra.get("page_idx"))}
            chunk.append(sample(key=key, row=row, source="webvid", modality="video", url=url,
                                caption=cols[CAPTION][i] if CAPTION in cols else "", extra=extra, columns=columns,
                                input_error=None if vid else "missing videoid"))
            row += 1
        yield chunk
