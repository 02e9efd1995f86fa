"""Weights registry: explicit path, caches, checksums, and a clear error when offline and missing."""

import hashlib

import open_clip
import pytest
from tiny_clip import TINY_CLIP_CFG

from curate import weightfile
from curate.scoring import weights
from curate.scoring.clip_score import ClipScorer
from curate.scoring.scorer_set import ScorerSet
from curate.scoring.weights import (
    AESTHETIC_V2_L14,
    KnownFile,
    WeightsMismatch,
    WeightsMissing,
    resolve_clip,
    resolve_known_file,
)


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

    for module in (weights, weightfile):  # resolve_known_file calls the name it imported
        monkeypatch.setattr(module, "fetch", no_network)
    monkeypatch.setattr(weightfile, "fetch_from_hf", no_network)
    return tmp_path


def known_file_for(content: bytes, filename="model.pth") -> KnownFile:
    return KnownFile(filename, "https://example.invalid/" + filename, len(content),
                     hashlib.sha256(content).hexdigest(), None, "test")


def test_explicit_path_wins_and_missing_explicit_path_is_named(empty_caches):
    path = empty_caches / "mine.pth"
    path.write_bytes(b"weights")
    assert resolve_known_file(AESTHETIC_V2_L14, path) == path
    with pytest.raises(WeightsMissing, match="nowhere.pth"):
        resolve_known_file(AESTHETIC_V2_L14, empty_caches / "nowhere.pth")


def test_cache_hit_is_verified_against_the_published_checksum(empty_caches):
    known = known_file_for(b"the published bytes")
    cached = weights.curate_cache_dir() / known.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the published bytes")
    assert resolve_known_file(known) == cached
    cached.write_bytes(b"the published bytez")
    with pytest.raises(WeightsMismatch, match="sha256"):
        resolve_known_file(known)
    cached.write_bytes(b"short")
    with pytest.raises(WeightsMismatch, match="bytes"):
        resolve_known_file(known)


def test_md5_is_checked_where_no_sha256_is_published(empty_caches):
    content = b"released head"
    known = KnownFile("head.pth", "https://example.invalid/head.pth", None, None,
                      hashlib.md5(content).hexdigest(), "test")
    cached = weights.curate_cache_dir() / known.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)
    assert resolve_known_file(known) == cached
    cached.write_bytes(b"another head!")
    with pytest.raises(WeightsMismatch, match="md5"):
        resolve_known_file(known)


def test_offline_and_missing_says_what_and_where(empty_caches, monkeypatch):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as error:
        resolve_known_file(AESTHETIC_V2_L14, what="LAION aesthetic predictor v2")
    message = str(error.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in message and "3,714,759 bytes" in message
    assert str(weights.curate_cache_dir() / AESTHETIC_V2_L14.filename) in message
    assert AESTHETIC_V2_L14.url in message and "offline" in message


def test_failed_download_is_a_missing_weights_error(empty_caches, monkeypatch):
    def unreachable(url, target):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights, "fetch", unreachable)
    with pytest.raises(WeightsMissing, match="download failed: network is unreachable"):
        resolve_known_file(AESTHETIC_V2_L14)


def test_download_lands_in_the_cache_and_is_verified(empty_caches, monkeypatch):
    known = known_file_for(b"downloaded bytes")

    def serve(url, target):
        assert url == known.url
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"downloaded bytes")
        return target

    monkeypatch.setattr(weights, "fetch", serve)
    assert resolve_known_file(known) == weights.curate_cache_dir() / known.filename


def test_clip_tag_found_in_the_hugging_face_cache(empty_caches):
    snapshot = (weights.hf_hub_cache_dir() / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / "abc123")
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"x")
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    source = resolve_clip("ViT-L-14:openai")
    assert source.checkpoint == snapshot / "open_clip_pytorch_model.bin"
    assert (source.architecture, source.quick_gelu, source.openai) == ("ViT-L-14", True, "ViT-L-14")
    assert source.preprocess == {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
                                 "interpolation": "bicubic", "resize_mode": "shortest"}


def test_clip_hub_repo_found_in_the_hugging_face_cache(empty_caches, monkeypatch):
    snapshot = weights.hf_hub_cache_dir() / "models--org--tiny-clip" / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_config.json").write_text("{}")
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"x")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("rev1")
    source = resolve_clip("hf-hub:org/tiny-clip")
    assert source.model_id == "hf-hub:org/tiny-clip" and source.architecture == f"local-dir:{snapshot}"
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(WeightsMissing, match="huggingface-cli download org/other"):
        resolve_clip("hf-hub:org/other")


def test_clip_tag_offline_and_missing(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as error:
        resolve_clip("ViT-L-14:openai")
    message = str(error.value)
    assert "ViT-L-14:openai" in message and "timm/vit_large_patch14_clip_224.openai" in message
    assert "ViT-L-14.pt" in message


def test_scorer_setup_refuses_to_run_without_weights(empty_caches, monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(WeightsMissing):
        ClipScorer("ViT-B-32:openai").setup()
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    with pytest.raises(WeightsMissing, match="no weights"):
        ClipScorer(str(folder)).setup()


def test_scorer_set_checks_weights_without_building_models(empty_caches, tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    ScorerSet(["clip", "motion", "quality"], clip_model=str(tiny_clip_dir)).check_weights()
    with pytest.raises(WeightsMissing, match="sac\\+logos"):
        ScorerSet(["clip", "aesthetic"], clip_model=str(tiny_clip_dir), aesthetic_clip_model=str(tiny_clip_dir),
                  aesthetic_custom_clip=True).check_weights()
    with pytest.raises(WeightsMissing, match="ViT-L-14:openai"):
        ScorerSet(["aesthetic"], aesthetic_model=empty_caches / "a.pth").check_weights()


def test_bad_clip_specs():
    with pytest.raises(ValueError, match="NAME:TAG"):
        resolve_clip("ViT-L-14")
    with pytest.raises(ValueError, match="no pretrained tag"):
        resolve_clip("ViT-L-14:no-such-tag")
    with pytest.raises(WeightsMissing, match="not found"):
        resolve_clip("ViT-L-14:/no/such/checkpoint.pt")


def hf_snapshot(repo_id: str, filename: str = "open_clip_pytorch_model.bin"):
    """A file in the hub cache layout (snapshots/<rev>/<file>, refs/main), holding placeholder bytes."""
    repo_dir = weights.hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"x")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("rev1")
    return snapshot / filename


def test_bare_checkpoint_path_infers_its_architecture(tiny_clip_checkpoint):
    architecture, checkpoint = tiny_clip_checkpoint
    source = resolve_clip(str(checkpoint))
    assert (source.architecture, source.checkpoint, source.quick_gelu) == (architecture, checkpoint, False)
    assert source.model_id == f"{architecture}:{checkpoint}"


def test_bare_checkpoint_that_fits_a_gelu_and_a_quickgelu_name_is_refused(tiny_clip_checkpoint, monkeypatch):
    architecture, checkpoint = tiny_clip_checkpoint
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, f"{architecture}-quickgelu", {**TINY_CLIP_CFG, "quick_gelu": True})
    with pytest.raises(ValueError, match="fits several open_clip architectures") as error:
        resolve_clip(str(checkpoint))
    assert f"{architecture}-quickgelu" in str(error.value) and "OpenAI-trained" in str(error.value)
    assert resolve_clip(f"{architecture}-quickgelu:{checkpoint}").quick_gelu  # named: no ambiguity


def test_openai_checkpoint_in_the_hub_cache_is_known_by_its_folder(empty_caches):
    path = hf_snapshot("timm/vit_large_patch14_clip_224.openai")
    source = resolve_clip(str(path))  # a bare path: recognised without reading the (placeholder) file
    assert (source.architecture, source.quick_gelu, source.openai) == ("ViT-L-14", True, "ViT-L-14")
    named = resolve_clip(f"ViT-L-14:{path}")  # the GELU name, but OpenAI's weights: still QuickGELU
    assert named.quick_gelu and named.openai == "ViT-L-14"
    with pytest.raises(ValueError, match="published ViT-L-14:openai checkpoint, not ViT-B-32"):
        resolve_clip(f"ViT-B-32:{path}")


def test_torchscript_file_needs_a_published_checksum_or_trust(openai_style_file, monkeypatch):
    path, _ = openai_style_file
    with pytest.raises(ValueError, match="TorchScript archive .* sha256 is not one OpenAI published"):
        resolve_clip(str(path))
    trusted = resolve_clip(str(path), trust_checkpoint=True)
    assert trusted.architecture == "curate-tiny" and trusted.quick_gelu and trusted.openai is None
    published = ({weightfile.file_digest(path): ("curate-tiny", "openai", {"quick_gelu": True, "mean": (0.5,) * 3})}, {})
    monkeypatch.setattr(weights, "_published", lambda: published)
    known = resolve_clip(f"curate-tiny:{path}")  # the published file: read without an explicit trust
    assert known.trusted and known.quick_gelu and known.openai == "curate-tiny"
    assert known.preprocess == {"mean": (0.5,) * 3}
