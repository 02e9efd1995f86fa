"""A small image dataset whose embeddings come from a tiny random CLIP (saved as a model folder), as
`curate score --scorers clip` stores them, plus one planted row equal to a text query's embedding."""

import numpy as np
import pytest
from PIL import Image

from curate.scoring.clip_embedder import ClipEmbedder
from curate.scoring.embeddings import write_embeddings
from curate.scoring.frames import load_image
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter

QUERY = "a red car at night"


@pytest.fixture(scope="session")
def searchable(tmp_path_factory, tiny_clip_folder):
    """Eight images in two shards; their embeddings by the tiny CLIP; `planted` holds the text query's."""
    base = tmp_path_factory.mktemp("search_ds")
    folder = DatasetFolder(str(base / "ds"))
    rng = np.random.default_rng(0)
    embedder = ClipEmbedder(str(tiny_clip_folder)).load()
    images = []
    for shard in range(2):
        sid = f"{shard:05d}"
        writer = ShardWriter(folder, sid)
        keys, vectors = [], []
        for i in range(4):
            n = shard * 4 + i
            path = base / f"img{n}.png"
            Image.fromarray(rng.integers(0, 255, (24 + 8 * i, 32, 3), dtype=np.uint8)).save(path)
            images.append(str(path))
            key = "planted" if n == 5 else f"k{n}"
            writer.add({"key": key, "row": n, "source": "laion-coco", "modality": "image",
                        "caption": f"caption <{n}>", "status": "success", "extra": "{}"}, str(path), "png")
            keys.append(key)
            vectors.append(embedder.embed_texts([QUERY])[0].numpy() if key == "planted"
                           else embedder.embed_frames(load_image(str(path)))[0].numpy())
        writer.close()
        write_embeddings(f"{folder.root}/embeddings/{sid}.parquet", keys, np.stack(vectors), str(tiny_clip_folder))
    return {"root": folder.root, "images": images, "query": QUERY}
