"""Folder reader: local videos/images with sidecar .txt captions (clip.mp4 + clip.txt)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from curate.sources.sample import make_key, sample

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def modality_of(name: str) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None


def read(path: str) -> Iterator[list[dict]]:
    """Walks in sorted order; the key comes from the path relative to the folder, so it is stable."""
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a folder")
    files = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in sorted(names) if modality_of(n))
    chunk = []
    for row, file in enumerate(files):
        rel = os.path.relpath(file, path)
        sidecar = os.path.splitext(file)[0] + ".txt"
        caption = open(sidecar, encoding="utf-8").read().strip() if os.path.exists(sidecar) else ""
        chunk.append(sample(key=make_key("", os.path.splitext(rel)[0]), row=row, source="folder",
                            modality=modality_of(file), caption=caption, path=os.path.abspath(file),
                            extra={"relative_path": rel, "has_caption": os.path.exists(sidecar)}))
    yield chunk
