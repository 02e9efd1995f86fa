"""Frozen text encoders that turn captions into cross-attention context tokens.

Real preset: the OpenCLIP ViT-H-14 text tower, penultimate-layer token features followed by
ln_final (what VideoCrafter2's FrozenOpenCLIPEmbedder(layer="penultimate") computes), [B, 77, 1024].
Small presets: a tiny randomly initialised tower of the same architecture, created from a seed
and saved to a file, so training and sampling load it through the same code path.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from curate.weightfile import hf_cached, hf_hub_cache_dir, read_weights, unwrap_state_dict

VIT_H_14 = {"width": 1024, "heads": 16, "layers": 24, "output_dim": 1024}
VIT_H_14_HF_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
VIT_H_14_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
# prefixes under which text-tower keys appear: VideoCrafter2 checkpoints, an open_clip CLIP state dict
_KEY_PREFIXES = ("cond_stage_model.model.", "model.", "")
CONTEXT_LENGTH, VOCAB_SIZE = 77, 49408

# The tower is open_clip's TextTransformer (pre-norm blocks, GELU MLP, causal mask) with its parameter names and
# initialisation, written here because importing open_clip runs its package __init__, which loads torchvision,
# timm and transformers for its image towers: 3-4 CPU s in every training and sampling process, for a text tower
# that needs none of them. tests/train/test_text.py checks it against open_clip's: the same weights from the same
# seed, the same features from the same weights, the same tokens.


class ResidualBlock(nn.Module):
    """open_clip's ResidualAttentionBlock: x + attn(ln_1(x)), then x + mlp(ln_2(x)); batch first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_1(x)
        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        x = x + self.attn(q, q, q, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Blocks(nn.Module):
    """The `transformer` of the tower: its parameters are named transformer.resblocks.N.*."""

    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualBlock(width, heads) for _ in range(layers)])


class TextTower(nn.Module):
    """CLIP's text transformer: token + position embeddings, causal blocks, ln_final, text_projection."""

    def __init__(self, width: int, heads: int, layers: int, output_dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, width)
        self.positional_embedding = nn.Parameter(torch.empty(CONTEXT_LENGTH, width))
        self.transformer = Blocks(width, heads, layers)
        self.ln_final = nn.LayerNorm(width)
        self.register_buffer("attn_mask", self.causal_mask(), persistent=False)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        # open_clip's init_parameters, in its order (a seed gives the same weights as open_clip's tower)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std, attn_std, fc_std = width ** -0.5 * (2 * layers) ** -0.5, width ** -0.5, (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @staticmethod
    def causal_mask() -> torch.Tensor:
        """The additive attention mask: -inf above the diagonal."""
        return torch.empty(CONTEXT_LENGTH, CONTEXT_LENGTH).fill_(float("-inf")).triu_(1)


@lru_cache(maxsize=1)
def clip_tokenizer():
    """open_clip's SimpleTokenizer (CLIP's BPE, 77 tokens), its module loaded from the installed package by file so
    that the package's __init__ does not run (see above)."""
    package = importlib.util.find_spec("open_clip")
    if package is None or not package.submodule_search_locations:
        raise ImportError("open_clip_torch is not installed: the CLIP tokenizer comes from it")
    path = os.path.join(list(package.submodule_search_locations)[0], "tokenizer.py")
    spec = importlib.util.spec_from_file_location("curate.train._open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


class FrozenTextEncoder(nn.Module):
    """Tokenise with the CLIP BPE tokenizer and return penultimate-layer token features."""

    def __init__(self, width: int, heads: int, layers: int, output_dim: int):
        super().__init__()
        self.config = {"width": width, "heads": heads, "layers": layers, "output_dim": output_dim}
        self.tower = TextTower(width=width, heads=heads, layers=layers, output_dim=output_dim)
        self.tokenizer = clip_tokenizer()
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
