"""Downloads one planned shard: every planned row becomes exactly one manifest row, media into the tar."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema, storage
from curate.download.http import FetchError, FetchPolicy, fetch_to_file
from curate.download.img2dataset_columns import ROW_COLUMN, STORED_SHA256
from curate.download.ytdlp import fetch_page_video, is_direct_media
from curate.media.cut import cut_clip
from curate.media.digest import sha256_file
from curate.media.probe import DEFAULT_MAX_PIXELS, MediaInfo, ProbeError, ProbePool, probe_image, shared_pool
from curate.media.transcode import TranscodeError, cap_resolution
from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter, build_shard

DUPLICATE_PREFIX = "duplicate of "
IMAGE_EXT = {"jpeg": "jpg", "mpo": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp"}
VIDEO_EXT = {"h264": "mp4", "hevc": "mp4", "av1": "mp4", "mpeg4": "mp4", "vp8": "webm", "vp9": "webm"}


@dataclass(frozen=True)
class DownloadOptions:
    fetch: FetchPolicy = field(default_factory=FetchPolicy, metadata={"flatten": True})  # keys sit at the section level
    thread_count: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    video_max_side: int | None = None  # re-encode larger videos down to this (None keeps the original bytes)
    image_max_side: int | None = None
    image_thread_count: int = 64
    probe_workers: int = 2  # isolated decoder processes per shard task (non-MP4 containers, decode_check)
    # The probe always reads the container's index (dimensions, codec, frame count) and checks that the last
    # indexed sample is in the file (truncation); also decoding the first frame costs ~5 ms per clip.
    decode_check: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DownloadOptions:
        data = dict(data)
        data["fetch"] = FetchPolicy(**data.get("fetch", {}))
        return cls(**data)


def _failure(row: dict, status: str, reason: str, message: str) -> dict:
    return dict(row, status=status, error_reason=reason, error_message=message)


def _success(row: dict, info: MediaInfo, path: str, digest: str | None) -> dict:
    return dict(row, status="success", error_reason=None, error_message=None, width=info.width, height=info.height,
                duration=info.duration, fps=info.fps, num_frames=info.num_frames, codec=info.codec,
                size_bytes=os.path.getsize(path), sha256=digest or sha256_file(path))


@dataclass
class _Job:
    """What every per-sample step of one shard task shares."""
    opts: DownloadOptions
    work: str
    probes: ProbePool


def _probe(row: dict, path: str, job: _Job, digest: str | None = None) -> tuple[dict, str | None, str | None]:
    """(manifest row, media path, extension) for a file on disk; failures become rows. `digest`: the file's
    SHA-256 when the fetch already computed it."""
    opts = job.opts
    try:
        if row["modality"] == "video":
            info = job.probes.probe_video(path, opts.max_pixels, opts.decode_check)
            if opts.video_max_side and max(info.width, info.height) > opts.video_max_side:
                small = os.path.join(job.work, f"{row['key']}.small.mp4")
                cap_resolution(path, small, opts.video_max_side)
                path, info, digest = small, job.probes.probe_video(small, opts.max_pixels, False), None
            ext = VIDEO_EXT.get(info.codec, "mp4")
        else:
            info = probe_image(path, opts.max_pixels)
            ext = IMAGE_EXT.get(info.codec)
            if ext is None:
                return _failure(row, "failed_to_decode", "unsupported_format", f"image format {info.codec}"), None, None
    except ProbeError as exc:
        return _failure(row, "failed_to_decode", exc.reason, str(exc)), None, None
    except TranscodeError as exc:
        return _failure(row, "failed_to_decode", "transcode_error", str(exc)), None, None
    return _success(row, info, path, digest), path, ext


def _fetch_one(row: dict, job: _Job):
    dest = os.path.join(job.work, row["key"])
    try:
        fetched = fetch_to_file(row["url"], dest, job.opts.fetch)
    except FetchError as exc:
        if os.path.exists(dest):
            os.remove(dest)
        return _failure(row, "failed_to_download", exc.reason, str(exc)), None, None
    return _probe(row, dest, job, fetched.sha256)


def _local_one(row: dict, job: _Job):
    """A file named by path: probed where it is on local disk, copied into the scratch folder from object storage
    (decoders need a real file)."""
    path = row["path"]
    if not storage.is_remote(path):
        if not os.path.isfile(path):
            return _failure(row, "failed_to_download", "missing_file", f"no file at {path}"), None, None
        return _probe(row, path, job)
    dest = os.path.join(job.work, row["key"])
    try:
        with storage.open(path, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except FileNotFoundError:
        return _failure(row, "failed_to_download", "missing_file", f"no file at {path}"), None, None
    except OSError as exc:
        return _failure(row, "failed_to_download", "storage_error", f"{path}: {exc}"), None, None
    return _probe(row, dest, job)


def _fetch_parent(row: dict, job: _Job) -> str:
    """The parent video on local disk: our own fetcher for a media URL, yt-dlp for a video page (raises FetchError)."""
    stem = os.path.join(job.work, f"{row['parent_key']}.parent")
    if is_direct_media(row["url"]):
        fetch_to_file(row["url"], stem, job.opts.fetch)
        return stem
    return fetch_page_video(row["url"], stem, job.opts.fetch)


def _parent_one(rows: list[dict], job: _Job) -> list[tuple]:
    """Rows of one parent video (same parent_key), which is fetched once: stored whole when its row has no window,
    else cut into each row's window frame-exactly (frames round(start x fps) .. round(end x fps), end exclusive)
    and the parent file dropped. Every row gets its own outcome."""
    try:
        parent = _fetch_parent(rows[0], job)
    except FetchError as exc:
        return [(_failure(r, "failed_to_download", exc.reason, str(exc)), None, None) for r in rows]
    if rows[0]["window_start"] is None:
        return [_probe(r, parent, job) for r in rows]
    try:
        info = job.probes.probe_video(parent, job.opts.max_pixels, job.opts.decode_check)
    except ProbeError as exc:
        os.remove(parent)
        return [(_failure(r, "failed_to_decode", exc.reason, f"parent video: {exc}"), None, None) for r in rows]
    if not info.fps:
        os.remove(parent)
        return [(_failure(r, "failed_to_decode", "no_frame_rate", "parent video has no frame rate"), None, None)
                for r in rows]
    out = []
    for row in rows:
        first = round(row["window_start"] * info.fps)
        end = min(round(row["window_end"] * info.fps), info.num_frames)
        if first >= end:
            out.append((_failure(row, "failed_to_decode", "window_outside", f"window {row['window_start']:.3f}-"
                                 f"{row['window_end']:.3f} s is outside the {info.num_frames}-frame video"), None, None))
            continue
        clip = os.path.join(job.work, f"{row['key']}.mp4")
        try:
            cut_clip(parent, first, end, clip, fps=info.fps, max_side=job.opts.video_max_side)
        except TranscodeError as exc:
            out.append((_failure(row, "failed_to_decode", "transcode_error", str(exc)), None, None))
            continue
        out.append(_probe(dict(row, window_start_frame=first, window_end_frame=end), clip, job))
    os.remove(parent)
    return out


def _guarded_parent(rows: list[dict], job: _Job) -> list[tuple]:
    try:
        return _parent_one(rows, job)
    except Exception as exc:  # noqa: BLE001 - recorded as data, as _guarded does
        return [(_failure(r, "failed_to_download", "internal_error", f"{type(exc).__name__}: {exc}"), None, None)
                for r in rows]


def _archive_members(rows: list[dict], work: str):
    """Members of tar or zip archives (path ARCHIVE::MEMBER; local or in object storage), each archive opened
    once: a tar read front to back, a zip's wanted members read through its central directory."""
    by_archive: dict[str, dict[str, dict]] = {}
    for row in rows:
        archive, member = row["path"].split("::", 1)
        by_archive.setdefault(archive, {})[member] = row
    for archive, wanted in by_archive.items():
        found = set()
        try:
            members = _zip_members if archive.lower().endswith(".zip") else _tar_members
            for row, src in members(archive, wanted):
                dest = os.path.join(work, row["key"])
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                found.add(row["key"])
                yield row, dest
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
            for row in wanted.values():
                if row["key"] not in found:
                    found.add(row["key"])
                    yield _failure(row, "failed_to_download", "archive_error", f"{archive}: {exc}"), None
        for row in wanted.values():
            if row["key"] not in found:
                yield _failure(row, "failed_to_download", "missing_file", f"{row['path']} not in archive"), None


def _tar_members(archive: str, wanted: dict[str, dict]):
    with storage.open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:
            row = wanted.get(member.name) or wanted.get(member.name.lstrip("./"))
            if row is not None and member.isfile():
                yield row, tar.extractfile(member)


def _zip_members(archive: str, wanted: dict[str, dict]):
    with storage.open(archive, "rb") as raw, zipfile.ZipFile(raw) as zf:
        present = set(zf.namelist())
        for member, row in wanted.items():
            if member in present:
                yield row, zf.open(member)


_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})")


def _img2dataset_reason(message: str) -> str:
    match = _HTTP_ERROR.search(message or "")
    if match:
        return f"http_{match.group(1)}"
    text = (message or "").lower()
    for needle, reason in (("non-public address", "private_address"), ("timed out", "timeout"),
                           ("bytes/s limit", "low_speed"), ("s deadline", "timeout"),
                           ("image area", "pixel_cap"), ("decompression", "pixel_cap"),
                           ("cv_io_max_image_pixels", "pixel_cap")):
        if needle in text:
            return reason
    return "download_error"


def _remote_images(rows: list[dict], opts: DownloadOptions, work: str):
    """img2dataset on this shard's image URLs, in a child process, writing our member names and metadata
    (img2dataset_writer). Returns [(its tar, the success rows whose members it holds)] and the failure rows."""
    out = os.path.join(work, "img2dataset")
    inp = os.path.join(work, "img2dataset_input.parquet")
    os.makedirs(out)
    fixed = [json.dumps({k: r.get(k) for k in ("key", "source", "modality", "url", "extra")}) for r in rows]
    pq.write_table(pa.table({"url": [r["url"] for r in rows], "caption": [r["caption"] for r in rows],
                             "ckey": [r["key"] for r in rows], ROW_COLUMN: fixed}), inp)
    args = {"input": inp, "output": out, "count": len(rows), "allow_private": opts.fetch.allow_private_addresses,
            "max_pixels": opts.max_pixels, "image_max_side": opts.image_max_side,
            "thread_count": opts.image_thread_count, "timeout": int(opts.fetch.read_timeout),
            "retries": opts.fetch.retries,
            "pace": {k: getattr(opts.fetch, k) for k in ("deadline", "low_speed_limit", "low_speed_time")}}
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, "-m", "curate.download.img2dataset_runner", json.dumps(args)],
                          capture_output=True, env=env, check=False)
    by_key = {row["key"]: row for row in rows}
    tars, failures, seen = [], [], set()
    for manifest in sorted(p for p in os.listdir(out) if p.endswith(".parquet")):
        try:
            records = pq.read_table(os.path.join(out, manifest)).to_pylist()
        except (OSError, pa.ArrowException):  # img2dataset died mid-shard: its rows are reported below
            continue
        successes = []
        for rec in records:
            row = by_key.get(rec["ckey"])
            if row is None or rec["ckey"] in seen:
                continue
            seen.add(rec["ckey"])
            if rec["status"] == "success":
                successes.append(dict(row, status="success", error_reason=None, error_message=None,
                                      width=rec["width"], height=rec["height"], num_frames=1, codec="jpeg",
                                      sha256=rec[STORED_SHA256]))
            else:
                status = "failed_to_decode" if rec["status"] == "failed_to_resize" else "failed_to_download"
                reason = _img2dataset_reason(rec["error_message"])
                if status == "failed_to_decode" and reason == "download_error":
                    reason = "corrupt"
                failures.append(_failure(row, status, reason, rec["error_message"]))
        tars.append((os.path.join(out, manifest.replace(".parquet", ".tar")), successes))
    tail = proc.stderr.decode(errors="replace").strip()[-300:]
    failures += [_failure(row, "failed_to_download", "downloader_error",
                          f"img2dataset returned no row (exit {proc.returncode}): {tail}")
                 for row in rows if row["key"] not in seen]
    return tars, failures


def _guarded(fn, row: dict, *args):
    """A bug or an unforeseen error on one sample becomes that sample's failure row, not a lost shard."""
    try:
        return fn(row, *args)
    except Exception as exc:  # noqa: BLE001 - recorded as data, with the type and message
        return _failure(row, "failed_to_download", "internal_error", f"{type(exc).__name__}: {exc}"), None, None


def _preset_failure(row: dict) -> dict | None:
    error = row.get("input_error")
    if not error:
        return None
    if error.startswith(DUPLICATE_PREFIX):
        return _failure(row, "duplicate", "duplicate", error)
    return _failure(row, "invalid_input", "invalid_input", error)


def _download_rows(rows: list[dict], opts: DownloadOptions, work: str, writer: ShardWriter) -> None:
    job = _Job(opts, work, shared_pool(opts.probe_workers))
    pending, remote_images, archived, parents = [], [], [], {}
    for row in rows:
        failure = _preset_failure(row)
        if failure:
            writer.add(failure)
        elif row["url"] and row["modality"] == "image":
            remote_images.append(row)
        elif row["path"] and "::" in row["path"]:
            archived.append(row)
        elif row["url"] and row.get("parent_key"):
            parents.setdefault(row["parent_key"], []).append(row)
        else:
            pending.append(row)
    if remote_images:
        tars, failures = _remote_images(remote_images, opts, work)
        for tar_path, successes in tars:
            writer.add_tar(tar_path, successes)
        for failure in failures:
            writer.add(failure)
    with ThreadPoolExecutor(max(1, opts.thread_count)) as pool:
        futures = [pool.submit(_guarded, _fetch_one if r["url"] else _local_one, r, job) for r in pending]
        grouped = [pool.submit(_guarded_parent, rows, job) for rows in parents.values()]
        for row, path in _archive_members(archived, work):
            if path is None:
                writer.add(row)
            else:
                futures.append(pool.submit(_guarded, _probe, row, path, job))
        for future in as_completed(futures):
            out_row, path, ext = future.result()
            writer.add(out_row, path, ext)
        for future in as_completed(grouped):
            for out_row, path, ext in future.result():
                writer.add(out_row, path, ext)


def download_shard(root: str, number: int, sid: str, options: dict) -> dict:
    """Download every planned row of shard `number` into shard `sid` of the dataset at `root`."""
    opts = DownloadOptions.from_dict(options)
    plan = DatasetFolder(root).plan_path
    rows = storage.read_table(plan, filters=[("shard_no", "=", number)]).drop(["shard_no"]).to_pylist()
    return build_shard(root, sid, lambda work, writer: _download_rows(rows, opts, work, writer))


RETRYABLE_STATUSES = ("failed_to_download", "failed_to_decode")


def retry_shard(root: str, sid: str, options: dict) -> dict:
    """Re-attempt the failed rows of a complete shard; its successes are carried over unchanged."""
    opts = DownloadOptions.from_dict(options)
    folder = DatasetFolder(root)
    old = storage.read_table(folder.manifest(sid)).to_pylist()

    def body(work: str, writer: ShardWriter) -> None:
        kept = {r["key"]: r for r in old if r["status"] not in RETRYABLE_STATUSES}
        for sample in reader.samples(root, sid, keys=kept):
            if sample.media is not None:
                path = os.path.join(work, f"{sample.key}.{sample.extension}")
                with open(path, "wb") as f:
                    f.write(sample.media)
                writer.add(kept.pop(sample.key), path, sample.extension)
        for row in kept.values():
            writer.add(row)
        fields = [f.name for f in schema.load("samples") if f.name != "input_error"]  # typed source columns too
        retry = [{k: r.get(k) for k in fields} for r in old if r["status"] in RETRYABLE_STATUSES]
        _download_rows(retry, opts, work, writer)

    return build_shard(root, sid, body)
