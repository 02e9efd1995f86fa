"""`curate search`: embed a text or an image with the CLIP model a dataset's embeddings came from, and find the
nearest samples through the dataset's stored index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curate import storage
from curate.search.index import SearchIndex, open_index
from curate.shards.folder import DatasetFolder

COLUMNS = ("rank", "key", "score", "caption", "path", "shard", "modality")


def embed_query(model: str, text: str | None = None, image: str | None = None,
                trust_checkpoint: bool = False) -> np.ndarray:
    """[1, D] unit embedding of the text, or of the image (a video: its middle frame) at `image`."""
    from curate.media.video_frames import decode_frames
    from curate.scoring.clip_embedder import ClipEmbedder
    from curate.scoring.frames import load_image
    from curate.shards.reader import modality_of

    embedder = ClipEmbedder(model, trust_checkpoint=trust_checkpoint).load()
    if text is not None:
        return embedder.embed_texts([text]).cpu().numpy()
    if not Path(image).is_file():
        raise FileNotFoundError(f"--image {image}: no such file")
    if modality_of(Path(image).suffix.lstrip(".").lower()) == "video":
        frames = decode_frames(image, lambda count: [count // 2])
    else:
        frames = load_image(image)
    return embedder.embed_frames(frames).cpu().numpy()


def check_model(index: SearchIndex, clip_model: str | None) -> None:
    """A query embedded by another CLIP would land in another space: refuse it, naming the right one."""
    if clip_model and clip_model != index.model:
        raise ValueError(f"the embeddings were made with CLIP {index.model!r}, not {clip_model!r}: search with "
                         f"--clip-model {index.model} (or leave --clip-model out)")


def search(root: str, text: str | None = None, image: str | None = None, top: int = 20,
           clip_model: str | None = None, trust_checkpoint: bool = False) -> pa.Table:
    """The `top` samples nearest to the query, best first: rank, key, score (cosine), caption, path (the tar
    holding the media), shard, modality."""
    if (text is None) == (image is None):
        raise ValueError("give a text query or --image PATH (one of them)")
    root = storage.absolute(root)
    index = open_index(root)
    check_model(index, clip_model)
    hits = index.search(embed_query(index.model, text, image, trust_checkpoint), top)[0]
    folder = DatasetFolder(root)
    con = storage.duckdb_connect(root)
    meta = {key: (caption, modality) for key, caption, modality in con.execute(
        "SELECT key, caption, modality FROM read_parquet(?) WHERE list_contains(?, key)",
        [folder.manifest_glob(), [key for key, _, _ in hits]]).fetchall()}
    rows = [{"rank": rank, "key": key, "score": round(score, 4), "caption": meta.get(key, (None, None))[0],
             "path": folder.tar(shard), "shard": shard, "modality": meta.get(key, (None, None))[1]}
            for rank, (key, shard, score) in enumerate(hits, 1)]
    return pa.Table.from_pylist(rows, schema=pa.schema([("rank", pa.int64()), ("key", pa.string()),
                                                        ("score", pa.float64()), ("caption", pa.string()),
                                                        ("path", pa.string()), ("shard", pa.string()),
                                                        ("modality", pa.string())]))
