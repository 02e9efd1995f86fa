"""Panda-70M reader: the distributed CSV (videoID, url, timestamp, caption, matching_score; one row per source
video, the last three per-clip lists aligned with each other) -> one sample per listed window."""

from __future__ import annotations

import ast
import csv
import math
import re
from collections.abc import Iterator

from curate import storage
from curate.sources.sample import make_key, sample

COLUMNS = ("videoID", "url", "timestamp", "caption")
MAX_LIST_CHARS = 1 << 20  # a cell longer than this is refused before parsing (literal_eval's cost grows with it)
_CLOCK = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$")  # H:MM:SS(.mmm)


class RowError(ValueError):
    """This CSV row cannot become samples; the message says why and becomes its input_error."""


def seconds(value) -> float:
    """A timestamp as seconds: 'H:MM:SS(.mmm)' text or a plain non-negative number (or its text)."""
    if isinstance(value, str):
        match = _CLOCK.match(value.strip())
        if match:
            h, m, s = match.groups()
            return int(h) * 3600 + int(m) * 60 + float(s)
        try:
            value = float(value)
        except ValueError:
            raise RowError(f"timestamp {value!r} is neither H:MM:SS(.mmm) nor seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RowError(f"timestamp {value!r} is neither H:MM:SS(.mmm) nor seconds")
    return float(value)


def literal_list(text: str | None, column: str) -> list:
    """A Python-literal list cell, parsed as a literal only (ast.literal_eval: no names, calls or operators)."""
    text = (text or "").strip()
    if len(text) > MAX_LIST_CHARS:
        raise RowError(f"{column}: cell longer than {MAX_LIST_CHARS} characters")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise RowError(f"{column}: not a Python-literal list: {text[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{column}: expected a list, got {type(value).__name__}")
    return list(value)


def windows(line: dict) -> list[tuple[float, float, str, float | None]]:
    """(start, end, caption, matching_score) per listed clip, checked: lists aligned, end after start."""
    stamps = literal_list(line.get("timestamp"), "timestamp")
    captions = literal_list(line.get("caption"), "caption")
    scores = literal_list(line["matching_score"], "matching_score") if line.get("matching_score") else None
    if not stamps:
        raise RowError("timestamp: no windows listed")
    if len(captions) != len(stamps) or (scores is not None and len(scores) != len(stamps)):
        raise RowError(f"lists not aligned: {len(stamps)} timestamps, {len(captions)} captions"
                       + (f", {len(scores)} matching scores" if scores is not None else ""))
    out = []
    for i, pair in enumerate(stamps):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowError(f"timestamp {i}: expected a [start, end] pair, got {pair!r}")
        start, end = seconds(pair[0]), seconds(pair[1])
        if end <= start:
            raise RowError(f"timestamp {i}: end {pair[1]!r} is not after start {pair[0]!r}")
        if not isinstance(captions[i], str):
            raise RowError(f"caption {i}: expected text, got {captions[i]!r}")
        score = scores[i] if scores is not None else None
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise RowError(f"matching_score {i}: expected a number, got {score!r}")
        out.append((start, end, captions[i], None if score is None else float(score)))
    return out


def window_key(parent: str, start: float, end: float) -> str:
    """The parent's key and the window in milliseconds: stable whatever the row order or list order."""
    return f"{parent}_{round(start * 1000)}_{round(end * 1000)}"


def read(path: str, whole_videos: bool = False, batch_rows: int = 65536) -> Iterator[list[dict]]:
    """One sample per listed window (its own caption and matching_score; the download fetches each source video
    once and cuts its windows frame-exactly). `whole_videos`: one sample per source video instead, stored whole,
    its windows kept in extra (for `curate split` with the source's own windows). A row that cannot be parsed is
    one invalid_input row naming the problem."""
    with storage.open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a Panda-70M CSV, missing columns {missing} (have {reader.fieldnames})")
        chunk: list[dict] = []
        row = 0  # samples-table row: one per window, in CSV order
        for line_no, line in enumerate(reader):
            vid, url = (line.get("videoID") or "").strip(), (line.get("url") or "").strip()
            parent = make_key("panda_", vid or f"line{line_no}")
            base = {"videoID": vid, "csv_row": line_no}
            try:
                if not vid:
                    raise RowError("missing videoID")
                listed = windows(line)
            except RowError as exc:
                chunk.append(sample(key=parent, row=row, source="panda70m", modality="video", caption="", url=url,
                                    extra=base, input_error=f"CSV row {line_no}: {exc}"))
                row += 1
                continue
            if whole_videos:
                extra = dict(base, windows=[[s, e, c, m] for s, e, c, m in listed])
                chunk.append(sample(key=parent, row=row, source="panda70m", modality="video", caption="", url=url,
                                    extra=extra, columns={"parent_key": parent}))
                row += 1
            for start, end, caption, score in ([] if whole_videos else listed):
                chunk.append(sample(key=make_key("", window_key(parent, start, end)), row=row, source="panda70m",
                                    modality="video", caption=caption, url=url, extra=base,
                                    columns={"matching_score": score, "parent_key": parent, "window_start": start,
                                             "window_end": end}))
                row += 1
            if len(chunk) >= batch_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
