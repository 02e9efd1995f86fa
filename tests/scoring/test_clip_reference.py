"""CLIP inputs and CLIP score against open_clip computed independently (its own model, transform and tokenizer)."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from synthetic_media import COLOURS, solid, textured_frame
from tiny_clip import TINY_CLIP_CFG

from curate.scoring.clip_embedder import ClipEmbedder
from curate.scoring.clip_score import CLIP_SCORE, ClipScorer

# odd sizes: wide, tall, tiny (smaller than the crop), a square, an extreme strip, one above DECODE_MAX_SIDE
SIZES = [(240, 320), (320, 240), (7, 5), (224, 224), (37, 500), (1080, 1920)]


@pytest.fixture(scope="module")
def clip224_dir(tmp_path_factory):
    """A tiny random CLIP at the real input size (224) with a non-default preprocess cfg, saved as a model folder."""
    cfg = {**TINY_CLIP_CFG, "vision_cfg": {**TINY_CLIP_CFG["vision_cfg"], "image_size": 224, "patch_size": 32}}
    folder = tmp_path_factory.mktemp("clip224")
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    torch.manual_seed(3)
    torch.save(open_clip.CLIP(**cfg).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def clip224(clip224_dir):
    """open_clip's own transform for that folder, and our embedder of it (each built once for the module)."""
    _, transform = open_clip.create_model_from_pretrained(f"local-dir:{clip224_dir}")
    return transform, ClipEmbedder(str(clip224_dir), device="cpu").load()


def open_clip_reference(folder):
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), transform, open_clip.get_tokenizer(f"local-dir:{folder}")


@pytest.mark.parametrize("height,width", SIZES)
def test_inputs_equal_open_clips_transform(clip224, height, width):
    frames = np.stack([textured_frame(height, width, seed=seed) if min(height, width) >= 8
                       else np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
                       for seed in range(2)])
    transform, embedder = clip224
    expected = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
    ours = embedder.preprocess(frames)
    assert ours.shape == (2, 3, 224, 224)
    assert torch.equal(ours, expected)


def test_clip_score_equals_open_clip_cosine_averaged_over_frames(tiny_clip_dir):
    """CLIPSIM by hand: normalised image and text embeddings from open_clip itself, cosine per frame, mean."""
    model, transform, tokenizer = open_clip_reference(tiny_clip_dir)
    names = list(COLOURS)
    samples = [
        {"key": "video", "modality": "video", "caption": "a photo of the colour red",
         "frames": np.stack([solid("red", 48, seed=s) for s in range(3)])},
        {"key": "wide", "modality": "image", "caption": "a photo of the colour blue",
         "frames": textured_frame(60, 90, seed=4)[None]},
        {"key": "mismatch", "modality": "video", "caption": f"a photo of the colour {names[2]}",
         "frames": np.stack([solid("yellow", 40, seed=s) for s in range(2)])},
    ]
    expected = []
    with torch.no_grad():
        for sample in samples:
            pixels = torch.stack([transform(Image.fromarray(frame)) for frame in sample["frames"]])
            image = model.encode_image(pixels)
            image = image / image.norm(dim=-1, keepdim=True)
            text = model.encode_text(tokenizer([sample["caption"]]))
            text = text / text.norm(dim=-1, keepdim=True)
            expected.append(float((image @ text.T).mean()))
    scorer = ClipScorer(str(tiny_clip_dir), device="cpu")
    scorer.setup()
    ours = [row[CLIP_SCORE] for row in scorer.score_batch(samples)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert len(set(np.round(expected, 4))) == 3  # three different values: the comparison can tell them apart


@pytest.mark.parametrize("height,width", [(1080, 1920), (1600, 700), (320, 240), (7, 5)])
def test_decoded_samples_reach_clip_exactly_as_open_clip_sees_the_original(clip224, height, width, tmp_path):
    """Through the decoder the score stage uses: frames above the decode cap are downscaled for the other
    scorers, but CLIP gets open_clip's own first resize of the original, so its inputs equal open_clip's."""
    from curate.scoring.frames import DECODE_MAX_SIDE, decode_media

    transform, embedder = clip224
    frame = textured_frame(height, width, seed=5) if min(height, width) >= 8 else \
        np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(frame).save(path)
    capped, clip_frames = decode_media(str(path), "image", max_side=DECODE_MAX_SIDE, clip_resize=embedder.first_resize())
    assert max(capped.shape[1:3]) <= DECODE_MAX_SIDE
    expected = transform(Image.fromarray(frame))[None]
    assert torch.equal(embedder.preprocess(clip_frames), expected)
    if max(height, width) > DECODE_MAX_SIDE:  # the capped frames alone would not have been exact
        assert not torch.equal(embedder.preprocess(capped), expected)
