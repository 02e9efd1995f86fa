"""Frozen text encoders that turn captions into cross-attention context tokens.

Real preset: the OpenCLIP ViT-H-14 text tower, penultimate-layer token features followed by
ln_final (what VideoCrafter2's FrozenOpenCLIPEmbedder(layer="penultimate") computes), [B, 77, 1024].
Small presets: a tiny randomly initialised tower of the same architecture, created from a seed
and saved to a file, so training and sampling load it through the same code path.
"""

from __future__ import annotations

import os
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import nn

from curate.weightfile import hf_cached, hf_hub_cache_dir, read_weights, unwrap_state_dict

VIT_H_14 = {"width": 1024, "heads": 16, "layers": 24, "output_dim": 1024}
VIT_H_14_HF_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
VIT_H_14_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
# prefixes under which text-tower keys appear: VideoCrafter2 checkpoints, an open_clip CLIP state dict
_KEY_PREFIXES = ("cond_stage_model.model.", "model.", "")


class FrozenTextEncoder(nn.Module):
    """Tokenise with the CLIP BPE tokenizer and return penultimate-layer token features."""

    def __init__(self, width: int, heads: int, layers: int, output_dim: int):
        super().__init__()
        self.config = {"width": width, "heads": heads, "layers": layers, "output_dim": output_dim}
        self.tower = TextTransformer(width=width, heads=heads, layers=layers, output_dim=output_dim)
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer()
        self.requires_grad_(False)
        self.eval()

    @property
    def dim(self) -> int:
        return self.config["width"]

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen, never in train mode

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        device = self.tower.positional_embedding.device
        tokens = self.tokenizer(captions).to(device)
        x = self.tower.token_embedding(tokens) + self.tower.positional_embedding
        for block in self.tower.transformer.resblocks[:-1]:  # penultimate layer
            x = block(x, attn_mask=self.tower.attn_mask)
        return self.tower.ln_final(x)

    def load_tower_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load text-tower weights from a VideoCrafter2, open_clip or our own state dict."""
        wanted = self.tower.state_dict().keys()
        for prefix in _KEY_PREFIXES:
            found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :] in wanted}
            if len(found) == len(wanted):
                self.tower.load_state_dict(found)
                return
        missing = sorted(set(wanted) - {k.split("cond_stage_model.model.")[-1] for k in state})[:5]
        raise ValueError(f"state dict holds no complete text tower (e.g. missing {missing})")


def create_tiny(path: str | Path, width: int = 64, heads: int = 2, layers: int = 2, seed: int = 0) -> Path:
    """Create a random tiny text tower from `seed` and save it (config + weights) to `path`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = FrozenTextEncoder(width=width, heads=heads, layers=layers, output_dim=width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"config": enc.config, "state_dict": enc.tower.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def _find_vit_h_14() -> Path:
    cached = hf_cached(VIT_H_14_HF_REPO, VIT_H_14_FILES)
    if cached is not None:
        return cached
    raise FileNotFoundError(
        f"OpenCLIP ViT-H-14 (laion2b_s32b_b79k) weights not found: looked for {' or '.join(VIT_H_14_FILES)} of "
        f"{VIT_H_14_HF_REPO} in {hf_hub_cache_dir()}. Download them on a machine with network "
        f"(`huggingface-cli download {VIT_H_14_HF_REPO} {VIT_H_14_FILES[0]}`) or set text_encoder.path to that file "
        "or to a VideoCrafter2 model.ckpt."
    )


def load_text_encoder(kind: str, path: str | Path | None = None) -> FrozenTextEncoder:
    """kind 'open_clip_vit_h_14' (path: open_clip weights or a VideoCrafter2 checkpoint; default: HF cache)
    or 'tiny' (path: a file written by create_tiny)."""
    if kind == "open_clip_vit_h_14":
        file = path if path else _find_vit_h_14()
        enc = FrozenTextEncoder(**VIT_H_14)
        enc.load_tower_state(unwrap_state_dict(read_weights(file, what="text encoder weights")))
        return enc
    if kind == "tiny":
        if path is None:
            raise ValueError("text_encoder.path is required for kind 'tiny'")
        blob = read_weights(path, what="tiny text encoder")
        enc = FrozenTextEncoder(**blob["config"])
        enc.tower.load_state_dict(blob["state_dict"])
        return enc
    raise ValueError(f"text_encoder.kind must be 'open_clip_vit_h_14' or 'tiny', got {kind!r}")
