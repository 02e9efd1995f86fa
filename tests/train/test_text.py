"""Text encoders: penultimate-layer tokens, ViT-H-14 layout, loading by prefix, clear error without weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from curate.train.text import VIT_H_14, FrozenTextEncoder, create_tiny, load_text_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = Path("/work/shared/reference/videocrafter2_checkpoint_layout.tsv")


def reference_text_layout():
    if not LAYOUT.exists():
        pytest.skip(f"reference layout {LAYOUT} not present")
    out = {}
    with open(LAYOUT) as f:
        for line in f:
            key, _, rest = line.partition("\t")
            shape, _, group = rest.rstrip("\n").partition("\t")
            if group == "text_encoder" and key != "cond_stage_model.model.logit_scale":
                out[key[len("cond_stage_model.model."):]] = tuple(int(s) for s in shape.split("x"))
    return out


def test_vit_h_14_tower_has_the_checkpoint_layout():
    with torch.device("meta"):
        enc = FrozenTextEncoder(**VIT_H_14)
    ours = {k: tuple(v.shape) for k, v in enc.tower.state_dict().items()}
    assert ours == reference_text_layout()


def test_tiny_tower_round_trips_through_its_file_and_is_frozen(tmp_path):
    path = create_tiny(tmp_path / "te.pt", width=32, heads=2, layers=2, seed=3)
    a, b = load_text_encoder("tiny", path), load_text_encoder("tiny", path)
    out = a(["a red square", ""])
    assert out.shape == (2, 77, 32) and torch.equal(out, b(["a red square", ""]))
    assert not any(p.requires_grad for p in a.parameters())
    assert not torch.equal(out[0], out[1])  # the empty caption differs from a real one


def test_features_come_from_the_penultimate_layer(tmp_path):
    enc = load_text_encoder("tiny", create_tiny(tmp_path / "te.pt", width=32, heads=2, layers=3))
    before = enc(["a cat"])
    with torch.no_grad():
        for p in enc.tower.transformer.resblocks[-1].parameters():
            p.add_(1.0)  # the last block is skipped ...
    assert torch.equal(before, enc(["a cat"]))
    with torch.no_grad():
        for p in enc.tower.transformer.resblocks[-2].parameters():
            p.add_(1.0)  # ... the one before it is not
    assert not torch.allclose(before, enc(["a cat"]))


def test_loads_a_videocrafter2_style_state_dict(tmp_path):
    src = load_text_encoder("tiny", create_tiny(tmp_path / "te.pt", width=32, heads=2, layers=2, seed=1))
    state = {f"cond_stage_model.model.{k}": v for k, v in src.tower.state_dict().items()}
    state["cond_stage_model.model.logit_scale"] = torch.tensor(4.6)
    state["model.diffusion_model.out.2.weight"] = torch.zeros(1)
    dst = FrozenTextEncoder(width=32, heads=2, layers=2, output_dim=32)
    dst.load_tower_state(state)
    assert torch.equal(dst(["x"]), src(["x"]))


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="open_clip_pytorch_model.bin"):
        load_text_encoder("open_clip_vit_h_14")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_text_encoder("tiny", tmp_path / "nope.pt")


def test_tower_and_tokenizer_are_open_clips():
    """The tower equals open_clip's TextTransformer: the same weights from the same seed, the same penultimate
    features from them; the tokens are open_clip's."""
    import open_clip
    from open_clip.transformer import TextTransformer

    captions = ["a red square moving left on a teal background", "", "Ünïcode, punctuation!! & numbers 42"]
    torch.manual_seed(5)
    ours = FrozenTextEncoder(width=32, heads=4, layers=3, output_dim=16)
    torch.manual_seed(5)
    theirs = TextTransformer(width=32, heads=4, layers=3, output_dim=16)
    assert ours.tower.state_dict().keys() == theirs.state_dict().keys()
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.tower.state_dict()[name], value), name
    tokens = open_clip.tokenizer.SimpleTokenizer()(captions)
    assert torch.equal(ours.tokenizer(captions), tokens)
    with torch.no_grad():
        x = theirs.token_embedding(tokens) + theirs.positional_embedding
        for block in theirs.transformer.resblocks[:-1]:
            x = block(x, attn_mask=theirs.attn_mask)
        expected = theirs.ln_final(x)
    # float32 sums in another order (the attention kernel, thread count) differ by ~2e-6 at these magnitudes (~1);
    # a wrong mask, scale or norm moves features by ~0.1
    torch.testing.assert_close(ours(captions), expected, rtol=1e-5, atol=1e-5)


def test_training_imports_no_open_clip_package():
    """A training process loads the text tower without open_clip's package (and its torchvision, timm and
    transformers)."""
    import subprocess
    import sys

    probe = ("import sys, tempfile, curate.train.loop, curate.train.sample\n"
             "from curate.train.text import create_tiny, load_text_encoder\n"
             "enc = load_text_encoder('tiny', create_tiny(tempfile.mkdtemp() + '/te.pt', width=32, heads=2, layers=2))\n"
             "enc(['a cat'])\n"
             "print(sorted(m for m in ('open_clip', 'torchvision', 'timm', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == "[]", done.stdout
