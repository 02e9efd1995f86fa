"""Weight files on disk: find one (explicit path, Hugging Face hub cache, download) and read it as tensors.

The one reader of .safetensors / .pt / .pth / .bin / .ckpt files and the one Hugging Face cache
resolver, for the scorers and the trainer alike. Reading uses `torch.load(weights_only=True)`;
pickled objects beyond tensors and plain data, and TorchScript archives (OpenAI's CLIP release
format), load only with `trust_checkpoint=True`, for files whose source is trusted or whose
checksum is the published one.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

OFFLINE_ENV = ("CURATE_OFFLINE", "HF_HUB_OFFLINE")
# non-weights a TorchScript CLIP carries: OpenAI's files the first three (open_clip drops them the same
# way), a scripted open_clip model its causal mask buffer
TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


class WeightsMissing(FileNotFoundError):
    """A model file is not on disk and could not be downloaded."""


class WeightsMismatch(ValueError):
    """A model file is on disk but is not the published file (size or checksum differs)."""


class WeightsLayoutError(ValueError):
    """A weights file does not hold the keys and shapes the model needs."""


def curate_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def hf_hub_cache_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def downloads_allowed() -> bool:
    return not any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in OFFLINE_ENV)


def fetch(url: str, target: Path) -> Path:
    """Download url to target atomically (the only plain-URL network access; tests replace it)."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    partial.replace(target)
    return target


def fetch_from_hf(repo_id: str, filename: str) -> Path:
    """Download one file of a Hugging Face repository into the standard hub cache (tests replace it)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, cache_dir=hf_hub_cache_dir()))


def hf_cached(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of `filenames` present in the hub cache's snapshot of repo_id, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache_dir())
        if isinstance(cached, str):
            return Path(cached)
    return None


def hf_file(repo_id: str, filenames: tuple[str, ...], what: str) -> Path:
    """A file of a hub repository: from the cache, else downloaded (filenames[-1]) unless offline."""
    cached = hf_cached(repo_id, filenames)
    if cached is not None:
        return cached
    names = " or ".join(filenames)
    if not downloads_allowed():
        raise WeightsMissing(
            f"{what} ({names} of {repo_id}) is not in {hf_hub_cache_dir()} and downloads are disabled (offline). "
            f"Fetch it with `huggingface-cli download {repo_id} {filenames[-1]}`, or pass a local path."
        )
    try:
        return fetch_from_hf(repo_id, filenames[-1])
    except OSError as error:
        raise WeightsMissing(f"{what} ({names} of {repo_id}) is not in {hf_hub_cache_dir()} "
                             f"and download failed: {error}") from error


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, remembered per (path, size, mtime) so a multi-GB checkpoint is hashed once per process."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, algorithm)
    if memo not in _DIGESTS:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (OpenAI's CLIP release files are these, not plain state dicts)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_weights(path: str | Path, trust_checkpoint: bool = False, what: str = "weights",
                 mmap: bool = False) -> dict[str, Any]:
    """A weights file as a dict on CPU (safetensors, torch pickles, TorchScript archives' tensors).

    mmap=True maps a torch zip file instead of reading it (for key/shape checks of large files). A URL
    (s3://...) is fetched to a temporary local file first: the loaders need a seekable file.
    """
    import torch  # here, not at the top: the CLI and the weight-free stages import this module for its errors

    from curate import storage

    if storage.is_remote(str(path)):
        if not storage.exists(str(path)):
            raise FileNotFoundError(f"{what} file not found: {path}")
        with storage.local_copy(str(path)) as local:
            return read_weights(local, trust_checkpoint, what, mmap=False)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if is_torchscript(path):
        if not trust_checkpoint:
            raise ValueError(
                f"{path} is a TorchScript archive (OpenAI's CLIP release format), which weights_only loading "
                f"refuses. If you trust where the file came from, pass trust_checkpoint=True."
            )
        scripted = torch.jit.load(str(path), map_location="cpu")
        state = dict(scripted.state_dict())
        for key in TORCHSCRIPT_EXTRAS:
            state.pop(key, None)
        return state
    mmap = mmap and zipfile.is_zipfile(path)  # the legacy (pre-1.6) torch format cannot be mapped
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds pickled objects beyond tensors and plain data, which weights_only loading "
            f"refuses ({error}). If you trust where the file came from, pass trust_checkpoint=True."
        ) from error
    if not isinstance(state, dict):
        raise WeightsLayoutError(f"{path} holds a {type(state).__name__}, not a dict of tensors")
    return state


def unwrap_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a checkpoint saved as {"state_dict": ...} (Lightning, LDM) or as a bare state dict,
    without a DataParallel "module." prefix."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def check_layout(expected: dict[str, tuple[int, ...]], state: dict[str, Any], path: str | Path, what: str) -> None:
    """Raise WeightsLayoutError naming the file, the expected keys and what differs, unless keys and shapes match."""
    found = {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(found) if expected[key] != found[key])
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"missing {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {_preview(unexpected)}")
    if reshaped:
        problems.append("wrong shapes " + _preview([f"{key} {found[key]} (expected {expected[key]})" for key in reshaped]))
    layout = _preview([f"{key} {shape}" for key, shape in expected.items()], limit=12)
    raise WeightsLayoutError(f"{path} is not a {what} weights file: {'; '.join(problems)}. Expected keys: {layout}")


def module_layout(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module's state dict (what a strict load of a file must match)."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def load_strict(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str) -> None:
    """Load state into module after check_layout: a wrong file is one clear message, not a torch traceback."""
    check_layout(module_layout(module), state, path, what)
    module.load_state_dict(state, strict=True)


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown
