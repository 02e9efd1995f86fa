"""Small PNG previews (base64, for self-contained HTML pages) of a sample's first frame, read through the shard
reader and decoded through the one decoder."""

from __future__ import annotations

import base64
import io

from curate.media.video_frames import VideoDecodeError, decode_frames
from curate.scoring.frames import FrameDecodeError, load_image
from curate.shards.reader import modality_of, read_media


def thumbnail(root: str, shard: str, key: str, side: int = 128) -> str | None:
    """Base64 PNG of the sample's first frame within side x side; None when it has no media or fails to decode
    (a page shows "no preview" rather than failing)."""
    from PIL import Image

    found = read_media(root, shard, key)
    if found is None:
        return None
    ext, data = found
    try:
        frames = decode_frames(data, lambda count: [0]) if modality_of(ext) == "video" else load_image(data)
    except (VideoDecodeError, FrameDecodeError, IndexError):
        return None
    image = Image.fromarray(frames[0])
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
