"""Loads the table definitions in schemas/*.yaml into pyarrow schemas (one source of truth for columns)."""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
import yaml

from curate.bundled import schema_path

_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "list<float32>": pa.list_(pa.float32()),
}


@lru_cache(maxsize=None)
def load(name: str) -> pa.Schema:
    """The pyarrow schema of table `name`, with each column's meaning kept as field metadata."""
    path = schema_path(name)
    spec = yaml.safe_load(path.read_text())
    fields = []
    for column in spec["columns"]:
        if column["type"] not in _TYPES:
            raise ValueError(f"{path}: column {column['name']} has unknown type {column['type']!r}")
        meta = {"meaning": column.get("meaning", "")}
        fields.append(pa.field(column["name"], _TYPES[column["type"]], metadata=meta))
    return pa.schema(fields)


def table(name: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts, missing keys = null) as a table with exactly the columns of schema `name`."""
    schema = load(name)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)
