"""A read-only DuckDB session over one dataset folder, with the view `samples` (one row per input sample)."""

from __future__ import annotations

import json
import os

import duckdb
import pyarrow as pa

from curate import storage
from curate.shards.folder import DatasetFolder


class QueryError(Exception):
    """A query that is not a single read-only SELECT, or that DuckDB rejects."""


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _written_at(folder: str) -> str:
    try:
        record = storage.read_json(storage.join(folder, "_provenance.json"))
        return str(record.get("run") or record.get("created_at") or "")
    except (OSError, ValueError):
        return ""


def _relative(path: str, root: str) -> str:
    if storage.is_remote(root):
        return path[len(root.rstrip("/")) + 1:]
    return os.path.relpath(path, root)


def score_tables(root: str) -> list[str]:
    """Score folders written by `curate score` (scores/<scorer>/*.parquet, each with a `key` column), newest
    run first: where two folders hold the same column, the newer one is the one `samples` shows."""
    folders = {storage.parent(p) for p in storage.glob(storage.join(root, "scores", "*", "*.parquet"))}
    return sorted(folders, key=lambda d: (_written_at(d), d), reverse=True)


def caption_runs(root: str) -> dict[str, str]:
    """{run name: its folder} for every caption run written by `curate caption` (captions/<run>/*.parquet)."""
    folders = {storage.parent(p) for p in storage.glob(storage.join(root, "captions", "*", "*.parquet"))}
    return {storage.basename(folder): folder for folder in sorted(folders)}


def caption_columns(run: str, names: list[str]) -> dict[str, str]:
    """{caption table column: its name in `samples`}: the text as caption_<run>, the rest as caption_<run>_<column>."""
    return {c: f"caption_{run}" if c == "caption" else f"caption_{run}_{c}" for c in names if c != "key"}


def column_sources(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """{score column: the scores/ folder it is read from} for a session made by connect()."""
    return json.loads(con.execute("SELECT value FROM _curate_columns").fetchall()[0][0])


def connect(root: str) -> duckdb.DuckDBPyConnection:
    """`samples` = every shard manifest, left-joined with every scorer's table and every caption run's table
    (columns caption_<run>, caption_<run>_<column>) on key. After the view is
    defined the session may read only inside the folder and cannot write files. A folder in object storage is
    read through fsspec (storage.duckdb_connect), with the same limits."""
    root = storage.absolute(root)
    folder = DatasetFolder(root)
    if not folder.complete_shards():
        raise FileNotFoundError(f"{root} has no complete shards (expected {folder.manifest_glob()})")
    con = storage.duckdb_connect(root)
    sql = f"SELECT m.* FROM read_parquet({_quote(folder.manifest_glob())}, union_by_name = true) m"
    columns = {c for (c,) in con.execute(
        f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet({_quote(folder.manifest_glob())}))").fetchall()}
    sources: dict[str, str] = {}
    for i, table in enumerate(score_tables(root)):
        path = storage.join(table, "*.parquet")
        names = [c for (c,) in con.execute(
            f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet({_quote(path)}))").fetchall()]
        new = [c for c in names if c != "key" and c not in columns]
        columns.update(new)
        sources.update({c: _relative(table, root) for c in new})
        picked = ", ".join(f's{i}."{c}"' for c in new) or "NULL AS _none"
        sql = (f"SELECT q.*, {picked} FROM ({sql}) q "
               f"LEFT JOIN read_parquet({_quote(path)}, union_by_name = true) s{i} USING (key)")
    for i, (run_name, table) in enumerate(caption_runs(root).items()):
        path = storage.join(table, "*.parquet")
        names = [c for (c,) in con.execute(
            f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet({_quote(path)}))").fetchall()]
        aliases = {c: a for c, a in caption_columns(run_name, names).items() if a not in columns}
        columns.update(aliases.values())
        sources.update({a: _relative(table, root) for a in aliases.values()})
        picked = ", ".join(f'c{i}."{c}" AS "{a}"' for c, a in aliases.items()) or "NULL AS _none"
        sql = (f"SELECT q.*, {picked} FROM ({sql}) q "
               f"LEFT JOIN read_parquet({_quote(path)}, union_by_name = true) c{i} USING (key)")
    con.execute(f"CREATE VIEW samples AS {sql}")
    con.execute("CREATE TABLE _curate_columns AS SELECT ? AS value", [json.dumps(sources)])
    con.execute(f"SET allowed_directories = [{_quote(root)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pa.Table:
    """Run one SELECT (or WITH ... SELECT); anything else — DDL, COPY, ATTACH, PRAGMA, several statements — is refused."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse query: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"expected exactly one statement, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"only SELECT queries are allowed (got {statements[0].type.name})")
    try:
        return con.sql(sql, params=params or None).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip()) from None
