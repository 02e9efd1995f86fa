"""A batch through every per-sample scorer: one row per sample, a corrupt video costs only its own row's scores;
weights checked before any model is built."""

import numpy as np
import pytest
import torch
from synthetic_media import encode_mp4, moving_square, solid

from curate import schema
from curate.scoring.clip_embedder import ClipEmbedder
from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.frames import FrameDecodeError, IsolatedDecoder
from curate.scoring import registry
from curate.scoring.options import ScoreSection
from curate.scoring.scorer_set import SCORE_ERROR, ScorerSet
from curate.weightfile import WeightsMissing
from test_clip_aesthetic import RELEASED_KEYS


@pytest.fixture(scope="module")
def aesthetic_path(tmp_path_factory):
    generator = torch.Generator().manual_seed(2)
    path = tmp_path_factory.mktemp("aesthetic_set") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save({key: torch.randn(shape, generator=generator) * 0.05 for key, shape in RELEASED_KEYS.items()}, path)
    return path


def tiny_options(clip_dir, aesthetic_path) -> ScoreSection:
    """The tiny CLIP for both model scorers (so they share one pass), and a random MLP file of the released layout."""
    return ScoreSection(clip_model=str(clip_dir), aesthetic_model=aesthetic_path, aesthetic_clip_model=str(clip_dir),
                        aesthetic_custom_clip=True)


def decoded_batch():
    """What the engine's decode stage hands over: frames, or None and the decode error."""
    good = encode_mp4(moving_square())
    corrupt = good[: len(good) // 3]
    inputs = [("clip-ok", "video", good), ("clip-corrupt", "video", corrupt), ("still", "image", None)]
    samples = []
    with IsolatedDecoder(timeout_s=60) as decoder:
        for key, modality, data in inputs:
            sample = {"key": key, "modality": modality, "caption": "a grey square", "sha256": key, "media": data}
            try:
                sample["frames"] = solid("red", 40)[None] if data is None else decoder.decode(data, modality)
            except FrameDecodeError as error:
                sample["frames"], sample["decode_error"] = None, str(error)
            samples.append(sample)
    return samples


def test_corrupt_video_gets_errors_and_the_rest_are_scored(tiny_clip_dir, aesthetic_path):
    per_sample = [spec for spec in registry.specs(registry.SCORERS) if spec.per_sample]
    scorers = ScorerSet(per_sample, tiny_options(tiny_clip_dir, aesthetic_path))
    scorers.setup()
    rows = scorers.score_batch(decoded_batch())
    assert [row["key"] for row in rows] == ["clip-ok", "clip-corrupt", "still"]
    good, corrupt, still = rows
    assert good[SCORE_ERROR] is None and still[SCORE_ERROR] is None
    for column in ("clip_score", "aesthetic_score", "motion_score", "codec_motion", "sharpness",
                   "static_frame_fraction"):
        assert good[column] is not None and corrupt[column] is None
    assert still["motion_score"] is None and still["aesthetic_score"] is not None
    for column in ("clip_score_error", "aesthetic_score_error", "motion_score_error", "quality_error"):
        assert "could not be decoded" in corrupt[column] and "PyAV" in corrupt[column]  # both decoders tried
        assert column in corrupt[SCORE_ERROR]
    table_rows = [{key: value for key, value in row.items() if key not in (CLIP_EMBEDDING, SCORE_ERROR)} for row in rows]
    table = schema.table("scores", table_rows)  # every stored column exists in schemas/scores.yaml
    assert set(table_rows[0]) <= set(table.column_names)
    assert table.column("clip_score").null_count == 1


def test_clip_runs_once_per_batch_for_both_model_scorers(tiny_clip_dir, aesthetic_path, monkeypatch):
    """One CLIP forward for the whole batch, frames of different sizes included, shared by both scorers."""
    calls = []
    original = ClipEmbedder.embed_frames

    def counting(self, frames):
        calls.append(len(frames))
        return original(self, frames)

    monkeypatch.setattr(ClipEmbedder, "embed_frames", counting)
    scorers = ScorerSet(["clip", "aesthetic"], tiny_options(tiny_clip_dir, aesthetic_path))
    scorers.setup()
    samples = [{"key": str(index), "frames": solid("blue", 40 + 8 * index, seed=index)[None], "caption": "blue"}
               for index in range(4)]
    samples[3]["frames"] = np.concatenate([samples[3]["frames"]] * 2)  # a two-frame video
    calls.clear()
    rows = scorers.score_batch(samples)
    assert calls == [5]
    assert all(row["clip_score"] is not None and row["aesthetic_score"] is not None for row in rows)
    assert set(scorers.provenance()) == {"clip", "aesthetic"} and scorers.needs_gpu


def test_column_batches_and_weight_free_set():
    scorers = ScorerSet(["quality", "motion"])
    scorers.setup()
    assert not scorers.needs_gpu
    batch = {"key": np.array(["a", "b"]), "frames": [moving_square()[:3], None], "decode_error": [None, "bad"]}
    columns = scorers.score_columns(batch)
    assert set(columns) == set(scorers.columns)
    assert columns["motion_score"][0] > 0 and columns["motion_score"][1] is None
    assert columns[SCORE_ERROR] == [None, "motion_score_error: bad; quality_error: bad"]


def test_unknown_and_dataset_wide_names_are_refused():
    with pytest.raises(ValueError, match="unknown scorer\\(s\\) bogus; choose from clip, aesthetic"):
        ScorerSet(["clip", "bogus"])
    with pytest.raises(ValueError, match="dedup compares the whole dataset"):
        ScorerSet(["clip", "dedup"])


def test_scorer_set_checks_weights_without_building_models(empty_caches, tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    ScorerSet(["clip", "motion", "quality"], ScoreSection(clip_model=str(tiny_clip_dir))).check_weights()
    with pytest.raises(WeightsMissing, match="sac\\+logos"):
        ScorerSet(["clip", "aesthetic"], tiny_options(tiny_clip_dir, None)).check_weights()
    with pytest.raises(WeightsMissing, match="ViT-L-14:openai"):
        ScorerSet(["aesthetic"], ScoreSection(aesthetic_model=empty_caches / "a.pth")).check_weights()
