"""Data for the caption tests: a dataset folder of coloured clips and images whose right caption is known, and
the API key that must appear in no output."""

from __future__ import annotations

import os

import numpy as np

from curate.demo.corpus import COLORS
from curate.media.transcode import write_mp4
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter

API_KEY = "sk-test-5f3c9a17d2e84b60"  # a made-up key that must never appear in any output
# Ray workers get the environment of the first ray.init, so the key is set at collection, before any test starts Ray.
KEY_ENV = "CURATE_TEST_VLM_KEY"
os.environ[KEY_ENV] = API_KEY


def clip(colours: list[str], size: int = 32) -> list[np.ndarray]:
    return [np.full((size, size, 3), COLORS[c], np.uint8) for c in colours]


def build_dataset(root: str, media: str, shards: dict[str, list[tuple]]) -> dict[str, str | None]:
    """Shards of (colours per frame, or "broken", or "failed") entries; returns {key: the caption the pixel
    server gives with frames=4 (None: no caption expected)}. Videos have 8 frames, so 4 evenly spaced frames
    are frames 0, 2, 5, 7."""
    import cv2

    os.makedirs(media, exist_ok=True)
    expected, n = {}, 0
    for sid, entries in shards.items():
        writer = ShardWriter(DatasetFolder(root), sid)
        for entry in entries:
            key = f"k{n:03d}"
            row = {"key": key, "row": n, "source": "urls", "caption": f"source caption {n}", "status": "success",
                   "sha256": f"{key}-digest", "extra": "{}"}
            if entry == "failed":
                writer.add(dict(row, modality="video", status="failed_to_download", error_reason="http_404"))
            elif entry == "broken":
                path = os.path.join(media, f"{key}.mp4")
                open(path, "wb").write(b"\x00\x00\x00\x18ftypmp42 not really a video" * 20)
                writer.add(dict(row, modality="video"), path, "mp4")
                expected[key] = None
            elif len(entry) == 1:  # an image
                path = os.path.join(media, f"{key}.png")
                cv2.imwrite(path, cv2.cvtColor(clip(entry)[0], cv2.COLOR_RGB2BGR))
                writer.add(dict(row, modality="image"), path, "png")
                expected[key] = f"1 frames: {entry[0]}"
            else:
                path = os.path.join(media, f"{key}.mp4")
                write_mp4(path, clip(entry))
                writer.add(dict(row, modality="video"), path, "mp4")
                expected[key] = "4 frames: " + ", ".join(entry[i] for i in (0, 2, 5, 7))
            n += 1
        writer.close()
    return expected


def two_colours(a: str, b: str) -> tuple:
    return (a,) * 4 + (b,) * 4
