"""Synthetic clips for the metric tests (a module of its own: `conftest` names clash across test folders)."""

import numpy as np


def flat_video(value: int, frames: int = 16, height: int = 32, width: int = 48) -> np.ndarray:
    return np.full((frames, height, width, 3), value, np.uint8)
