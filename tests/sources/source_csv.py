"""A source's metadata CSV written as its publisher ships it, and the rows curate reads from it."""

import csv

from curate.sources import read


def write_csv(path, rows, header) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def rows_of(source: str, path, **kw) -> list[dict]:
    return [r for chunk in read(source, str(path), **kw) for r in chunk]
