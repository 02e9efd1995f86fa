"""The HTML page of a search: one thumbnail per hit with its rank, score, key and caption (self-contained)."""

from __future__ import annotations

import html

import pyarrow as pa

from curate import storage
from curate.stats.thumbnail import thumbnail


def build(root: str, query: str, hits: pa.Table) -> str:
    figures = []
    for hit in hits.to_pylist():
        thumb = thumbnail(root, hit["shard"], hit["key"], side=192)
        img = f'<img src="data:image/png;base64,{thumb}" alt="{html.escape(hit["key"])}">' if thumb else \
            "<div class='none'>(no preview)</div>"
        figures.append(f"<figure class='hit' data-key='{html.escape(hit['key'])}'>{img}<figcaption>"
                       f"<b>#{hit['rank']}</b> <span class='score'>{hit['score']:.4f}</span> "
                       f"<code>{html.escape(hit['key'])}</code><br>{html.escape(hit['caption'] or '')}"
                       "</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:16px}.grid{display:flex;flex-wrap:wrap;gap:12px}"
             "figure{margin:0;width:200px;font-size:12px}img{max-width:192px;max-height:192px}"
             ".none{width:192px;height:108px;background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>curate search: {html.escape(query)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(query)}</h1><p>{len(figures)} nearest samples "
            f"of <code>{html.escape(root)}</code> by CLIP cosine</p><div class='grid'>{''.join(figures)}</div>"
            "</body></html>")


def write(root: str, query: str, hits: pa.Table, out: str) -> str:
    """The page published whole as `out` (a local path or a URL)."""
    storage.write_bytes(out, build(root, query, hits).encode("utf-8"))
    return out
