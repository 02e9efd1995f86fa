"""Weights registry: resolve a scorer's model file from an explicit path, the local caches, or (online) a download.

Order: explicit path -> standard caches (Hugging Face hub cache, open_clip's ~/.cache/clip, curate's own
cache) -> download. Offline and missing is a WeightsMissing error naming the file and where to put it;
random weights are never substituted.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip

OFFLINE_ENV = ("CURATE_OFFLINE", "HF_HUB_OFFLINE")
DEFAULT_CLIP = "ViT-L-14:openai"
HF_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_HUB_PREFIX = "hf-hub:"


class WeightsMissing(FileNotFoundError):
    """A model file is not on disk and could not be downloaded."""


class WeightsMismatch(ValueError):
    """A model file is on disk but is not the published file (size or checksum differs)."""


@dataclass(frozen=True)
class KnownFile:
    """A published weights file; checksums are the published values, None where none was found."""

    filename: str
    url: str
    size: int | None
    sha256: str | None
    md5: str | None
    checksum_source: str


# Size from the predictor's own repository; no published sha256 was found. The md5 is the one the
# EasyAnimate project publishes for its mirror of this file (aigc-apps/EasyAnimate, video_caption).
AESTHETIC_V2_L14 = KnownFile(
    filename="sac+logos+ava1-l14-linearMSE.pth",
    url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth",
    size=3_714_759,
    sha256=None,
    md5="b1047fd767a00134b8fd6529bf19521a",
    checksum_source="size: improved-aesthetic-predictor repository; md5: EasyAnimate mirror; no published sha256",
)

# OpenAI's CLIP release names each file by its sha256 (the URL's parent directory); open_clip and
# openai/CLIP verify downloads against it. The size is not published, so it is not recorded.
CLIP_VIT_L14_OPENAI = KnownFile(
    filename="ViT-L-14.pt",
    url="https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    size=None,
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    md5=None,
    checksum_source="sha256: OpenAI CLIP release URL (as checked by open_clip and openai/CLIP)",
)


def curate_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def open_clip_cache_dir() -> Path:
    return Path.home() / ".cache" / "clip"


def hf_hub_cache_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def downloads_allowed() -> bool:
    return not any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in OFFLINE_ENV)


def fetch(url: str, target: Path) -> Path:
    """Download url to target atomically (the only network access here; tests replace it)."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    partial.replace(target)
    return target


def fetch_from_hf(repo_id: str, filename: str) -> Path:
    """Download one file of a Hugging Face repository into the standard hub cache."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, cache_dir=hf_hub_cache_dir()))


def verify(path: Path, known: KnownFile) -> None:
    """Check a file against its published size and checksum (whichever are known)."""
    size = path.stat().st_size
    if known.size is not None and size != known.size:
        raise WeightsMismatch(f"{path} is {size:,} bytes; the published {known.filename} is {known.size:,} bytes")
    for algorithm, expected in (("sha256", known.sha256), ("md5", known.md5)):
        if expected:
            digest = _file_digest(path, algorithm)
            if digest != expected:
                raise WeightsMismatch(f"{path} has {algorithm} {digest}; the published {known.filename} has {expected}")
            return


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_known_file(known: KnownFile, explicit: str | Path | None = None, what: str = "model") -> Path:
    """Path of a known weights file: explicit path, else a cache, else a download; verified against its checksum."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsMissing(f"{what} weights not found at {path}")
        return path
    candidates = [directory / known.filename for directory in (curate_cache_dir(), open_clip_cache_dir())]
    for path in candidates:
        if path.is_file():
            verify(path, known)
            return path
    target = candidates[0]
    if not downloads_allowed():
        raise WeightsMissing(_missing_message(what, known, candidates, "downloads are disabled (offline)"))
    try:
        fetch(known.url, target)
    except OSError as error:
        raise WeightsMissing(_missing_message(what, known, candidates, f"download failed: {error}")) from error
    verify(target, known)
    return target


def _missing_message(what: str, known: KnownFile, looked: list[Path], why: str) -> str:
    size = f" ({known.size:,} bytes)" if known.size else ""
    places = ", ".join(str(path) for path in looked)
    return (
        f"{what} weights {known.filename}{size} not found and {why}. Looked at: {places}. "
        f"Download {known.url} and put it at {looked[0]}, or pass its path explicitly."
    )


@dataclass(frozen=True)
class ClipSource:
    """What open_clip needs to build one CLIP model from local files."""

    model_id: str  # recorded in outputs, e.g. "ViT-L-14:openai"
    architecture: str  # open_clip model name, or "local-dir:PATH"
    checkpoint: Path | None  # None when the architecture is a local dir holding its own weights
    pretrained_cfg: dict  # preprocessing and quick_gelu settings of a pretrained tag, {} otherwise


def resolve_clip(spec: str = DEFAULT_CLIP) -> ClipSource:
    """Resolve a CLIP spec to local files.

    Spec forms: "NAME:TAG" (open_clip pretrained tag, e.g. "ViT-L-14:openai"), "NAME:/path/ckpt"
    (open_clip architecture + checkpoint file), "/path/dir" (a folder with open_clip_config.json
    and its weights, as open_clip saves them for the hub), or "hf-hub:ORG/REPO" (such a folder on
    the Hugging Face hub, taken from the hub cache).
    """
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        if not (as_path / "open_clip_config.json").is_file():
            raise WeightsMissing(f"CLIP model folder {as_path} has no open_clip_config.json")
        # open_clip would warn and build random weights for a folder without a checkpoint; refuse instead
        if not any(next(as_path.glob(pattern), None) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            raise WeightsMissing(f"CLIP model folder {as_path} has no weights (*.safetensors, *.bin or *.pth)")
        return ClipSource(f"local-dir:{as_path}", f"local-dir:{as_path}", None, {})
    if spec.startswith(HF_HUB_PREFIX):
        return _clip_from_hf_repo(spec)
    architecture, sep, pretrained = spec.partition(":")
    if not sep or not pretrained:
        raise ValueError(f"CLIP spec {spec!r} must be NAME:TAG, NAME:/path/to/checkpoint, or a model folder")
    if architecture not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {architecture!r}")
    pretrained_path = Path(pretrained).expanduser()
    if pretrained_path.is_file():
        return ClipSource(f"{architecture}:{pretrained_path}", architecture, pretrained_path, {})
    cfg = open_clip.get_pretrained_cfg(architecture, pretrained)
    if not cfg:
        if "/" in pretrained or pretrained_path.suffix:
            raise WeightsMissing(f"CLIP checkpoint not found at {pretrained_path}")
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        raise ValueError(f"{architecture} has no pretrained tag {pretrained!r}; known tags: {tags}")
    return ClipSource(spec, architecture, _clip_checkpoint(architecture, pretrained, cfg), cfg)


def _clip_from_hf_repo(spec: str) -> ClipSource:
    """A hub repository holding an open_clip folder: use its cached snapshot folder as a local model folder."""
    from huggingface_hub import try_to_load_from_cache

    repo_id = spec[len(HF_HUB_PREFIX):].strip("/")
    config = try_to_load_from_cache(repo_id, "open_clip_config.json", cache_dir=hf_hub_cache_dir())
    if not isinstance(config, str) and downloads_allowed():
        try:
            config = str(fetch_from_hf(repo_id, "open_clip_config.json"))
            fetch_from_hf(repo_id, HF_CHECKPOINT_NAMES[1])
        except OSError as error:
            raise WeightsMissing(f"CLIP model {spec} is not in {hf_hub_cache_dir()} and download failed: {error}") from error
    if not isinstance(config, str):
        raise WeightsMissing(
            f"CLIP model {spec} is not in {hf_hub_cache_dir()} and downloads are disabled (offline). "
            f"Fetch it with `huggingface-cli download {repo_id}`, or pass a local model folder."
        )
    folder = resolve_clip(str(Path(config).parent))
    return ClipSource(spec, folder.architecture, None, {})


def _clip_checkpoint(architecture: str, tag: str, cfg: dict) -> Path:
    repo_id = cfg.get("hf_hub", "").rstrip("/")
    url = cfg.get("url", "")
    looked: list[str] = []
    if repo_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in HF_CHECKPOINT_NAMES:
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache_dir())
            if isinstance(cached, str):
                return Path(cached)
        looked.append(f"{hf_hub_cache_dir()} (Hugging Face repo {repo_id})")
    if url:
        for directory in (open_clip_cache_dir(), curate_cache_dir()):
            path = directory / url.rsplit("/", 1)[-1]
            if path.is_file():
                if url == CLIP_VIT_L14_OPENAI.url:
                    verify(path, CLIP_VIT_L14_OPENAI)
                return path
            looked.append(str(path))
    if not downloads_allowed():
        raise WeightsMissing(_clip_missing(architecture, tag, looked, "downloads are disabled (offline)", repo_id, url))
    try:
        if repo_id:
            return fetch_from_hf(repo_id, HF_CHECKPOINT_NAMES[1])
        return fetch(url, open_clip_cache_dir() / url.rsplit("/", 1)[-1])
    except OSError as error:
        raise WeightsMissing(_clip_missing(architecture, tag, looked, f"download failed: {error}", repo_id, url)) from error


def _clip_missing(architecture: str, tag: str, looked: list[str], why: str, repo_id: str, url: str) -> str:
    where = []
    if repo_id:
        where.append(f"`huggingface-cli download {repo_id}` (into {hf_hub_cache_dir()})")
    if url:
        where.append(f"download {url} into {open_clip_cache_dir()}")
    return (
        f"CLIP weights {architecture}:{tag} not found and {why}. Looked in: {'; '.join(looked)}. "
        f"Fetch them with {' or '.join(where)}, or pass {architecture}:/path/to/checkpoint."
    )
