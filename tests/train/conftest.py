"""Fixtures for trainer tests: tiny curated dataset folders written in the shard format."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 40), (200, 60, 200), (40, 200, 200)]


def moving_square(index: int, frames: int, height: int, width: int) -> np.ndarray:
    """[T,H,W,3] uint8: a coloured square sliding right over a dark background (content depends on index)."""
    out = np.full((frames, height, width, 3), 20, dtype=np.uint8)
    colour = COLOURS[index % len(COLOURS)]
    side = height // 3
    for t in range(frames):
        x = (index * 7 + t * 2) % (width - side)
        out[t, height // 3 : height // 3 + side, x : x + side] = colour
    return out


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def encode_jpg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_dataset(
    root: Path, videos: int, images: int, per_shard: int = 4, frames: int = 24, size=(48, 64), fps: int = 24
) -> Path:
    """A curated dataset folder: DIR/shards/NNNNN.tar with {key}.mp4|jpg, .txt, .json (keys v000.., i000..)."""
    height, width = size
    items = [("video", f"v{i:03d}", i) for i in range(videos)] + [("image", f"i{i:03d}", i) for i in range(images)]
    (root / "shards").mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(items), per_shard)):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tf:
            for modality, key, i in items[start : start + per_shard]:
                clip = moving_square(i, frames, height, width)
                colour = ["red", "green", "blue", "yellow", "magenta", "cyan"][i % len(COLOURS)]
                if modality == "video":
                    _add(tf, f"{key}.mp4", encode_mp4(clip, fps))
                    meta = {"num_frames": frames, "fps": fps, "duration": frames / fps}
                else:
                    _add(tf, f"{key}.jpg", encode_jpg(clip[0]))
                    meta = {"num_frames": 1, "fps": None, "duration": None}
                _add(tf, f"{key}.txt", f"a {colour} square".encode())
                meta.update(key=key, source="test", modality=modality, width=width, height=height)
                _add(tf, f"{key}.json", json.dumps(meta).encode())
    return root


@pytest.fixture(scope="session")
def dataset_writer():
    """`write_dataset` for tests that need their own folder (a fixture: conftest modules are not importable by name)."""
    return write_dataset


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription stalls."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory) -> Path:
    """8 videos (24 frames, 64x48, 24 fps) and 8 images over 4 shards."""
    return write_dataset(tmp_path_factory.mktemp("mixed"), videos=8, images=8)
