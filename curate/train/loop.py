"""The training loop of every stage: one worker's view (rank / world size), plain PyTorch.

What a step does: for each of `accumulation` micro-batches, drop captions (classifier-free
guidance), encode text and pixels (frozen), draw t and noise, MSE on the U-Net output; then clip
gradients, AdamW with linear warmup, EMA of the trainable weights. Everything random in step s
is seeded from (seed, s, rank, micro-step), and the loader's position is step x accumulation, so
a run resumed from a checkpoint continues exactly as if it had not stopped.

Checkpoints are plain dicts {model, ema, opt, step, config} written atomically to
RUN/checkpoints/step_NNNNNNNN.pt; `resume: latest` continues from the newest one. Rank 0 logs
loss, lr and samples/s to stdout and RUN/log.jsonl.

RUN may be a URL (s3://bucket/runs/x): files that need a local path (the tiny text encoder, the log being
appended to) then live in a private local working folder, fetched from RUN when there and uploaded whole:
the text encoder once, the log after every checkpoint and when the run ends (object stores cannot append).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from curate import storage
from curate.train import checkpoints
from curate.train.data import LoaderConfig, make_loader, to_model_range
from curate.train.diffusion import GaussianDiffusion, drop_captions
from curate.train.model import build_first_stage, build_text_encoder, prepare_for_stage, text_encoder_path
from curate.train.presets import build_unet
from curate.train.recipe import Recipe, RecipeError, resume_changes


TEXT_ENCODER_FILE = "text_encoder.pt"  # a tiny text tower's weights in the run folder (see model.text_encoder_path)
LOG_FILE = "log.jsonl"


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from the run seed and (step, rank, micro-step)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def loader_config(recipe: Recipe) -> LoaderConfig:
    """The loader settings of a recipe, for one worker's micro-batches."""
    d = recipe.data
    return LoaderConfig(
        dirs=tuple(d.dirs), weights=tuple(d.weights), frames=d.frames, height=d.height, width=d.width,
        batch_size=recipe.train.micro_batch_size, image_ratio=d.image_ratio, frame_stride=tuple(d.frame_stride),
        image_fps=d.image_fps, seed=recipe.train.seed, num_workers=d.num_workers,
    )


@dataclass
class StepLog:
    step: int
    loss: float
    lr: float
    samples_per_s: float
    modality: str


class Trainer:
    """One worker's training state: model (+ adapters), frozen encoders, optimizer, EMA, step."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    ):
        if recipe.train.num_workers != world_size:
            recipe = recipe.replace(train={"num_workers": world_size})
        self.remote = storage.is_remote(str(run_dir))
        self.recipe, self.run_dir = recipe, str(run_dir) if self.remote else Path(run_dir)
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        # where files needing a local path live: the run folder itself, or a local working copy of a remote one
        self.work_dir = Path(storage.staging_dir(str(self.run_dir)))
        if self.remote:
            weakref.finalize(self, shutil.rmtree, self.work_dir, True)
            for name in (TEXT_ENCODER_FILE, LOG_FILE):
                self._fetch(name)
        if self.device.type == "cpu" and recipe.train.cpu_threads:
            torch.set_num_threads(recipe.train.cpu_threads)
        if self.device.type == "cuda":  # the fp32 parts (frozen encoders, norms) on TF32 tensor cores
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(recipe.train.seed)  # identical initial weights on every rank

        self.text_encoder = build_text_encoder(recipe, self.work_dir).to(self.device)
        if self.remote and self.rank == 0 and self._in_run_folder(text_encoder_path(recipe, self.work_dir)):
            self._publish(TEXT_ENCODER_FILE, only_if_missing=True)
        self.first_stage = build_first_stage(recipe).to(self.device)
        self.diffusion = GaussianDiffusion(recipe.diffusion)
        self.model = build_unet(recipe.model.preset, **recipe.model.overrides)
        resume_from = checkpoints.latest_checkpoint(self.run_dir) if recipe.train.resume == "latest" else None
        if recipe.init_from and resume_from is None:
            checkpoints.load_init(self.model, recipe.init_from)
        prepare_for_stage(self.model, recipe)
        self.model.to(self.device).set_gradient_checkpointing(recipe.train.gradient_checkpointing)
        self.trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.step = 0
        self.ema = {n: p.detach().float().clone() for n, p in self.trainable.items()}
        t = recipe.optim
        self.opt = torch.optim.AdamW(self.trainable.values(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, foreach=True)
        if resume_from is not None:
            self._resume(resume_from)
        self.forward_model = wrap_model(self.model) if wrap_model else self.model

    def config(self) -> dict:
        path = text_encoder_path(self.recipe, self.work_dir)
        where = storage.join(self.run_dir, path.name) if self._in_run_folder(path) else str(path.resolve()) if path else ""
        return {"recipe": self.recipe.to_dict(), "text_encoder_path": where}

    def _in_run_folder(self, path: Path | None) -> bool:
        """Whether `path` is a file of a remote run folder's local working copy."""
        return self.remote and path is not None and path.parent == self.work_dir

    def _fetch(self, name: str) -> None:
        remote = storage.join(self.run_dir, name)
        if storage.exists(remote):
            (self.work_dir / name).write_bytes(storage.read_bytes(remote))

    def _publish(self, name: str, only_if_missing: bool = False) -> None:
        remote = storage.join(self.run_dir, name)
        if (self.work_dir / name).exists() and not (only_if_missing and storage.exists(remote)):
            storage.write_bytes(remote, (self.work_dir / name).read_bytes())

    def _resume(self, path: str | Path) -> None:
        ckpt = checkpoints.load_checkpoint(path)
        changes = resume_changes(ckpt["config"]["recipe"], self.recipe.to_dict())
        if changes:
            raise RecipeError(f"cannot resume {path}: the recipe changed ({', '.join(changes)}); use a new --out folder")
        self.model.load_state_dict(ckpt["model"])
        # into the EMA tensors built on this trainer's device: the checkpoint's are CPU tensors (a GPU run
        # replacing its EMA with them would mix devices at the first update)
        if set(ckpt["ema"]) != set(self.ema):
            raise RecipeError(f"cannot resume {path}: its EMA holds other parameters than this model trains")
        for name, value in ckpt["ema"].items():
            self.ema[name].copy_(value)
        self.opt.load_state_dict(ckpt["opt"])
        self.step = ckpt["step"]
        self.log(f"resumed from {path} at step {self.step}")

    def lr_at(self, step: int) -> float:
        warmup = self.recipe.optim.warmup_steps
        return self.recipe.optim.lr * min(1.0, (step + 1) / warmup) if warmup else self.recipe.optim.lr

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)

    def micro_step(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        recipe = self.recipe
        captions = drop_captions(batch["captions"], recipe.train.caption_dropout, generator)
        context = self.text_encoder(captions)
        # uint8 from the loader (a quarter of the bytes), pinned there on GPU runs so the copy overlaps compute
        pixels = to_model_range(batch["pixels"].to(self.device, non_blocking=True))
        x0 = self.first_stage.encode(pixels, generator if recipe.autoencoder.kind == "sd_kl" else None)
        temporal = not (batch["modality"] == "image" and (recipe.stage == "image" or recipe.data.image_mode == "skip_temporal"))
        fps = batch["fps"].to(self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and recipe.train.precision == "bf16" else contextlib.nullcontext()
        with autocast:
            return self.diffusion.loss(
                lambda x, t, c, f: self.forward_model(x, t, c, f, temporal=temporal), x0, context, fps, generator
            )

    @torch.no_grad()
    def update_ema(self) -> None:
        # LDM's EMA warm-up: short runs average over their own steps, not the initial weights
        decay = min(self.recipe.train.ema_decay, (1 + self.step) / (10 + self.step))
        names = list(self.trainable)
        torch._foreach_lerp_([self.ema[n] for n in names], [self.trainable[n].detach().float() for n in names], 1 - decay)

    def save(self) -> str | Path:
        ckpt = {"model": self.model.state_dict(), "ema": self.ema, "opt": self.opt.state_dict(), "step": self.step, "config": self.config()}
        return checkpoints.save_checkpoint(checkpoints.checkpoint_path(self.run_dir, self.step), ckpt)

    def batches(self):
        """This rank's micro-batches from where the run stands (step x accumulation)."""
        loader = make_loader(loader_config(self.recipe), rank=self.rank, world_size=self.world_size,
                             start_batch=self.step * self.recipe.accumulation, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def backward(self, batches) -> tuple[float, str]:
        """Forward + backward of one step's micro-batches (gradients synchronised on the last) -> (mean loss, modality)."""
        accumulation = self.recipe.accumulation
        loss_sum = 0.0
        for micro in range(accumulation):
            batch = next(batches)
            seed = step_seed(self.recipe.train.seed, self.step, self.rank, micro)
            torch.manual_seed(seed)  # module dropout draws from the global generator
            generator = torch.Generator().manual_seed(seed)
            sync = micro == accumulation - 1 or not hasattr(self.forward_model, "no_sync")
            with contextlib.nullcontext() if sync else self.forward_model.no_sync():
                loss = self.micro_step(batch, generator)
                (loss / accumulation).backward()
            loss_sum += loss.item()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"loss is {loss_sum} at step {self.step}")
        return loss_sum / accumulation, batch["modality"]

    def update(self) -> None:
        """Clip, optimizer step at this step's learning rate, EMA; the step count advances."""
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        if self.recipe.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable.values(), self.recipe.optim.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.update_ema()
        self.step += 1

    def run(self, steps: int | None = None) -> list[StepLog]:
        """Train until `steps` (default: the recipe's) optimizer steps in total; returns this call's logs."""
        recipe, total = self.recipe, steps if steps is not None else self.recipe.train.steps
        batches = self.batches()
        logs: list[StepLog] = []
        log_file = (self.work_dir / LOG_FILE).open("a") if self.rank == 0 else None
        self.model.train()
        try:
            while self.step < total:
                started, lr = time.perf_counter(), self.lr_at(self.step)
                loss, modality = self.backward(batches)
                self.update()
                entry = StepLog(self.step, loss, lr, recipe.train.batch_size / (time.perf_counter() - started), modality)
                logs.append(entry)
                if self.rank == 0 and (self.step % recipe.train.log_every == 0 or self.step == total):
                    self.log(f"step {entry.step} loss {entry.loss:.4f} lr {entry.lr:.2e} samples/s {entry.samples_per_s:.2f} ({entry.modality})")
                    log_file.write(json.dumps(entry.__dict__) + "\n")
                    log_file.flush()
                if self.rank == 0 and (self.step % recipe.train.checkpoint_every == 0 or self.step == total):
                    self.log(f"checkpoint {self.save()}")
                    checkpoints.prune_checkpoints(self.run_dir, recipe.train.keep_checkpoints)
                    if self.remote:
                        self._publish(LOG_FILE)
        finally:
            if log_file:
                log_file.close()
                if self.remote:
                    self._publish(LOG_FILE)
        return logs


def train(recipe: Recipe, run_dir: str | Path, steps: int | None = None) -> list[StepLog]:
    """Single-process training on this machine's GPU (`train.use_gpu`, checked by preflight) or CPU."""
    device = "cuda" if recipe.train.use_gpu else "cpu"
    return Trainer(recipe, run_dir, device=device).run(steps)

