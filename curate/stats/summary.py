"""`curate stats`: counts by source, modality, status and error reason; success rate; media distributions."""

from __future__ import annotations

from curate.stats.query import connect

COUNTS = """
SELECT grouping(source, modality, status, error_reason) AS level, source, modality, status, error_reason,
       count(*) AS n FROM samples
GROUP BY GROUPING SETS ((), (source), (modality), (status), (error_reason), (source, status))
"""
DISTRIBUTIONS = """
SELECT modality,
       count(*) AS n,
       quantile_cont(width, [0.05, 0.25, 0.5, 0.75, 0.95]) AS width,
       quantile_cont(height, [0.05, 0.25, 0.5, 0.75, 0.95]) AS height,
       quantile_cont(duration, [0.05, 0.25, 0.5, 0.75, 0.95]) AS duration,
       quantile_cont(fps, [0.05, 0.25, 0.5, 0.75, 0.95]) AS fps,
       quantile_cont(num_frames, [0.05, 0.25, 0.5, 0.75, 0.95]) AS num_frames,
       sum(size_bytes) AS bytes
FROM samples WHERE status = 'success' GROUP BY modality ORDER BY modality
"""
QUANTILES = ("p5", "p25", "p50", "p75", "p95")


def summarize(root: str) -> dict:
    con = connect(root)
    total, by = 0, {"source": {}, "modality": {}, "status": {}, "error_reason": {}, "source_status": {}}
    # grouping() bitmask, highest bit = source: which columns are aggregated away in each grouping set
    levels = {0b1111: "total", 0b0111: "source", 0b1011: "modality", 0b1101: "status", 0b1110: "error_reason",
              0b0101: "source_status"}
    for level, source, modality, status, reason, n in con.execute(COUNTS).fetchall():
        kind = levels[level]
        if kind == "total":
            total = n
        elif kind == "source_status":
            by["source_status"].setdefault(source, {})[status] = n
        elif kind == "error_reason":
            if reason is not None:
                by["error_reason"][reason] = n
        else:
            by[kind][{"source": source, "modality": modality, "status": status}[kind]] = n
    dist = {}
    for row in con.execute(DISTRIBUTIONS).fetchall():
        modality, n, *quantiles, size = row
        dist[modality] = {"count": n, "bytes": int(size or 0)}
        for name, values in zip(("width", "height", "duration", "fps", "num_frames"), quantiles):
            if values and values[0] is not None:
                dist[modality][name] = dict(zip(QUANTILES, (round(v, 3) for v in values)))
    successes = by["status"].get("success", 0)
    return {"samples": total, "success_rate": round(successes / total, 4) if total else 0.0, **by,
            "distributions": dist}


def render(summary: dict) -> str:
    """Plain-text report for a terminal."""
    lines = [f"samples: {summary['samples']}   success rate: {summary['success_rate']:.1%}"]
    for title in ("source", "modality", "status", "error_reason"):
        if summary[title]:
            lines.append(f"\nby {title.replace('_', ' ')}:")
            width = max(len(k) for k in summary[title])
            for name, n in sorted(summary[title].items(), key=lambda kv: -kv[1]):
                lines.append(f"  {name:<{width}}  {n:>10}")
    for modality, dist in summary["distributions"].items():
        lines.append(f"\n{modality} (success: {dist['count']}, {dist['bytes'] / 1e6:.1f} MB)   p5 / p25 / p50 / p75 / p95")
        for name in ("width", "height", "duration", "fps", "num_frames"):
            if name in dist:
                lines.append(f"  {name:<10}  " + " / ".join(f"{v:g}" for v in dist[name].values()))
    return "\n".join(lines)
