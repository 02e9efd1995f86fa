"""Benchmark near-duplicate search on synthetic 512-d embeddings with planted near-copies (curate.dedup.synthetic).

1. Recall, side by side in one run on --recall-rows rows (default 200k): our clustered search (k-means, probes
   as the stage, exact pairs per cluster), FAISS's own IVF range search (IndexIVFFlat, same cluster count, nprobe
   = our probes; its search timed on --faiss-queries rows and projected to all) and exact brute force. Exact
   search over all pairs is quadratic; the truth is the exact pairs of a random --truth-fraction of the rows with
   every row (unbiased for recall), and its full time is that time / fraction.
2. Scale, on a synthetic dataset folder of --rows rows (default 1M): the dedup stage itself (Ray tasks, files
   streamed; what `curate score DIR --scorers dedup` runs), then, with Ray stopped, the same rows in memory in one
   process through our search, FAISS's IVF range search and exact search on a --scale-truth-rows slice (its
   recall truth, and its rate projected to all pairs). For each: wall time, CPU seconds and peak memory summed
   over every process of the run (driver, Ray's raylet/GCS/workers), sampled from /proc every 0.5 s.
3. A partial run at --extrapolate rows (default 10M): the centroids trained as the stage would, a --slice-rows
   slice assigned (timed, scaled up), and the stage's CPU seconds at 1M scaled by the search work the slice's
   cluster sizes predict (scaled up); wall time as those CPU seconds spread over the machine's CPUs.

The in-memory searches run on one thread each (FAISS and BLAS), so their ratios compare the methods, not the
machine's load; the stage spreads its tasks over Ray's CPUs. Load averages are recorded with every step: on a
shared machine wall times stretch with the load, CPU seconds much less.

    python scripts/bench_dedup.py --out dedup.json   # the README numbers (~8-10 min quiet, 16 min at load 3-22)
    python scripts/bench_dedup.py --smoke            # seconds: every step runs
"""

from __future__ import annotations

import os

# one thread for FAISS and BLAS in this process (set before numpy loads them); Ray's workers get one per task anyway
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from curate.dedup import near  # noqa: E402
from curate.dedup.synthetic import planted, topic_directions  # noqa: E402

THRESHOLD = 0.95
DIM = 512
CHUNK = 50_000  # reference rows per exact-search block (queries x CHUNK similarities at a time)
TICKS = os.sysconf("SC_CLK_TCK")


def load() -> float:
    return round(os.getloadavg()[0], 1)


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


def _usage(pid: int) -> tuple[int, int, float]:
    """(PSS, RSS) in bytes and CPU seconds (user + system, all threads): PSS shares each shared page among its
    users, RSS counts it in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line[:4] in ("Pss:", "Rss:")}
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        return fields.get("Pss", 0), fields.get("Rss", 0), (int(stat[11]) + int(stat[12])) / TICKS
    except (OSError, ValueError, IndexError):
        return 0, 0, 0.0


class Usage:
    """This process and all its descendants (Ray's processes included), sampled every `every` s: peaks of the
    summed PSS and RSS, the most processes, and the CPU seconds they spent inside the block (a process that
    ends between two samples loses at most its last interval)."""

    def __init__(self, every: float = 0.5):
        self.peak = self.peak_rss = self.processes = 0
        self.every = every
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        tree = _tree(os.getpid())
        sizes = [(p, *_usage(p)) for p in tree]
        self.peak = max(self.peak, sum(s[1] for s in sizes))
        self.peak_rss = max(self.peak_rss, sum(s[2] for s in sizes))
        self.processes = max(self.processes, len(tree))
        for pid, _, _, cpu in sizes:
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)

    def run(self):
        while not self.stop.wait(self.every):
            self.sample()
        self.sample()

    def __enter__(self):
        self.started = {p: _usage(p)[2] for p in _tree(os.getpid())}
        self.load = load()
        self.t = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        cpu = sum(v - self.started.get(p, 0.0) for p, v in self.cpu.items())
        return {"wall_s": round(self.wall, 1), "cpu_s": round(cpu, 1), "peak_pss_gib": round(self.peak / 2**30, 2),
                "peak_rss_gib": round(self.peak_rss / 2**30, 2), "processes": self.processes,
                "load": [self.load, load()]}


def as_set(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist()))


def faiss_ivf(unit: np.ndarray, clusters: int, seed: int = 0):
    """FAISS's own index: IndexIVFFlat over the same number of clusters (trained on the same sample size), nprobe
    = our probes."""
    import faiss

    rng = np.random.default_rng(seed)
    quantizer = faiss.IndexFlatIP(unit.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, unit.shape[1], clusters, faiss.METRIC_INNER_PRODUCT)
    ivf.train(unit[rng.choice(len(unit), min(len(unit), clusters * near.SAMPLE_PER_CLUSTER), replace=False)])
    ivf.add(unit)
    ivf.nprobe = near.PROBES
    return ivf, quantizer  # the quantizer lives as long as the index uses it


def range_pairs(ivf, unit: np.ndarray, queries: np.ndarray) -> near.Pairs:
    """FAISS's answer for some rows: each a range query at the threshold; pairs (a < b), each once."""
    lims, similarity, found = ivf.range_search(unit[queries], THRESHOLD)
    a = np.repeat(queries, np.diff(lims.astype(np.int64)))
    b = found.astype(np.int64)
    other = a != b
    a, b = a[other], b[other]
    return near.Pairs.concat([near.Pairs(np.minimum(a, b), np.maximum(a, b), similarity[other])])


class Truth:
    """Exact pairs of a random sample of query rows with every row: recall of any pair set on those rows."""

    def __init__(self, unit: np.ndarray, queries: int, seed: int = 0):
        rows = len(unit)
        self.queries = np.sort(np.random.default_rng(seed).choice(rows, queries, replace=False))
        ids, q = np.arange(rows), self.queries
        t, c = time.perf_counter(), time.process_time()
        # reference rows in chunks: a block of queries x all rows would not fit in memory at 1M rows
        truth = near.Pairs.concat([near.pairs_between(q, unit[q], ids[s:s + CHUNK], unit[s:s + CHUNK], THRESHOLD)
                                   for s in range(0, rows, CHUNK)])
        self.wall, self.cpu = time.perf_counter() - t, time.process_time() - c
        fraction = queries / rows
        # the full exact search is the upper triangle: half of rows x rows, i.e. this / fraction / 2
        self.projected_wall, self.projected_cpu = self.wall / fraction / 2, self.cpu / fraction / 2
        self.sampled = np.zeros(rows, bool)
        self.sampled[self.queries] = True
        self.pairs = as_set(truth.a, truth.b)

    def recall(self, pairs: near.Pairs) -> float:
        keep = self.sampled[pairs.a] | self.sampled[pairs.b]
        return round(len(as_set(pairs.a[keep], pairs.b[keep]) & self.pairs) / max(1, len(self.pairs)), 4)

    def rows(self) -> np.ndarray:
        """The sampled rows and their partners in the true pairs: range queries from these rows find every true
        pair that a query from every row would."""
        return np.unique(np.concatenate([self.queries, np.array(sorted(self.pairs), np.int64).reshape(-1)]))


def peers(unit: np.ndarray, truth_rows: int, faiss_peer: bool = True, faiss_queries: int = 100_000) -> dict:
    """Ours in memory, FAISS IVF range search and exact search (on a slice, projected) over the same unit rows,
    one after the other in this process; each with its own usage. FAISS's range search is timed on a random
    `faiss_queries` rows and projected to all (its cost is per query); its recall comes from the queries of
    the truth's rows."""
    rows = len(unit)
    clusters = near.cluster_count(rows)
    truth = Truth(unit, truth_rows)
    with Usage() as usage:
        ours = near.clustered_pairs(np.arange(rows), unit, THRESHOLD)
    result = {"rows": rows, "clusters": clusters, "truth_queries": truth_rows, "truth_pairs": len(truth.pairs),
              "ours": {"recall": truth.recall(ours), "pairs": len(ours), **usage.summary()},
              "exact": {"recall": 1.0, "projected_wall_s": round(truth.projected_wall),
                        "projected_cpu_s": round(truth.projected_cpu), "slice_wall_s": round(truth.wall, 1),
                        "load": load()}}
    if faiss_peer:
        timed = np.sort(np.random.default_rng(1).choice(rows, min(rows, faiss_queries), replace=False))
        with Usage() as usage:
            t, c = time.perf_counter(), time.process_time()
            ivf, _ = faiss_ivf(unit, clusters)
            build_wall, build_cpu = time.perf_counter() - t, time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            range_pairs(ivf, unit, timed)
            scale = rows / len(timed)
            search_wall, search_cpu = (time.perf_counter() - t) * scale, (time.process_time() - c) * scale
            theirs = range_pairs(ivf, unit, truth.rows())
        result["faiss_ivf_range"] = {**usage.summary(), "recall": truth.recall(theirs), "nprobe": near.PROBES,
                                     "queries_timed": len(timed), "wall_s": round(build_wall + search_wall, 1),
                                     "cpu_s": round(build_cpu + search_cpu, 1), "build_cpu_s": round(build_cpu, 1)}
    return result


def recall_run(rows: int, fraction: float, faiss_peer: bool, faiss_queries: int, seed: int = 0) -> dict:
    vectors, _ = planted(rows, DIM, seed)
    return peers(near.unit_rows(vectors)[0], max(1, int(rows * fraction)), faiss_peer, faiss_queries)


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


def read_unit(root: str) -> np.ndarray:
    """All the dataset's embeddings as unit rows, in dataset order (one array, filled file by file)."""
    from curate.scoring.embeddings import read_vectors

    files = sorted(os.listdir(os.path.join(root, "embeddings")))
    counts = [pq.ParquetFile(os.path.join(root, "embeddings", f)).metadata.num_rows for f in files]
    unit = np.empty((sum(counts), DIM), np.float32)
    for f, start, n in zip(files, np.cumsum([0, *counts[:-1]]), counts):
        unit[start:start + n] = near.unit_rows(read_vectors(os.path.join(root, "embeddings", f)))[0]
    return unit


def scale_run(rows: int, shard_rows: int, scratch: str | None, truth_rows: int, faiss_peer: bool,
              faiss_queries: int) -> dict:
    from curate import engine
    from curate.dedup.stage import DedupStage

    root = tempfile.mkdtemp(prefix="bench_dedup_", dir=scratch)
    try:
        t = time.perf_counter()
        write_dataset(root, rows, shard_rows)
        write_s = time.perf_counter() - t
        with Usage() as usage:
            summary = engine.run_stage(DedupStage(root, THRESHOLD))
        engine.shutdown()  # the peers run without Ray's processes
        stage = {**usage.summary(), "seconds": summary["seconds"], "clusters": summary["clusters"],
                 "largest_cluster": summary["largest_cluster"], "search_work": summary["search_work"],
                 "pairs_found": summary["pairs_found"], "near_duplicates": summary["near_duplicates"],
                 "exact_duplicates": summary["exact_duplicates"]}
        result = {"rows": rows, "shard_rows": shard_rows, "dataset_write_s": round(write_s, 1), "stage": stage}
        print(json.dumps(result), flush=True)
        if truth_rows:
            result["in_memory"] = peers(read_unit(root), truth_rows, faiss_peer, faiss_queries)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def partial_run(rows: int, slice_rows: int, scale: dict, cpus: int, seed: int = 0) -> dict:
    """The --extrapolate run in part: centroids trained as the stage would (on a sample of the same
    distribution), a slice of rows assigned (timed, scaled to all rows), and the stage's work estimated from the
    slice's cluster sizes scaled to all rows; wall time as CPU seconds over `cpus` (the tasks run in parallel)."""
    from curate.dedup.stage import SAMPLE_ROWS

    topics = topic_directions(max(1, rows // 200), DIM, seed)
    clusters = near.cluster_count(rows)
    sample, _ = planted(min(SAMPLE_ROWS, clusters * near.SAMPLE_PER_CLUSTER), DIM, seed, start=rows, topics=topics)
    t = time.perf_counter()
    centroids = near.train_centroids(near.unit_rows(sample)[0], clusters, rows, 4 * near.TARGET_CLUSTER)
    train_s = time.perf_counter() - t
    part, _ = planted(slice_rows, DIM, seed, start=2 * rows, topics=topics)
    part = near.unit_rows(part)[0]
    stage = scale["stage"]
    c = time.process_time()
    near.assign(part, centroids[: stage["clusters"]], near.PROBES)  # the assignment's cost at the scale run's size
    assign_scale_cpu = time.process_time() - c
    c = time.process_time()
    labels = near.assign(part, centroids, near.PROBES)
    assign_cpu = time.process_time() - c
    factor = rows / slice_rows
    members = np.bincount(labels.reshape(-1), minlength=len(centroids)) * factor
    primary = np.bincount(labels[:, 0], minlength=len(centroids)) * factor
    work = float((primary * (primary - 1) / 2 + primary * (members - primary)).sum())
    # the stage's CPU seconds scaled by the search work (reading, assigning and searching all grow with it), the
    # assignment then corrected from its cost per row at the scale run's cluster count to that at `rows`
    stage_cpu = stage["cpu_s"] * work / max(stage["search_work"], 1) + (assign_cpu - assign_scale_cpu) * factor
    rest_s = (stage["seconds"]["rank"] + stage["seconds"]["resolve_write"]) * rows / scale["rows"]
    return {"rows": rows, "clusters": len(centroids), "largest_cluster_est": int(members.max()),
            "slice_rows": slice_rows, "train_s": round(train_s, 1), "assign_cpu_s_est": round(assign_cpu * factor),
            "stage_cpu_s_est": round(stage_cpu), "rank_resolve_write_s_est": round(rest_s), "cpus": cpus,
            "total_wall_s_est": round(train_s + stage_cpu / cpus + rest_s), "load": load()}


def ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}x" if y else "-"


def table(results: dict) -> list[str]:
    """The README's table rows (markdown) from the results."""
    probes = results["probes"]
    lines = [f"| rows | what | ours (clustered, {probes} probes) | FAISS IVF range search (same clusters, nprobe "
             f"{probes}) | exact search |", "|---|---|---|---|---|"]

    def peer_row(p: dict, label: str) -> str:
        ours, exact = p["ours"], p["exact"]
        theirs = p.get("faiss_ivf_range")
        faiss_cell = (f"{theirs['recall']:.3f}; {theirs['wall_s']} s, {theirs['cpu_s']} CPU s "
                      f"(**{ratio(theirs['cpu_s'], ours['cpu_s'])} ours**; search timed on "
                      f"{theirs['queries_timed']:,} rows), {theirs['peak_rss_gib']} GiB; load "
                      f"{theirs['load'][0]}-{theirs['load'][1]}" if theirs else "not run")
        return (f"| {p['rows']:,} | {label}, one thread each: recall of the {p['truth_pairs']:,} pairs of "
                f"{p['truth_queries']:,} sampled rows; time; peak RSS | **{ours['recall']:.3f}**; {ours['wall_s']} s, "
                f"{ours['cpu_s']} CPU s, {ours['peak_rss_gib']} GiB; load {ours['load'][0]}-{ours['load'][1]} | "
                f"{faiss_cell} | 1.0; {exact['projected_wall_s']:,} s projected "
                f"({ratio(exact['projected_cpu_s'], ours['cpu_s'])} ours' CPU s) |")

    if "recall" in results:
        lines.append(peer_row(results["recall"], "in memory"))
    if "scale" in results:
        scale = results["scale"]
        s = scale["stage"]
        phases = ", ".join(f"{k} {v}" for k, v in s["seconds"].items())
        files = -(-scale["rows"] // scale["shard_rows"])
        lines.append(f"| {scale['rows']:,} | the dedup stage end to end (Ray tasks, {files} shard files) | "
                     f"**{s['wall_s']} s wall**, {s['cpu_s']} CPU s over all processes ({phases}); "
                     f"{s['clusters']:,} clusters, largest {s['largest_cluster']:,} memberships; **peak "
                     f"{s['peak_pss_gib']} GiB PSS / {s['peak_rss_gib']} GiB RSS summed over its {s['processes']} "
                     f"processes**, Ray's included; load {s['load'][0]}-{s['load'][1]} | | |")
        if "in_memory" in scale:
            lines.append(peer_row(scale["in_memory"], "in memory"))
    if "partial" in results:
        p = results["partial"]
        lines.append(f"| {p['rows']:,} | partial run: centroids trained, {p['slice_rows']:,} rows assigned, the rest "
                     f"estimated | ~{p['total_wall_s_est']:,} s on {p['cpus']} CPUs (train {p['train_s']} s, stage "
                     f"~{p['stage_cpu_s_est']:,} CPU s, rank + write ~{p['rank_resolve_write_s_est']} s); "
                     f"{p['clusters']:,} clusters, largest ~{p['largest_cluster_est']:,}; load {p['load']} | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recall-rows", type=int, default=200_000)
    parser.add_argument("--truth-fraction", type=float, default=0.05)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--scale-truth-rows", type=int, default=5000,
                        help="query rows of the exact search at --rows (0: no in-memory peers at that size)")
    parser.add_argument("--extrapolate", type=int, default=10_000_000)
    parser.add_argument("--slice-rows", type=int, default=100_000, help="rows of the partial run assigned")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--no-faiss-peer", action="store_true", help="no FAISS IVF range search")
    parser.add_argument("--faiss-queries", type=int, default=100_000,
                        help="rows whose FAISS range search is timed (projected to all rows)")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scratch", default=None, help="where the synthetic dataset folder is written")
    parser.add_argument("--out", default=None, help="also write the results here (JSON)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks every step runs (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.recall_rows, args.truth_fraction, args.rows, args.shard_rows = 21_000, 0.02, 3000, 1000
        args.scale_truth_rows, args.extrapolate, args.slice_rows, args.faiss_queries = 300, 30_000, 2000, 5000
    results: dict = {"threshold": THRESHOLD, "dim": DIM, "probes": near.PROBES, "cpus": os.cpu_count()}
    if not args.skip_recall:
        results["recall"] = recall_run(args.recall_rows, args.truth_fraction, not args.no_faiss_peer,
                                       args.faiss_queries)
        print(json.dumps(results["recall"]), flush=True)
    if not args.skip_scale:
        results["scale"] = scale_run(args.rows, args.shard_rows, args.scratch, args.scale_truth_rows,
                                     not args.no_faiss_peer, args.faiss_queries)
        print(json.dumps(results["scale"]), flush=True)
        results["partial"] = partial_run(args.extrapolate, args.slice_rows, results["scale"], os.cpu_count() or 1)
    print(json.dumps(results, indent=2))
    print("\n".join(table(results)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
