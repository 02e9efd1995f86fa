"""Folder reader: videos/images with sidecar .txt captions (clip.mp4 + clip.txt), local or in object storage."""

from __future__ import annotations

import os
from collections.abc import Iterator

from curate import storage
from curate.shards.reader import modality_of
from curate.sources.sample import make_key, sample

def _walk_order(rel: str) -> tuple:
    """os.walk's order with sorted names: a folder's own files (sorted) before its subfolders (sorted)."""
    *dirs, name = rel.split("/")
    return (*((1, d) for d in dirs), (0, name))


def read(path: str) -> Iterator[list[dict]]:
    """Walks in sorted order; the key comes from the path relative to the folder, so it is stable (and the same
    for a local folder and its copy in object storage)."""
    if not storage.isdir(path):
        raise NotADirectoryError(f"{path} is not a folder")
    root = path.rstrip("/") if storage.is_remote(path) else os.path.abspath(storage.local_path(path))
    every = storage.walk_files(root)
    # relative names with "/" on every system: the key, the order and the sidecar look-up use them
    rel_of = {f: os.path.relpath(f, root).replace(os.sep, "/") if not storage.is_remote(root)
              else f[len(root) + 1:] for f in every}
    present = set(rel_of.values())
    media = sorted((f for f in every if modality_of(f)), key=lambda f: _walk_order(rel_of[f]))
    chunk = []
    for row, file in enumerate(media):
        rel = rel_of[file]
        sidecar = os.path.splitext(rel)[0] + ".txt"
        caption = ""
        if sidecar in present:
            with storage.open(storage.join(root, sidecar), "r", encoding="utf-8") as f:
                caption = f.read().strip()
        chunk.append(sample(key=make_key("", os.path.splitext(rel)[0]), row=row, source="folder",
                            modality=modality_of(file), caption=caption, path=file,
                            extra={"relative_path": rel, "has_caption": sidecar in present}))
    yield chunk
