"""Benchmark `curate stats` on a synthetic manifest (default 10M rows) against the bare DuckDB aggregates it runs.

The peer is the same two aggregate queries sent straight to DuckDB over read_parquet (no view, no Python
post-processing): the ratio is what our layer costs. Usage: python scripts/bench_stats.py [--rows N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import duckdb

from curate.stats.summary import COUNTS, DISTRIBUTIONS, summarize

SHARD_ROWS = 100_000


def make_manifest(root: str, rows: int) -> None:
    """Manifest shards shaped like a WebVid + LAION run: ~85% success, a handful of error reasons."""
    shards = os.path.join(root, "shards")
    os.makedirs(shards)
    con = duckdb.connect()
    for s in range(0, rows, SHARD_ROWS):
        n = min(SHARD_ROWS, rows - s)
        path = os.path.join(shards, f"{s // SHARD_ROWS:05d}.parquet").replace("'", "''")
        con.execute(f"""COPY (
            SELECT 'k' || i AS key, i AS row, CASE WHEN i % 3 = 0 THEN 'laion-coco' ELSE 'webvid' END AS source,
                   CASE WHEN i % 3 = 0 THEN 'image' ELSE 'video' END AS modality, 'https://x.test/' || i AS url,
                   NULL::VARCHAR AS path, 'caption number ' || i AS caption,
                   CASE WHEN hash(i) % 100 < 85 THEN 'success' WHEN hash(i) % 100 < 95 THEN 'failed_to_download'
                        ELSE 'failed_to_decode' END AS status,
                   CASE WHEN hash(i) % 100 < 85 THEN NULL
                        ELSE ['http_404', 'timeout', 'corrupt', 'html_body'][(1 + hash(i) % 4)::BIGINT] END AS error_reason,
                   NULL::VARCHAR AS error_message, 336 + (i % 200) AS width, 596 AS height,
                   CASE WHEN i % 3 = 0 THEN NULL ELSE 5.0 + (i % 30) END AS duration,
                   CASE WHEN i % 3 = 0 THEN NULL ELSE 25.0 END AS fps, 250 AS num_frames, 'h264' AS codec,
                   1000000 + i % 5000 AS size_bytes, md5(i::VARCHAR) AS sha256, '{s // SHARD_ROWS:05d}' AS shard,
                   '{{}}' AS extra
            FROM range({s}, {s + n}) t(i)) TO '{path}' (FORMAT parquet)""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1,000 rows, one pass: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeats = 1000, 1
    root = tempfile.mkdtemp(prefix="bench_stats_")
    try:
        make_manifest(root, args.rows)
        glob_sql = f"read_parquet('{os.path.join(root, 'shards', '*.parquet')}', union_by_name = true)"

        def bare():
            con = duckdb.connect()
            con.execute(COUNTS.replace("FROM samples", f"FROM {glob_sql}")).fetchall()
            con.execute(DISTRIBUTIONS.replace("FROM samples", f"FROM {glob_sql}")).fetchall()

        def ours():
            summarize(root)

        times = {"bare": [], "ours": []}
        for _ in range(args.repeats):  # interleaved, best of N, so both see the same cache state
            for name, fn in (("bare", bare), ("ours", ours)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        b, o = min(times["bare"]), min(times["ours"])
        print(f"\n{args.rows:,} manifest rows in {-(-args.rows // SHARD_ROWS)} shards, {os.cpu_count()} cores, best of {args.repeats}\n")
        print("| runner | seconds | ratio to bare DuckDB |\n|---|---|---|")
        print(f"| bare DuckDB (same two aggregates) | {b:.2f} | 1.00x |")
        print(f"| curate stats | {o:.2f} | {o / b:.2f}x |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
