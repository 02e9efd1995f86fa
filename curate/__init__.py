"""curate: public video/image collections -> curated WebDataset shards -> staged video diffusion training."""

__version__ = "0.1.0"
