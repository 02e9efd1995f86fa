"""Plans a download: source rows -> one deduplicated samples table, each row assigned to a shard.

Images and videos never share a shard, nor do media that will be stored under different member extensions:
WebDataset clients (Hugging Face datasets, Ray Data) infer one set of columns from the first samples, and a
.jpg sample and an .mp4 (or a .png) sample have different columns. The extension is predicted here: remote
images are re-encoded to JPEG by img2dataset, local images keep their format (the file's extension), videos
are .webm when the name says so and .mp4 otherwise. A file whose content contradicts its name can still land
under another extension. Clips cut from one parent video (Panda-70M's windows) share a shard, so that the parent is
fetched once: a shard may then hold up to (clips per parent - 1) more rows than the shard size."""

from __future__ import annotations

import os
import shutil

import duckdb
import pyarrow.parquet as pq

from curate import schema, sources, storage
from curate.download.shard import DUPLICATE_PREFIX
from curate.shards.folder import DatasetFolder


def build_plan(folder: DatasetFolder, source: str, input_path: str, source_options: dict,
               shard_size: int, limit: int | None = None) -> int:
    """Stream the source into parts, then one DuckDB pass: repeated keys keep the first occurrence (by input
    row) and later ones become `KEY_dupN` rows marked as duplicates; rows are numbered into shards in input
    order. Returns the number of planned rows. Memory stays bounded: the reader's chunk, and DuckDB's working set
    capped at CURATE_PLAN_MEMORY (default 1GB; beyond it DuckDB spills to local disk).
    The parts and the plan are written locally (beside the plan, or in a local scratch folder when the dataset
    is in object storage, whence the finished plan is uploaded as one object)."""
    staging = storage.staging_dir(storage.parent(folder.plan_path))
    try:
        return _plan(folder, staging, source, input_path, source_options, shard_size, limit)
    finally:
        if storage.is_remote(folder.plan_path):
            shutil.rmtree(staging, ignore_errors=True)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Rows numbered into shards within their member group. Clips cut from one parent video share the shard of the
# parent's first clip (fetched once); renumbering the shards then leaves no empty shard number behind a parent
# with more clips than a shard holds. Sources without parents skip those joins (measured on 600k WebVid rows:
# they add about a sixth to the SQL time).
_UNPARENTED = """numbered AS (
            SELECT *, group_row // $shard_size AS group_shard FROM counted"""
_PARENTED = """parents AS (
            SELECT member_group, parent_key, min(group_row) AS parent_row FROM counted
            WHERE parent_key IS NOT NULL GROUP BY member_group, parent_key
          ), parented AS (
            SELECT counted.*, coalesce(parent_row, group_row) // $shard_size AS parent_shard
            FROM counted LEFT JOIN parents USING (member_group, parent_key)
          ), renumbered AS (
            SELECT member_group, parent_shard,
                   row_number() OVER (PARTITION BY member_group ORDER BY parent_shard) - 1 AS group_shard
            FROM (SELECT DISTINCT member_group, parent_shard FROM parented)
          ), numbered AS (
            SELECT * FROM parented JOIN renumbered USING (member_group, parent_shard)"""


def _plan(folder: DatasetFolder, staging: str, source: str, input_path: str, source_options: dict,
          shard_size: int, limit: int | None) -> int:
    parts_dir = os.path.join(staging, "parts")
    shutil.rmtree(parts_dir, ignore_errors=True)
    os.makedirs(parts_dir)
    total, parented = 0, False
    for i, chunk in enumerate(sources.read(source, input_path, **source_options)):
        if limit is not None:
            chunk = chunk[: max(0, limit - total)]
        if chunk:
            pq.write_table(schema.table("samples", chunk), os.path.join(parts_dir, f"{i:06d}.parquet"))
            total += len(chunk)
            parented = parented or any(row["parent_key"] for row in chunk)
        if limit is not None and total >= limit:
            break
    if total == 0:
        raise ValueError(f"{source} input {input_path} has no rows")
    tmp = os.path.join(staging, "samples.parquet.tmp")
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    # DuckDB would hold every row for the window functions and the final sort (2.4 GB at 1M WebVid rows, ~10x
    # that for WebVid-10M); capped, it spills to local disk beside the parts (1.3 GB peak at 1M rows, no slower)
    con.execute("SET memory_limit = " + _literal(os.environ.get("CURATE_PLAN_MEMORY", "1GB")))
    con.execute("SET temp_directory = " + _literal(os.path.join(staging, "spill")))
    columns = [f.name for f in schema.load("samples") if f.name not in ("key", "input_error")]
    select = ", ".join(columns)
    con.execute(
        f"""COPY (
          WITH ranked AS (
            SELECT *, row_number() OVER (PARTITION BY key ORDER BY row) AS occurrence,
                   first_value(row) OVER (PARTITION BY key ORDER BY row) AS first_row,
                   lower(regexp_extract(coalesce(path, url, ''), $name_ext, 1)) AS name_ext
            FROM read_parquet($parts, union_by_name = true)
          ), grouped AS (
            SELECT *, coalesce(modality, '') || '/' || CASE
                WHEN modality = 'video' THEN (CASE WHEN name_ext = 'webm' THEN 'webm' ELSE 'mp4' END)
                WHEN path IS NULL OR name_ext IN ('jpeg', 'jpe', 'jfif') THEN 'jpg'
                ELSE name_ext END AS member_group
            FROM ranked
          ), counted AS (
            SELECT *, row_number() OVER (PARTITION BY member_group ORDER BY row) - 1 AS group_row FROM grouped
          ), {_PARENTED if parented else _UNPARENTED}
          ), offsets AS (  -- shards of groups met earlier come first, so shard numbers stay 0..N-1
            SELECT member_group, coalesce(sum(max(group_shard) + 1) OVER (ORDER BY min(row)
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first_shard
            FROM numbered GROUP BY member_group
          )
          SELECT CASE WHEN occurrence = 1 THEN key ELSE key || '_dup' || (occurrence - 1) END AS key,
                 {select},
                 CASE WHEN occurrence = 1 THEN input_error
                      ELSE $dup || key || ' (input row ' || first_row || ')' END AS input_error,
                 CAST(first_shard + group_shard AS BIGINT) AS shard_no
          FROM numbered JOIN offsets USING (member_group) ORDER BY row
        ) TO {_literal(tmp)} (FORMAT parquet, ROW_GROUP_SIZE 100000)""",
        {"parts": os.path.join(parts_dir, "*.parquet"), "dup": DUPLICATE_PREFIX, "shard_size": shard_size,
         "name_ext": r"\.([A-Za-z0-9]+)(\?.*)?$"},
    )
    con.close()
    storage.put(tmp, folder.plan_path)
    shutil.rmtree(parts_dir, ignore_errors=True)
    shutil.rmtree(os.path.join(staging, "spill"), ignore_errors=True)
    return total
