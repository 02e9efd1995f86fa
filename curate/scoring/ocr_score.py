"""Burned-in text (OCR): how much of the frame text covers, whether it stays put across frames, where, and what it says.

RapidOCR's PP-OCRv4 models (shipped inside the rapidocr-onnxruntime wheel, so nothing is downloaded) run on
onnxruntime, on CUDA when onnxruntime-gpu offers it. Detection runs on every scoring frame with the frame's
longer side capped at DETECT_SIDE (no upscaling: small frames stay small); recognition runs only on the detected
boxes, and a box counts as text only when it reads with confidence (the detector alone fires on some textures).
A pixel is *static text* when text boxes cover it in at least STATIC_SHARE of the frames: a watermark, a logo or a
subtitle band stays, moving text does not.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from curate.scoring.registry import CPU, ScorerSpec
from curate.scoring.sample import Sample, SampleError, frames_of
from curate.weightfile import file_digest

NAME = "ocr"
VERSION = "1"
OCR_TEXT_AREA = "ocr_text_area"
OCR_STATIC_TEXT_AREA = "ocr_static_text_area"
OCR_BOXES = "ocr_boxes"
OCR_TEXT_PLACE = "ocr_text_place"
OCR_TEXT = "ocr_text"
OCR_ERROR = "ocr_error"

DETECT_SIDE = 512  # detection input: longer side capped here (the scoring frames are decoded at <= 512 px)
STATIC_SHARE = 2 / 3  # a pixel is static text when boxes cover it in at least this share of the frames
MAX_TEXT = 200  # characters of recognised text kept per sample
READ_SCORE = 0.6  # recogniser confidence a candidate box needs to count as text (clear text reads at >0.9)
EDGE_BAND = 0.2  # top/bottom bands: this share of the frame height; corners: these bands x CORNER_WIDTH
CORNER_WIDTH = 0.25
PLACES = ("corner", "bottom", "top", "middle")


def text_mask(boxes: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """bool [H,W]: the union of the detected quadrilaterals (overlapping boxes count once)."""
    mask = np.zeros((height, width), np.uint8)
    for box in boxes:  # one call per box: fillPoly over a list leaves some overlaps of its polygons unfilled
        cv2.fillConvexPoly(mask, np.asarray(box, np.float32).round().astype(np.int32), 1)
    return mask.astype(bool)


def static_mask(masks: np.ndarray) -> np.ndarray | None:
    """bool [H,W]: pixels covered by text in at least STATIC_SHARE of the frames; None for a single frame."""
    if len(masks) < 2:
        return None
    return masks.mean(axis=0) >= STATIC_SHARE - 1e-9  # 2 of 3 frames: the mean 0.666... must pass 2/3


def place_of(box: np.ndarray, height: int, width: int) -> str:
    """Where a box's centre sits: a corner, the bottom or top band, or the middle of the frame."""
    cx, cy = np.asarray(box, np.float64).mean(axis=0) / (width, height)
    band = "top" if cy < EDGE_BAND else "bottom" if cy > 1 - EDGE_BAND else None
    if band and (cx < CORNER_WIDTH or cx > 1 - CORNER_WIDTH):
        return "corner"
    return band or "middle"


def text_place(frame_boxes: list[list[np.ndarray]], height: int, width: int,
               keep: np.ndarray | None = None) -> str | None:
    """The place holding most text area over the frames (only boxes centred on `keep` pixels when given, e.g. the
    static ones); None without text."""
    areas = dict.fromkeys(PLACES, 0.0)
    for boxes in frame_boxes:
        for box in boxes:
            cx, cy = np.asarray(box, np.float64).mean(axis=0)
            if keep is not None and not keep[min(int(cy), height - 1), min(int(cx), width - 1)]:
                continue
            areas[place_of(box, height, width)] += abs(cv2.contourArea(np.asarray(box, np.float32)))
    best = max(areas, key=areas.get)
    return best if areas[best] > 0 else None


def summarise(frame_boxes: list[list[np.ndarray]], height: int, width: int) -> dict:
    """The per-sample columns (text itself aside) from the boxes detected in each frame of size height x width."""
    masks = np.stack([text_mask(boxes, height, width) for boxes in frame_boxes])
    static = static_mask(masks)
    static_area = None if static is None else float(static.mean())
    place = text_place(frame_boxes, height, width, static if static_area else None)
    return {OCR_TEXT_AREA: float(masks.mean()), OCR_STATIC_TEXT_AREA: static_area,
            OCR_BOXES: max(len(boxes) for boxes in frame_boxes), OCR_TEXT_PLACE: place}


def model_paths() -> dict[str, str]:
    """{"det": path, "rec": path} of the PP-OCRv4 models inside the installed rapidocr-onnxruntime package."""
    try:
        import rapidocr_onnxruntime
    except ImportError as error:
        raise RuntimeError("the ocr scorer needs rapidocr-onnxruntime (pip install rapidocr-onnxruntime)") from error
    folder = os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    found = {kind: os.path.join(folder, name) for kind in ("det", "rec") for name in names
             if name.endswith(f"_{kind}_infer.onnx")}
    if set(found) != {"det", "rec"}:
        raise RuntimeError(f"rapidocr-onnxruntime's models folder {folder} lacks a detection or recognition model")
    return found


def cuda_available() -> bool:
    """Whether onnxruntime (the -gpu build) offers CUDA here."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class OcrScorer:
    """Text-overlay columns of one sample from its decoded frames (RapidOCR on onnxruntime)."""

    name = NAME
    columns = (OCR_TEXT_AREA, OCR_STATIC_TEXT_AREA, OCR_BOXES, OCR_TEXT_PLACE, OCR_TEXT, OCR_ERROR)

    def __init__(self, detect_side: int = DETECT_SIDE):
        self.detect_side = detect_side
        self.engine = None

    def check_weights(self) -> None:
        """The models ship inside the wheel: checks that the package and its two model files are there."""
        model_paths()

    def setup(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        cv2.setNumThreads(1)
        cuda = cuda_available()
        paths = model_paths()
        # limit_type "max": RapidOCR's default ("min", 736) would enlarge every frame to 736 px on its shorter side,
        # ~20x the compute of a 180 px frame; "max" never enlarges (and only shrinks above 960 px: detect() does)
        self.engine = RapidOCR(det_model_path=paths["det"], rec_model_path=paths["rec"], use_cls=False,
                               det_limit_type="max", det_use_cuda=cuda, rec_use_cuda=cuda, intra_op_num_threads=1,
                               inter_op_num_threads=1)

    def provenance(self) -> dict:
        from importlib.metadata import version

        weights = {kind: {"file": os.path.basename(path), "sha256": file_digest(path)}
                   for kind, path in model_paths().items()}
        return {"scorer": NAME, "version": VERSION, "weights": weights,
                "model": f"rapidocr-onnxruntime-{version('rapidocr-onnxruntime')}@{self.detect_side}px,"
                         f"read>={READ_SCORE},static>={STATIC_SHARE:.2f}"}

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """Candidate text quadrilaterals [4,2] (x, y in the frame's pixels) of one RGB frame, detected on the frame
        shrunk to at most detect_side px (RapidOCR's own "max" limit starts at 960 px), in reading order."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.detect_side / max(height, width))
        small = frame if scale == 1.0 else cv2.resize(frame, (round(width * scale), round(height * scale)),
                                                      interpolation=cv2.INTER_AREA)
        boxes, _ = self.engine.text_det(np.ascontiguousarray(small[..., ::-1]))  # the models read BGR
        if boxes is None or len(boxes) == 0:
            return []
        return [np.asarray(box, np.float32) / scale for box in self.engine.sorted_boxes(boxes)]

    def read(self, frame: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        """(box, text) of the candidate boxes the recogniser reads with confidence >= READ_SCORE: the detector alone
        also fires on blobs of texture, which read as nothing or as one low-confidence glyph."""
        if not boxes:
            return []
        crops = self.engine.get_crop_img_list(np.ascontiguousarray(frame[..., ::-1]), boxes)
        texts, _ = self.engine.text_rec(crops)
        return [(box, text.strip()) for box, (text, score) in zip(boxes, texts) if text.strip() and score >= READ_SCORE]

    def score_frames(self, frames: np.ndarray) -> dict:
        """Every column but the error of one sample's uint8 [K,H,W,3] frames."""
        height, width = frames.shape[1:3]
        found = [self.read(frame, self.detect(frame)) for frame in frames]
        frame_boxes = [[box for box, _ in texts] for texts in found]
        row = summarise(frame_boxes, height, width)
        # the text of the frame with the most text area (a static overlay reads alike in every frame)
        best = max(range(len(found)), key=lambda i: text_mask(frame_boxes[i], height, width).sum())
        row[OCR_TEXT] = " ".join(text for _, text in found[best])[:MAX_TEXT] or None
        return row

    def score_batch(self, samples: list[Sample]) -> list[dict]:
        rows = []
        for sample in samples:
            row = dict.fromkeys(self.columns)
            try:
                row.update(self.score_frames(frames_of(sample)))
            except (SampleError, cv2.error) as error:
                row[OCR_ERROR] = str(error)
            rows.append(row)
        return rows


# The PP-OCRv4 models ship inside the wheel: nothing to fetch, nothing to hold per actor.
SPEC = ScorerSpec(NAME, OcrScorer.columns, CPU, lambda context: OcrScorer(),
                  weights=("rapidocr-onnxruntime's PP-OCRv4 detection and recognition models (in the wheel)",))
