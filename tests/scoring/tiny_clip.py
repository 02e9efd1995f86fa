"""The tiny CLIP architecture the scoring tests train and save (importable by name: conftest.py is not)."""

TINY_CLIP_CFG = {
    "embed_dim": 768,  # the aesthetic predictor's input width, so one tiny model serves both scorers
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
