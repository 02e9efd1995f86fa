"""LoRA adapters on the linear projections inside the U-Net's transformers, and merging them away.

`add_lora(model, groups, rank)` swaps every nn.Linear inside a SpatialTransformer / TemporalTransformer
whose weight belongs to one of `groups` for a `LoRALinear`: the same module with two extra
parameters (lora_A [r, in], lora_B [out, r], B zero-initialised, so the model's function is unchanged
at start). Its weight and bias keep their names, so base checkpoints load into an adapted model and
the base weights stay bitwise untouched (only lora_* train). `merge_lora_state` folds the adapters
into plain weights (W + alpha/r * B @ A), giving a state dict of the unadapted model for export.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from curate.train.attention import SpatialTransformer, TemporalTransformer
from curate.train.unet3d import parameter_groups

LORA_SUFFIXES = (".lora_A", ".lora_B")


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight, self.bias = base.weight, base.bias  # share the base parameters, not copies
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)


def lora_targets(model: nn.Module, groups: Iterable[str]) -> list[str]:
    """Names of the nn.Linear modules inside transformers whose weights fall in `groups`."""
    in_groups = {name for g, names in parameter_groups(model).items() if g in set(groups) for name in names}
    targets = []
    for owner_name, owner in model.named_modules():
        if not isinstance(owner, (SpatialTransformer, TemporalTransformer)):
            continue
        for name, module in owner.named_modules(prefix=owner_name):
            if type(module) is nn.Linear and f"{name}.weight" in in_groups:
                targets.append(name)
    return targets


def add_lora(model: nn.Module, groups: Iterable[str], rank: int, alpha: float | None = None) -> list[str]:
    """Insert adapters; freeze everything but them. Returns the adapted module names."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    targets = lora_targets(model, groups)
    if not targets:
        raise ValueError(f"no linear projections to adapt in groups {sorted(groups)}")
    model.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, float(alpha or rank)))
    return targets


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.endswith(LORA_SUFFIXES)}


def merge_lora_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Fold lora_A/lora_B of every adapted module into its weight (scale = alpha / rank); drop adapter keys."""
    merged = {k: v for k, v in state.items() if not k.endswith(LORA_SUFFIXES)}
    for key in state:
        if key.endswith(".lora_A"):
            module = key[: -len(".lora_A")]
            a, b = state[key].float(), state[f"{module}.lora_B"].float()
            weight = merged[f"{module}.weight"]
            merged[f"{module}.weight"] = (weight.float() + scale * (b @ a)).to(weight.dtype)
    return merged
