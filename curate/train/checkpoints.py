"""Checkpoint files: our training checkpoints (atomic plain dicts), the released VideoCrafter2 checkpoint, SD 2.1 weights.

Everything is read with `torch.load(weights_only=True)` (or safetensors); a pickle that needs
arbitrary code only loads with `trust_checkpoint=True`, for files whose source you trust.

A run folder may be a URL (s3://bucket/runs/x, see curate.storage): a checkpoint is then written to a local
staging file and uploaded as one object, so a listing shows whole checkpoints only and the newest one is what a
resume finds; its config is uploaded first as step_N.config.json, so preflight can compare recipes without
downloading the weights. Local run folders keep Path results; remote ones give URL strings.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curate import storage
from curate.train.attention import TemporalTransformer
from curate.weightfile import read_weights
from curate.train.lora import merge_lora_state
from curate.train.recipe import Recipe, RecipeError, recipe_from_dict
from curate.train.unet3d import TemporalConvBlock, UNet3D, parameter_groups

CHECKPOINT_KEYS = ("model", "ema", "opt", "step", "config")
# Prefixes of the three models inside a LatentDiffusion state dict (VideoCrafter2, SD 2.1).
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_CONFIG_SUFFIX = ".config.json"


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> str | Path:
    """Write {model, ema, opt, step, config} atomically: temp file in the same folder, fsync, rename
    (a URL: a local staging file uploaded as one object, after its config sidecar).

    `model`/`ema`/`opt` are state dicts (`ema` may be None), `step` an int, `config` plain data
    (dicts, lists, strings, numbers), so that the file loads with weights_only=True.
    """
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}; expected keys {list(CHECKPOINT_KEYS)}")
    if storage.is_remote(path):
        return _upload_checkpoint(str(path), checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path


def _upload_checkpoint(url: str, checkpoint: dict[str, Any]) -> str:
    staging = storage.staging_dir(storage.parent(url))
    try:
        staged = os.path.join(staging, storage.basename(url))
        torch.save(checkpoint, staged)
        storage.write_json(url[: -len(".pt")] + _CONFIG_SUFFIX, checkpoint["config"])
        storage.put(staged, url)  # one whole object (multipart uploads appear only when completed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return url


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The `config` of a checkpoint without reading its tensors: mapped locally, the uploaded sidecar remotely."""
    sidecar = str(path)[: -len(".pt")] + _CONFIG_SUFFIX
    if not storage.is_remote(path):
        return read_weights(path, mmap=True)["config"]
    if not storage.exists(sidecar):
        return load_checkpoint(path)["config"]
    config = storage.read_json(sidecar)
    with contextlib.suppress(RecipeError, KeyError, TypeError):  # JSON made the recipe's tuples lists: back to tuples
        config["recipe"] = recipe_from_dict(config["recipe"]).to_dict()
    return config


def load_checkpoint(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors on CPU). A local file is memory-mapped: only the
    tensors a caller touches are read (a sampler never pages in the optimizer state, ~2/3 of F-base's 22 GB),
    and processes on one host loading the same file share its pages."""
    checkpoint = read_weights(path, trust_checkpoint, what="checkpoint", mmap=True)
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a curate training checkpoint: it lacks {missing}")
    return checkpoint


def checkpoint_path(run_dir: str | Path, step: int) -> str | Path:
    """Where the checkpoint of `step` lives in a run folder."""
    if storage.is_remote(run_dir):
        return storage.join(str(run_dir), "checkpoints", f"step_{step:08d}.pt")
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def _checkpoints_by_step(run_dir: str | Path) -> list[tuple[int, str | Path]]:
    """(step, path) of a run's complete checkpoints (temp files are never matched), oldest first."""
    if storage.is_remote(run_dir):
        found = storage.glob(storage.join(str(run_dir), "checkpoints", "step_*.pt"))
        return sorted((int(m.group(1)), p) for p in found if (m := _STEP_FILE.match(storage.basename(p))))
    folder = Path(run_dir) / "checkpoints"
    return sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_FILE.match(p.name)))


def latest_checkpoint(run_dir: str | Path) -> str | Path | None:
    """The highest-step complete checkpoint of a run, or None."""
    steps = _checkpoints_by_step(run_dir)
    return steps[-1][1] if steps else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[str | Path]:
    """Remove all but the newest `keep` checkpoints (0: keep all); returns what was removed. The newest is
    written whole before this runs, so a kill here never leaves a run without a checkpoint to resume from."""
    steps = _checkpoints_by_step(run_dir)
    old = [path for _, path in steps[:-keep]] if keep and len(steps) > keep else []
    for path in old:
        if storage.is_remote(path):
            sidecar = str(path)[: -len(".pt")] + _CONFIG_SUFFIX
            storage.remove(str(path))
            if storage.exists(sidecar):
                storage.remove(sidecar)
        else:
            Path(path).unlink(missing_ok=True)
    return old


def resolve_checkpoint(path: str | Path) -> str | Path:
    """A checkpoint file, or a run folder's latest checkpoint."""
    if storage.is_remote(path):
        if storage.isdir(str(path)):
            found = latest_checkpoint(path)
            if found is None:
                raise FileNotFoundError(f"no checkpoints under {storage.join(str(path), 'checkpoints')}")
            return found
        if not storage.exists(str(path)):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return str(path)
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoints under {path}/checkpoints")
        return found
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def recipe_of_checkpoint(ckpt: dict) -> Recipe:
    """The recipe a checkpoint was trained with."""
    return recipe_from_dict(ckpt["config"]["recipe"])


def lora_scale(config: dict) -> float | None:
    """alpha / rank of a checkpoint's recipe if it trained LoRA adapters."""
    recipe = config.get("recipe", config)
    return recipe["lora_alpha"] / recipe["lora_rank"] if recipe.get("method") == "lora" else None


def export_weights(ckpt: dict, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Plain U-Net weights of one of our checkpoints: EMA applied if asked, LoRA adapters merged."""
    state = dict(ckpt["model"])
    if use_ema and ckpt.get("ema"):
        state.update(ckpt["ema"])
    scale = lora_scale(ckpt["config"])
    return merge_lora_state(state, scale) if scale is not None else state


def init_weights(init_from: str) -> tuple[str, dict[str, Any]]:
    """Read the weights an `init_from` names -> (kind, state): kind "videocrafter2" (a U-Net state dict),
    "sd21" (the SD checkpoint as read) or "ours" (a plain U-Net state dict of our checkpoint / run folder)."""
    kind, _, path = init_from.partition(":")
    if kind == "videocrafter2":
        return kind, read_videocrafter2(path)["unet"]
    if kind == "sd21":
        return kind, read_state(path)
    return "ours", export_weights(load_checkpoint(resolve_checkpoint(init_from)))


def load_init(model: nn.Module, init_from: str) -> None:
    """Load starting weights into a plain U-Net: `videocrafter2:PATH`, `sd21:PATH`, or our checkpoint / run folder."""
    kind, state = init_weights(init_from)
    if kind == "sd21":
        load_sd21_unet(model, state)
    else:
        load_unet_state(model, state)


def read_state(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """A .safetensors, .pt or .ckpt file as a dict on CPU; pickled code only with trust_checkpoint=True.
    A URL is downloaded to a temporary file first (read_weights: the loaders need a seekable file)."""
    return read_weights(path, trust_checkpoint, what="checkpoint")


def split_latent_diffusion(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """A LatentDiffusion state dict (optionally wrapped in {"state_dict": ...}) -> {unet, vae, text_encoder}.

    Keys outside the three prefixes (e.g. the diffusion schedule buffers) are dropped.
    """
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text_encoder": {}}
    for key, value in state.items():
        for part, prefix in (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text_encoder", TEXT_PREFIX)):
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
    if not parts["unet"]:
        raise ValueError(f"no U-Net weights: no key starts with {UNET_PREFIX!r}")
    return parts


def read_videocrafter2(path: str | Path, trust_checkpoint: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The released VideoCrafter2 model.ckpt split into unet / vae / text_encoder state dicts."""
    return split_latent_diffusion(read_state(path, trust_checkpoint))


def load_unet_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full U-Net state dict; name every missing and unexpected key when they differ."""
    _raise_on_mismatch(model.load_state_dict(state, strict=False), "U-Net checkpoint")


def sd21_key_map(model: UNet3D) -> dict[str, str]:
    """Image-U-Net key prefix -> our key prefix, for every layer of a stage that moves.

    A temporal transformer inside a stage takes an index, so the spatial layers after it shift by
    one (at the 512 preset: middle_block.2 -> .3, output_blocks.5.2 -> .3, output_blocks.8.2 -> .3).
    Derived from the model's stages, so it holds for any preset.
    """
    stages = [("middle_block", model.middle_block)]
    stages += [(f"input_blocks.{i}", s) for i, s in enumerate(model.input_blocks)]
    stages += [(f"output_blocks.{i}", s) for i, s in enumerate(model.output_blocks)]
    mapping = {}
    for name, stage in stages:
        spatial_positions = [i for i, layer in enumerate(stage) if not isinstance(layer, TemporalTransformer)]
        for image_index, index in enumerate(spatial_positions):
            if image_index != index:
                mapping[f"{name}.{image_index}."] = f"{name}.{index}."
    return mapping


def sd21_remap(model: UNet3D, state: dict[str, Any]) -> dict[str, Any]:
    """SD 2.1 U-Net weights (bare, or a full checkpoint) under our key names (see `sd21_key_map`)."""
    if "state_dict" in state or any(key.startswith(UNET_PREFIX) for key in state):
        state = split_latent_diffusion(state)["unet"]
    mapping = sd21_key_map(model)
    remapped = {}
    for key, value in state.items():
        for old, new in mapping.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        remapped[key] = value
    return remapped


def load_sd21_unet(model: UNet3D, state: dict[str, Any]) -> None:
    """Initialise the spatial modules from SD 2.1 U-Net weights; temporal modules keep their zero-output init.

    `state` is the U-Net state dict, or a full SD checkpoint (model.diffusion_model.* keys, possibly
    under "state_dict"). Every spatial parameter must be provided and nothing else. The fps
    embedding's last layer is zeroed too, so the loaded video model computes exactly the image
    model on every frame until training moves the temporal weights (the paper's initialisation;
    the official code leaves the fps embedding random, which would perturb the timestep embedding).
    """
    remapped = sd21_remap(model, state)
    spatial = set(parameter_groups(model)["spatial"])
    result = model.load_state_dict(remapped, strict=False)
    missing_spatial = [key for key in result.missing_keys if key in spatial]
    _raise_on_mismatch(
        type(result)(missing_keys=missing_spatial, unexpected_keys=result.unexpected_keys), "SD 2.1 U-Net weights"
    )
    _assert_temporal_zero_output(model)
    if getattr(model, "fps_embedding", None) is not None:
        with torch.no_grad():
            model.fps_embedding[-1].weight.zero_()
            model.fps_embedding[-1].bias.zero_()


def _assert_temporal_zero_output(model: UNet3D) -> None:
    for name, module in model.named_modules():
        last = module.proj_out if isinstance(module, TemporalTransformer) else (
            module.conv4[-1] if isinstance(module, TemporalConvBlock) else None)
        if last is not None and any(p.detach().abs().max() > 0 for p in last.parameters()):
            raise ValueError(
                f"{name} does not start at zero output; load SD 2.1 weights into a freshly built U-Net")


def _raise_on_mismatch(result, what: str) -> None:
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys: {_preview(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} keys: {_preview(result.unexpected_keys)}")
    if problems:
        raise ValueError(f"{what} does not match the U-Net ({'; '.join(problems)})")


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
