"""The toy world: coloured shapes moving in known directions, as low-quality videos and a mixed-quality image pool.

Every file's ground truth (colour, shape, motion, quality, trajectory) is written beside it, so a model trained on
this world can be checked against its prompt (curate.demo.world_metrics). Sizes are tiny on purpose: a CPU must
learn the world in minutes.

- Videos are the "WebVid" of this world: 8 frames at 32x32, every one degraded (blur, low contrast, noise, then
  H.264 at a high CRF). Motion is made as easy as it gets: a constant step of STEP px per frame along one axis,
  always the same speed, so the whole clip crosses most of the frame. The toy models learn that motion (straight
  lines at the real speed) but, up to 6000 CPU steps, not which direction a caption names (README, toy section).
- Every video carries a watermark-like mark (as WebVid's stock-footage overlay): a semi-transparent light bar in
  the bottom-right corner, the same in every clip, put on before the degradations. Images never do: learning
  appearance from them should remove it (curate.demo.world_metrics measures it as mark_strength).
- Images are the pool that curation works on: half high quality (sharp, full contrast, lossless), half degraded
  (blurred, low contrast or noisy); the score thresholds of pipelines/toy/world.yaml must pick the good half.
- Some (colour, shape, motion) combinations are never made as videos (HELD_OUT): prompts for them test whether
  a model composes motion learnt on other shapes with appearance learnt from images.
One background colour for all: the toy model's small capacity goes to colour, shape and motion.
"""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np

from curate.demo import server
from curate.media.transcode import write_mp4

SIZE = 32  # px, square frames
FRAMES = 8
FPS = 8
STEP = 2.0  # px per frame: 14 px over a clip, ~45% of the frame
HALF = 6  # shape half-size in px
BACKGROUND = (40, 40, 40)
COLORS = {"red": (225, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 235), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTIONS = (*DIRECTIONS, "still")
# Never made as videos: each colour, shape and direction still appears as video in other combinations.
HELD_OUT = (("red", "circle", "left"), ("green", "square", "right"), ("blue", "triangle", "up"),
            ("yellow", "circle", "down"), ("red", "triangle", "down"), ("green", "circle", "up"))
IMAGE_DEFECTS = ("blurred", "low_contrast", "noisy")
# The videos' mark: columns 18-29, rows 22-27 (x0, y0, x1, y1 exclusive), even edges so the trainers' 2x downscale
# keeps it whole; blended towards white by MARK_ALPHA, which keeps it under half the faintest shape's difference
# from the background (green: 161 RGB units; the mark 0.2 x 215 x sqrt 3 = 74), so the object finder ignores it.
MARK_BOX = (18, 22, 30, 28)
MARK_ALPHA = 0.2
DEMO_PROMPT = "a red square moving right"
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and area-averaged down: sub-pixel positions, clean anti-aliasing


def caption(color: str, shape: str, motion: str | None) -> str:
    """'a red circle moving left' / 'a red circle standing still' for videos, 'a red circle' for images."""
    if motion is None:
        return f"a {color} {shape}"
    return f"a {color} {shape} " + ("standing still" if motion == "still" else f"moving {motion}")


def parse_caption(text: str) -> tuple[str, str, str | None]:
    """(colour, shape, motion or None) named by a world caption; ValueError for any other text."""
    words = text.lower().split()
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if color is None or shape is None:
        raise ValueError(f"not a world caption (no colour or shape): {text!r}")
    motion = "still" if "still" in words else next((w for w in words if w in DIRECTIONS), None)
    return color, shape, motion


def held_out_prompts() -> list[str]:
    return [caption(*combo) for combo in HELD_OUT]


def render(shape: str, color: str, cx: float, cy: float, size: int = SIZE, half: float = HALF) -> np.ndarray:
    """One clean uint8 [size, size, 3] frame: the shape centred at (cx, cy) (pixel units) on the background."""
    k = _SUPERSAMPLE
    big = np.empty((size * k, size * k, 3), np.uint8)
    big[:] = BACKGROUND
    rgb = tuple(int(v) for v in COLORS[color])
    x, y, h = (cx + 0.5) * k - 0.5, (cy + 0.5) * k - 0.5, half * k  # pixel centres at integer + 0.5
    if shape == "circle":
        cv2.circle(big, (round(x), round(y)), round(h), rgb, -1)
    elif shape == "square":
        cv2.rectangle(big, (round(x - h), round(y - h)), (round(x + h), round(y + h)), rgb, -1)
    else:  # triangle pointing up, filling its 2h x 2h box
        points = np.array([[x, y - h], [x - h, y + h], [x + h, y + h]]).round().astype(np.int32)
        cv2.fillPoly(big, [points], rgb)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def trajectory(motion: str, rng: np.random.Generator, frames: int = FRAMES) -> np.ndarray:
    """Centres [frames, 2] (x, y): a constant STEP along the motion's axis, the whole path inside the frame."""
    span = STEP * (frames - 1)
    dx, dy = DIRECTIONS.get(motion, (0, 0))
    low, high = HALF, SIZE - 1 - HALF
    start = []
    for d in (dx, dy):
        if d > 0:
            start.append(rng.uniform(low, high - span))
        elif d < 0:
            start.append(rng.uniform(low + span, high))
        else:
            start.append(rng.uniform(low, high))
    t = np.arange(frames)[:, None]
    return np.asarray(start)[None, :] + t * STEP * np.array([dx, dy])[None, :]


def clean_clip(shape: str, color: str, motion: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [FRAMES, SIZE, SIZE, 3], centres [FRAMES, 2]) of one undegraded clip."""
    centres = trajectory(motion, rng)
    return np.stack([render(shape, color, x, y) for x, y in centres]), centres


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def low_contrast(frames: np.ndarray, factor: float) -> np.ndarray:
    """Pull every pixel towards mid grey: the shape/background difference shrinks by `factor`."""
    return (128 + (frames.astype(np.float32) - 128) * factor).round().clip(0, 255).astype(np.uint8)


def add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return (frames.astype(np.float32) + rng.normal(0, sigma, frames.shape)).round().clip(0, 255).astype(np.uint8)


def add_mark(frames: np.ndarray) -> np.ndarray:
    """The watermark: MARK_BOX of every frame blended towards white by MARK_ALPHA."""
    x0, y0, x1, y1 = MARK_BOX
    out = frames.copy()
    region = out[:, y0:y1, x0:x1].astype(np.float32)
    out[:, y0:y1, x0:x1] = (region + MARK_ALPHA * (255 - region)).round().clip(0, 255).astype(np.uint8)
    return out


def degrade_video(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """WebVid-like defects, all at once (compression comes when the clip is written)."""
    params = {"blur_sigma": float(rng.uniform(0.9, 1.4)), "contrast": float(rng.uniform(0.45, 0.6)),
              "noise_sigma": float(rng.uniform(4.0, 8.0))}
    out = add_noise(low_contrast(blur(frames, params["blur_sigma"]), params["contrast"]), params["noise_sigma"], rng)
    return out, params


def degrade_image(image: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One defect per degraded image, strong enough for a score threshold to see."""
    frames = image[None]
    if defect == "blurred":
        sigma = float(rng.uniform(1.5, 2.5))
        return blur(frames, sigma)[0], {"blur_sigma": sigma}
    if defect == "low_contrast":
        factor = float(rng.uniform(0.3, 0.45))
        return low_contrast(frames, factor)[0], {"contrast": factor}
    sigma = float(rng.uniform(12.0, 20.0))
    return add_noise(frames, sigma, rng)[0], {"noise_sigma": sigma}


def generate(root: str, videos_per_combo: int = 4, images_per_pair: int = 12, seed: int = 0) -> list[dict]:
    """Write the world into root/media and its ground truth to root/world.jsonl; returns the entries
    {name, modality, caption, color, shape, motion, quality, params, centres}. Half of each (colour, shape)
    pair's images are high quality, the other half split over IMAGE_DEFECTS."""
    rng = np.random.default_rng(seed)
    media = os.path.join(root, "media")
    os.makedirs(media, exist_ok=True)
    entries = []
    for color in COLORS:
        for shape in SHAPES:
            for motion in MOTIONS:
                if (color, shape, motion) in HELD_OUT:
                    continue
                for i in range(videos_per_combo):
                    frames, centres = clean_clip(shape, color, motion, rng)
                    frames, params = degrade_video(add_mark(frames), rng)
                    name = f"video_{color}_{shape}_{motion}_{i}.mp4"
                    write_mp4(os.path.join(media, name), list(frames), fps=FPS, crf=34)
                    entries.append({"name": name, "modality": "video", "caption": caption(color, shape, motion),
                                    "color": color, "shape": shape, "motion": motion, "quality": "low",
                                    "params": params, "centres": centres.round(3).tolist()})
            for i in range(images_per_pair):
                x, y = rng.uniform(HALF, SIZE - 1 - HALF, 2)
                image, params = render(shape, color, x, y), {}
                quality = "high" if i % 2 == 0 else IMAGE_DEFECTS[(i // 2) % len(IMAGE_DEFECTS)]
                if quality != "high":
                    image, params = degrade_image(image, quality, rng)
                name = f"image_{color}_{shape}_{i}.png"  # lossless: the pool's quality is only what we made it
                cv2.imwrite(os.path.join(media, name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                entries.append({"name": name, "modality": "image", "caption": caption(color, shape, None),
                                "color": color, "shape": shape, "motion": None, "quality": quality,
                                "params": params, "centres": [[round(float(x), 3), round(float(y), 3)]]})
    with open(os.path.join(root, "world.jsonl.tmp"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    os.replace(os.path.join(root, "world.jsonl.tmp"), os.path.join(root, "world.jsonl"))
    return entries


def read_truth(root: str) -> list[dict]:
    with open(os.path.join(root, "world.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def prepare(out: str, seed: int = 0, **sizes) -> tuple[server.MediaServer, str, list[dict]]:
    """The world in out/world (made once; reused when its world.jsonl exists), served on 127.0.0.1, and the URL
    list (url TAB caption) that points at it."""
    root = os.path.join(out, "world")
    if os.path.exists(os.path.join(root, "world.jsonl")):
        entries = read_truth(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
        entries = generate(root, seed=seed, **sizes)
    srv = server.start(os.path.join(root, "media"))
    urls = os.path.join(root, "urls.txt")
    with open(urls, "w", encoding="utf-8") as f:
        f.writelines(f"{srv.base_url}/{e['name']}\t{e['caption']}\n" for e in entries)
    return srv, urls, entries


def clip_geometry(data) -> tuple[int, int, float]:
    """(frames, stride, fps conditioning) of the clips a training recipe's data section cuts from this world's
    videos. The toy recipes use one fixed stride (frame_stride [s, s]): one speed, and fps = FPS / s."""
    stride = data.frame_stride[0]
    return data.frames, stride, FPS / stride


def demo_gif(checkpoint: str, out: str, prompt: str = DEMO_PROMPT, seed: int = 0, steps: int = 25,
             guidance: float = 4.0) -> str:
    """For the demo: a GIF of `prompt` sampled from a checkpoint trained on this world (e.g. RUN/f_spa_dir of
    scripts/reproduce_toy.py), scaled up 8x (nearest) so the 16 px shape is visible."""
    import torch

    from curate.train.sample import SamplerOptions, VideoSampler, write_video

    sampler = VideoSampler(checkpoint, "cpu")  # a toy model: the CPU is as fast and the result exact
    frames, _, fps = clip_geometry(sampler.recipe.data)  # as the model saw videos in training
    video = sampler.sample(prompt, SamplerOptions(frames=frames, fps=fps, steps=steps, guidance=guidance), seed)
    big = video.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    return str(write_video(torch.as_tensor(big), out, fps))
