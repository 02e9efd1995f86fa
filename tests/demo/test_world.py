"""The toy world: ground truth matches the files, held-out combinations are absent, and the image pool's
quality is what the selection thresholds of pipelines/toy/world.yaml can separate."""

import collections
import os

import cv2
import numpy as np
import pytest
import yaml

from curate.demo import world
from curate.demo import world_metrics as wm
from curate.scoring.technical_quality import brightness, contrast, grey_frames, noise_sigma, sharpness


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("world"))
    return root, world.generate(root, videos_per_combo=1, images_per_pair=6, seed=0)


def decode(path):
    capture, frames = cv2.VideoCapture(path), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_files_match_truth(small_world):
    root, entries = small_world
    assert entries == world.read_truth(root)
    videos = [e for e in entries if e["modality"] == "video"]
    assert len(videos) == 4 * 3 * 5 - len(world.HELD_OUT)
    assert not {(e["color"], e["shape"], e["motion"]) for e in videos} & set(world.HELD_OUT)
    for entry in videos[::7]:
        frames = decode(os.path.join(root, "media", entry["name"]))
        assert frames.shape == (world.FRAMES, world.SIZE, world.SIZE, 3)
        row = wm.measure(frames, entry["caption"])  # degraded + H.264, still the captioned content
        assert row["color_ok"] and row["motion_ok"], row
        assert row["mark_strength"] > 0.02, row  # the watermark survives degradation and H.264
        path = np.asarray(entry["centres"])
        assert np.allclose(np.abs(np.diff(path, axis=0)).sum(axis=1), 0 if entry["motion"] == "still" else world.STEP)
        assert path.min() >= world.HALF and path.max() <= world.SIZE - 1 - world.HALF
    assert world.parse_caption(videos[0]["caption"]) == (videos[0]["color"], videos[0]["shape"], videos[0]["motion"])
    for entry in [e for e in entries if e["quality"] == "high"][::5]:  # the images are clean
        image = cv2.cvtColor(cv2.imread(os.path.join(root, "media", entry["name"])), cv2.COLOR_BGR2RGB)
        assert abs(wm.measure(image[None], entry["caption"])["mark_strength"]) < 0.02


def test_image_pool_is_half_high_quality_and_thresholds_separate_it(small_world):
    root, entries = small_world
    images = [e for e in entries if e["modality"] == "image"]
    counts = collections.Counter(e["quality"] for e in images)
    assert counts["high"] == len(images) // 2 and set(counts) == {"high", *world.IMAGE_DEFECTS}
    recipe = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "../../pipelines/toy/world.yaml")))
    assert "sharpness > 60" in recipe["select"]["where"]
    for entry in images:  # the recipe's thresholds, computed with the quality scorer's own functions
        image = cv2.cvtColor(cv2.imread(os.path.join(root, "media", entry["name"])), cv2.COLOR_BGR2RGB)
        greys = grey_frames(image[None])
        passes = sharpness(greys) > 60 and noise_sigma(greys) < 5 and contrast(greys) / brightness(greys) > 0.28
        assert passes == (entry["quality"] == "high"), entry


def test_held_out_prompts_name_moving_combinations():
    prompts = world.held_out_prompts()
    assert len(prompts) == len(world.HELD_OUT)
    assert all(world.parse_caption(p)[2] in world.DIRECTIONS for p in prompts)
    with pytest.raises(ValueError):
        world.parse_caption("a cat on a mat")


def test_prepare_serves_the_world_on_loopback(tmp_path):
    import urllib.request

    srv, urls, entries = world.prepare(str(tmp_path), videos_per_combo=1, images_per_pair=2)
    try:
        lines = open(urls).read().splitlines()
        assert len(lines) == len(entries)
        url, caption = lines[0].split("\t")
        assert url.startswith("http://127.0.0.1:") and caption == entries[0]["caption"]
        with urllib.request.urlopen(url) as response:
            assert response.read() == open(tmp_path / "world" / "media" / entries[0]["name"], "rb").read()
    finally:
        srv.shutdown()


def test_toy_recipes_cut_clips_that_show_the_whole_motion(small_world):
    """Every toy recipe's clips, cut from a world video by the trainer's own loader functions at the recipe's
    frames and stride, hold the captioned direction and a fixed step of STEP x stride (at 32 px)."""
    import glob

    import torch

    from curate.train.data import decode_clip, resize_center_crop
    from curate.train.recipe import load_recipe

    root, entries = small_world
    video = next(e for e in entries if e["modality"] == "video" and e["motion"] == "right")
    data = open(os.path.join(root, "media", video["name"]), "rb").read()
    recipes = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "../../pipelines/toy/*.yaml")))
    for path in [p for p in recipes if not p.endswith("world.yaml")]:
        frames, stride, fps = world.clip_geometry(load_recipe(path).data)
        assert (frames - 1) * stride + 1 <= world.FRAMES, path  # a longer span would fall back to stride 1
        clip, clip_fps = decode_clip(data, frames, (stride, stride), np.random.default_rng(0), float(world.FPS))
        assert clip_fps == fps and len(clip) == frames
        x = resize_center_crop(clip, 16, 16)
        small = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        row = wm.measure(small, video["caption"])
        assert row["motion_ok"], (path, row)
        # net displacement per frame, in frame sides: STEP x stride of 32 px (H.264 and blur move centroids a little)
        assert row["speed"] == pytest.approx(world.STEP * stride / world.SIZE, rel=0.25), (path, row)
