"""CLIP specs: pretrained tags and hub repos found in the caches, bare files recognised or their architecture
inferred, TorchScript files read only when published or trusted, and clear errors."""

import open_clip
import pytest
from tiny_clip import TINY_CLIP_CFG

from curate import weightfile
from curate.scoring import clip_spec
from curate.scoring.clip_spec import resolve_clip
from curate.weightfile import WeightsMissing, hf_hub_cache_dir


def test_clip_tag_found_in_the_hugging_face_cache(empty_caches):
    snapshot = (hf_hub_cache_dir() / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / "abc123")
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
    snapshot = hf_hub_cache_dir() / "models--org--tiny-clip" / "snapshots" / "rev1"
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


def test_bad_clip_specs():
    with pytest.raises(ValueError, match="NAME:TAG"):
        resolve_clip("ViT-L-14")
    with pytest.raises(ValueError, match="no pretrained tag"):
        resolve_clip("ViT-L-14:no-such-tag")
    with pytest.raises(WeightsMissing, match="not found"):
        resolve_clip("ViT-L-14:/no/such/checkpoint.pt")


def hf_snapshot(repo_id: str, filename: str = "open_clip_pytorch_model.bin"):
    """A file in the hub cache layout (snapshots/<rev>/<file>, refs/main), holding placeholder bytes."""
    repo_dir = hf_hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
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
    monkeypatch.setattr(clip_spec, "_published", lambda: published)
    known = resolve_clip(f"curate-tiny:{path}")  # the published file: read without an explicit trust
    assert known.trusted and known.quick_gelu and known.openai == "curate-tiny"
    assert known.preprocess == {"mean": (0.5,) * 3}
