"""Sample keys and rows: what every source reader emits, whatever its input format."""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import urlsplit

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_KEY_LEN = 96
# Typed samples/manifest columns a reader fills from the source's own columns (schemas/samples.yaml)
SOURCE_COLUMNS = ("laion_aesthetic", "punsafe", "pwatermark", "similarity", "source_width", "source_height",
                  "source_duration", "page_dir", "page_idx", "openvid_aesthetic", "openvid_motion",
                  "openvid_temporal_consistency", "camera_motion", "source_frames", "source_fps", "matching_score",
                  "parent_key", "window_start", "window_end")


def url_digest(url: str, n: int = 16) -> str:
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:n]


def make_key(prefix: str, source_id: str) -> str:
    """A tar-safe key from a source's own id: only [A-Za-z0-9_-] (WebDataset splits member names on the
    first dot). When sanitising changed or truncated the id, a digest of the original keeps keys distinct."""
    clean = _UNSAFE.sub("_", source_id)
    if clean != source_id or len(clean) > MAX_KEY_LEN:
        clean = f"{clean[:MAX_KEY_LEN - 9]}_{url_digest(source_id, 8)}"
    return f"{prefix}{clean}"


def url_problem(url: str | None) -> str | None:
    """Why a remote URL cannot be fetched at all (before any network), or None."""
    if not url:
        return "missing url"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"unsupported url scheme {parts.scheme!r} (only http and https)"
    if not parts.hostname:
        return "url has no host"
    return None


def sample(*, key: str, row: int, source: str, modality: str, caption: str | None,
           url: str | None = None, path: str | None = None, extra: dict | None = None,
           input_error: str | None = None, columns: dict | None = None) -> dict:
    """One samples-table row (see schemas/samples.yaml); `columns`: values of SOURCE_COLUMNS (the rest are null)."""
    if path is None and input_error is None:  # remote sample: the URL must be fetchable at all
        input_error = url_problem(url)
    unknown = set(columns or ()) - set(SOURCE_COLUMNS)
    if unknown:
        raise ValueError(f"not a typed source column: {sorted(unknown)}")
    return {
        "key": key, "row": row, "source": source, "modality": modality, "url": url, "path": path,
        "caption": caption or "", "extra": json.dumps(extra or {}, ensure_ascii=False, default=str),
        "input_error": input_error, **dict.fromkeys(SOURCE_COLUMNS), **(columns or {}),
    }
