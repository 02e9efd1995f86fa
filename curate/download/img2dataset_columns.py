"""The columns between the shard task and img2dataset's writer (apart from both: importing img2dataset costs ~2 s,
and the runner, img2dataset's entry point, imports the writer)."""

ROW_COLUMN = "crow"  # input: JSON of our manifest row's fixed fields (key, source, modality, url, extra)
STORED_SHA256 = "stored_sha256"  # output parquet: SHA-256 of the stored image bytes
