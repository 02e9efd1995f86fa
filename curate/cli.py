"""The `curate` command line: download, retry-failed, stats, query, run (and the later stages' commands)."""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Optional

import typer

from curate.config import ConfigError, DownloadSection, load_pipeline
from curate.download.http import FetchPolicy
from curate.download.shard import DownloadOptions
from curate.provenance import ProvenanceMismatch
from curate.sources import READERS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate video/image collections into WebDataset training shards, query them, train on them.")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _options_from(section: DownloadSection) -> DownloadOptions:
    policy = FetchPolicy(connect_timeout=section.connect_timeout, read_timeout=section.read_timeout,
                         deadline=section.deadline, max_bytes=section.max_bytes, retries=section.retries,
                         allow_private=section.allow_private_addresses)
    return DownloadOptions(fetch=policy, thread_count=section.thread_count, max_pixels=section.max_pixels,
                           video_max_side=section.video_max_side, image_max_side=section.image_max_side,
                           image_thread_count=section.image_thread_count)


def _run_download(section: DownloadSection, out: str, force: bool, ray_address: Optional[str]) -> dict:
    from curate.download.job import download

    if section.source not in READERS:
        fail(f"unknown source {section.source!r}; choose one of {', '.join(READERS)}")
    if not os.path.exists(section.input):
        fail(f"input {section.input} does not exist")
    try:
        summary = download(section.source, section.input, out, source_options=section.source_options,
                           options=_options_from(section), shard_size=section.shard_size, limit=section.limit,
                           force=force, ray_address=ray_address)
    except ProvenanceMismatch as exc:
        fail(f"{out}: {exc}; rerun with --force to start this folder over")
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to continue", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    return summary


def _finish(summary: dict) -> None:
    typer.echo(json.dumps({k: v for k, v in summary.items()}, indent=None))
    if summary.get("failed_shards"):
        for item in summary["failed_shards"]:
            typer.echo(f"shard {item['shard']} failed: {item['error']}", err=True)
        raise typer.Exit(EXIT_FAILED)


@app.command("download")
def download_cmd(
    source: str = typer.Argument(..., help=f"One of: {', '.join(READERS)}."),
    input: str = typer.Argument(..., help="The source's metadata file or folder, in its distributed format."),
    out: str = typer.Option(..., "--out", help="Dataset folder to create or continue."),
    allow_private_addresses: bool = typer.Option(False, help="Permit loopback/private/link-local hosts (tests, demo, intranets)."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on (default: local)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N input rows."),
    shard_size: int = typer.Option(1000, min=1, help="Samples per shard."),
    thread_count: int = typer.Option(16, min=1, help="Concurrent video downloads per shard task."),
    video_max_side: Optional[int] = typer.Option(None, min=16, help="Re-encode videos whose longer side exceeds this."),
    image_max_side: Optional[int] = typer.Option(None, min=16, help="Downscale images whose longer side exceeds this."),
    caption_column: Optional[str] = typer.Option(None, help="laion-*/urls: the caption column to use."),
    images: Optional[str] = typer.Option(None, help="journeydb: folder holding the NNN.tgz image archives."),
    videos: Optional[str] = typer.Option(None, help="msrvtt: folder holding videoN.mp4 files."),
    retries: int = typer.Option(2, min=0, help="Retries for timeouts, 429 and 5xx (never other 4xx)."),
    force: bool = typer.Option(False, help="Start the folder over when its input or config changed."),
) -> None:
    """Download a source into a dataset folder of WebDataset shards with a Parquet manifest."""
    source_options = {k: v for k, v in {"caption_column": caption_column, "images": images,
                                        "videos": videos}.items() if v is not None}
    section = DownloadSection(source=source, input=input, source_options=source_options, shard_size=shard_size,
                              limit=limit, allow_private_addresses=allow_private_addresses,
                              thread_count=thread_count, video_max_side=video_max_side,
                              image_max_side=image_max_side, retries=retries)
    _finish(_run_download(section, out, force, ray_address))


@app.command("retry-failed")
def retry_failed_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
) -> None:
    """Re-attempt only the rows that failed to download or decode; successes are kept as they are."""
    from curate.download.job import retry_failed

    try:
        summary = retry_failed(dataset, ray_address)
    except FileNotFoundError as exc:
        fail(str(exc))
    _finish(summary)


@app.command("stats")
def stats_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Counts by source, modality, status and error reason; success rate; resolution/duration/fps quantiles."""
    from curate.stats.summary import render, summarize

    try:
        summary = summarize(dataset)
    except FileNotFoundError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary, indent=2) if as_json else render(summary))


def _print_table(table, fmt: str) -> None:
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        typer.echo(json.dumps(rows, default=str, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([[r[n] for n in names] for r in rows])
    else:
        cells = [[("" if r[n] is None else str(r[n]))[:60] for n in names] for r in rows]
        widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
        typer.echo("  ".join(n.ljust(w) for n, w in zip(names, widths)))
        typer.echo("  ".join("-" * w for w in widths))
        for c in cells:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(c, widths)))
        typer.echo(f"({len(rows)} rows)")


@app.command("query")
def query_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    sql: str = typer.Argument(..., help="One SELECT over the view `samples` (one row per input sample)."),
    format: str = typer.Option("table", "--format", help="table, csv or json."),
) -> None:
    """Run a read-only DuckDB query over the dataset folder."""
    from curate.stats.query import QueryError, connect, run

    if format not in ("table", "csv", "json"):
        fail("--format must be table, csv or json")
    try:
        table = run(connect(dataset), sql)
    except (QueryError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_table(table, format)


@app.command("run")
def run_cmd(
    pipeline: str = typer.Argument(..., help="Pipeline recipe YAML (see pipelines/)."),
    out: str = typer.Option(..., "--out", help="Dataset folder."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
    force: bool = typer.Option(False, help="Start over when the input or config changed."),
) -> None:
    """Run the stages of a pipeline recipe."""
    try:
        recipe = load_pipeline(pipeline)
    except ConfigError as exc:
        fail(str(exc))
    _finish(_run_download(recipe.download, out, force, ray_address))


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("demo_out", "--out", help="Folder for the corpus and the curated dataset."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
) -> None:
    """Generate the demo corpus, serve it on 127.0.0.1 and run pipelines/demo.yaml end to end."""
    from curate.demo.run import DEMO_RECIPE, prepare
    from curate.stats.summary import render, summarize

    srv, urls = prepare(out)
    try:
        recipe = load_pipeline(DEMO_RECIPE)
        recipe.download.input = urls
        dataset = os.path.join(out, "dataset")
        summary = _run_download(recipe.download, dataset, True, ray_address)
        typer.echo(json.dumps(summary))
        typer.echo(f"\n== curate stats {dataset}\n" + render(summarize(dataset)))
    finally:
        srv.shutdown()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
