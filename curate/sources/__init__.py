"""Source readers: each turns one dataset's as-distributed files into chunks of samples-table rows."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

from curate.sources import folder, journeydb, laion, msrvtt, openvid, panda70m, urls, webvid

READERS: dict[str, Callable[..., Iterator[list[dict]]]] = {
    "webvid": webvid.read,
    "laion-coco": laion.read_coco,
    "laion-aesthetics": laion.read_aesthetics,
    "journeydb": journeydb.read,
    "msrvtt": msrvtt.read,
    "panda70m": panda70m.read,
    "openvid": openvid.read,
    "folder": folder.read,
    "urls": urls.read,
}


def read(source: str, path: str, **options) -> Iterator[list[dict]]:
    if source not in READERS:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(READERS)}")
    return READERS[source](path, **options)


def check_options(source: str, options: dict) -> None:
    """Raises ValueError, naming what `source` accepts, for source options its reader does not take (e.g.
    --whole-videos given to webvid), before anything is written."""
    accepted = [name for name in inspect.signature(READERS[source]).parameters if name != "path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"source {source} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}")
