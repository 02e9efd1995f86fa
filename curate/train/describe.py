"""`curate train RECIPE --describe`: the plan of a run (what trains, on what, how long, how much memory) before it starts.

Nothing is allocated: the U-Net and the frozen encoders are built on the meta device, and one
forward + backward at the recipe's micro-batch is traced there twice (fp32), with gradient
checkpointing off and on. The trace follows every tensor the step creates (a dispatch mode that counts each
storage's bytes while any tensor still refers to it), which gives the peak of activations plus the
gradients written in backward, and counts FLOPs with torch.utils.flop_counter (checkpointing's
recomputation included). Step time is FLOPs / the stated GPU peak; real runs reach a fraction of it.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from curate.train.autoencoder import KLAutoencoder
from curate.train.model import build_model, stage_groups
from curate.train.presets import unet_params
from curate.train.recipe import Recipe
from curate.train.text import VIT_H_14, FrozenTextEncoder
from curate.train.unet3d import parameter_groups

# NVIDIA A100 SXM datasheet, dense (no sparsity): bf16 tensor cores 312 TFLOP/s, TF32 156 TFLOP/s. A GPU run
# computes the U-Net in bf16 autocast (or fp32) and the frozen encoders in fp32, which TF32 tensor cores run.
GPU_PEAK = {"bf16": ("A100 bf16 dense", 312e12), "fp32": ("A100 TF32 dense", 156e12)}
ENCODER_PEAK = GPU_PEAK["fp32"]
ASSUMED_MFU = 0.4  # a typical achieved fraction of peak for a U-Net of this size (an assumption, said as such)
ADAM_STATES = 2  # exp_avg, exp_avg_sq (fp32)
# The CUDA context with cuBLAS/cuDNN workspaces, and NCCL's per-peer buffers on multi-GPU runs: assumptions, not
# traced (commonly 0.5-1.5 GiB and 0.3-1 GiB on 8-GPU nodes).
CUDA_CONTEXT_BYTES = 1 << 30
NCCL_BYTES = 1 << 29


class LiveTensors(TorchDispatchMode):
    """Tracks the bytes of every storage created under it while any tensor refers to it; `peak` is the maximum."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, list[int]] = {}  # storage id -> [bytes, live tensors]
        self.bytes = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.refs[key]
            self.bytes -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key in self.refs:
                    self.refs[key][1] += 1
                else:
                    self.refs[key] = [storage.nbytes(), 1]
                    self.bytes += storage.nbytes()
                    self.peak = max(self.peak, self.bytes)
                weakref.finalize(tensor, self._release, key)
        return out


def _step_inputs(recipe: Recipe, frames: int, device: str):
    params = unet_params(recipe.model.preset, **recipe.model.overrides)
    b, (h, w) = recipe.train.micro_batch_size, latent_size(recipe)
    with torch.device(device):
        x = torch.randn(b, params["in_channels"], frames, h, w)
        t = torch.randint(0, recipe.diffusion.timesteps, (b,))
        context = torch.randn(b, 77, params["context_dim"])
        fps = torch.full((b,), 8.0)
    temporal = not (frames == 1 and (recipe.stage == "image" or recipe.data.image_mode == "skip_temporal"))
    return (x, t, context, fps), {"temporal": temporal}


def peak_step_bytes(recipe: Recipe, frames: int, checkpointing: bool, device: str = "meta") -> int:
    """Peak bytes of the tensors a forward + backward of one fp32 micro-batch of `frames` frames creates:
    activations, plus the gradients written so far (meta: nothing is allocated)."""
    model = build_model(recipe, device=device)
    model.set_gradient_checkpointing(checkpointing)
    model.train()
    args, kwargs = _step_inputs(recipe, frames, device)
    live = LiveTensors()
    with live:
        model(*args, **kwargs).float().pow(2).mean().backward()
    return live.peak


def step_flops(recipe: Recipe, frames: int) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of the U-Net on one micro-batch (separate from the memory trace:
    under a FlopCounterMode non-reentrant checkpointing keeps its activations)."""
    model = build_model(recipe, device="meta")
    model.train()
    args, kwargs = _step_inputs(recipe, frames, "meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args, **kwargs)
    forward = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        model(*args, **kwargs).float().pow(2).mean().backward()
    return forward, counter.get_total_flops()


def optimizer_temporaries(trainable: int) -> int:
    """Peak bytes the foreach AdamW step allocates beyond its state for `trainable` fp32 parameters, traced on a
    small parameter list on the meta device (the foreach kernels make whole-list temporaries, so it scales)."""
    sizes = [4096, 1024, 300]
    with torch.device("meta"):
        params = [torch.nn.Parameter(torch.empty(n)) for n in sizes]
        for p in params:
            p.grad = torch.empty_like(p)
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
        opt.step()  # creates the state: the traced step below sees only its temporaries
        live = LiveTensors()
        with live:
            opt.step()
    return int(live.peak / (4 * sum(sizes)) * trainable * 4)


def latent_size(recipe: Recipe) -> tuple[int, int]:
    down = 8 if recipe.autoencoder.kind == "sd_kl" else 1
    return recipe.data.height // down, recipe.data.width // down


def frozen_parts(recipe: Recipe) -> dict[str, torch.nn.Module]:
    """The frozen encoders, on the meta device."""
    with torch.device("meta"):
        spec = recipe.text_encoder
        size = VIT_H_14 if spec.kind == "open_clip_vit_h_14" else dict(width=spec.width, heads=spec.heads,
                                                                        layers=spec.layers, output_dim=spec.width)
        parts = {"text encoder": FrozenTextEncoder(**size)}
        if recipe.autoencoder.kind == "sd_kl":
            parts["autoencoder"] = KLAutoencoder()
    return parts


def encoder_flops(recipe: Recipe, parts: dict[str, torch.nn.Module], frames: int) -> int:
    """Forward FLOPs of the frozen encoders for one micro-batch (text tower; the VAE encoder per frame)."""
    b = recipe.train.micro_batch_size
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), torch.device("meta"):
        parts["text encoder"](["a caption"] * b)
        if "autoencoder" in parts:
            parts["autoencoder"].encoder(torch.randn(b * frames, 3, recipe.data.height, recipe.data.width))
    return counter.get_total_flops()


def count(params) -> int:
    return sum(p.numel() for p in params)


def plan(recipe: Recipe) -> dict:
    """The numbers `--describe` prints, as data (bytes, FLOPs, seconds)."""
    t, d = recipe.train, recipe.data
    model = build_model(recipe, device="meta")
    named = dict(model.named_parameters())
    groups = {g: count(named[n] for n in names) for g, names in parameter_groups(model).items()}
    trains = stage_groups(recipe)
    trainable = count(p for p in model.parameters() if p.requires_grad)
    parts = frozen_parts(recipe)
    frozen = {name: count(m.parameters()) for name, m in parts.items()}
    shapes = {"video": d.frames} if d.image_ratio < 1 else {}
    if d.image_ratio > 0:
        shapes["image"] = 1
    worst = max(shapes, key=shapes.get)  # memory: the larger batch kind
    peaks = {ck: peak_step_bytes(recipe, shapes[worst], ck) for ck in (False, True)}
    share = {"video": 1 - d.image_ratio, "image": d.image_ratio}
    unet_flops = encoder = 0.0
    for modality, frames in shapes.items():
        forward, total = step_flops(recipe, frames)
        recompute = forward if t.gradient_checkpointing else 0  # checkpointed blocks run their forward again
        unet_flops += share[modality] * (total + recompute)
        encoder += share[modality] * encoder_flops(recipe, parts, frames)
    flops_micro = unet_flops + encoder
    accumulation = recipe.accumulation
    flops_step_per_gpu = flops_micro * accumulation
    peak_name, peak = GPU_PEAK[t.precision]
    fp32 = 4
    bf16_gpu = t.precision == "bf16" and t.use_gpu
    static = {
        "weights (fp32)": count(model.parameters()) * fp32,
        "AdamW state (fp32)": trainable * fp32 * ADAM_STATES,
        "AdamW step temporaries": optimizer_temporaries(trainable),
        "EMA (fp32)": trainable * fp32,
        "frozen encoders (fp32)": sum(frozen.values()) * fp32,
    }
    if bf16_gpu:  # autocast keeps one bf16 copy of every weight it casts for the whole forward (and backward)
        static["autocast bf16 weight copies"] = count(model.parameters()) * 2
    if t.use_gpu:
        static["CUDA context (assumed)"] = CUDA_CONTEXT_BYTES
        if t.num_workers > 1:  # DDP's buckets are the gradients themselves (gradient_as_bucket_view): no copy
            static["NCCL buffers (assumed)"] = NCCL_BYTES
    # the fp32 trace's peak = activations + the fp32 gradients written so far (all of them at the end of
    # backward, so the peak is at least their size). bf16 autocast halves the activations' bytes (an
    # approximation: it keeps norms and softmax in fp32, so expect a little more); gradients stay fp32.
    scale = 0.5 if bf16_gpu else 1.0
    grads = trainable * fp32
    activations = {ck: grads + scale * max(0, peaks[ck] - grads) for ck in (False, True)}
    return {
        "groups": groups, "trains": sorted(trains), "trainable": trainable,
        "lora": count(p for n, p in named.items() if "lora_" in n), "frozen": frozen,
        "accumulation": accumulation, "samples_per_step": t.batch_size,
        "memory_static": static, "activations": activations, "memory_kind": worst, "gradients": grads,
        "peak_fp32": peaks,
        "total": {ck: sum(static.values()) + activations[ck] for ck in (False, True)},
        "flops_per_micro_batch": flops_micro, "flops_per_step_per_gpu": flops_step_per_gpu,
        "encoder_flops_per_micro_batch": encoder, "gpu_peak": (peak_name, peak), "encoder_peak": ENCODER_PEAK,
        "step_s_at_peak": (unet_flops / peak + encoder / ENCODER_PEAK[1]) * accumulation,
    }


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _millions(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def render(recipe: Recipe, run_dir: str | Path, numbers: dict) -> str:
    """The text `--describe` prints."""
    t, d = recipe.train, recipe.data
    lines = [f"# recipe {recipe.name} (defaults filled in)", yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip(), ""]
    lines.append(f"run folder: {run_dir}")
    lines.append(f"stage {recipe.stage}: trainable {recipe.trainable}, method {recipe.method}; trains "
                 f"{', '.join(numbers['trains'])}")
    lines.append("parameters:")
    for group, n in numbers["groups"].items():
        trains = group in numbers["trains"] and recipe.method == "direct"
        how = "trains" if trains else ("frozen, LoRA adapters train" if group in numbers["trains"] else "frozen")
        lines.append(f"  {group:<12} {_millions(n):>10}  {how}")
    if numbers["lora"]:
        lines.append(f"  {'LoRA':<12} {_millions(numbers['lora']):>10}  trains (rank {recipe.lora_rank}, alpha {recipe.lora_alpha})")
    for name, n in numbers["frozen"].items():
        lines.append(f"  {name:<12} {_millions(n):>10}  frozen")
    lines.append(f"  {'trainable':<12} {_millions(numbers['trainable']):>10}")
    weights = d.weights or (1.0,) * len(d.dirs)
    lines.append(f"data: {1 - d.image_ratio:.0%} of batches videos ({d.frames} frames, stride {list(d.frame_stride)}), "
                 f"{d.image_ratio:.0%} images ({d.image_mode}); {d.width}x{d.height}")
    for directory, weight in zip(d.dirs, weights):
        lines.append(f"  {directory} (weight {weight:g} within its modality)")
    if not d.dirs:
        lines.append("  (no data.dirs: give --data DIR)")
    lines.append(f"steps: {t.steps:,}; {numbers['samples_per_step']} samples per step = micro-batch "
                 f"{t.micro_batch_size} x {numbers['accumulation']} accumulation x {t.num_workers} worker(s); "
                 f"{t.steps * t.batch_size:,} samples in all")
    lines.append(f"checkpoints: every {t.checkpoint_every:,} steps and at the end "
                 f"({-(-t.steps // t.checkpoint_every)} files), resume: {t.resume}; log every {t.log_every}")
    device = "GPU" if t.use_gpu else "CPU worker"
    lines.append(f"memory per {device} (estimate, {numbers['memory_kind']} micro-batch of {t.micro_batch_size}, "
                 f"precision {t.precision}):")
    for name, n in numbers["memory_static"].items():
        lines.append(f"  {name:<28} {_gib(n):>12}")
    lines.append(f"  forward/backward peak: activations + gradients ({_gib(numbers['gradients'])} fp32 at the end of backward)")
    for ck in (False, True):
        mark = "  <- recipe" if ck == t.gradient_checkpointing else ""
        label = "with" if ck else "without"
        lines.append(f"    {label + ' checkpointing':<28}{_gib(numbers['activations'][ck]):>12}; total "
                     f"{_gib(numbers['total'][ck])}{mark}")
    peak_name, peak = numbers["gpu_peak"]
    at_peak = numbers["step_s_at_peak"]
    lines.append(f"compute: {numbers['flops_per_micro_batch'] / 1e12:,.2f} TFLOP per micro-batch (forward + backward"
                 f"{' + recomputation' if t.gradient_checkpointing else ''}, frozen encoders' forward), "
                 f"{numbers['flops_per_step_per_gpu'] / 1e12:,.2f} TFLOP per step per worker")
    lines.append(f"step time at {peak_name} {peak / 1e12:g} TFLOP/s (frozen encoders in fp32: "
                 f"{numbers['encoder_peak'][0]} {numbers['encoder_peak'][1] / 1e12:g}): {at_peak:.3f} s at 100% of peak (a lower bound), "
                 f"{at_peak / ASSUMED_MFU:.3f} s at {ASSUMED_MFU:.0%}; {t.steps} steps: "
                 f"{at_peak * t.steps / 3600:,.1f} h to {at_peak * t.steps / ASSUMED_MFU / 3600:,.1f} h")
    return "\n".join(lines)
