"""Training recipes: the YAML schema of pipelines/train/*.yaml, loaded strictly (unknown keys are errors).

A recipe names a stage and what it trains:
- stage `image`:    spatial modules only, on images, temporal modules skipped (the SD stand-in);
- stage `base`:     `trainable: all` (F-base) or `temporal` (P-base, spatial frozen at the image model);
- stage `finetune`: `trainable: spatial | temporal | all` x `method: direct | lora`, from `init_from`.
`fps_group` says which group the fps embedding trains with (see unet3d.trainable_groups):
"temporal" (default: it conditions motion, so it trains in F/P-base and temporal fine-tunes and stays
frozen in spatial fine-tunes), "spatial", or "none" (frozen unless trainable is all).
`data.image_mode` says how image batches pass the temporal modules (the paper does not say):
"t1" runs them on a 1-frame clip, "skip_temporal" bypasses them (each frame sees the image model only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import ConfigError, from_mapping, load_yaml
from curate.train.diffusion import DiffusionConfig


class RecipeError(ConfigError):
    """A recipe that cannot be used as written; the message names the offending key."""


@dataclass(frozen=True)
class ModelSpec:
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # unet_config.params to change, e.g. in_channels


@dataclass(frozen=True)
class TextEncoderSpec:
    kind: str = "tiny"  # open_clip_vit_h_14 | tiny
    path: str | None = None  # weights file; for tiny, created from `seed` if absent (default RUN/text_encoder.pt)
    width: int = 64
    heads: int = 2
    layers: int = 2
    seed: int = 0


@dataclass(frozen=True)
class AutoencoderSpec:
    kind: str = "pixel"  # pixel | sd_kl
    path: str | None = None
    scale_factor: float = 0.18215


@dataclass(frozen=True)
class DataSpec:
    dirs: tuple = ()  # curated dataset folders (DIR/shards/*.tar)
    weights: tuple = ()  # one per dir, default 1.0
    image_ratio: float = 0.0  # fraction of batches drawn from image sources
    image_mode: str = "t1"  # t1 | skip_temporal
    frames: int = 16
    height: int = 320
    width: int = 512
    frame_stride: tuple = (1, 8)  # inclusive range; fps conditioning = source fps / stride
    image_fps: float = 24.0
    num_workers: int = 2


@dataclass(frozen=True)
class OptimSpec:
    lr: float = 5e-5
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainSpec:
    steps: int = 1000
    batch_size: int = 8  # global batch per optimizer step = micro_batch_size x accumulation x world size
    micro_batch_size: int = 8  # per worker per forward/backward
    seed: int = 0
    caption_dropout: float = 0.1  # captions replaced by "" so the model learns the unconditional branch
    ema_decay: float = 0.9999
    precision: str = "bf16"  # bf16 autocast on GPU; CPU always runs fp32
    gradient_checkpointing: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # newest checkpoints kept in the run folder (F-base's is ~22 GB); 0 keeps every one
    log_every: int = 10
    resume: str = "latest"  # latest | none
    num_workers: int = 1  # Ray Train workers (1 = plain single process)
    cpu_threads: int = 0  # torch intra-op threads when training on CPU; 0 = torch's default
    use_gpu: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str
    stage: str  # image | base | finetune
    trainable: str = "all"  # all | spatial | temporal
    method: str = "direct"  # direct | lora
    lora_rank: int = 4
    lora_alpha: float = 4.0
    fps_group: str = "temporal"  # temporal | spatial | none
    init_from: str | None = None  # our checkpoint / run dir, videocrafter2:PATH or sd21:PATH
    model: ModelSpec = ModelSpec()
    text_encoder: TextEncoderSpec = TextEncoderSpec()
    autoencoder: AutoencoderSpec = AutoencoderSpec()
    diffusion: DiffusionConfig = DiffusionConfig()
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec()

    def __post_init__(self):
        check = _Checker(self)
        check.choice("stage", ("image", "base", "finetune"))
        check.choice("trainable", ("all", "spatial", "temporal"))
        check.choice("method", ("direct", "lora"))
        check.choice("fps_group", ("temporal", "spatial", "none"))
        check.choice("data.image_mode", ("t1", "skip_temporal"))
        check.choice("text_encoder.kind", ("tiny", "open_clip_vit_h_14"))
        check.choice("autoencoder.kind", ("pixel", "sd_kl"))
        check.choice("train.precision", ("bf16", "fp32"))
        check.choice("train.resume", ("latest", "none"))
        if self.train.keep_checkpoints < 0:
            raise RecipeError(f"train.keep_checkpoints: {self.train.keep_checkpoints} is negative (0 keeps every checkpoint)")
        if self.stage == "image" and (self.trainable != "spatial" or self.data.image_ratio != 1.0):
            raise RecipeError("stage 'image' trains spatial modules on images: set trainable: spatial, data.image_ratio: 1.0")
        if self.stage == "base" and (self.trainable == "spatial" or self.method != "direct"):
            raise RecipeError("stage 'base' is trainable: all (F-base) or temporal (P-base), method: direct")
        if self.stage == "finetune" and not self.init_from:
            raise RecipeError("stage 'finetune' needs init_from: a checkpoint to start from")
        if not 0.0 <= self.data.image_ratio <= 1.0:
            raise RecipeError(f"data.image_ratio must be in [0, 1], got {self.data.image_ratio}")
        stride = self.data.frame_stride
        if len(stride) != 2 or not 1 <= stride[0] <= stride[1]:
            raise RecipeError(f"data.frame_stride must be [min, max] with 1 <= min <= max, got {list(stride)}")

    def batch_problem(self) -> str | None:
        """Why the global batch cannot be split into micro-batches x workers, or None (checked by preflight)."""
        t = self.train
        if t.batch_size % (t.micro_batch_size * t.num_workers):
            return (f"train.batch_size: {t.batch_size} is not a multiple of train.micro_batch_size x train.num_workers "
                    f"({t.micro_batch_size} x {t.num_workers} = {t.micro_batch_size * t.num_workers}); change one of them "
                    "or --workers")
        return None

    @property
    def accumulation(self) -> int:
        problem = self.batch_problem()
        if problem:
            raise RecipeError(problem)
        t = self.train
        return t.batch_size // (t.micro_batch_size * t.num_workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Recipe":
        """A copy with top-level fields or sections changed, e.g. replace(train={'steps': 5})."""
        data = self.to_dict()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "init_from":
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return recipe_from_dict(data)


class _Checker:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def choice(self, dotted: str, allowed: tuple[str, ...]) -> None:
        value = self.recipe
        for part in dotted.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise RecipeError(f"{dotted}: {value!r} is not one of {', '.join(allowed)}")


# recipe fields a resume may change: they do not alter what the run computes
RESUMABLE_CHANGES = {("train", "steps"), ("train", "log_every"), ("train", "checkpoint_every"), ("data", "num_workers"),
                     ("data", "dirs"), ("train", "keep_checkpoints")}


def resume_changes(old: dict, new: dict) -> list[str]:
    """The keys in which recipe `new` differs from the checkpointed `old` in a way a resume must refuse."""
    changes = []
    for section, value in new.items():
        if isinstance(value, dict):
            for key, v in value.items():
                if old.get(section, {}).get(key) != v and (section, key) not in RESUMABLE_CHANGES:
                    changes.append(f"{section}.{key}")
        elif old.get(section) != value:
            changes.append(section)
    return changes


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """A recipe from plain data, strictly (the one option loader: curate.config.from_mapping)."""
    try:
        return from_mapping(Recipe, data)
    except RecipeError:
        raise
    except ConfigError as err:
        raise RecipeError(str(err)) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = load_yaml(path)
    except ConfigError as err:
        raise RecipeError(str(err)) from None
    try:
        return recipe_from_dict(data)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
