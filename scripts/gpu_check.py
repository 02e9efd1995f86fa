"""The first-GPU check: one command, a few minutes on one lent GPU (no network, Ray not needed), one JSON report.

    python scripts/gpu_check.py --out gpu_check.json            # real sizes, on the GPU torch sees
    python scripts/gpu_check.py --tiny --device cpu --out x.json # the same code at tiny sizes (the test suite runs it)

What it measures, each part timed and recorded even when another part fails:
- device: torch's view of the card, the driver (nvidia-smi), CUDA and cuDNN versions;
- resume: train 2 steps, checkpoint, resume in a fresh trainer, 1 more step, equal to 3 straight steps on the
  device (parameters and EMA): the resume path every Ray Train restart takes;
- clip_scoring: images/s of curate's CLIP embedder (uint8 frames in, open_clip's transform, the model) against
  a bare loop over already-normalised tensors on the device, same random ViT-L/14 weights loaded from a file,
  with GPU utilisation sampled by nvidia-smi during each;
- train_step: one F-base U-Net step (videocrafter2_512, bf16 autocast, gradient checkpointing, AdamW foreach,
  EMA) at 16x320x512 latents' size: seconds per step and peak memory beside `--describe`'s estimate of the same
  (no frozen encoders: their weights cannot be fetched here, and the estimate leaves them out to match);
- sampling: seconds per DDIM step (U-Net with guidance: batch 2) in fp32, TF32 and bf16, and the VAE decode's
  peak memory at 16x320x512.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

# sizes: real (the released model's geometry) and tiny (CPU, seconds)
SIZES = {
    "real": {"preset": "videocrafter2_512", "frames": 16, "latent": (40, 64), "pixels": (320, 512),
             "clip": "ViT-L-14", "clip_batch": 64, "clip_batches": 10, "micro_batch": 1},
    "tiny": {"preset": "tiny", "frames": 2, "latent": (8, 8), "pixels": (16, 16),
             "clip": None, "clip_batch": 4, "clip_batches": 2, "micro_batch": 1},
}
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


class Utilisation:
    """GPU utilisation (%) sampled by nvidia-smi every 0.2 s while the block runs; None without nvidia-smi."""

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.index = device.index or 0
        self.samples: list[int] = []

    def __enter__(self):
        self._stop = threading.Event()
        if self.enabled:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                self.samples.append(int(out.stdout.strip()))
            self._stop.wait(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def device_report(device: torch.device) -> dict:
    report = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
              "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                      capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                      bf16=torch.cuda.is_bf16_supported())
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            report["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return report


def _tiny_recipe(tmp: Path, device: torch.device):
    from curate.train.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": "gpu_check", "stage": "base", "trainable": "all",
        "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
        "text_encoder": {"kind": "tiny", "width": 64, "heads": 2, "layers": 1},
        "autoencoder": {"kind": "pixel"},
        "data": {"dirs": [str(tmp)], "frames": 2, "height": 16, "width": 16, "image_ratio": 0.0, "num_workers": 0},
        "optim": {"lr": 1e-3}, "train": {"steps": 3, "batch_size": 2, "micro_batch_size": 2, "checkpoint_every": 2,
                                         "use_gpu": device.type == "cuda", "precision": "bf16", "ema_decay": 0.9},
    })


def _batches(seed: int):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield {"captions": ["a red square", "a blue circle"], "modality": "video", "fps": torch.tensor([8.0, 8.0]),
               "pixels": torch.randint(0, 256, (2, 3, 2, 16, 16), generator=generator, dtype=torch.uint8)}


def check_resume(device: torch.device, work: Path) -> dict:
    """2 steps + checkpoint, a fresh trainer resumes and takes 1 more: equal to 3 straight steps, on the device."""
    from curate.train.loop import Trainer

    def steps(trainer, count, batches):
        for _ in range(count):
            trainer.backward(batches)
            trainer.update()

    recipe = _tiny_recipe(work, device)
    straight = Trainer(recipe, work / "straight", device=device)
    steps(straight, 3, _batches(0))
    first = Trainer(recipe, work / "resumed", device=device)
    batches = _batches(0)
    steps(first, 2, batches)
    first.save()
    resumed = Trainer(recipe, work / "resumed", device=device)
    steps(resumed, 1, batches)
    weights = max((a - b).abs().max().item() for a, b in zip(straight.model.state_dict().values(),
                                                             resumed.model.state_dict().values()))
    ema = max((straight.ema[n] - resumed.ema[n]).abs().max().item() for n in straight.ema)
    devices = sorted({str(t.device) for t in resumed.ema.values()})
    return {"resumed_step": resumed.step, "max_weight_diff": weights, "max_ema_diff": ema, "ema_devices": devices,
            "ok": resumed.step == 3 and weights == 0.0 and ema == 0.0 and devices == [str(straight.ema[next(iter(straight.ema))].device)]}


def _clip_folder(size: dict, work: Path) -> Path:
    import open_clip

    folder = work / "clip"
    folder.mkdir()
    if size["clip"]:
        cfg = open_clip.get_model_config(size["clip"])
    else:
        cfg = TINY_CLIP
    model = open_clip.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def check_clip_scoring(device: torch.device, size: dict, work: Path) -> dict:
    """Images/s through curate's embedder vs a bare loop of the same model on normalised device tensors."""
    import numpy as np

    from curate.scoring.clip_embedder import ClipEmbedder

    embedder = ClipEmbedder(str(_clip_folder(size, work)), str(device)).load()
    batch, rounds = size["clip_batch"], size["clip_batches"]
    frames = np.random.default_rng(0).integers(0, 256, (batch, 360, 640, 3), dtype=np.uint8)
    embedder.embed_frames(frames[:2])  # warm-up (kernels, allocator)
    _sync(device)
    with Utilisation(device) as ours_util:
        started = time.perf_counter()
        for _ in range(rounds):
            embedder.embed_frames(frames)
        _sync(device)
        ours = batch * rounds / (time.perf_counter() - started)
    pixels = embedder.preprocess(frames).to(device)
    with Utilisation(device) as bare_util, torch.inference_mode():
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
        started = time.perf_counter()
        for _ in range(rounds):
            with autocast:
                embedder.model.encode_image(pixels)
        _sync(device)
        bare = batch * rounds / (time.perf_counter() - started)
    return {"model": size["clip"] or "tiny", "precision": embedder.precision, "batch": batch,
            "ours_images_per_s": ours, "bare_images_per_s": bare, "ratio": ours / bare,
            "gpu_util_ours": ours_util.mean, "gpu_util_bare": bare_util.mean}


def _step_recipe(size: dict, device: torch.device):
    from curate.train.recipe import recipe_from_dict

    h, w = size["pixels"]
    tiny = size["preset"] == "tiny"
    return recipe_from_dict({
        "name": "gpu_check_step", "stage": "base", "trainable": "all",
        "model": {"preset": size["preset"], "overrides": {"in_channels": 3, "out_channels": 3} if tiny else {}},
        "text_encoder": {"kind": "tiny", "width": 64} if tiny else {"kind": "open_clip_vit_h_14"},
        "autoencoder": {"kind": "pixel" if tiny else "sd_kl"},
        "data": {"frames": size["frames"], "height": h, "width": w, "image_ratio": 0.0},
        "train": {"batch_size": size["micro_batch"], "micro_batch_size": size["micro_batch"],
                  "gradient_checkpointing": True, "precision": "bf16", "use_gpu": device.type == "cuda"},
    })


def check_train_step(device: torch.device, size: dict) -> dict:
    """One U-Net training step as the trainer takes it, timed after a warm-up step, with its peak memory."""
    from curate.train.describe import _step_inputs, plan
    from curate.train.presets import build_unet

    recipe = _step_recipe(size, device)
    _peak_reset(device)
    model = build_unet(size["preset"], device=device, **recipe.model.overrides)
    model.set_gradient_checkpointing(True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().float().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-5, foreach=True)
    args, kwargs = _step_inputs(recipe, size["frames"], str(device))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    times = []
    for _ in range(2):  # the first step pays for kernel selection and the optimizer's state
        _sync(device)
        started = time.perf_counter()
        with autocast:
            loss = model(*args, **kwargs).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch._foreach_lerp_(ema, [p.detach().float() for p in trainable], 1e-4)
        _sync(device)
        times.append(time.perf_counter() - started)
    numbers = plan(recipe)
    static = dict(numbers["memory_static"])
    static.pop("frozen encoders (fp32)", None)
    static.pop("CUDA context (assumed)", None)  # not in max_memory_allocated
    estimate = sum(static.values()) + numbers["activations"][True]
    measured = _peak(device)
    return {"preset": size["preset"], "frames": size["frames"],
            "seconds_per_step": times[-1], "first_step_s": times[0], "peak_bytes": measured,
            "estimate_bytes": int(estimate), "estimate_over_measured": estimate / measured if measured else None,
            "estimate_step_s_at_peak": numbers["step_s_at_peak"]}


def check_sampling(device: torch.device, size: dict) -> dict:
    """Seconds per DDIM step (cond + uncond in one batch of 2) at fp32, TF32 and bf16; the VAE decode's peak."""
    from curate.train.autoencoder import KLAutoencoder
    from curate.train.presets import build_unet, unet_params

    overrides = {"in_channels": 3, "out_channels": 3} if size["preset"] == "tiny" else {}
    params = unet_params(size["preset"], **overrides)
    model = build_unet(size["preset"], device=device, **overrides).eval()
    h, w = size["latent"]
    x = torch.randn(2, params["in_channels"], size["frames"], h, w, device=device)
    t = torch.full((2,), 500, device=device)
    context = torch.randn(2, 77, params["context_dim"], device=device)
    fps = torch.full((2,), 28.0, device=device)
    out = {}
    for mode in ("fp32", "tf32", "bf16"):
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if mode == "bf16" and device.type == "cuda"
                    else torch.autocast(device.type, enabled=False))
        try:
            with torch.inference_mode(), autocast:
                model(x, t, context, fps)  # warm-up
                _sync(device)
                started = time.perf_counter()
                for _ in range(3):
                    model(x, t, context, fps)
                _sync(device)
            out[f"{mode}_s_per_step"] = (time.perf_counter() - started) / 3
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    del model, x
    ph, pw = size["pixels"]
    vae = (KLAutoencoder() if size["preset"] != "tiny" else KLAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1)).to(device)
    latents = torch.randn(1, 4, size["frames"], ph // vae.downsample, pw // vae.downsample, device=device)
    for mode in ("fp32", "bf16"):
        _peak_reset(device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if mode == "bf16" and device.type == "cuda"
                    else torch.autocast(device.type, enabled=False))
        with torch.inference_mode(), autocast:
            video = vae.decode(latents)
        _sync(device)
        out[f"vae_decode_{mode}_peak_bytes"] = _peak(device)
        out["decoded_shape"] = list(video.shape)
    return out


PARTS = {"resume": lambda d, s, w: check_resume(d, w), "clip_scoring": check_clip_scoring,
         "train_step": lambda d, s, w: check_train_step(d, s), "sampling": lambda d, s, w: check_sampling(d, s)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="where the JSON report goes")
    parser.add_argument("--device", default=None, help="default: cuda when torch sees a GPU, else cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU, seconds): what the test suite runs")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and args.tiny:
        torch.set_num_threads(1)  # tiny ops on many threads crawl on a busy CPU
    size = SIZES["tiny" if args.tiny else "real"]
    report = {"size": "tiny" if args.tiny else "real", "device": device_report(device), "parts": {}}
    for name in parts:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            try:
                result = PARTS[name](device, size, Path(work))
            except Exception as exc:  # noqa: BLE001 - one part's failure is recorded; the others still run
                result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        result["wall_s"] = round(time.perf_counter() - started, 3)
        report["parts"][name] = result
        print(json.dumps({name: result}, default=str), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
