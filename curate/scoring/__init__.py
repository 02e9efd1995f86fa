"""Scoring core: frames, one scorer per file (clip, aesthetic, motion, quality), dedup, weights, selection checks.

Everything here is plain Python/PyTorch and runs without Ray; the engine runs a ScorerSet (scorer_set.py)
per actor, decodes with frames.IsolatedDecoder, stores CLIP embeddings with embeddings.py, flags duplicates
with dedup.py over the whole dataset, and checks --where predicates with select.py.
"""
