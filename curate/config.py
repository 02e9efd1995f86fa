"""Options as dataclasses: one strict loader (YAML files, recipe paths, sections) and the select section;
each stage's own section lives with its stage (DownloadSection in curate.download.stage, SplitSection in
curate.split.options, ScoreSection in curate.scoring.options), the recipe that combines them in curate.pipeline.

A section's dataclass is the single source of its keys, types and defaults: `curate run` reads it from
YAML with `from_mapping`, and the CLI builds its options from the same fields (curate/cli_params.py).
A field whose metadata says `flatten` is a nested option dataclass whose keys sit at the section's level
(e.g. the fetch policy's timeouts are plain `download:` keys).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from curate import storage

FLATTEN = {"flatten": True}


class ConfigError(ValueError):
    """A recipe or section that cannot be used as written; the message names the offending key."""


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def option_names(cls) -> list[str]:
    """Every key a section accepts: its own fields, with flattened nested dataclasses expanded."""
    names = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            names += option_names(_hints(cls)[f.name])
        else:
            names.append(f.name)
    return names


def _number(kind: type, value: Any, where: str):
    # YAML reads 5e-5 (no dot) as a string, so numbers are converted explicitly
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if kind is int:
        if number != int(number):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    return number


def _value(hint, value: Any, where: str):
    hint, optional = _unwrap_optional(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if origin is list:
        if isinstance(value, str):  # "a,b" on a command line or in YAML
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if hint in (int, float):
        return _number(hint, value, where)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_mapping(cls, data: Any, where: str = ""):
    """Build dataclass `cls` from a mapping, strictly: unknown keys are errors naming the allowed ones,
    numbers are converted, nested dataclasses are built recursively (flattened ones from the same level)."""
    label = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__}")
    allowed = option_names(cls)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(allowed)}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            nested = {k: data[k] for k in option_names(hints[f.name]) if k in data}
            kwargs[f.name] = from_mapping(hints[f.name], nested, where)
        elif f.name in data:
            kwargs[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}" if where else f.name)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{label}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{label}: {err}") from None


def to_mapping(obj) -> dict:
    """The inverse of from_mapping (flattened fields back at their section's level)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("flatten"):
            out.update(to_mapping(value))
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_mapping(value)
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def replace_options(obj, changes: dict):
    """A copy of section `obj` with flat option keys changed (what the CLI does with its flags)."""
    return from_mapping(type(obj), {**to_mapping(obj), **changes})


def load_yaml(path) -> Any:
    """The data of a YAML file (every recipe is read here); a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


_VARIABLE = re.compile(r"\$(?:(\w+)|\{(\w+)\})")


def expand_variables(value: str, where: str) -> str:
    """`value` with $NAME / ${NAME} replaced from the environment; an unset one is a ConfigError naming it."""
    unset = sorted({a or b for a, b in _VARIABLE.findall(value) if (a or b) not in os.environ})
    if unset:
        raise ConfigError(f"{where}: {value} needs the environment variable(s) {', '.join(unset)}, which are not set")
    return os.path.expandvars(value)


def expand_path(value: str, base: str, where: str) -> str:
    """A path in a recipe: variables expanded (see expand_variables), then ~, then a relative path taken against
    `base` (the recipe's folder, so recipes travel with their data); a URL stays as written."""
    expanded = expand_variables(value, where)
    if storage.is_remote(expanded):
        return expanded
    return os.path.normpath(os.path.join(base, os.path.expanduser(expanded)))


def option_help(text: str, **more) -> dict:
    return {"help": text, **more}


CAPTION_BACKENDS = ("openai", "hf")
DEFAULT_CAPTION_PROMPT = ("Describe this video in one factual paragraph: the subjects, their actions and motion, the "
                          "setting, the camera's movement and the visual style. Describe only what is visible; do not "
                          "guess names or add opinions. The images are frames of one clip in temporal order.")


@dataclass
class CaptionSection:
    model: str = field(metadata=option_help(
        "openai: the model's name on the endpoint (e.g. Qwen/Qwen2.5-VL-7B-Instruct); hf: a saved model's folder, "
        "or a Hugging Face id in the local hub cache."))
    endpoint: str | None = field(default=None, metadata=option_help(
        "OpenAI-compatible base URL (vLLM, SGLang, TGI, Ollama), e.g. http://127.0.0.1:8000/v1."))
    backend: str = field(default="openai", metadata=option_help(
        "openai: an OpenAI-compatible chat endpoint; hf: a Qwen2-VL / Qwen2.5-VL model run in-process with "
        "transformers (one actor per GPU, else one on the CPU)."))
    name: str | None = field(default=None, metadata=option_help(
        "Caption run name: captions/<name>/ and the column caption_<name> (default: from the model name)."))
    frames: int = field(default=4, metadata=option_help("Frames sent per video, evenly spaced (images: the image).", min=1))
    max_side: int = field(default=768, metadata=option_help("Frames are downscaled to this longer side before JPEG "
                                                      "encoding.", min=16))
    prompt_file: str | None = field(default=None, metadata=option_help(
        "A text file with the prompt (default: one factual paragraph about the clip)."))
    max_tokens: int = field(default=300, metadata=option_help("Answer length cap in tokens.", min=1))
    batch_size: int = field(default=8, metadata=option_help("hf: samples per generate call.", min=1))
    actors: int | None = field(default=None, metadata=option_help(
        "hf: model actors (default: one per GPU, else 1).", min=1))
    concurrency: int = field(default=32, metadata=option_help("openai: requests in flight.", min=1))
    timeout: float = field(default=120.0, metadata=option_help("openai: seconds one request may take.", min=0.1))
    retries: int = field(default=6, metadata=option_help(
        "openai: retries of a request on 429, 5xx, timeouts and dropped connections (backoff with jitter; "
        "Retry-After honoured).", min=0))
    max_run_seconds: float | None = field(default=None, metadata=option_help(
        "openai: bound on the whole run: unfinished shards are left for the next run (exit 1).", min=1.0))
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=option_help(
        "openai: environment variable holding the API key (never printed or stored); unset: no key is sent."))

    def __post_init__(self):
        if self.backend not in CAPTION_BACKENDS:
            raise ConfigError(f"unknown caption backend {self.backend!r}; choose from {', '.join(CAPTION_BACKENDS)}")
        if self.backend == "hf":
            for name, flag in (("endpoint", "--endpoint"), ("max_run_seconds", "--max-run-seconds")):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{flag} is for the openai backend; --backend hf runs --model in-process")
        elif not self.endpoint:
            raise ConfigError("--endpoint is required with the openai backend (e.g. http://127.0.0.1:8000/v1)")

    def prompt(self) -> str:
        if not self.prompt_file:
            return DEFAULT_CAPTION_PROMPT
        try:
            text = open(self.prompt_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise ConfigError(f"--prompt-file: {exc}") from None
        if not text:
            raise ConfigError(f"--prompt-file {self.prompt_file} is empty")
        return text


@dataclass
class SelectSection:
    where: str = field(default="TRUE", metadata=option_help(
        "Predicate over `samples` columns, e.g. \"aesthetic_score >= 5.5 AND clip_score >= 0.28\"."))
    top: float | None = field(default=None, metadata=option_help(
        "Keep this fraction (0-1] of what passes --where, best first by --by."))
    by: str | None = field(default=None, metadata=option_help("Column that ranks samples for --top and --quota."))
    quotas: dict = field(default_factory=dict, metadata=option_help("SOURCE=N: at most N samples from SOURCE."))
    video_size: tuple = field(default=(512, 320), metadata=option_help(
        "Training geometry for videos, width x height (resize to cover + centre crop)."))
    image_size: tuple = field(default=(512, 512), metadata=option_help("Training geometry for images, width x height."))
    max_frames: int | None = field(default=None, metadata=option_help("Cap the frames kept per video.", min=1))
    caption: str | None = field(default=None, metadata=option_help(
        "Caption run (curate caption --name) whose text goes into KEY.txt and the manifest (default: the source "
        "caption); a sample without a caption from that run keeps its source caption."))
    out: str = field(default="selected", metadata=option_help(
        "Output folder; a relative path is beside the dataset folder."))

    def __post_init__(self):
        for name in ("video_size", "image_size"):
            size = tuple(getattr(self, name))
            if len(size) != 2 or min(int(v) for v in size) < 8:
                raise ConfigError(f"select.{name}: expected [width, height] of at least 8 px, got {list(size)}")
            setattr(self, name, tuple(int(v) for v in size))
        if self.top is not None and not 0 < self.top <= 1:
            raise ConfigError("select.top is a fraction in (0, 1]")
        if (self.top is not None or self.quotas) and not self.by:
            raise ConfigError("select.top and select.quotas need `by`: the column that ranks samples")
