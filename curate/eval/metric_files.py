"""Where a per-clip metric's result goes: its JSON (value, counts, protocol) and a JSONL of the per-clip rows
beside it, each published whole (temporary, fsync, rename: curate.storage)."""

from __future__ import annotations

import json
import os

from curate import storage


def write_metric(target: str, result: dict, rows: list[dict]) -> dict:
    """TARGET.json gets `result`, TARGET.jsonl the rows (rows first: a result never points at missing rows)."""
    storage.makedirs(storage.parent(storage.absolute(target)))
    rows_path = os.path.splitext(target)[0] + ".jsonl"
    storage.write_bytes(rows_path, "".join(json.dumps(row) + "\n" for row in rows).encode())
    storage.write_json(target, result)
    return result
