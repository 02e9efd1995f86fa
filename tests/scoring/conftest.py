"""Fixtures for the scoring tests: synthetic media encoded in-test and tiny CLIP models saved to checkpoints."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from synthetic_media import COLOURS, solid
from tiny_clip import TINY_CLIP_CFG, save_folder

from curate import weightfile
from curate.scoring import clip_spec, published_weights

def _train_tiny_clip(steps: int = 30) -> open_clip.CLIP:
    """A tiny CLIP trained for a few steps to match solid colours with their names."""
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CLIP_CFG["text_cfg"]["context_length"])
    names = list(COLOURS)
    texts = tokenizer([f"a photo of the colour {name}" for name in names])
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        images = np.stack([solid(name, 32, seed=step * 10 + index) for index, name in enumerate(names)])
        pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        image_features = F.normalize(model.encode_image(pixels), dim=-1)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        target = torch.arange(len(names))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny trained CLIP saved as open_clip saves a model folder (config JSON + weights)."""
    return save_folder(_train_tiny_clip(), tmp_path_factory.mktemp("tiny_clip_trained"))


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory, tiny_clip_dir):
    """The same weights as a bare checkpoint file of a registered architecture: spec 'curate-tiny:/path'."""
    configs = tmp_path_factory.mktemp("tiny_clip_cfg")
    (configs / "curate-tiny.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(configs / "curate-tiny.json")
    return "curate-tiny", tiny_clip_dir / "open_clip_pytorch_model.bin"


@pytest.fixture(scope="session")
def openai_style_file(tmp_path_factory, tiny_clip_checkpoint):
    """A tiny QuickGELU CLIP saved as OpenAI releases CLIP (a TorchScript archive), and the model itself."""
    torch.manual_seed(5)
    model = open_clip.CLIP(**TINY_CLIP_CFG, quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("openai_style") / "tiny-openai.pt"
    torch.jit.script(model).save(path)
    return path, model


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """A home with no caches, and a network that must not be touched unless a test says so."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "curate-cache"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for name in weightfile.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)

    def no_network(*args):
        raise AssertionError("network access attempted")

    for module in (published_weights, clip_spec, weightfile):  # each calls the name it imported
        monkeypatch.setattr(module, "fetch", no_network)
    monkeypatch.setattr(weightfile, "fetch_from_hf", no_network)
    return tmp_path
