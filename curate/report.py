"""`curate report`: a static HTML page (embedded PNGs) of score distributions per source, the thresholds
of a selection drawn on them, kept/dropped counts, and thumbnails at score quantiles."""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

from curate import storage
from curate.predicate import check_predicate, comparisons
from curate.stats.query import connect, run
from curate.stats.thumbnail import thumbnail

SCORE_COLUMNS = ("clip_score", "aesthetic_score", "motion_score", "sharpness", "brightness", "contrast",
                 "black_border_fraction", "static_frame_fraction", "ocr_text_area", "ocr_static_text_area")
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def thresholds(predicate: str, columns) -> dict[str, list[tuple[str, float]]]:
    """Per column, the (operator, number) comparisons of a predicate, read by the grammar that select runs,
    to draw on that column's histogram."""
    found: dict[str, list[tuple[str, float]]] = {}
    for column, op, value in comparisons(predicate, columns):
        found.setdefault(column, []).append((op, value))
    return found


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


HEAVY_TAIL = 100.0  # max / min above which a positive score column is drawn on a log axis (sharpness: 0.2 .. 14,700)


def log_scale(values: np.ndarray) -> bool:
    """Heavy-tailed positive values (sharpness, noise) need a log axis: on a linear one nearly all fall in one bin."""
    return len(values) > 1 and values.min() > 0 and values.max() / values.min() > HEAVY_TAIL


def histogram_bins(values: np.ndarray, count: int = 30):
    """Bin edges: log-spaced for heavy-tailed values (see log_scale), else even."""
    if not len(values):
        return 10
    if log_scale(values):
        return np.geomspace(values.min(), values.max(), count + 1)
    return np.histogram_bin_edges(values, bins=count)


def _histogram(values_by_source: dict[str, np.ndarray], column: str, lines: list[tuple[str, float]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 2.8))
    allv = np.concatenate([v for v in values_by_source.values() if len(v)]) if values_by_source else np.array([])
    bins = histogram_bins(allv)
    if log_scale(allv):
        ax.set_xscale("log")
    for source, values in sorted(values_by_source.items()):
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{source} (n={len(values)})")
    for op, value in lines:
        ax.axvline(value, color="crimson", linestyle="--", linewidth=1.2)
        ax.annotate(f"{op} {value:g}", (value, ax.get_ylim()[1] * 0.9), color="crimson", fontsize=8, ha="left")
    ax.set_xlabel(column)
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)
    out = _png(fig)
    plt.close(fig)
    return out


def _dedup_sweep(root: str) -> str:
    """Rows the dedup stage would flag as near-duplicates at each threshold of its sweep, to pick one by looking."""
    from curate import dedup
    from curate.dedup.stage import stored_sweep

    sweep = stored_sweep(storage.join(root, "scores", dedup.NAME, "all.parquet"))
    if not sweep:
        return ""
    rows = "".join(f"<tr><td>{t}</td><td>{n}</td></tr>" for t, n in sorted(sweep.items()))
    return ("<h2>Near-duplicate threshold sweep</h2><p>Rows flagged as near-duplicates (CLIP cosine) at each "
            "threshold; set it with <code>curate score --dedup-threshold</code>.</p><table id='dedup-sweep'>"
            f"<tr><th>threshold</th><th>rows flagged</th></tr>{rows}</table>")


def build(root: str, where: str | None = None) -> str:
    con = connect(root)
    columns = run(con, "SELECT * FROM samples LIMIT 0").column_names
    predicate = check_predicate(where, columns) if where else None
    scores = [c for c in SCORE_COLUMNS if c in columns]
    shown = root if storage.is_remote(root) else os.path.abspath(root)
    parts = [f"<h1>curate report</h1><p>dataset: <code>{html.escape(shown)}</code></p>"]
    kept_sql = f"({predicate})" if predicate else "TRUE"
    counts = run(con, f"SELECT source, count(*) FILTER (WHERE status = 'success') AS success, "
                      f"count(*) FILTER (WHERE status = 'success' AND {kept_sql}) AS kept, count(*) AS total "
                      f"FROM samples GROUP BY source ORDER BY source").to_pylist()
    parts.append(f"<h2>Selection</h2><p>predicate: <code>{html.escape(predicate or 'none')}</code></p><table>"
                 "<tr><th>source</th><th>samples</th><th>success</th><th>kept</th><th>dropped</th></tr>")
    for r in counts:
        parts.append(f"<tr><td>{html.escape(r['source'])}</td><td>{r['total']}</td><td>{r['success']}</td>"
                     f"<td>{r['kept']}</td><td>{r['success'] - r['kept']}</td></tr>")
    parts.append("</table>")
    parts.append(_dedup_sweep(root))
    if not scores:
        parts.append("<p>No score columns yet: run <code>curate score</code> first.</p>")
    lines = thresholds(predicate, columns) if predicate else {}
    for column in scores:
        rows = run(con, f'SELECT source, "{column}" AS v FROM samples WHERE "{column}" IS NOT NULL').to_pylist()
        by_source: dict[str, list] = {}
        for r in rows:
            by_source.setdefault(r["source"], []).append(r["v"])
        parts.append(f"<h2>{column}</h2>")
        if not rows:
            parts.append("<p>no values</p>")
            continue
        parts.append(f'<img src="data:image/png;base64,{_histogram({s: np.array(v) for s, v in by_source.items()}, column, lines.get(column, []))}">')
        values = run(con, f'SELECT quantile_disc("{column}", {list(QUANTILES)}) AS v FROM samples').column("v")[0].as_py()
        picks = []
        for q, value in zip(QUANTILES, values):  # quantile_disc returns real values: one sample holds each
            hit = run(con, f'SELECT key, shard, modality, caption, "{column}" AS v FROM samples WHERE "{column}" = ? '
                           "ORDER BY key LIMIT 1", [value]).to_pylist()
            picks += [dict(hit[0], q=q)] if hit else []
        parts.append("<div class='sheet'>")
        for p in picks:
            thumb = thumbnail(root, p["shard"], p["key"])
            img = f'<img src="data:image/png;base64,{thumb}">' if thumb else "<div>(no preview)</div>"
            parts.append(f"<figure>{img}<figcaption>q{p['q']:.2f}: {p['v']:.3g}<br>"
                         f"{html.escape((p['caption'] or '')[:60])}</figcaption></figure>")
        parts.append("</div>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px}.sheet{display:flex;gap:8px;flex-wrap:wrap}"
             "figure{margin:0;width:140px;font-size:11px}")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>curate report</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"


def write(root: str, out: str, where: str | None = None) -> str:
    """The page for `root` published whole as `out` (a local path or a URL)."""
    storage.write_bytes(out, build(root, where).encode("utf-8"))
    return out
