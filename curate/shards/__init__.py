"""Dataset folders on disk: WebDataset shards with a Parquet manifest and _stats.json beside each tar."""
