"""Benchmark: tiny-preset training samples/s vs the shard loader's samples/s on the same shards.

The loader must deliver at least 3x what the model consumes, so training never waits on data.
Each is timed on its own (the model on batches already in memory, the loader without a model).

    .venv/bin/python scripts/bench_train_loader.py [--data DIR] [--recipe pipelines/train/tiny_f_base.yaml] [--smoke]

Without --data, a synthetic dataset folder (moving-square mp4s at 320x240 / 24 fps and jpgs) is
written to a temporary folder first.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from curate.train.data import LoaderConfig, make_loader
from curate.train.recipe import load_recipe
from curate.train.loop import Trainer, loader_config


def synthetic_dataset(root: Path, videos: int = 32, images: int = 32, per_shard: int = 16,
                      size: tuple[int, int] = (240, 320)) -> Path:
    import av
    from PIL import Image

    height, width = size
    rng = np.random.default_rng(0)
    items = [("video", f"v{i:04d}") for i in range(videos)] + [("image", f"i{i:04d}") for i in range(images)]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(items), per_shard)):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tf:
            for modality, key in items[start : start + per_shard]:
                colour = rng.integers(0, 255, 3, dtype=np.uint8)
                frames = np.full((48, height, width, 3), 30, np.uint8)
                for t in range(48):  # a square a quarter of the width wide, sliding 4 px a frame
                    x = 4 * t % (width - width // 4)
                    frames[t, height // 3 : 2 * height // 3, x : x + width // 4] = colour
                buf = io.BytesIO()
                if modality == "video":
                    with av.open(buf, mode="w", format="mp4") as out:
                        stream = out.add_stream("libx264", rate=24)
                        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                        for frame in frames:
                            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                        out.mux(stream.encode())
                    media = (f"{key}.mp4", buf.getvalue())
                    meta = {"key": key, "modality": "video", "fps": 24, "num_frames": 48, "width": width,
                            "height": height}
                else:
                    Image.fromarray(frames[0]).save(buf, format="JPEG", quality=90)
                    media = (f"{key}.jpg", buf.getvalue())
                    meta = {"key": key, "modality": "image", "width": width, "height": height}
                for name, data in (media, (f"{key}.txt", b"a moving square"), (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return root


def loader_rate(cfg: LoaderConfig, batches: int, warmup: int = 2) -> float:
    it = iter(make_loader(cfg))
    for _ in range(warmup):
        next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.batch_size / (time.perf_counter() - started)


def model_rate(trainer: Trainer, batches: list[dict]) -> float:
    recipe = trainer.recipe
    started = None
    for i, batch in enumerate(batches):
        if i == 1:
            started = time.perf_counter()  # the first step pays one-off allocation costs
        generator = torch.Generator().manual_seed(i)
        trainer.micro_step(batch, generator).backward()
        torch.nn.utils.clip_grad_norm_(trainer.trainable.values(), recipe.optim.grad_clip)
        trainer.opt.step()
        trainer.opt.zero_grad(set_to_none=True)
        trainer.update_ema()
    return (len(batches) - 1) * recipe.train.micro_batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="curated dataset folder (default: synthetic)")
    parser.add_argument("--recipe", type=Path, default=Path(__file__).resolve().parents[1] / "pipelines/train/tiny_f_base.yaml")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--loader-batches", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="a few 64x48 samples, 2 steps: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.loader_batches = 2, 2

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or (synthetic_dataset(Path(tmp) / "data", 4, 4, 4, size=(48, 64)) if args.smoke
                             else synthetic_dataset(Path(tmp) / "data"))
        recipe = load_recipe(args.recipe)
        recipe = recipe.replace(data={"dirs": [str(data)], "num_workers": 0})
        d, t = recipe.data, recipe.train
        cfg = loader_config(recipe)
        trainer = Trainer(recipe, Path(tmp) / "run")
        batches = list(itertools.islice(iter(make_loader(cfg)), args.steps))
        train_sps = model_rate(trainer, batches)
        results = {
            "recipe": recipe.name,
            "geometry": f"{d.frames}x{d.height}x{d.width}",
            "micro_batch": t.micro_batch_size,
            "image_ratio": d.image_ratio,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
            "train_samples_per_s": round(train_sps, 2),
        }
        for workers in (0, 1, 2):
            rate = loader_rate(dataclasses.replace(cfg, num_workers=workers), args.loader_batches)
            results[f"loader_samples_per_s_workers{workers}"] = round(rate, 2)
        # conservative: the in-process loader (no worker prefetch) against the model
        results["loader_over_train"] = round(results["loader_samples_per_s_workers0"] / train_sps, 2)
        results["meets_3x"] = results["loader_over_train"] >= 3
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
