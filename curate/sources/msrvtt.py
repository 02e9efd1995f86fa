"""MSR-VTT reader: MSRVTT_data.json (videos, sentences, splits) + a folder of the video files (local or in object
storage)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator

from curate import storage
from curate.shards.reader import VIDEO_EXTENSIONS
from curate.sources.sample import make_key, sample


def _find_video(videos: str, names: set[str], video_id: str) -> str | None:
    for ext in VIDEO_EXTENSIONS:
        if f"{video_id}.{ext}" in names:
            return storage.join(videos, f"{video_id}.{ext}")
    return None


def read(path: str, videos: str | None = None, split: str | None = None) -> Iterator[list[dict]]:
    """One row per video; caption = the first sentence (by sen_id), all 20 captions kept in extra."""
    with storage.open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "videos" not in data or "sentences" not in data:
        raise ValueError(f"{path}: not MSRVTT_data.json (needs 'videos' and 'sentences')")
    videos = videos or storage.join(storage.parent(path), "videos")
    # one listing, not a look-up per video
    names = {storage.basename(p) for p in storage.glob(storage.join(videos, "*"))}
    captions: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s in data["sentences"]:
        captions[s.get("video_id")].append((s.get("sen_id", 0), s.get("caption", "")))
    chunk = []
    for row, video in enumerate(data["videos"]):
        if split is not None and video.get("split") != split:
            continue
        video_id = str(video.get("video_id", ""))
        caps = [c for _, c in sorted(captions.get(video_id, []))]
        local = _find_video(videos, names, video_id) if video_id else None
        error = None if local else (f"video file for {video_id} not found in {videos}" if video_id else "missing video_id")
        extra = {"id": video.get("id"), "video_id": video_id, "category": video.get("category"),
                 "split": video.get("split"), "youtube_url": video.get("url"),
                 "start_time": video.get("start time"), "end_time": video.get("end time"), "all_captions": caps}
        chunk.append(sample(key=make_key("msrvtt_", video_id or f"row{row}"), row=row, source="msrvtt",
                            modality="video", caption=caps[0] if caps else "", path=local, extra=extra,
                            input_error=error))
    yield chunk
