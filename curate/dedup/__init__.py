"""Duplicates over a whole dataset: exact (sha256, in DuckDB) and near (CLIP embeddings, clustered search).

near.py holds the pure search (k-means clusters, multi-probe assignment, exact pairs inside a cluster, which
copy is kept); exact.py the sha256 groups; stage.py the dedup stage that streams the per-shard embedding
files through them as Ray tasks, so memory follows the largest cluster, not the dataset.
"""

NAME = "dedup"
COLUMNS = ("exact_duplicate_of", "near_duplicate_of", "near_duplicate_similarity", "near_duplicate_cluster")
DEFAULT_THRESHOLD = 0.95
SWEEP = (0.90, 0.93, 0.95, 0.97, 0.99)  # thresholds `curate report` shows flagged counts for
