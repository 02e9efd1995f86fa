"""The hf backend's model: found in a folder or the hub cache (a missing one is an error naming how to get it),
weights hashed, every frame reaching the processor as an image, greedy answers that repeat whatever the batch,
and a sample the processor refuses failing alone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from curate.caption.client import Answer, CaptionFailure
from curate.caption.hf import HFCaptioner, model_folder, weights_sha256
from curate.demo.corpus import COLORS
from curate.weightfile import WeightsMissing

MAX_TOKENS = 8


def jpeg(colour: str, width: int = 56, height: int = 56) -> bytes:
    """A frame of one colour: 56x56 is 4x4 patches of 14 px, merged 2x2 into 4 image tokens."""
    return cv2.imencode(".jpg", np.full((height, width, 3), COLORS[colour][::-1], np.uint8))[1].tobytes()


VIDEO = [jpeg(c) for c in ("red", "green", "blue", "white")]
IMAGE = [jpeg("yellow")]
PAIR = [jpeg("purple"), jpeg("green")]


@pytest.fixture(scope="module")
def captioner(tiny_vlm):
    return HFCaptioner(tiny_vlm, "Describe the clip.", MAX_TOKENS, "cpu")


def nearest_colour(image) -> str:
    mean = np.asarray(image, np.float32).reshape(-1, 3).mean(axis=0)
    return min(COLORS, key=lambda name: float(np.abs(mean - np.array(COLORS[name], np.float32)).sum()))


def test_model_folder_local_hub_cache_and_missing(tiny_vlm, tmp_path, monkeypatch):
    assert model_folder(tiny_vlm) == Path(tiny_vlm).resolve()
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    repo = hub / "models--tiny-org--tiny-vlm"
    shutil.copytree(tiny_vlm, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert model_folder("tiny-org/tiny-vlm") == repo / "snapshots" / ("a" * 40)
    with pytest.raises(WeightsMissing, match="hf download tiny-org/absent-vlm") as missing:
        model_folder("tiny-org/absent-vlm")
    assert str(hub) in str(missing.value)
    with pytest.raises(WeightsMissing, match="no such model folder"):
        model_folder(str(tmp_path / "nowhere"))

    partial = tmp_path / "partial"
    shutil.copytree(tiny_vlm, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(WeightsMissing, match="holds no weights"):
        model_folder(str(partial))
    shard = "model-00002-of-00002.safetensors"
    shutil.copy(Path(tiny_vlm) / "model.safetensors", partial / "model-00001-of-00002.safetensors")
    (partial / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": shard}}))
    with pytest.raises(WeightsMissing, match=f"lacks {shard}"):  # an interrupted download
        model_folder(str(partial))

    other = tmp_path / "other"
    shutil.copytree(tiny_vlm, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, model_type="llava")))
    with pytest.raises(ValueError, match="qwen2_vl, qwen2_5_vl"):
        model_folder(str(other))


def test_weights_hashed_per_file(tiny_vlm):
    digest = hashlib.sha256((Path(tiny_vlm) / "model.safetensors").read_bytes()).hexdigest()
    assert weights_sha256(tiny_vlm) == {"model.safetensors": digest}


class RecordingProcessor:
    """The model's processor, noting the images of every call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, *, images, **kwargs):
        self.calls.append(images)
        return self.inner(images=images, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_every_frame_reaches_the_processor_as_an_image(captioner, monkeypatch):
    recorder = RecordingProcessor(captioner.processor)
    monkeypatch.setattr(captioner, "processor", recorder)
    video, image = captioner.answer([VIDEO, IMAGE])
    assert len(recorder.calls) == 1  # one batch
    assert [[nearest_colour(i) for i in sample] for sample in recorder.calls[0]] == [
        ["red", "green", "blue", "white"], ["yellow"]]
    # each frame adds its 4 image tokens and the vision start/end markers to the prompt
    assert video.prompt_tokens - image.prompt_tokens == 3 * (4 + 2)
    for answer in (video, image):
        assert isinstance(answer, Answer) and answer.text and answer.attempts == 1
        assert 0 < answer.completion_tokens <= MAX_TOKENS and answer.finish_reason in ("stop", "length")
        assert answer.finish_reason == "stop" or answer.completion_tokens == MAX_TOKENS


def test_greedy_answers_repeat_whatever_the_batch(captioner):
    batch = captioner.answer([VIDEO, IMAGE, PAIR])
    again = captioner.answer([VIDEO, IMAGE, PAIR])
    alone = [captioner.answer([sample])[0] for sample in (VIDEO, IMAGE, PAIR)]
    texts = [a.text for a in batch]
    assert texts == [a.text for a in again] == [a.text for a in alone]
    assert [a.prompt_tokens for a in batch] == [a.prompt_tokens for a in alone]  # padding is not counted


def test_a_sample_the_processor_refuses_fails_alone(captioner):
    sliver = [jpeg("blue", width=500, height=2)]  # aspect ratio 250: Qwen's resize refuses it
    good, bad = captioner.answer([IMAGE, sliver])
    assert isinstance(good, Answer) and good.text == captioner.answer([IMAGE])[0].text
    assert isinstance(bad, CaptionFailure) and bad.reason == "model_error" and "aspect ratio" in str(bad)
