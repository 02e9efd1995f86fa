"""OpenVid-1M reader: the distributed CSV (OpenVid-1M.csv, OpenVidHD.csv) + its videos, read straight from the
OpenVid_partN.zip archives (no extraction) or from an extracted folder, local or in object storage."""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Iterator

from curate import storage
from curate.shards.reader import modality_of
from curate.sources.sample import make_key, sample

VIDEO, CAPTION = "video", "caption"
# the CSV's own column -> (our typed column, its type); the names carry spaces as distributed
TYPED = {"aesthetic score": ("openvid_aesthetic", float), "motion score": ("openvid_motion", float),
         "temporal consistency score": ("openvid_temporal_consistency", float),
         "camera motion": ("camera_motion", str), "frame": ("source_frames", int), "fps": ("source_fps", float),
         "seconds": ("source_duration", float)}


def _typed(kind: type, text: str | None):
    """The CSV's text as `kind`; None when empty or not a finite number (a bad score is a null, not a lost row)."""
    text = (text or "").strip()
    if not text:
        return None
    if kind is str:
        return text
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or (kind is int and value != int(value)):
        return None
    return int(value) if kind is int else value


def _is_video(name: str) -> bool:
    return modality_of(name) == "video"


def video_index(videos: str) -> dict[str, str]:
    """File name -> where the video is: `ARCHIVE.zip::member` for members of zip archives (each archive's
    central directory is read, not its data), else the file's path. `videos` is a zip, a folder (its zips and
    its video files, at any depth) or several of those joined by commas. The first place a name is met wins."""
    index: dict[str, str] = {}
    for place in (p.strip() for p in videos.split(",") if p.strip()):
        if place.lower().endswith(".zip"):
            archives, files = [place], []
        elif storage.isdir(place):
            every = sorted(storage.walk_files(place))
            archives = [f for f in every if f.lower().endswith(".zip")]
            files = [f for f in every if _is_video(f)]
        else:
            raise FileNotFoundError(f"--videos {place}: not a zip archive nor a folder")
        for archive in archives:
            with storage.open(archive, "rb") as raw, zipfile.ZipFile(raw) as zf:
                for member in zf.namelist():
                    if _is_video(member):
                        index.setdefault(member.rsplit("/", 1)[-1], f"{archive}::{member}")
        for file in files:
            index.setdefault(storage.basename(file), file)
    return index


def read(path: str, videos: str | None = None, batch_rows: int = 65536) -> Iterator[list[dict]]:
    """One row per CSV line; the scores and camera motion are typed columns (schemas/samples.yaml), every CSV
    column is also kept verbatim in extra. `videos` defaults to the CSV's folder."""
    index = video_index(videos or storage.parent(path))
    with storage.open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (VIDEO, CAPTION) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not an OpenVid CSV, missing columns {missing} (have {reader.fieldnames})")
        chunk: list[dict] = []
        for row, line in enumerate(reader):
            name = (line.get(VIDEO) or "").strip()
            where = index.get(name)
            error = None if where else (f"video {name} not found in {videos or storage.parent(path)}" if name
                                        else "missing video name")
            columns = {col: _typed(kind, line.get(csv_col)) for csv_col, (col, kind) in TYPED.items()}
            extra = {k: v for k, v in line.items() if k not in (CAPTION, None)}
            stem = name.rsplit(".", 1)[0] if name else f"row{row}"
            chunk.append(sample(key=make_key("openvid_", stem), row=row, source="openvid", modality="video",
                                caption=line.get(CAPTION), path=where, extra=extra, columns=columns,
                                input_error=error))
            if len(chunk) >= batch_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
