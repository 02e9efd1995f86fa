"""Scoring core: frames, one scorer per file (clip, aesthetic, motion, quality), weights, selection checks.

Everything here is plain Python/PyTorch and runs without Ray; the engine runs a ScorerSet (scorer_set.py)
per actor, decodes with frames.IsolatedDecoder, stores CLIP embeddings with embeddings.py (duplicates
over the whole dataset: curate.dedup), and checks --where predicates with select.py.
"""
