"""Benchmark: the same work on object storage (a local S3 server, moto, on 127.0.0.1) vs the local disk.

Ratios, measured side by side in one run:
  query     `curate stats`-style aggregates over N manifest shards: DuckDB reading s3:// through fsspec
            (register_filesystem, what curate uses) vs pyarrow.dataset over the same s3fs filesystem scanned
            by DuckDB (the alternative), vs read_parquet on local disk.
  pipeline  download + score of a generated corpus served on 127.0.0.1: dataset folder in S3 vs on local disk.
  plan      planning a WebVid-shaped CSV (default 2M rows, 356 MiB; --plan-rows 10700000 for WebVid-10M's size)
            read from S3 vs from local disk: time and peak memory of the planning process. moto 5.2.5 answered
            500 to the CompleteMultipartUpload of the 1.6 GB 10.7M-row CSV here (its in-memory store), so the
            default stays at a size it accepts; a real store takes either.

moto keeps objects in memory and serves them from one Python process: it is a slower server than a real store
but shows what our layer adds (request counts, buffering) — not a forecast of S3 throughput.

    .venv/bin/python scripts/bench_storage.py [query] [pipeline] [plan] [--plan-rows 10700000] [--smoke]

--smoke: 1,000 rows each (the suite's check that it runs; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time


@contextlib.contextmanager
def s3_server():
    """moto in its own process on 127.0.0.1; the endpoint and fake credentials are pinned for this process and its
    children before any client is built."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    endpoint = f"http://127.0.0.1:{port}"
    # AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL for S3 clients: an inherited one (the test suite sets both for
    # its own server) sent the benchmark's requests to another server
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint, AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    log = open(os.path.join(tempfile.gettempdir(), "bench_storage_moto.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180  # moto's import alone took over 30 s on a loaded 2-core machine
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start on 127.0.0.1:{port} (see {log.name})")
            time.sleep(0.1)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        yield "s3://bench"
    finally:
        proc.terminate()
        proc.wait()


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def upload(local_dir: str, url: str) -> None:
    from curate import storage

    fs, path = storage.filesystem(url)
    fs.put(local_dir.rstrip("/") + "/", path, recursive=True)


def bench_query(bucket: str, shards: int, rows: int) -> dict:
    import duckdb
    import pyarrow.dataset as pads

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_stats import make_manifest

    from curate import storage
    from curate.stats.summary import COUNTS, DISTRIBUTIONS

    local = tempfile.mkdtemp(prefix="bench_storage_q_")
    try:
        make_manifest(local, rows)  # 100k-row shards
        total = rows
        remote = f"{bucket}/query"
        upload(local, remote)
        sqls = [COUNTS, DISTRIBUTIONS]

        def over(con, source):
            for sql in sqls:
                con.execute(sql.replace("FROM samples", f"FROM {source}")).fetchall()

        local_glob = os.path.join(local, "shards", "*.parquet")
        remote_glob = f"{remote}/shards/*.parquet"
        t_local = timed(lambda: over(duckdb.connect(), f"read_parquet('{local_glob}', union_by_name = true)"))
        t_fsspec = timed(lambda: over(storage.duckdb_connect(remote),
                                      f"read_parquet('{remote_glob}', union_by_name = true)"))

        def arrow_scan():
            fs, path = storage.filesystem(remote)
            dataset = pads.dataset(f"{path}/shards", format="parquet", filesystem=fs)
            con = duckdb.connect()
            con.register("manifest", dataset)
            over(con, "manifest")

        t_arrow = timed(arrow_scan)
        return {"rows": total, "shards": len(storage.glob(remote_glob)), "local_s": round(t_local, 3),
                "s3_duckdb_fsspec_s": round(t_fsspec, 3), "s3_pyarrow_dataset_s": round(t_arrow, 3),
                "fsspec_vs_local": round(t_fsspec / t_local, 1), "arrow_vs_local": round(t_arrow / t_local, 1)}
    finally:
        shutil.rmtree(local, ignore_errors=True)


def write_webvid_csv(path: str, rows: int) -> None:
    """A WebVid-10M-shaped CSV (videoid, contentUrl, duration, page_dir, name), ~150 bytes per row."""
    import duckdb

    duckdb.connect().execute(f"""COPY (
        SELECT 1000000 + i AS videoid,
               'https://ak.picdn.net/shutterstock/videos/' || (1000000 + i) || '/preview/stock-footage-' || i || '.mp4'
                   AS contentUrl,
               'PT00H00M' || lpad(((i % 50) + 5)::VARCHAR, 2, '0') || 'S' AS duration,
               (i % 5000)::VARCHAR || '_to_' || ((i % 5000) + 50)::VARCHAR AS page_dir,
               'Aerial shot of a coastline, waves, number ' || i || ', "quoted", sunset' AS name
        FROM range({rows}) t(i)) TO '{path}' (FORMAT csv, HEADER)""")


def plan_child(input_path: str, out: str) -> None:
    """In a child process: plan only (no download), print time and peak RSS."""
    from curate.download.plan import build_plan
    from curate.shards.folder import DatasetFolder

    start = time.perf_counter()
    n = build_plan(DatasetFolder(out), "webvid", input_path, {}, shard_size=1000)
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": n, "seconds": round(took, 3), "peak_rss_mib": round(peak)}))


def run_plan_child(input_path: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "_plan_child", input_path, out], capture_output=True, text=True,
                          check=True, env=dict(os.environ, CURATE_SCRATCH=tempfile.gettempdir()))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_plan(bucket: str, rows: int) -> dict:
    from curate import storage

    local = tempfile.mkdtemp(prefix="bench_storage_p_")
    try:
        csv_path = os.path.join(local, "webvid.csv")
        write_webvid_csv(csv_path, rows)
        size_mib = os.path.getsize(csv_path) / 2**20
        remote_csv = f"{bucket}/plan/webvid.csv"
        fs, path = storage.filesystem(remote_csv)
        fs.put_file(csv_path, path)
        from_local = run_plan_child(csv_path, os.path.join(local, "ds"))
        from_s3 = run_plan_child(remote_csv, f"{bucket}/plan/ds")
        return {"csv_mib": round(size_mib), "local": from_local, "s3": from_s3,
                "s3_vs_local_time": round(from_s3["seconds"] / from_local["seconds"], 2)}
    finally:
        shutil.rmtree(local, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_plan_child":
        plan_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("parts", nargs="*", default=["query", "pipeline", "plan"])
    parser.add_argument("--query-rows", type=int, default=1_000_000)
    parser.add_argument("--plan-rows", type=int, default=2_000_000)
    parser.add_argument("--smoke", action="store_true", help="1,000 rows each: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.query_rows = args.plan_rows = 1000
    results = {}
    with s3_server() as bucket:
        if "query" in args.parts:
            results["query"] = bench_query(bucket, 0, args.query_rows)
            print(json.dumps({"query": results["query"]}), flush=True)
        if "plan" in args.parts:
            results["plan"] = bench_plan(bucket, args.plan_rows)
            print(json.dumps({"plan": results["plan"]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
