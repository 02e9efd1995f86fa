"""Technical quality (weight-free): sharpness, noise, brightness, contrast, black-border fraction, static-frame fraction."""

from __future__ import annotations

import math

import cv2
import numpy as np

from curate.scoring.frames import fit_within, to_grey
from curate.scoring.registry import CPU, ScorerSpec
from curate.scoring.sample import Sample, SampleError, frames_of

NAME = "quality"
VERSION = "2"  # 2: noise_sigma added
SHARPNESS = "sharpness"
NOISE_SIGMA = "noise_sigma"
BRIGHTNESS = "brightness"
CONTRAST = "contrast"
BLACK_BORDER_FRACTION = "black_border_fraction"
STATIC_FRAME_FRACTION = "static_frame_fraction"
QUALITY_ERROR = "quality_error"

ANALYSIS_SIDE = 512  # measured on frames whose longer side is at most this, so scores compare across resolutions
BLACK_LEVEL = 24  # a border row/column is black when its brightest pixel (0-255) stays below this in every frame
STATIC_DIFF = 1.0  # mean absolute grey difference (0-255) below which two sampled frames count as identical


def grey_frames(frames: np.ndarray, longer_side: int = ANALYSIS_SIDE) -> np.ndarray:
    """uint8 [K,h,w] grey frames, downscaled with area averaging to at most longer_side."""
    return fit_within(to_grey(frames), longer_side)


def sharpness(greys: np.ndarray) -> float:
    """Variance of the Laplacian, mean over frames (higher is sharper; 0 for a flat image)."""
    return float(np.mean([cv2.Laplacian(grey, cv2.CV_64F).var() for grey in greys]))


# Immerkaer's mask, a difference of two Laplacians: zero on every quadratic surface (smooth image structure),
# while white noise of std s gives I*N of std 6 s (the weights' norm), so E|I*N| = sqrt(2/pi) * 6 s.
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def noise_sigma(greys: np.ndarray) -> float | None:
    """Immerkaer's fast noise estimate (1996): std of additive white Gaussian noise in grey levels (0-255),
    sqrt(pi/2) * sum|I * N| / (6 (W-2)(H-2)) over the interior pixels, mean over frames. Fine texture counts
    as noise too, so compare like with like. None for frames under 3x3."""
    height, width = greys.shape[1:3]
    if height < 3 or width < 3:
        return None
    sigmas = []
    for grey in greys:
        response = cv2.filter2D(grey.astype(np.float64), -1, _NOISE_MASK, borderType=cv2.BORDER_CONSTANT)
        total = np.abs(response[1:-1, 1:-1]).sum()
        sigmas.append(math.sqrt(math.pi / 2) * total / (6 * (width - 2) * (height - 2)))
    return float(np.mean(sigmas))


def brightness(greys: np.ndarray) -> float:
    """Mean grey level in [0, 1]."""
    return float(greys.mean() / 255.0)


def contrast(greys: np.ndarray) -> float:
    """RMS contrast: standard deviation of the grey level in [0, 0.5], mean over frames."""
    return float(np.mean([grey.std() for grey in greys]) / 255.0)


def black_border_fraction(greys: np.ndarray) -> float:
    """Fraction of the frame area in black bars at the edges (letterbox / pillarbox), in [0, 1]."""
    brightest = greys.max(axis=0)
    dark_rows = brightest.max(axis=1) < BLACK_LEVEL
    dark_cols = brightest.max(axis=0) < BLACK_LEVEL
    height, width = brightest.shape
    if dark_rows.all():
        return 1.0
    top = int(np.argmin(dark_rows))
    bottom = int(np.argmin(dark_rows[::-1]))
    left = int(np.argmin(dark_cols))
    right = int(np.argmin(dark_cols[::-1]))
    inner = (height - top - bottom) * (width - left - right)
    return float(1.0 - inner / (height * width))


def static_frame_fraction(greys: np.ndarray) -> float | None:
    """Fraction of consecutive sampled-frame pairs that are (near) identical; None for one frame."""
    if len(greys) < 2:
        return None
    pairs = zip(greys[:-1].astype(np.int16), greys[1:].astype(np.int16))
    return float(np.mean([np.abs(current - previous).mean() < STATIC_DIFF for previous, current in pairs]))


class QualityScorer:
    """All technical-quality columns of one sample from its decoded frames."""

    name = NAME
    columns = (SHARPNESS, NOISE_SIGMA, BRIGHTNESS, CONTRAST, BLACK_BORDER_FRACTION, STATIC_FRAME_FRACTION,
               QUALITY_ERROR)

    def check_weights(self) -> None:
        """Weight-free: nothing to resolve."""

    def setup(self) -> None:
        cv2.setNumThreads(1)

    def provenance(self) -> dict:
        return {"scorer": NAME, "version": VERSION,
                "model": f"opencv-{cv2.__version__}@{ANALYSIS_SIDE}px,black<{BLACK_LEVEL},static<{STATIC_DIFF}"}

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        rows = []
        for sample in samples:
            row = dict.fromkeys(self.columns)
            try:
                greys = grey_frames(frames_of(sample))
                row.update({
                    SHARPNESS: sharpness(greys),
                    NOISE_SIGMA: noise_sigma(greys),
                    BRIGHTNESS: brightness(greys),
                    CONTRAST: contrast(greys),
                    BLACK_BORDER_FRACTION: black_border_fraction(greys),
                    STATIC_FRAME_FRACTION: static_frame_fraction(greys),
                })
            except (SampleError, cv2.error) as error:
                row[QUALITY_ERROR] = str(error)
            rows.append(row)
        return rows


SPEC = ScorerSpec(NAME, QualityScorer.columns, CPU, lambda context: QualityScorer())
