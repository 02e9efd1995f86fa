"""Dataset folders for the split tests, written as download writes them."""

from __future__ import annotations

import os

from curate.media.probe import probe_image, shared_pool
from curate.shards.folder import shard_id
from curate.shards.writer import build_shard

# 3 shots of 2.5 s at 12 fps, two hard cuts (every detector finds them), the first a fast pan (neighbouring
# frames differ: a frame-exact cut can be told from one a frame off); small frames: seconds to detect and cut
TIMELINE = (("shot", 2.5, "fast_pan"), ("cut", 0), ("shot", 2.5, "object"), ("cut", 0), ("shot", 2.5, "static"))


def make_dataset(root: str, shards: list[list[tuple]]) -> None:
    """A dataset folder whose shard i holds the (key, media path or None for a failed row, caption[, facts]) of
    shards[i], written as download writes them; `facts` (e.g. a truncated file's) replace the probe's."""
    for number, items in enumerate(shards):
        def body(work, writer, items=items, number=number):
            for i, (key, path, caption, *facts) in enumerate(items):
                row = {"key": key, "row": number * 100 + i, "source": "folder", "caption": caption, "path": path}
                if path is None:
                    writer.add(dict(row, modality="video", status="failed_to_download", error_reason="http_404"))
                    continue
                video = path.endswith(".mp4")
                if facts:
                    row.update(facts[0])
                else:
                    info = shared_pool(1).probe_video(path, decode_check=False) if video else probe_image(path)
                    row.update(width=info.width, height=info.height, fps=info.fps, num_frames=info.num_frames,
                               duration=info.duration, codec=info.codec)
                writer.add(dict(row, modality="video" if video else "image", status="success",
                                size_bytes=os.path.getsize(path)), path, "mp4" if video else "jpg")

        build_shard(root, shard_id(number), body)
