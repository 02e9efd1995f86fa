"""CLIPSIM against the formula, computed with open_clip's own model and preprocessing on a tiny random CLIP."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import open_clip
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curate.eval.clipsim import clipsim
from curate.eval.metric_stage import manifests_fingerprint


def reference_clipsim(folder, videos: list[np.ndarray], captions: list[str]) -> float:
    """open_clip's own model, PIL preprocessing and tokenizer: mean over frames of the cosine, then over videos."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    per_video = []
    with torch.no_grad():
        for frames, caption in zip(videos, captions):
            images = torch.stack([preprocess(Image.fromarray(frame)) for frame in frames])
            image_features = model.encode_image(images)
            text_features = model.encode_text(tokenizer([caption]))
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            per_video.append(float((image_features @ text_features.T).mean()))
    return float(np.mean(per_video))


def test_clipsim_matches_the_formula(ray_local, folder_factory, tiny_clip_folder):
    rng = np.random.default_rng(0)
    # frames at the model's input size, encoded losslessly enough that decoding does not matter: the frames
    # compared are the ones the folder decodes
    videos = [np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 4, axis=0) for _ in range(3)]
    videos = [np.concatenate([v[:2], 255 - v[2:]]) for v in videos]  # two distinct frames per video
    captions = ["a red square", "a blue circle moving left", "static noise"]
    samples = [{"key": f"v{i}", "frames": v, "caption": c} for i, (v, c) in enumerate(zip(videos, captions))]
    samples.append({"key": "nocap", "frames": videos[0], "caption": None})
    root = folder_factory("gen", samples)

    from curate.eval.clips import iter_clips

    decoded = {c.key: c.frames for c in iter_clips(root, frames=16, exact=False)}
    result = clipsim(root, clip_model=str(tiny_clip_folder), device="cpu", workers=1)
    expected = reference_clipsim(tiny_clip_folder, [decoded[f"v{i}"] for i in range(3)], captions)
    assert result["clips"] == 3 and result["skipped"] == 1
    assert result["value"] == pytest.approx(expected, abs=1e-4)
    assert -1.0 <= result["value"] <= 1.0  # unscaled cosine
    assert result["protocol"]["model"].startswith("local-dir:")
    written = json.loads(open(os.path.join(root, "eval", "clipsim.json")).read())
    assert written["value"] == result["value"]
    # provenance beside the value: the weights file's hash, the settings, the input's digest, the code's version
    weights = hashlib.sha256((tiny_clip_folder / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    record = written["provenance"]
    assert record["config"]["weights_sha256"] == weights == result["protocol"]["weights_sha256"]
    assert record["config"]["frames"] == 16 and record["model"]["sha256"] == weights
    assert record["input_fingerprint"] == {"folder": manifests_fingerprint(root)}
    assert record["versions"]["curate"] and record["versions"]["open_clip_torch"]
    rows = {r["key"]: r for r in pq.read_table(os.path.join(root, "eval", "clipsim", "00000.parquet")).to_pylist()}
    assert rows["nocap"]["error"] == "no caption" and rows["nocap"]["clipsim"] is None
