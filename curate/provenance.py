"""Provenance: what produced a dataset folder (config, input fingerprint, versions), and the resume check."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata

from curate import storage

PACKAGES = ("curate", "torch", "open_clip_torch", "ray", "pyarrow", "webdataset", "img2dataset", "decord",
            "duckdb", "numpy", "pillow", "opencv-python-headless")
_EDGE = 4 << 20


class ProvenanceMismatch(Exception):
    """A rerun whose input or config differs from what the folder was built with."""


def _file_digest(path: str, digest) -> None:
    size = storage.size(path)
    digest.update(f"{storage.basename(path)}:{size}:".encode())
    # object storage: two ranged reads of at most 4 MiB (fsspec would otherwise read ahead a whole block)
    with storage.open(path, "rb", **({"block_size": _EDGE} if storage.is_remote(path) else {})) as f:
        if size <= 2 * _EDGE:
            digest.update(f.read())
        else:  # head + tail + size: catches edits and truncation of multi-GB CSVs without reading them whole
            digest.update(f.read(_EDGE))
            f.seek(-_EDGE, os.SEEK_END)
            digest.update(f.read(_EDGE))


def input_fingerprint(path: str) -> str:
    """sha256 over the input's bytes (files up to 8 MiB; larger: size + first and last 4 MiB) and, for
    folders, every file's relative path. A local file or folder and its copy in object storage have the
    same fingerprint."""
    if storage.isdir(path):
        return files_fingerprint(path, storage.walk_files(path))
    digest = hashlib.sha256()
    _file_digest(path, digest)
    return digest.hexdigest()


def files_fingerprint(base: str, files: list[str]) -> str:
    """input_fingerprint of a chosen set of files under `base` (path relative to base + contents)."""
    digest = hashlib.sha256()
    for full in sorted(files):
        digest.update(_relative(full, base).encode())
        _file_digest(full, digest)
    return digest.hexdigest()


def _relative(full: str, base: str) -> str:
    if not storage.is_remote(base):
        return os.path.relpath(storage.local_path(full), storage.local_path(base))
    prefix = base.rstrip("/") + "/"
    if not full.startswith(prefix):
        raise ValueError(f"{full} is not under {base}")
    return full[len(prefix):]


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def record(stage: str, config: dict, fingerprint: str, **more) -> dict:
    return {"stage": stage, "config": config, "input_fingerprint": fingerprint, "versions": package_versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **more}


def _shown(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resume(existing: dict | None, config: dict, fingerprint) -> None:
    """Refuse to continue a folder built from another input or config (the caller offers --force). The message
    names what changed: the config keys with their old and new values, and, for a fingerprint given as a mapping
    of named inputs (e.g. {"generated": ..., "real": ...}), which inputs."""
    if existing is None:
        return
    old_input = existing.get("input_fingerprint")
    if old_input != fingerprint:
        inputs = ""
        if isinstance(old_input, dict) and isinstance(fingerprint, dict):
            changed = sorted(k for k in set(old_input) | set(fingerprint) if old_input.get(k) != fingerprint.get(k))
            inputs = f": {', '.join(changed)}"
        raise ProvenanceMismatch(f"the input differs from the one this folder was built from{inputs}")
    before = existing.get("config") or {}
    old = json.dumps(before, sort_keys=True, default=str)
    new = json.dumps(config, sort_keys=True, default=str)
    if old != new:
        changed = sorted(k for k in set(config) | set(before) if before.get(k) != config.get(k))
        values = "; ".join(f"{k}: {_shown(before.get(k))} -> {_shown(config.get(k))}" for k in changed)
        raise ProvenanceMismatch(f"the configuration differs from the one this folder was built with: {changed} "
                                 f"({values})")
