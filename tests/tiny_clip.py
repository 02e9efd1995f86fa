"""The tiny CLIP architecture the tests train or draw at random, saved as open_clip saves a model folder (config JSON
+ weights), so the real loading path runs (importable by name from any test: conftest.py is not)."""

import json
from pathlib import Path

import torch

TINY_CLIP_CFG = {
    "embed_dim": 768,  # the aesthetic predictor's input width, so one tiny model serves both scorers
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_folder(model, folder: Path) -> Path:
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def random_folder(folder: Path, seed: int = 0) -> Path:
    import open_clip

    torch.manual_seed(seed)
    return save_folder(open_clip.CLIP(**TINY_CLIP_CFG), folder)
