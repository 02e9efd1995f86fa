"""The cost of sampling one video, estimated before any weight is read: FLOPs and peak GPU memory of the U-Net's
DDIM steps, the text tower and the VAE decode, traced on the meta device (the accounting of curate/train/describe.py).

Memory follows how VideoSampler runs on a GPU: the U-Net's fp32 weights stay on it; the text tower, then the
autoencoder, join them only while they run. Activations are traced in fp32 and halved for bf16 autocast (an
approximation: autocast keeps norms and softmax in fp32). Time is FLOPs over the stated GPU peak, at 100% (a lower
bound) and at the assumed utilisation: an estimate, not a measurement.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from curate.train.describe import ASSUMED_MFU, CUDA_CONTEXT_BYTES, GPU_PEAK, LiveTensors, frozen_parts
from curate.train.diffusion import GaussianDiffusion
from curate.train.sampler_options import SamplerOptions

GPU_24GB = 23.5 * 2**30  # what a 24 GB card (RTX 4090, A10, L4) leaves to tensors
FP32 = 4


def meta_parts(source: str) -> tuple[dict, GaussianDiffusion, dict]:
    """({unet, text encoder, autoencoder or None} on the meta device, diffusion, model defaults) of a resolved
    source (a released model or our checkpoint, whose recipe is read without its tensors)."""
    from curate.train import released
    from curate.train.checkpoints import checkpoint_config
    from curate.train.presets import build_unet
    from curate.train.recipe import recipe_from_dict
    from curate.train.sample import OUR_DEFAULTS

    found = released.parse(source)
    if found:
        parts = released.build_parts(found[0])
        return ({"unet": parts.unet, "text encoder": parts.text_encoder, "autoencoder": parts.first_stage},
                GaussianDiffusion(found[0].diffusion), dict(found[0].defaults))
    recipe = recipe_from_dict(checkpoint_config(source)["recipe"])
    frozen = frozen_parts(recipe)
    unet = build_unet(recipe.model.preset, device="meta", **recipe.model.overrides)
    defaults = dict(OUR_DEFAULTS, height=recipe.data.height, width=recipe.data.width)
    return ({"unet": unet, "text encoder": frozen["text encoder"], "autoencoder": frozen.get("autoencoder")},
            GaussianDiffusion(recipe.diffusion), defaults)


def _traced(fn) -> tuple[int, int]:
    """(FLOPs, peak bytes of the tensors created) of fn() on the meta device (two runs: the modes do not nest)."""
    counter, live = FlopCounterMode(display=False), LiveTensors()
    with counter, torch.no_grad():
        fn()
    with live, torch.no_grad():
        fn()
    return counter.get_total_flops(), live.peak


def _bytes(module) -> int:
    return sum(p.numel() for p in module.parameters()) * FP32 if module is not None else 0


def plan(source: str, options: SamplerOptions = SamplerOptions(), precision: str = "bf16") -> dict:
    """Per-video FLOPs, seconds and peak GPU bytes of sampling `source` with `options` (model defaults filled)."""
    parts, diffusion, defaults = meta_parts(source)
    o = options.with_defaults(defaults)
    unet, text, vae = parts["unet"], parts["text encoder"], parts["autoencoder"]
    down = vae.downsample if vae is not None else 1
    channels = vae.latent_channels if vae is not None else 3
    batch = 2 if o.guidance != 1.0 else 1
    steps = len(diffusion.ddim_timesteps(o.steps))
    with torch.device("meta"):
        x = torch.randn(batch, channels, o.frames, o.height // down, o.width // down)
        t, fps = torch.full((batch,), 999), torch.full((batch,), float(o.fps))
        context = torch.randn(batch, 77, text.dim)
        latents = torch.randn(1, channels, o.frames, o.height // down, o.width // down)
    unet_flops, unet_peak = _traced(lambda: unet(x, t, context, fps))
    text_flops, text_peak = _traced(lambda: text(["a caption"] * batch))
    vae_flops, vae_peak = _traced(lambda: vae.decode(latents)) if vae is not None else (0, 0)
    half = 0.5 if precision == "bf16" else 1.0
    resident = _bytes(unet) + CUDA_CONTEXT_BYTES
    phases = {
        "text encoding": resident + _bytes(text) + text_peak,  # the text tower runs in fp32
        "DDIM steps": resident + half * unet_peak,
        "VAE decode": resident + _bytes(vae) + half * vae_peak,
    }
    flops = steps * unet_flops + text_flops + vae_flops
    peak_name, peak = GPU_PEAK["bf16" if precision == "bf16" else "fp32"]  # fp32: the TF32 peak, a lower bound
    return {"options": o, "precision": precision, "unet_forwards": steps, "batch": batch,
            "flops": flops, "flops_parts": {"U-Net": steps * unet_flops, "text tower": text_flops,
                                            "VAE decode": vae_flops},
            "memory": phases, "peak": max(phases.values()), "gpu_peak": (peak_name, peak),
            "seconds_at_peak": flops / peak, "seconds_assumed": flops / peak / ASSUMED_MFU}


def render(source: str, numbers: dict, videos: int, gpus: int) -> list[str]:
    """The lines `curate eval --describe` prints for one model."""
    o, gib = numbers["options"], 2**30
    lines = [f"{source}: {videos} videos of {o.frames} frames at {o.width}x{o.height}, fps {o.fps:g}, DDIM "
             f"{o.steps} steps ({numbers['unet_forwards']} U-Net forwards at batch {numbers['batch']}), guidance "
             f"{o.guidance:g}, eta {o.eta:g}, {numbers['precision']}",
             f"  per video (estimate from the FLOP model): {numbers['flops'] / 1e12:,.1f} TFLOP ("
             + ", ".join(f"{k} {v / 1e12:,.1f}" for k, v in numbers["flops_parts"].items()) + ")"]
    name, _ = numbers["gpu_peak"]
    lines.append(f"  time per video on one {name}: {numbers['seconds_at_peak']:,.1f} s at 100% of peak (a lower "
                 f"bound), {numbers['seconds_assumed']:,.1f} s at {ASSUMED_MFU:.0%}")
    if gpus:
        total = numbers["seconds_assumed"] * videos / gpus / 3600
        lines.append(f"  all {videos} videos on the {gpus} GPU(s) found: ~{total:,.1f} h at {ASSUMED_MFU:.0%}")
    else:
        lines.append("  no GPU found: the run would sample on the CPU, far slower than these GPU figures")
    lines.append(f"  peak GPU memory (estimate; text tower and VAE on the GPU only while they run; CUDA context "
                 f"{CUDA_CONTEXT_BYTES / gib:.1f} GiB assumed): {numbers['peak'] / gib:,.1f} GiB -> "
                 f"{'fits' if numbers['peak'] < GPU_24GB else 'does not fit'} one 24 GB GPU")
    for phase, n in numbers["memory"].items():
        lines.append(f"    {phase:<14} {n / gib:,.2f} GiB")
    return lines
