"""Inception-I3D (Kinetics-400) for FVD features, and the strict loader of its weights file.

The module and parameter names follow the layout of the widely shared `i3d_pretrained_400.pt` state dict
(pytorch-i3d's names: `Conv3d_1a_7x7.conv3d.weight`, `Mixed_5c.b3b.bn.bias`, `logits.conv3d.bias`, ...),
so that file loads with strict=True. Convolutions and max-pools pad like TensorFlow's 'SAME' (the extra
pixel of an odd padding goes after), because the weights were trained (in TF) with that padding.
A TorchScript detector file (StyleGAN-V's `i3d_torchscript.pt`) is accepted too, when trusted (it is code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.weightfile import (WeightsMissing, curate_cache_dir, file_digest, is_torchscript, load_strict,
                               module_layout, read_weights)

NUM_CLASSES = 400
FEATURE_DIM = 1024  # the pooled Mixed_5c features before the logits layer
WEIGHTS_FILENAME = "i3d_pretrained_400.pt"
TORCHSCRIPT_FILENAME = "i3d_torchscript.pt"
# BatchNorm epsilon of the PyTorch port that the FVD code shipping `i3d_pretrained_400.pt` uses (VideoGPT,
# TATS, common_metrics_on_video_quality); pytorch-i3d itself and the TF original use 1e-3. Recorded in the
# FVD protocol because it moves the features slightly.
BN_EPS = 1e-5

# name -> (input channels, [branch0, branch1 reduce, branch1, branch2 reduce, branch2, branch3 pool proj])
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding of one axis: output ceil(size / stride), the odd pixel padded at the end."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    (t0, t1), (h0, h1), (w0, w1) = (same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride))
    return F.pad(x, (w0, w1, h0, h1, t0, t1))  # zeros, also before max-pools (as the TF-trained port does)


class SamePool3d(nn.Module):
    """Max-pool with TF 'SAME' zero padding."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d ('SAME' padded) -> BatchNorm -> ReLU; the logits unit has a bias and neither BN nor ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; max-pool -> 1x1), concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(cin, widths[0])
        self.b1a = Unit3D(cin, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(cin, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = SamePool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 inflated to 3D (Carreira & Zisserman 2017). Input [B,3,T,224,224] in [-1, 1].

    `forward` returns the 400 Kinetics logits (pre-softmax, averaged over the remaining time steps), the
    features FVD uses; `features` returns the 1024-d pooled Mixed_5c activations.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = SamePool3d((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = SamePool3d((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = SamePool3d((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(FEATURE_DIM, num_classes, logits=True)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name != "logits":
                x = module(x)
        # the published head: 2x7x7 average pool, no padding (for 16 frames at 224 px: one position)
        return F.avg_pool3d(x, (2, 7, 7), stride=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1024] pooled features, averaged over the remaining time and space positions."""
        return self._trunk(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self._trunk(x)).mean(dim=(2, 3, 4))


def expected_layout() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the published file and its shape (344 tensors)."""
    return module_layout(InceptionI3d())


def default_weights_path() -> Path:
    return curate_cache_dir() / WEIGHTS_FILENAME


def resolve_weights(path: str | Path | None = None) -> Path:
    """The I3D weights file: the explicit path, else ~/.cache/curate (or $CURATE_CACHE)/i3d_pretrained_400.pt.

    Never downloaded here and never replaced by random weights: missing is a WeightsMissing naming both.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise WeightsMissing(f"I3D weights file {candidate} does not exist")
        return candidate
    for candidate in (default_weights_path(), curate_cache_dir() / TORCHSCRIPT_FILENAME):
        if candidate.is_file():
            return candidate
    raise WeightsMissing(
        f"I3D weights not found: pass --i3d-weights PATH or place {WEIGHTS_FILENAME} (the Kinetics-400 "
        f"InceptionI3d state dict used by VideoGPT/TATS FVD code) or StyleGAN-V's {TORCHSCRIPT_FILENAME} at "
        f"{curate_cache_dir()}/. They are not downloaded automatically and random weights are never used.")


class TorchScriptI3d(nn.Module):
    """StyleGAN-V's TorchScript detector behind the same call: [B,3,T,224,224] in [-1,1] -> [B,400] logits."""

    def __init__(self, detector: torch.jit.ScriptModule):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inputs are already resized and in [-1, 1]; return_features gives the pre-softmax logits
        return self.detector(x, rescale=False, resize=False, return_features=True)


@dataclass(frozen=True)
class LoadedI3d:
    model: nn.Module
    path: Path
    sha256: str
    kind: str  # "state_dict" | "torchscript"


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu",
             trust_checkpoint: bool = False) -> LoadedI3d:
    """Resolve, check (keys and shapes, before anything else) and load the I3D weights strictly, in eval mode.

    A TorchScript detector runs code from the file, so it loads only with trust_checkpoint=True.
    """
    weights = resolve_weights(path)
    if is_torchscript(weights):
        if not trust_checkpoint:
            raise ValueError(f"{weights} is a TorchScript archive (StyleGAN-V's I3D format), which runs code from "
                             f"the file; load it only if you trust its source (trust_checkpoint / --i3d-trust)")
        model, kind = TorchScriptI3d(torch.jit.load(str(weights), map_location="cpu")), "torchscript"
    else:
        try:
            state = read_weights(weights, what="I3D")
        except (RuntimeError, EOFError, OSError) as error:  # not a torch file at all: say which file
            raise ValueError(f"{weights} could not be read as an I3D state dict: {error}") from error
        model, kind = InceptionI3d(), "state_dict"
        load_strict(model, state, weights, f"{WEIGHTS_FILENAME}-layout InceptionI3d")  # keys + shapes, then strict
    return LoadedI3d(model.eval().requires_grad_(False).to(device), weights, file_digest(weights), kind)
