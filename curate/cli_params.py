"""Typer options built from the option dataclasses, so a CLI flag, its default and its YAML key are one field."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Optional

import typer

from curate.config import ConfigError, _hints, _unwrap_optional, from_mapping

# Help for fields whose dataclass lives outside curate/config.py (the download and fetch options).
HELP = {
    "thread_count": "Concurrent video downloads per shard task.",
    "image_thread_count": "img2dataset threads per shard task (images).",
    "max_pixels": "Refuse media with more pixels than this (from headers, before decoding).",
    "video_max_side": "Re-encode videos whose longer side exceeds this.",
    "image_max_side": "Downscale images whose longer side exceeds this.",
    "probe_workers": "Isolated decoder processes per shard task.",
    "decode_check": "Also decode each video's first frame at download (~5 ms per clip).",
    "connect_timeout": "Seconds to connect.",
    "read_timeout": "Seconds without a byte before a read fails.",
    "deadline": "Seconds one download attempt may take in all.",
    "max_bytes": "Byte cap per media file.",
    "retries": "Retries for timeouts, 429 and 5xx (never other 4xx).",
    "backoff": "First retry delay in seconds (doubles each retry).",
    "max_backoff": "A Retry-After longer than this is a failure, not a wait.",
    "max_redirects": "Redirects followed per URL.",
    "allow_private_addresses": "Permit loopback/private/link-local hosts (tests, demo, intranets).",
    "user_agent": "User-Agent header sent with every request.",
    "low_speed_limit": "Abort a download slower than this many bytes/s for low_speed_time seconds (as curl).",
    "low_speed_time": "Seconds below low_speed_limit before a download is aborted.",
}


def _fields(cls):
    """(name, type hint, default, metadata) of every flat option of cls (flattened dataclasses expanded)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            yield from _fields(hints[f.name])
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else ...)
        yield f.name, hints[f.name], default, f.metadata


def _size_text(value) -> str:
    return f"{value[0]}x{value[1]}"


def parse_size(text: str, option: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{option} must look like 512x320 (width x height)") from None
    return w, h


def option_params(cls, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per option of `cls` with the field's default and help. Lists are comma-separated
    text, sizes WxH text; mappings are left to the command."""
    params = []
    for name, hint, default, meta in _fields(cls):
        if name in exclude:
            continue
        base, optional = _unwrap_optional(hint)
        origin = typing.get_origin(base) or base
        if origin is dict:
            continue
        kwargs = {k: meta[k] for k in ("min", "max") if k in meta}
        help_text = meta.get("help") or HELP.get(name, "")
        if origin is list:
            annotation, default = Optional[str], (",".join(default) if default not in (None, ...) else default)
        elif origin is tuple:
            annotation, default = Optional[str], (_size_text(default) if default not in (None, ...) else default)
        elif base in (int, float, str, bool):
            annotation = Optional[base] if optional else base
        else:
            continue
        flag = "--" + name.replace("_", "-")
        option = typer.Option(default, flag, help=help_text, **kwargs) if base is not bool else \
            typer.Option(default, f"{flag}/--no-{name.replace('_', '-')}", help=help_text)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def section_from_flags(cls, values: dict, **fixed):
    """The section built from the flags' values (sizes parsed, lists split) plus `fixed` keys, strictly."""
    data = dict(fixed)
    hints = dict((name, hint) for name, hint, _, _ in _fields(cls))
    for name, value in values.items():
        if name not in hints:
            continue
        base, _ = _unwrap_optional(hints[name])
        if (typing.get_origin(base) or base) is tuple and isinstance(value, str):
            value = parse_size(value, "--" + name.replace("_", "-"))
        data[name] = value
    return from_mapping(cls, data)


def with_options(cls, exclude: tuple[str, ...] = ()):
    """Decorator: append `cls`'s options to a command's own parameters (the command gets them as **options)."""

    def wrap(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        names = {p.name for p in own}
        extra = [p for p in option_params(cls, exclude) if p.name not in names]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        command.__signature__ = inspect.Signature(own + extra)
        command.__annotations__ = {}
        del command.__wrapped__  # typer must read the signature above, not the original function's
        return command

    return wrap
