"""Benchmark the evaluation metrics side by side with bare PyTorch loops on the same decoded inputs, in one run.

i3d:     curate.eval.fvd.i3d_features (our InceptionI3d through load_i3d) vs a bare loop (stack, resize, model)
         over the same uint8 clips and the same model: clips/s and the ratio.
clipsim: curate.eval.clipsim.clipsim_video (the CLIP scorer's embedder) vs a bare open_clip loop (its own
         preprocess, encode, cosine) over the same frames and the same weights: frames/s and the ratio.
fvd:     the Frechet distance of 2,048 x 2,048 random 400-d features (fit + trace sqrt), with scipy's
         sqrtm of the product timed beside it.
Models carry random weights saved to a temporary file (real size, real loading code; no downloads).
Decoding is not timed: both sides get the same decoded frames. Usage:
python scripts/bench_eval.py [--clips 16] [--height 240 --width 320] [--batch 8] [--device cuda] [--repeats 3]
--smoke: one 9-frame clip, a tiny CLIP instead of ViT-B/32, 64 features of 16-d (the suite's check that it runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import open_clip
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from curate.eval import fvd, i3d
from curate.eval.clipsim import clipsim_video
from curate.eval.frechet import fit_gaussian, frechet_distance
from curate.scoring.clip_embedder import ClipEmbedder

# --smoke's CLIP: the shape of ViT-B/32 at a fraction of its size
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def side_by_side(ours, bare, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best-of-N seconds of each, the two alternating, so that load drifting on a shared machine hits both."""
    t_ours, t_bare = [], []
    for _ in range(repeats):
        t_bare.append(timed(bare, device))
        t_ours.append(timed(ours, device))
    return min(t_ours), min(t_bare)


@torch.inference_mode()
def bare_i3d(model, clips: list[np.ndarray], device: torch.device, batch: int) -> np.ndarray:
    """The loop a user would write: stack a batch, move it, resize shorter side + centre crop, [-1,1], model."""
    out = []
    for start in range(0, len(clips), batch):
        x = torch.from_numpy(np.stack(clips[start : start + batch])).to(device)  # [B,T,H,W,3]
        b, t, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 255
        scale = 224 / min(h, w)
        size = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
        x = x[:, :, top : top + 224, left : left + 224] * 2 - 1
        x = x.reshape(b, t, 3, 224, 224).permute(0, 2, 1, 3, 4)
        out.append(model(x).double().cpu())
    return torch.cat(out).numpy()


def bench_i3d(args, device: torch.device, folder: str) -> dict:
    path = os.path.join(folder, "i3d_pretrained_400.pt")
    torch.save(i3d.InceptionI3d().state_dict(), path)
    model = i3d.load_i3d(path, device).model
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8) for _ in range(args.clips)]
    ours = lambda: fvd.i3d_features(model, clips, device=device, batch_size=args.batch)  # noqa: E731
    bare = lambda: bare_i3d(model, clips, device, args.batch)  # noqa: E731
    assert np.allclose(ours(), bare(), atol=1e-3), "ours and the bare loop disagree"
    t_ours, t_bare = side_by_side(ours, bare, args.repeats, device)
    return {"what": "I3D features (clips/s)", "ours": args.clips / t_ours, "bare": args.clips / t_bare}


@torch.inference_mode()
def bare_clipsim(model, preprocess, tokenizer, videos, captions, device) -> list[float]:
    """open_clip as its README shows: its own preprocess on PIL frames, encode, normalise, cosine."""
    scores = []
    for frames, caption in zip(videos, captions):
        x = torch.stack([preprocess(Image.fromarray(frame)) for frame in frames]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            image = F.normalize(model.encode_image(x).float(), dim=-1)
            text = F.normalize(model.encode_text(tokenizer([caption]).to(device)).float(), dim=-1)
        scores.append(float((image @ text.T).mean()))
    return scores


def bench_clipsim(args, device: torch.device, folder: str) -> dict:
    model_dir = os.path.join(folder, "clip")
    os.makedirs(model_dir)
    config = TINY_CLIP if args.smoke else open_clip.get_model_config("ViT-B-32")
    with open(os.path.join(model_dir, "open_clip_config.json"), "w") as handle:
        json.dump({"model_cfg": config, "preprocess_cfg": {}}, handle)
    torch.save(open_clip.CLIP(**config).state_dict(), os.path.join(model_dir, "open_clip_pytorch_model.bin"))
    embedder = ClipEmbedder(model_dir, str(device)).load()
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8) for _ in range(args.clips)]
    captions = [f"a video of thing number {index}" for index in range(args.clips)]
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    ours = lambda: [clipsim_video(embedder, v, c) for v, c in zip(videos, captions)]  # noqa: E731
    bare = lambda: bare_clipsim(model.eval(), preprocess, tokenizer, videos, captions, device)  # noqa: E731
    assert np.allclose(ours(), bare(), atol=1e-2), "ours and the bare loop disagree"
    t_ours, t_bare = side_by_side(ours, bare, args.repeats, device)
    frames = args.frames * args.clips
    return {"what": f"CLIPSIM {'tiny CLIP' if args.smoke else 'ViT-B/32'} (frames/s)", "ours": frames / t_ours, "bare": frames / t_bare}


def bench_frechet(args) -> dict:
    rng = np.random.default_rng(2)
    n, dim = (64, 16) if args.smoke else (2048, 400)
    x, y = rng.normal(size=(n, dim)), rng.normal(size=(n, dim)) + 0.1

    def scipy_way():
        a, b = fit_gaussian(x), fit_gaussian(y)
        root = scipy.linalg.sqrtm(a.sigma @ b.sigma)
        return np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma + b.sigma - 2 * root.real)

    ours, reference = side_by_side(lambda: frechet_distance(fit_gaussian(x), fit_gaussian(y)), scipy_way,
                                   args.repeats, torch.device("cpu"))
    return {"what": f"FVD {n}x{n} {dim}-d (s)", "ours": ours, "bare": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=("i3d", "clipsim", "fvd"), action="append")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks every measure runs")
    args = parser.parse_args()
    args.frames = 16
    if args.smoke:  # I3D needs at least 9 frames
        args.clips, args.height, args.width, args.batch, args.repeats, args.frames = 1, 32, 48, 1, 1, 9
    device = torch.device(args.device)
    only = set(args.only or ("i3d", "clipsim", "fvd"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if "i3d" in only:
            rows.append(bench_i3d(args, device, folder))
        if "clipsim" in only:
            rows.append(bench_clipsim(args, device, folder))
    if "fvd" in only:
        rows.append(bench_frechet(args))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; {args.clips} clips of {args.frames} x {args.height}x{args.width}, batch {args.batch}, "
          f"best of {args.repeats}")
    print("| measure | ours | bare PyTorch / scipy | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        seconds = row["what"].endswith("(s)")
        ratio = row["bare"] / row["ours"] if seconds else row["ours"] / row["bare"]
        print(f"| {row['what']} | {row['ours']:.3g} | {row['bare']:.3g} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
