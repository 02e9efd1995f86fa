"""Scoring core: one scorer per file, each registered in registry.py (its spec: columns, where it runs, factory),
frames, the published weights files and CLIP specs, the score stage.

Everything but the stage is plain Python/PyTorch and runs without Ray; the engine runs a ScorerSet (scorer_set.py)
in the workers (workers.py), decodes with frames.IsolatedDecoder, stores CLIP embeddings with embeddings.py
(duplicates over the whole dataset: curate.dedup).
"""
