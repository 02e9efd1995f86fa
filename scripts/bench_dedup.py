"""Benchmark near-duplicate search on synthetic 512-d embeddings with planted near-copies (curate.dedup.synthetic).

1. Recall, side by side in one run on --recall-rows rows (default 200k): our clustered search (k-means, 2 probes,
   exact pairs per cluster), FAISS's own IVF range search (IndexIVFFlat, same cluster count, nprobe 2) and exact
   brute force. Exact search over all pairs is quadratic; the truth is the exact pairs of a random
   --truth-fraction of the rows with every row (unbiased for recall), and its full time is that time / fraction.
2. Scale: the dedup stage itself (Ray tasks, files streamed) on a synthetic dataset folder of --rows rows
   (default 1M): wall time per phase and the peak PSS summed over every process of the run (driver, Ray's
   raylet/GCS/workers), sampled from /proc every 0.5 s.
3. A partial run at --extrapolate rows (default 10M): the centroids trained as the stage would, a --slice-rows
   slice assigned (timed, scaled up), and the pair search estimated from the slice's cluster sizes (scaled up)
   at the rate the scale run measured (primary rows x members compared per second).

    python scripts/bench_dedup.py                  # the README numbers (minutes)
    python scripts/bench_dedup.py --smoke          # seconds: every step runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.dedup import near
from curate.dedup.synthetic import planted, topic_directions

THRESHOLD = 0.95
DIM = 512


def as_set(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist()))


def recall_run(rows: int, fraction: float, faiss_peer: bool = True, seed: int = 0) -> dict:
    import faiss

    vectors, _ = planted(rows, DIM, seed)
    unit, _ = near.unit_rows(vectors)
    ids = np.arange(rows)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(rows, max(1, int(rows * fraction)), replace=False))
    t = time.perf_counter()
    truth = near.pairs_between(ids[queries], unit[queries], ids, unit, THRESHOLD)
    exact_s = (time.perf_counter() - t) / fraction / 2  # the full search is the upper triangle: half of rows x rows
    sampled = np.zeros(rows, bool)
    sampled[queries] = True
    truth_set = as_set(truth.a, truth.b)

    def recall(a, b) -> float:
        keep = sampled[a] | sampled[b]
        return len(as_set(a[keep], b[keep]) & truth_set) / max(1, len(truth_set))

    clusters = near.cluster_count(rows)
    t = time.perf_counter()
    ours = near.clustered_pairs(ids, vectors, THRESHOLD, probes=near.PROBES)
    ours_s = time.perf_counter() - t

    result = {"rows": rows, "clusters": clusters, "truth_pairs_sampled": len(truth_set), "truth_fraction": fraction,
              "ours": {"seconds": round(ours_s, 1), "recall": round(recall(ours.a, ours.b), 4), "pairs": len(ours)},
              "exact": {"seconds_projected": round(exact_s, 1), "recall": 1.0}}
    if not faiss_peer:
        return result
    t = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    ivf = faiss.IndexIVFFlat(quantizer, DIM, clusters, faiss.METRIC_INNER_PRODUCT)
    ivf.train(unit[rng.choice(rows, min(rows, clusters * near.SAMPLE_PER_CLUSTER), replace=False)])
    ivf.add(unit)
    ivf.nprobe = near.PROBES
    lims, _, found = ivf.range_search(unit, THRESHOLD)
    a = np.repeat(ids, np.diff(lims.astype(np.int64)))
    b = found.astype(np.int64)
    other = a != b
    faiss_a, faiss_b = np.minimum(a, b)[other], np.maximum(a, b)[other]
    faiss_s = time.perf_counter() - t
    result["faiss_ivf_range"] = {"seconds": round(faiss_s, 1), "recall": round(recall(faiss_a, faiss_b), 4),
                                 "nprobe": near.PROBES}
    return result


def write_dataset(root: str, rows: int, shard_rows: int, seed: int = 0) -> None:
    """Manifests and embedding files shaped like a scored dataset: success rows, one sha256 repeat per 1000."""
    from curate.scoring.embeddings import write_embeddings

    os.makedirs(os.path.join(root, "shards"))
    topics = topic_directions(max(1, rows // 200), DIM, seed)
    for start in range(0, rows, shard_rows):
        n = min(shard_rows, rows - start)
        sid = f"{start // shard_rows:05d}"
        index = np.arange(start, start + n)
        keys = [f"k{i:09d}" for i in index]
        digests = [f"sha{i - (i % 1000 == 999)}" for i in index]
        pq.write_table(pa.table({"key": keys, "row": index, "shard": [sid] * n, "status": ["success"] * n,
                                 "sha256": digests}), os.path.join(root, "shards", f"{sid}.parquet"))
        vectors, _ = planted(n, DIM, seed, start=start, topics=topics)
        write_embeddings(os.path.join(root, "embeddings", f"{sid}.parquet"), keys, vectors, "synthetic")


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes: PSS shares each shared page among its users, RSS counts it in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line[:4] in ("Pss:", "Rss:")}
        return fields.get("Pss", 0), fields.get("Rss", 0)
    except (OSError, ValueError, IndexError):
        return 0, 0


class PeakMemory:
    """Peaks of the summed PSS and RSS of this process and all its descendants (Ray's processes included)."""

    def __init__(self, every: float = 0.5):
        self.peak = self.peak_rss = self.processes = 0
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            tree = _tree(os.getpid())
            sizes = [_memory(p) for p in tree]
            self.peak = max(self.peak, sum(p for p, _ in sizes))
            self.peak_rss = max(self.peak_rss, sum(r for _, r in sizes))
            self.processes = max(self.processes, len(tree))
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def scale_run(rows: int, shard_rows: int, scratch: str | None) -> dict:
    from curate import engine
    from curate.dedup.stage import DedupStage

    root = tempfile.mkdtemp(prefix="bench_dedup_", dir=scratch)
    try:
        t = time.perf_counter()
        write_dataset(root, rows, shard_rows)
        write_s = time.perf_counter() - t
        with PeakMemory() as memory:
            t = time.perf_counter()
            summary = engine.run_stage(DedupStage(root, THRESHOLD))
            wall = time.perf_counter() - t
        return {"rows": rows, "wall_s": round(wall, 1), "peak_pss_gib": round(memory.peak / 2**30, 2),
                "peak_rss_gib": round(memory.peak_rss / 2**30, 2), "processes": memory.processes,
                "seconds": summary["seconds"], "dataset_write_s": round(write_s, 1), "clusters": summary["clusters"],
                "largest_cluster": summary["largest_cluster"], "search_work": summary["search_work"],
                "near_duplicates": summary["near_duplicates"], "exact_duplicates": summary["exact_duplicates"],
                "load_average": [round(v, 1) for v in os.getloadavg()]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def partial_run(rows: int, slice_rows: int, scale: dict, seed: int = 0) -> dict:
    """The --extrapolate run in part: centroids trained as the stage would (on a sample of the same
    distribution), a slice of rows assigned (timed, scaled to all rows), and the pair search estimated from the
    slice's cluster sizes scaled to all rows, at the rate (primary rows x members per second) of the scale run."""
    from curate.dedup.stage import SAMPLE_ROWS

    topics = topic_directions(max(1, rows // 200), DIM, seed)
    clusters = near.cluster_count(rows)
    sample, _ = planted(min(SAMPLE_ROWS, clusters * near.SAMPLE_PER_CLUSTER), DIM, seed, start=rows, topics=topics)
    t = time.perf_counter()
    centroids = near.train_centroids(near.unit_rows(sample)[0], clusters, rows, 4 * near.TARGET_CLUSTER)
    train_s = time.perf_counter() - t
    part, _ = planted(slice_rows, DIM, seed, start=2 * rows, topics=topics)
    t = time.perf_counter()
    labels = near.assign(near.unit_rows(part)[0], centroids, near.PROBES)
    factor = rows / slice_rows
    assign_s = (time.perf_counter() - t) * factor
    members = np.bincount(labels.reshape(-1), minlength=len(centroids)) * factor
    primary = np.bincount(labels[:, 0], minlength=len(centroids)) * factor
    rate = scale["search_work"] / max(scale["seconds"].get("pairs", 0.0), 1e-3)
    pairs_s = float((members * primary).sum()) / rate
    rest_s = (scale["seconds"]["rank"] + scale["seconds"]["resolve_write"]) * rows / scale["rows"]
    return {"rows": rows, "clusters": len(centroids), "largest_cluster_est": int(members.max()),
            "slice_rows": slice_rows, "train_s": round(train_s, 1), "assign_s_est": round(assign_s),
            "pairs_s_est": round(pairs_s), "rank_resolve_write_s_est": round(rest_s),
            "total_s_est": round(train_s + assign_s + pairs_s + rest_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recall-rows", type=int, default=200_000)
    parser.add_argument("--truth-fraction", type=float, default=0.05)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--extrapolate", type=int, default=10_000_000)
    parser.add_argument("--slice-rows", type=int, default=100_000, help="rows of the partial run assigned")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--no-faiss-peer", action="store_true", help="recall run without FAISS's IVF range search")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scratch", default=None, help="where the synthetic dataset folder is written")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks every step runs (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.recall_rows, args.truth_fraction, args.rows, args.shard_rows = 3000, 0.5, 3000, 1000
        args.extrapolate, args.slice_rows = 30_000, 2000
    results: dict = {"threshold": THRESHOLD, "dim": DIM, "probes": near.PROBES}
    if not args.skip_recall:
        results["recall"] = recall_run(args.recall_rows, args.truth_fraction, not args.no_faiss_peer)
        print(json.dumps(results["recall"]), flush=True)
    if not args.skip_scale:
        results["scale"] = scale_run(args.rows, args.shard_rows, args.scratch)
        print(json.dumps(results["scale"]), flush=True)
        results["partial"] = partial_run(args.extrapolate, args.slice_rows, results["scale"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
