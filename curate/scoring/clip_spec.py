"""A CLIP spec resolved to an open_clip architecture and a local weights file (recognised, or inferred from its
keys and shapes).

A CLIP spec is one of:
  NAME:TAG          an open_clip pretrained tag, e.g. "ViT-L-14:openai" (from the Hugging Face hub cache,
                    open_clip's ~/.cache/clip, or a download unless offline);
  NAME:/path/file   an open_clip architecture and a checkpoint file (.pt, .pth, .bin, .safetensors);
  /path/file        a checkpoint file alone: the architecture is recognised from the file (a published
                    checksum, a Hugging Face cache folder) or inferred from its keys and shapes; a file that
                    fits several architectures is refused with the candidates to choose from;
  /path/dir         a folder with open_clip_config.json and its weights, as open_clip saves them;
  hf-hub:ORG/REPO   such a folder on the Hugging Face hub, taken from the hub cache.

Activation: open_clip's names fix it (ViT-L-14 is GELU, ViT-L-14-quickgelu QuickGELU). OpenAI trained
with QuickGELU, so weights known to be OpenAI's (the openai tag, a file with OpenAI's published sha256,
an OpenAI repository's file in the hub cache, any TorchScript archive, which is OpenAI's release format)
are always built with QuickGELU. A bare file whose layout fits both a GELU and a QuickGELU name is refused.
Missing weights are a WeightsMissing error naming the file and where to put it; random weights are never
substituted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import open_clip
import torch

from curate.scoring.options import DEFAULT_CLIP
from curate.scoring.published_weights import KnownFile, open_clip_cache_dir, verify
from curate.weightfile import (
    WeightsMissing,
    check_layout,
    curate_cache_dir,
    downloads_allowed,
    fetch,
    file_digest,
    hf_cached,
    hf_file,
    hf_hub_cache_dir,
    is_torchscript,
    module_layout,
    read_weights,
    unwrap_state_dict,
)

HF_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_HUB_PREFIX = "hf-hub:"
QUICKGELU_SUFFIX = "-quickgelu"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_SHA256_IN_URL = re.compile(r"/([0-9a-f]{64})/")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSource:
    """What open_clip needs to build one CLIP model from a local file, and what the weights are known to be."""

    model_id: str  # recorded in outputs, e.g. "ViT-L-14:openai"
    architecture: str  # open_clip model name, or "local-dir:PATH"
    checkpoint: Path  # the weights file
    quick_gelu: bool  # build with QuickGELU (OpenAI's weights) whatever the architecture name says
    preprocess: dict = field(default_factory=dict)  # mean/std/interpolation/resize_mode of a pretrained tag
    openai: str | None = None  # the OpenAI release these weights are (e.g. "ViT-L-14"); None when not known
    trusted: bool = False  # the file's checksum is the published one, so a TorchScript archive may be read


def resolve_clip(spec: str = DEFAULT_CLIP, trust_checkpoint: bool = False) -> ClipSource:
    """Resolve a CLIP spec (see the module docstring) to a local weights file and how to build it.

    trust_checkpoint=True reads a TorchScript archive or pickle whose checksum is not a published one.
    """
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return _clip_folder(as_path, spec)
    if as_path.is_file():
        return _clip_file(as_path, None, trust_checkpoint)
    if spec.startswith(HF_HUB_PREFIX):
        repo_id = spec[len(HF_HUB_PREFIX):].strip("/")
        config = hf_file(repo_id, ("open_clip_config.json",), f"CLIP model {spec}")
        hf_file(repo_id, HF_CHECKPOINT_NAMES, f"CLIP model {spec}")
        return _clip_folder(config.parent, spec)
    architecture, sep, pretrained = spec.partition(":")
    if not sep or not pretrained:
        raise ValueError(f"CLIP spec {spec!r} must be NAME:TAG, NAME:/path/to/checkpoint, a checkpoint file "
                         "or a model folder")
    if architecture not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {architecture!r}")
    pretrained_path = Path(pretrained).expanduser()
    if pretrained_path.is_file():
        return _clip_file(pretrained_path, architecture, trust_checkpoint)
    cfg = open_clip.get_pretrained_cfg(architecture, pretrained)
    if not cfg:
        if "/" in pretrained or pretrained_path.suffix:
            raise WeightsMissing(f"CLIP checkpoint not found at {pretrained_path}")
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        raise ValueError(f"{architecture} has no pretrained tag {pretrained!r}; known tags: {tags}")
    checkpoint = _clip_checkpoint(architecture, pretrained, cfg)
    return ClipSource(spec, architecture, checkpoint, bool(cfg.get("quick_gelu")), _preprocess_of(cfg),
                      _openai_name(architecture, pretrained), trusted=_sha256_in_url(cfg) is not None)


def _clip_folder(folder: Path, spec: str) -> ClipSource:
    import json

    config_file = folder / "open_clip_config.json"
    if not config_file.is_file():
        raise WeightsMissing(f"CLIP model folder {folder} has no open_clip_config.json")
    # open_clip would warn and build random weights for a folder without a checkpoint; refuse instead
    checkpoint = next((folder / name for name in HF_CHECKPOINT_NAMES if (folder / name).is_file()), None)
    if checkpoint is None:
        found = sorted(path for pattern in ("*.safetensors", "*.bin", "*.pth") for path in folder.glob(pattern))
        if len(found) > 1:
            raise ValueError(f"CLIP model folder {folder} holds several weights files {[p.name for p in found]}; "
                             f"keep one, or name one as {HF_CHECKPOINT_NAMES[0]}")
        if not found:
            raise WeightsMissing(f"CLIP model folder {folder} has no weights (*.safetensors, *.bin or *.pth)")
        checkpoint = found[0]
    model_cfg = json.loads(config_file.read_text()).get("model_cfg", {})
    model_id = spec if spec.startswith(HF_HUB_PREFIX) else f"local-dir:{folder}"
    return ClipSource(model_id, f"local-dir:{folder}", checkpoint, bool(model_cfg.get("quick_gelu")))


def _clip_file(path: Path, architecture: str | None, trust_checkpoint: bool) -> ClipSource:
    """A checkpoint file, with or without the architecture named: recognise it, else infer or take the name."""
    published = _published_file(path)
    torchscript = is_torchscript(path)
    if published is not None:
        known_arch, tag, cfg, checked = published
        if architecture is not None and _base_name(architecture) != _base_name(known_arch):
            raise ValueError(f"{path} is the published {known_arch}:{tag} checkpoint, not {architecture}")
        architecture = architecture or known_arch
        quick_gelu = bool(cfg.get("quick_gelu")) or torchscript or architecture.endswith(QUICKGELU_SUFFIX)
        return ClipSource(f"{architecture}:{path}", architecture, path, quick_gelu, _preprocess_of(cfg),
                          _openai_name(known_arch, tag), trusted=checked or trust_checkpoint)
    if torchscript and not trust_checkpoint:
        raise ValueError(
            f"{path} is a TorchScript archive (OpenAI's CLIP release format) but its sha256 is not one OpenAI "
            "published, so it is not read by default. Pass the published file, or trust it explicitly."
        )
    if architecture is None:
        architecture = _infer_architecture(path, torchscript, trust_checkpoint)
    elif not torchscript and "openai" in open_clip.list_pretrained_tags_by_model(architecture) \
            and not architecture.endswith(QUICKGELU_SUFFIX):
        log.warning("%s: building %s with GELU, as open_clip's name says; OpenAI-trained weights need "
                    "%s%s:%s", path, architecture, architecture, QUICKGELU_SUFFIX, path)
    quick_gelu = torchscript or architecture.endswith(QUICKGELU_SUFFIX)
    return ClipSource(f"{architecture}:{path}", architecture, path, quick_gelu, trusted=trust_checkpoint)


def _infer_architecture(path: Path, torchscript: bool, trust_checkpoint: bool) -> str:
    """The one open_clip architecture whose keys and shapes a bare checkpoint file fits."""
    state = unwrap_state_dict(read_weights(path, trust_checkpoint, "CLIP checkpoint", mmap=True))
    shapes = {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}
    if "text_projection" not in shapes or "visual.conv1.weight" not in shapes:
        raise ValueError(f"{path} does not look like an open_clip/OpenAI CLIP state dict (no text_projection or "
                         "visual.conv1.weight); name its architecture as NAME:/path or pass a model folder")
    fits = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        vision = cfg.get("vision_cfg", {})
        if cfg.get("embed_dim") != shapes["text_projection"][-1] or vision.get("width") != shapes["visual.conv1.weight"][0]:
            continue
        try:
            check_layout(clip_layout(name), state, path, name)
        except Exception:  # a different layout, or a tower this install cannot build (timm, transformers)
            continue
        fits.append(name)
    if torchscript:  # OpenAI's format: QuickGELU whichever name is chosen, so the twins are one answer
        fits = sorted({_base_name(name) for name in fits})
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise ValueError(f"{path} fits no open_clip architecture; name it as NAME:/path or pass a model folder")
    raise ValueError(
        f"{path} fits several open_clip architectures {fits}; name one as NAME:{path}. Architectures that differ "
        f"only in the activation cannot be told apart from the weights: OpenAI-trained weights are NAME{QUICKGELU_SUFFIX}, "
        "others (LAION, DataComp) are the plain name."
    )


@lru_cache(maxsize=None)
def clip_layout(architecture: str, quick_gelu: bool = False) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an open_clip architecture's state dict (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = build_clip(architecture, quick_gelu, device="meta")
    return module_layout(model)


def build_clip(architecture: str, quick_gelu: bool, device: str = "cpu", preprocess: dict | None = None):
    """An open_clip model without weights (they are loaded by the caller, through curate.weightfile)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip warns that no weights were loaded: that is the point here
    try:
        # pretrained_text=False: a Hugging Face text tower would otherwise fetch its own base weights
        return open_clip.create_model(architecture, load_weights=False, pretrained_text=False, device=device,
                                      force_quick_gelu=quick_gelu, force_preprocess_cfg=preprocess or None)
    finally:
        logger.setLevel(level)


@lru_cache(maxsize=1)
def _published() -> tuple[dict[str, tuple[str, str, dict]], dict[str, tuple[str, str, dict]]]:
    """(sha256 -> (architecture, tag, cfg), hub repo -> same) for every open_clip pretrained tag."""
    by_sha, by_repo = {}, {}
    for architecture, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(architecture, tag)
        entry = (architecture, tag, cfg)
        if (sha := _sha256_in_url(cfg)) is not None:
            by_sha.setdefault(sha, entry)
        if repo := cfg.get("hf_hub", "").strip("/"):
            by_repo.setdefault(repo, entry)
    return by_sha, by_repo


def _published_file(path: Path) -> tuple[str, str, dict, bool] | None:
    """(architecture, tag, cfg, checksum_checked) when the file is a known pretrained checkpoint, else None.

    Known by its sha256 (OpenAI's URLs name it) or by sitting in the hub cache folder of a tag's repository.
    """
    by_sha, by_repo = _published()
    for part in path.expanduser().absolute().parts:
        if part.startswith("models--") and (entry := by_repo.get(part[len("models--"):].replace("--", "/"))):
            return (*entry, False)
    entry = by_sha.get(file_digest(path))
    return (*entry, True) if entry else None


def _sha256_in_url(cfg: dict) -> str | None:
    match = _SHA256_IN_URL.search(cfg.get("url", ""))
    return match.group(1) if match else None


def _base_name(architecture: str) -> str:
    return architecture.removesuffix(QUICKGELU_SUFFIX)


def _openai_name(architecture: str, tag: str) -> str | None:
    return _base_name(architecture) if tag == "openai" else None


def _preprocess_of(cfg: dict) -> dict:
    return {key: cfg[key] for key in _PREPROCESS_KEYS if cfg.get(key) is not None}


def _clip_checkpoint(architecture: str, tag: str, cfg: dict) -> Path:
    repo_id = cfg.get("hf_hub", "").strip("/")
    url = cfg.get("url", "")
    looked: list[str] = []
    if repo_id:
        cached = hf_cached(repo_id, HF_CHECKPOINT_NAMES)
        if cached is not None:
            return cached
        looked.append(f"{hf_hub_cache_dir()} (Hugging Face repo {repo_id})")
    if url:
        for directory in (open_clip_cache_dir(), curate_cache_dir()):
            path = directory / url.rsplit("/", 1)[-1]
            if path.is_file():
                if sha256 := _sha256_in_url(cfg):
                    verify(path, KnownFile(path.name, url, None, sha256, None, "sha256 in the release URL"))
                return path
            looked.append(str(path))
    if not downloads_allowed():
        raise WeightsMissing(_clip_missing(architecture, tag, looked, "downloads are disabled (offline)", repo_id, url))
    try:
        if repo_id:
            return hf_file(repo_id, HF_CHECKPOINT_NAMES, f"CLIP weights {architecture}:{tag}")
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
