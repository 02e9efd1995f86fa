"""OCR scorer throughput and accuracy: curate's ocr scorer vs a bare RapidOCR loop on the same frames, in one run.

Frames: curate.demo.text_frames' labelled set (a large semi-transparent word in the middle, a subtitle line, a
corner mark; and gradients, noise, textures, shapes without text), grouped into samples of --frames frames. The
bare loop is what one writes with RapidOCR: `engine(frame)` per frame (detection + recognition of every box),
given the scorer's settings (detection limit "max", no angle classifier, one thread), so the ratio measures what
the scorer adds (box verification, masks, static/place summaries). Reported: frames/s of each (best of
interleaved repeats, wall clock and this process's CPU time) and their ratio (goal >= 0.9), then the scorer's
recall per text kind and false alarms per clean kind (a sample "has text" when ocr_boxes > 0).

usage: python scripts/bench_ocr.py [--per-kind 12] [--frames 3] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from curate.demo.text_frames import CLEAN_KINDS, TEXT_KINDS, clean_frame, text_frame
from curate.scoring.ocr_score import OCR_BOXES, OcrScorer, cuda_available, model_paths


def labelled_samples(per_kind: int, frames: int) -> list[dict]:
    """per_kind samples of each kind, each `frames` frames of one kind (different seeds), with its truth."""
    samples = []
    for kinds, make, has_text in ((TEXT_KINDS, text_frame, True), (CLEAN_KINDS, clean_frame, False)):
        for kind in kinds:
            for index in range(per_kind):
                stack = np.stack([make(kind, index * frames + f) for f in range(frames)])
                samples.append({"key": f"{kind}_{index}", "kind": kind, "has_text": has_text, "frames": stack})
    return samples


def bare_engine():
    from rapidocr_onnxruntime import RapidOCR

    cuda, paths = cuda_available(), model_paths()
    return RapidOCR(det_model_path=paths["det"], rec_model_path=paths["rec"], use_cls=False, det_limit_type="max",
                    det_use_cuda=cuda, rec_use_cuda=cuda, intra_op_num_threads=1, inter_op_num_threads=1)


def rate(run, samples: list[dict]) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process)."""
    count = sum(len(s["frames"]) for s in samples)
    wall, cpu = time.perf_counter(), time.process_time()
    run(samples)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=12, help="samples per frame kind")
    parser.add_argument("--frames", type=int, default=3, help="frames per sample (the scorer's default sampling)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 sample per kind, 1 repeat: checks the script runs")
    args = parser.parse_args(argv)
    per_kind, repeats = (1, 1) if args.smoke else (args.per_kind, args.repeats)
    samples = labelled_samples(per_kind, args.frames)
    scorer = OcrScorer()
    scorer.setup()
    bare = bare_engine()

    def ours(batch):
        return scorer.score_batch(batch)

    def bare_loop(batch):
        return [[bare(np.ascontiguousarray(frame[..., ::-1])) for frame in s["frames"]] for s in batch]

    rows = ours(samples)  # warm-up, and the rows the accuracy table reads
    bare_loop(samples[:2])
    passes = {"curate": [], "bare": []}
    for _ in range(repeats):  # interleaved so that load on a shared machine hits both alike
        passes["bare"].append(rate(bare_loop, samples))
        passes["curate"].append(rate(ours, samples))
    result = {"frames": sum(len(s["frames"]) for s in samples), "size": list(samples[0]["frames"].shape[1:3]),
              "cuda": cuda_available(), "repeats": repeats}
    for clock, index in (("wall", 0), ("cpu", 1)):
        best = {name: max(r[index] for r in runs) for name, runs in passes.items()}
        result[clock] = {"curate_frames_per_s": round(best["curate"], 2), "bare_frames_per_s": round(best["bare"], 2),
                         "ratio": round(best["curate"] / best["bare"], 3)}
    found = {kind: [row[OCR_BOXES] > 0 for row, s in zip(rows, samples) if s["kind"] == kind]
             for kind in TEXT_KINDS + CLEAN_KINDS}
    true_positive = sum(sum(found[k]) for k in TEXT_KINDS)
    false_positive = sum(sum(found[k]) for k in CLEAN_KINDS)
    result["accuracy"] = {
        "per_kind": {kind: f"{sum(hits)}/{len(hits)}" for kind, hits in found.items()},
        "recall": round(true_positive / sum(len(found[k]) for k in TEXT_KINDS), 3),
        "precision": round(true_positive / max(true_positive + false_positive, 1), 3)}
    if args.smoke:
        result["note"] = "SMOKE RUN: numbers mean nothing"
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
