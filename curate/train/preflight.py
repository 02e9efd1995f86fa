"""Checks before a training run starts: every problem a recipe would hit later, found in seconds and listed at once.

Run by `curate train` before Ray starts and before anything is written to the run folder:
- the batch splits into micro-batches x workers; a run folder's checkpoint was made by this recipe;
- this machine has the GPUs the recipe asks for (a cluster, which may autoscale, gets a bounded start wait
  in distributed.py instead);
- every file the recipe names exists and loads strictly: `init_from` (unless the run resumes from its
  own checkpoint), the autoencoder, the text encoder, against the layouts the recipe's preset builds.
  Layouts come from models built on the meta device, so checking the 1.4B-parameter preset costs no memory;
- the data folders hold shards; the first stage's latent channels and the text width fit the U-Net.
Each problem is one line `KEY: what is wrong (the file) and what to do`.
Data folders, the run folder and `init_from` may be URLs (s3://...): they are checked through curate.storage,
a remote checkpoint's recipe from its config sidecar (no weights downloaded).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from curate import storage, weightfile
from curate.train import checkpoints, text
from curate.train.autoencoder import FIRST_STAGE_PREFIX, KLAutoencoder, PixelSpace
from curate.train.presets import build_unet, unet_params
from curate.train.recipe import Recipe, resume_changes
from curate.train.unet3d import parameter_groups


def check(recipe: Recipe, run_dir: str | Path, address: str | None = None, gpus: int | None = None) -> list[str]:
    """Every problem that would stop `recipe` in `run_dir`, one line each ([] = ready to start).

    `address`: a Ray cluster, whose GPUs are not counted here (distributed.py bounds the wait for them);
    `gpus`: this machine's GPU count (default: what torch sees).
    """
    problems: list[str] = []
    batch = recipe.batch_problem()
    if batch:
        problems.append(batch)
    problems += _resources(recipe, address, torch.cuda.device_count() if gpus is None else gpus)
    problems += _data(recipe)
    run = str(run_dir) if storage.is_remote(str(run_dir)) else Path(run_dir)
    problems += _resume(recipe, run)
    reader = _Reader()
    problems += _init_from(recipe, run, reader)
    problems += _autoencoder(recipe, reader)
    problems += _text_encoder(recipe, run, reader)
    return problems


def _resources(recipe: Recipe, address: str | None, gpus: int) -> list[str]:
    t = recipe.train
    if not t.use_gpu or address:
        return []
    if gpus < t.num_workers:
        return [f"train.use_gpu: the recipe asks for {t.num_workers} GPU worker(s) (train.num_workers x 1 GPU) and this "
                f"machine has {gpus} GPU(s); run it on a GPU cluster (RAY_ADDRESS), lower --workers, or set "
                "train.use_gpu: false to train on CPU"]
    return []


def _data(recipe: Recipe) -> list[str]:
    if not recipe.data.dirs:
        return ["data.dirs: no training data; give --data DIR or set data.dirs in the recipe"]
    problems = []
    for directory in recipe.data.dirs:
        shards = storage.join(str(directory), "shards")
        if not storage.isdir(shards):
            problems.append(f"data.dirs: {directory}: not a curated dataset folder (no shards/ inside)")
        elif not storage.glob(storage.join(shards, "*.tar")):
            problems.append(f"data.dirs: {directory}: shards/ holds no .tar shard")
    if recipe.data.weights and len(recipe.data.weights) != len(recipe.data.dirs):
        problems.append(f"data.weights: {len(recipe.data.weights)} weights for {len(recipe.data.dirs)} data.dirs")
    return problems


class _Reader:
    """Reads each weight file once (f_base names one SD checkpoint for init_from and the autoencoder)."""

    def __init__(self):
        self.cache: dict[Path, dict] = {}

    def __call__(self, path: str | Path) -> dict[str, Any]:
        if storage.is_remote(str(path)):  # a URL is downloaded once (the loaders need a seekable file)
            if path not in self.cache:
                self.cache[path] = checkpoints.read_state(path)
            return self.cache[path]
        path = Path(path).resolve()
        if path not in self.cache:
            self.cache[path] = weightfile.read_weights(path, mmap=True)  # keys and shapes, no copy of a 5 GB file
        return self.cache[path]


def _resume(recipe: Recipe, run_dir: str | Path) -> list[str]:
    latest = checkpoints.latest_checkpoint(run_dir) if recipe.train.resume == "latest" else None
    if latest is None:
        return []
    try:  # mapped (or a remote checkpoint's config sidecar), not read: only the config is looked at
        config = checkpoints.checkpoint_config(latest)["recipe"]
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        return [f"train.resume: {latest}: not a readable training checkpoint: {_one_line(err)}"]
    changes = resume_changes(config, recipe.to_dict())
    if changes:
        return [f"train.resume: {latest} was trained with a different recipe ({', '.join(changes)}); use a new --out "
                "folder, or set train.resume: none to start over in this one"]
    return []


def _init_from(recipe: Recipe, run_dir: str | Path, read: _Reader) -> list[str]:
    if not recipe.init_from or (recipe.train.resume == "latest" and checkpoints.latest_checkpoint(run_dir)):
        return []  # a resumed run starts from its own checkpoint, checked by the loop against the recipe
    kind, sep, path = recipe.init_from.partition(":")
    if not sep or kind not in ("videocrafter2", "sd21"):
        kind, path = "ours", recipe.init_from
    where = f"init_from: {path}"
    target = path if storage.is_remote(path) else Path(path)
    if not storage.exists(str(target)):
        what = "a checkpoint file or a run folder" if kind == "ours" else f"a {kind} checkpoint file"
        return [f"{where}: not found (expected {what}; train the stage it starts from first, or fix the path)"]
    model = build_unet(recipe.model.preset, device="meta", **recipe.model.overrides)
    expected = weightfile.module_layout(model)
    try:
        if kind == "ours":
            state = checkpoints.export_weights(checkpoints.load_checkpoint(checkpoints.resolve_checkpoint(target)))
        elif kind == "sd21":  # spatial weights only: temporal modules start at zero output
            state = checkpoints.sd21_remap(model, read(target))
            spatial = set(parameter_groups(model)["spatial"])
            expected = {k: v for k, v in expected.items() if k in spatial}
        else:
            state = checkpoints.split_latent_diffusion(read(target))["unet"]
        weightfile.check_layout(expected, state, path, f"U-Net (preset {recipe.model.preset!r})")
    except (OSError, ValueError, RuntimeError) as err:
        return [f"init_from: {_one_line(err)}"]
    return []


def _autoencoder(recipe: Recipe, read: _Reader) -> list[str]:
    spec = recipe.autoencoder
    problems = []
    channels = PixelSpace.latent_channels if spec.kind == "pixel" else 4
    in_channels = unet_params(recipe.model.preset, **recipe.model.overrides)["in_channels"]
    if in_channels != channels:
        problems.append(f"model.overrides.in_channels: the U-Net takes {in_channels} channels and autoencoder.kind "
                        f"{spec.kind!r} gives {channels}")
    if spec.kind != "sd_kl":
        return problems
    if not spec.path:
        return problems + ["autoencoder.path: not set; sd_kl needs a VideoCrafter2 model.ckpt or SD 2.1 checkpoint "
                           "(first_stage_model.* keys)"]
    if not Path(spec.path).is_file():
        return problems + [f"autoencoder.path: {spec.path}: not found"]
    try:
        state = weightfile.unwrap_state_dict(read(spec.path))
        own = {k[len(FIRST_STAGE_PREFIX):]: v for k, v in state.items() if k.startswith(FIRST_STAGE_PREFIX)} or state
        with torch.device("meta"):
            expected = weightfile.module_layout(KLAutoencoder())
        weightfile.check_layout(expected, own, spec.path, "SD AutoencoderKL (first_stage_model.*)")
    except (OSError, ValueError, RuntimeError) as err:
        problems.append(f"autoencoder.path: {_one_line(err)}")
    return problems


def _text_encoder(recipe: Recipe, run_dir: str | Path, read: _Reader) -> list[str]:
    spec = recipe.text_encoder
    context_dim = unet_params(recipe.model.preset, **recipe.model.overrides)["context_dim"]
    if spec.kind == "tiny":
        path = spec.path or storage.join(str(run_dir), "text_encoder.pt")
        width = spec.width
        if storage.exists(path):  # otherwise it is created from text_encoder.seed on first use
            try:
                with storage.open(path, "rb") as f:
                    width = torch.load(f, map_location="cpu", weights_only=True)["config"]["width"]
            except Exception as err:  # any unreadable file is reported, not raised
                return [f"text_encoder.path: {path}: not a tiny text encoder file: {_one_line(err)}"]
        if width != context_dim:
            return [f"text_encoder.width: {width} differs from the U-Net's context_dim {context_dim}"]
        return []
    problems = []
    if text.VIT_H_14["width"] != context_dim:
        problems.append(f"text_encoder.kind: ViT-H-14 gives {text.VIT_H_14['width']}-d tokens and the U-Net's "
                        f"context_dim is {context_dim}")
    try:
        path = Path(spec.path) if spec.path else text._find_vit_h_14()
        with torch.device("meta"):  # the tower's layout; loading into meta parameters checks keys and shapes only
            encoder = text.FrozenTextEncoder(**text.VIT_H_14)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*meta parameter.*")  # the no-op copy is the point
            encoder.load_tower_state(weightfile.unwrap_state_dict(read(path)))
    except (OSError, ValueError, RuntimeError) as err:
        problems.append(f"text_encoder.path: {_one_line(err)}")
    return problems


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
