"""CLIP embeddings of uint8 frames and captions with an open_clip model loaded through the weights registry."""

from __future__ import annotations

import contextlib
import zipfile

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from curate.scoring.sample import SampleError, frames_of
from curate.scoring.weights import DEFAULT_CLIP, ClipSource, resolve_clip


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _is_torchscript(path) -> bool:
    # OpenAI's original release files (ViT-L-14.pt, ...) are TorchScript archives.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


class ClipEmbedder:
    """One open_clip model on one device: L2-normalised image embeddings of frames and text embeddings of captions.

    Frames are preprocessed as tensors on the device (resize shortest side, centre crop, normalise), which
    matches open_clip's PIL pipeline up to interpolation rounding and avoids a per-image PIL round trip.
    """

    def __init__(self, spec: str = DEFAULT_CLIP, device: str | None = None):
        self.spec = spec
        self.device = pick_device(device)
        self.source: ClipSource | None = None
        self.model = None
        self.tokenizer = None
        self.embed_dim = 0

    def load(self) -> "ClipEmbedder":
        if self.model is not None:
            return self
        source = resolve_clip(self.spec)
        cfg = source.pretrained_cfg
        options = {}
        if cfg:
            options.update(
                image_mean=cfg.get("mean"),
                image_std=cfg.get("std"),
                image_interpolation=cfg.get("interpolation"),
                image_resize_mode=cfg.get("resize_mode"),
            )
        quick_gelu = bool(cfg.get("quick_gelu", False))
        if source.checkpoint is not None:
            options["pretrained"] = str(source.checkpoint)
            if _is_torchscript(source.checkpoint):
                # an OpenAI release file: not a plain state dict, and every OpenAI CLIP uses QuickGELU
                options["weights_only"] = False
                quick_gelu = True
        model, _, _ = open_clip.create_model_and_transforms(
            source.architecture, device=self.device, force_quick_gelu=quick_gelu, **options
        )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(source.architecture)
        self.source = source
        preprocess = open_clip.get_model_preprocess_cfg(model)
        self._size = tuple(preprocess["size"]) if isinstance(preprocess["size"], (tuple, list)) else (preprocess["size"],) * 2
        self._resize_mode = preprocess.get("resize_mode", "shortest")
        self._interpolation = preprocess.get("interpolation", "bicubic")
        self._mean = torch.tensor(preprocess["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess["std"], device=self.device).view(1, 3, 1, 1)
        self.embed_dim = int(self.embed_texts([""]).shape[1])
        return self

    @property
    def model_id(self) -> str:
        return self.source.model_id if self.source else self.spec

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N,H,W,3] -> normalised float [N,3,S,S] on the device."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        height, width = pixels.shape[-2:]
        target_h, target_w = self._size
        mode = self._interpolation if self._interpolation in ("bicubic", "bilinear") else "bicubic"
        if self._resize_mode == "squash":
            pixels = F.interpolate(pixels, size=(target_h, target_w), mode=mode, antialias=True, align_corners=False)
        else:
            scale = max(target_h / height, target_w / width)
            resized = (max(target_h, round(height * scale)), max(target_w, round(width * scale)))
            pixels = F.interpolate(pixels, size=resized, mode=mode, antialias=True, align_corners=False)
            top = (resized[0] - target_h) // 2
            left = (resized[1] - target_w) // 2
            pixels = pixels[:, :, top : top + target_h, left : left + target_w]
        return (pixels.clamp(0.0, 1.0) - self._mean) / self._std

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """L2-normalised float32 image embeddings [N,D] of uint8 frames [N,H,W,3] (all of one size)."""
        with self._autocast():
            features = self.model.encode_image(self.preprocess(frames))
        return F.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised float32 text embeddings [N,D]."""
        tokens = self.tokenizer(texts).to(self.device)
        with self._autocast():
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)


def embed_sample_frames(embedder: ClipEmbedder, samples: list) -> list[np.ndarray | str]:
    """Per sample: float32 [K,D] frame embeddings, or the message saying why that sample has none.

    Frames of equal size share one forward pass; if a shared pass fails, its samples are retried one by one
    so that only the bad sample gets the error.
    """
    results: list[np.ndarray | str] = [""] * len(samples)
    groups: dict[tuple, list[int]] = {}
    for index, sample in enumerate(samples):
        try:
            frames = frames_of(sample)
        except SampleError as error:
            results[index] = str(error)
            continue
        groups.setdefault(frames.shape[1:], []).append(index)
    for indices in groups.values():
        try:
            _embed_group(embedder, samples, indices, results)
        except Exception:  # isolate the failing sample instead of failing its neighbours
            for index in indices:
                try:
                    _embed_group(embedder, samples, [index], results)
                except Exception as error:
                    results[index] = f"CLIP embedding failed: {type(error).__name__}: {error}"
    return results


def _embed_group(embedder: ClipEmbedder, samples: list, indices: list[int], results: list) -> None:
    stacked = [frames_of(samples[index]) for index in indices]
    embeddings = embedder.embed_frames(np.concatenate(stacked)).cpu().numpy()
    start = 0
    for index, frames in zip(indices, stacked):
        results[index] = embeddings[start : start + len(frames)]
        start += len(frames)
