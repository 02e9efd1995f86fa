"""CLIP score and aesthetic predictor with tiny models loaded from checkpoints; which CLIP may feed the predictor."""

import hashlib

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from synthetic_media import COLOURS, solid
from tiny_clip import TINY_CLIP_CFG

from curate.scoring import aesthetic_score, clip_spec
from curate.scoring.aesthetic_score import (
    AESTHETIC_SCORE,
    AESTHETIC_SCORE_MIN,
    AestheticScorer,
    load_aesthetic_mlp,
)
from curate.scoring.clip_embedder import ClipEmbedder
from curate.scoring.clip_score import CLIP_EMBEDDING, CLIP_MODEL, CLIP_SCORE, CLIP_SCORE_ERROR, ClipScorer
from curate.scoring.options import ScoreSection
from curate.scoring.scorer_set import ScorerSet
from curate.weightfile import WeightsLayoutError, WeightsMissing, file_digest

RELEASED_KEYS = {  # the layout of sac+logos+ava1-l14-linearMSE.pth
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,),
    "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}


def colour_samples():
    names = list(COLOURS)
    return [
        {"key": f"{name}-{index}", "modality": "video", "frames": np.stack([solid(name, 48, seed=index + s) for s in range(3)]),
         "caption": f"a photo of the colour {name}"}
        for index, name in enumerate(names)
    ]


@pytest.fixture(scope="module")
def aesthetic_weights(tmp_path_factory):
    """A random state dict with exactly the released keys and shapes, saved like the released file."""
    generator = torch.Generator().manual_seed(1)
    state = {key: torch.randn(shape, generator=generator) * 0.05 for key, shape in RELEASED_KEYS.items()}
    path = tmp_path_factory.mktemp("aesthetic") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(state, path)
    return path, state


def reference_aesthetic(state, embeddings):
    """The predictor written out by hand: five affine maps, no activations (dropout is identity at inference)."""
    x = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    for index in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{index}.weight"].numpy().T + state[f"layers.{index}.bias"].numpy()
    return x[:, 0]


def test_clip_score_matches_captions_better_than_mismatched(tiny_clip_dir):
    scorer = ClipScorer(str(tiny_clip_dir))
    scorer.setup()
    samples = colour_samples()
    matched = [row[CLIP_SCORE] for row in scorer.score_batch(samples)]
    names = list(COLOURS)
    shifted = [dict(sample, caption=f"a photo of the colour {names[(index + 1) % len(names)]}")
               for index, sample in enumerate(samples)]
    mismatched = [row[CLIP_SCORE] for row in scorer.score_batch(shifted)]
    assert all(-1.0 <= value <= 1.0 for value in matched + mismatched)
    assert all(good > bad for good, bad in zip(matched, mismatched)), (matched, mismatched)


def test_clip_score_is_deterministic_and_records_model(tiny_clip_dir, tiny_clip_checkpoint):
    architecture, checkpoint = tiny_clip_checkpoint
    from_folder = ClipScorer(str(tiny_clip_dir))
    from_file = ClipScorer(f"{architecture}:{checkpoint}")
    from_folder.setup()
    from_file.setup()
    samples = colour_samples()
    first = from_folder.score_batch(samples)
    again = from_folder.score_batch(samples)
    other = from_file.score_batch(samples)
    assert [row[CLIP_SCORE] for row in first] == [row[CLIP_SCORE] for row in again]
    np.testing.assert_allclose([row[CLIP_SCORE] for row in first], [row[CLIP_SCORE] for row in other], atol=1e-6)
    assert first[0][CLIP_MODEL] == f"local-dir:{tiny_clip_dir}"
    assert other[0][CLIP_MODEL] == f"{architecture}:{checkpoint}"
    embedding = first[0][CLIP_EMBEDDING]
    assert embedding.shape == (768,) and embedding.dtype == np.float32
    assert abs(np.linalg.norm(embedding) - 1.0) < 1e-5


def test_clip_score_per_sample_errors(tiny_clip_dir):
    scorer = ClipScorer(str(tiny_clip_dir))
    scorer.setup()
    samples = colour_samples()[:2]
    samples[0] = dict(samples[0], caption="  ")
    samples.append({"key": "broken", "modality": "video", "frames": None, "decode_error": "moov atom not found"})
    rows = scorer.score_batch(samples)
    assert rows[0][CLIP_SCORE] is None and rows[0][CLIP_SCORE_ERROR] == "no caption"
    assert rows[0][CLIP_EMBEDDING] is not None
    assert rows[1][CLIP_SCORE] is not None and rows[1][CLIP_SCORE_ERROR] is None
    assert rows[2][CLIP_SCORE] is None and rows[2][CLIP_SCORE_ERROR] == "moov atom not found"


def test_aesthetic_mlp_loads_released_layout_and_matches_reference(aesthetic_weights):
    path, state = aesthetic_weights
    mlp, resolved = load_aesthetic_mlp(path)
    assert resolved == path
    assert {key: tuple(value.shape) for key, value in mlp.state_dict().items()} == RELEASED_KEYS
    embeddings = np.random.default_rng(0).normal(size=(5, 768)).astype(np.float32)
    normalised = torch.nn.functional.normalize(torch.from_numpy(embeddings), dim=-1)
    np.testing.assert_allclose(mlp(normalised).squeeze(-1).numpy(), reference_aesthetic(state, embeddings), atol=1e-5)


def test_aesthetic_scorer_mean_and_min_over_frames(tiny_clip_dir, aesthetic_weights):
    path, state = aesthetic_weights
    scorer = AestheticScorer(path, clip_model=str(tiny_clip_dir), custom_clip=True)
    scorer.setup()
    video = colour_samples()[0]
    image = {"key": "img", "modality": "image", "frames": solid("blue", 48)[None], "caption": "x"}
    rows = scorer.score_batch([video, image])
    embedder = ClipEmbedder(str(tiny_clip_dir)).load()
    per_frame = reference_aesthetic(state, embedder.embed_frames(video["frames"]).numpy())
    assert rows[0][AESTHETIC_SCORE] == pytest.approx(per_frame.mean(), abs=1e-5)
    assert rows[0][AESTHETIC_SCORE_MIN] == pytest.approx(per_frame.min(), abs=1e-5)
    assert rows[1][AESTHETIC_SCORE] == rows[1][AESTHETIC_SCORE_MIN]
    assert "sac+logos+ava1-l14-linearMSE.pth" in rows[0]["aesthetic_model"]


def test_aesthetic_rejects_a_state_dict_with_another_layout(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layers.0.weight": torch.zeros(1024, 768), "head.weight": torch.zeros(1, 16)}, path)
    with pytest.raises(WeightsLayoutError) as error:
        load_aesthetic_mlp(path)
    message = str(error.value)
    assert str(path) in message and "unexpected head.weight" in message and "missing layers.0.bias" in message
    assert "Expected keys: layers.0.weight (1024, 768), layers.0.bias (1024,), layers.2.weight (128, 1024)" in message


def test_check_weights_fails_on_a_wrong_aesthetic_file_before_loading_any_model(tiny_clip_dir, tmp_path, monkeypatch):
    bad = tmp_path / "not-the-predictor.pth"
    torch.save({"fc.weight": torch.zeros(1, 768)}, bad)

    def no_loading(self):
        raise AssertionError("a model was loaded during the check")

    monkeypatch.setattr(ClipEmbedder, "load", no_loading)
    scorers = ScorerSet(["clip", "aesthetic"], ScoreSection(clip_model=str(tiny_clip_dir), aesthetic_model=bad,
                                                         aesthetic_clip_model=str(tiny_clip_dir),
                                                         aesthetic_custom_clip=True))
    with pytest.raises(WeightsLayoutError, match="not-the-predictor.pth is not a aesthetic predictor"):
        scorers.check_weights()
    wrong_clip = ScorerSet(["clip"], ScoreSection(clip_model=f"curate-tiny:{bad}"))  # a CLIP spec naming a non-CLIP file
    with pytest.raises(WeightsLayoutError, match="not-the-predictor.pth is not a CLIP curate-tiny weights file"):
        wrong_clip.check_weights()


def test_aesthetic_clip_is_openai_vit_l14_by_name_not_by_width(tmp_path, monkeypatch, aesthetic_weights):
    """ViT-L-14 laion2b is 768-d too, but the MLP was trained on OpenAI's embeddings: refused, files untouched."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = open_clip.get_pretrained_cfg("ViT-L-14", "laion2b_s32b_b82k")["hf_hub"].strip("/")
    snapshot = tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / "r"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"placeholder: never read")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("r")
    path, _ = aesthetic_weights
    for spec in ("ViT-L-14:laion2b_s32b_b82k", str(snapshot / "open_clip_pytorch_model.bin")):
        scorers = ScorerSet(["aesthetic"], ScoreSection(aesthetic_model=path, aesthetic_clip_model=spec))
        with pytest.raises(ValueError, match="defined on OpenAI CLIP ViT-L-14 embeddings") as error:
            scorers.check_weights()
        assert spec in str(error.value) and "aesthetic_custom_clip=True" in str(error.value)


def test_published_openai_file_feeds_the_aesthetic_scorer(openai_style_file, aesthetic_weights, monkeypatch):
    """OpenAI's release file given by path is accepted (known by its sha256), read and built as QuickGELU."""
    scripted, _ = openai_style_file
    published = ({file_digest(scripted): ("curate-tiny", "openai", {"quick_gelu": True})}, {})
    monkeypatch.setattr(clip_spec, "_published", lambda: published)
    monkeypatch.setattr(aesthetic_score, "AESTHETIC_CLIP_RELEASE", "curate-tiny")  # the tiny stands in for L/14
    path, _ = aesthetic_weights
    scorers = ScorerSet(["aesthetic"], ScoreSection(aesthetic_model=path, aesthetic_clip_model=str(scripted)))
    scorers.check_weights()
    record = scorers.provenance()["aesthetic"]
    assert record["clip"]["openai_release"] == "curate-tiny" and record["clip"]["quick_gelu"] is True
    assert record["clip"]["sha256"] == hashlib.sha256(scripted.read_bytes()).hexdigest()
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["model"]


def test_openai_style_torchscript_file_is_built_with_quick_gelu(openai_style_file):
    """OpenAI's release files are TorchScript archives of QuickGELU models: embeddings must be the original's."""
    scripted, original = openai_style_file
    frames = np.stack([solid(name, 40) for name in COLOURS])
    embedder = ClipEmbedder(f"curate-tiny:{scripted}", trust_checkpoint=True).load()
    assert embedder.source.quick_gelu
    transform = open_clip.image_transform(TINY_CLIP_CFG["vision_cfg"]["image_size"], is_train=False)
    pixels = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(original.encode_image(pixels), dim=-1)
        gelu = open_clip.CLIP(**TINY_CLIP_CFG).eval()
        gelu.load_state_dict(original.state_dict())
        as_gelu = torch.nn.functional.normalize(gelu.encode_image(pixels), dim=-1)
    ours = embedder.embed_frames(frames)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    assert (ours - as_gelu).abs().max() > 1e-4  # 100x the tolerance: a GELU build of these weights fails


def test_clip_scorer_setup_refuses_to_run_without_weights(empty_caches, monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(WeightsMissing):
        ClipScorer("ViT-B-32:openai").setup()
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    with pytest.raises(WeightsMissing, match="no weights"):
        ClipScorer(str(folder)).setup()
