"""img2dataset's webdataset sample writer, made to write our shard members directly.

img2dataset names members by its own counter and writes its own metadata JSON. Copying its tar into
ours to re-key it costs a read and a write of every image; writing our names ({key}.jpg, .txt, .json
with our metadata) in the first place lets the shard task take img2dataset's tar as its own.
img2dataset hashes the downloaded bytes, but it stores re-encoded ones: the manifest's sha256 is of
the stored bytes, so it is computed here (img2dataset's own hash is switched off).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
from img2dataset.writer import WebDatasetSampleWriter

from curate.download.img2dataset_columns import ROW_COLUMN, STORED_SHA256
from curate.shards.writer import member_name, sample_metadata


class CurateSampleWriter(WebDatasetSampleWriter):
    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        schema = schema.append(pa.field(STORED_SHA256, pa.string()))
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format)

    def write(self, img_str, key, caption, meta):
        meta[STORED_SHA256] = None
        if img_str is not None:
            row = json.loads(meta[ROW_COLUMN])
            member_name(row["key"], self.encode_format)  # refuses unsafe keys before anything is written
            meta[STORED_SHA256] = hashlib.sha256(img_str).hexdigest()
            row.update(width=meta["width"], height=meta["height"], num_frames=1, codec="jpeg",
                       size_bytes=len(img_str), sha256=meta[STORED_SHA256])
            self.tarwriter.write({"__key__": row["key"], self.encode_format: img_str,
                                  "txt": "" if caption is None else str(caption), "json": sample_metadata(row)})
        self.buffered_parquet_writer.write(meta)
