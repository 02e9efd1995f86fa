"""Scoring core: frame sampling, one scorer per file (clip, aesthetic, motion, quality), dedup, weights registry.

Everything here is plain Python/PyTorch and runs without Ray; curate/engine.py puts ScorerSet in actor pools.
"""
