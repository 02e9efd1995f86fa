"""The `curate` command line: download, retry-failed, stats, query, run (and the later stages' commands)."""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Optional

import typer

from curate.config import ConfigError, DownloadSection, ScoreSection, SelectSection, load_pipeline
from curate.download.http import FetchPolicy
from curate.download.shard import DownloadOptions
from curate.provenance import ProvenanceMismatch
from curate.sources import READERS
from curate.train import commands as train_commands

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate video/image collections into WebDataset training shards, query them, train on them.")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DEMO_TRAIN_RECIPE = "tiny_f_base"  # a bundled recipe, found by curate.bundled.recipe_path


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _options_from(section: DownloadSection) -> DownloadOptions:
    policy = FetchPolicy(connect_timeout=section.connect_timeout, read_timeout=section.read_timeout,
                         deadline=section.deadline, max_bytes=section.max_bytes, retries=section.retries,
                         allow_private=section.allow_private_addresses)
    return DownloadOptions(fetch=policy, thread_count=section.thread_count, max_pixels=section.max_pixels,
                           video_max_side=section.video_max_side, image_max_side=section.image_max_side,
                           image_thread_count=section.image_thread_count, decode_check=section.decode_check)


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
    if summary["failure_rate"] > section.max_failure_rate:
        summary["failed_shards"].append({"shard": "*", "error": f"failure rate {summary['failure_rate']:.1%} exceeds "
                                                                   f"the budget {section.max_failure_rate:.1%}"})
    return summary


def _finish(summary: dict, echo: bool = True) -> None:
    if echo:
        typer.echo(json.dumps(summary))
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
    decode_check: bool = typer.Option(False, help="Also decode each video's first frame at download (~5 ms per clip)."),
    caption_column: Optional[str] = typer.Option(None, help="laion-*/urls: the caption column to use."),
    images: Optional[str] = typer.Option(None, help="journeydb: folder holding the NNN.tgz image archives."),
    videos: Optional[str] = typer.Option(None, help="msrvtt: folder holding videoN.mp4 files."),
    retries: int = typer.Option(2, min=0, help="Retries for timeouts, 429 and 5xx (never other 4xx)."),
    max_failure_rate: float = typer.Option(1.0, min=0.0, max=1.0, help="Exit 1 if a larger fraction of rows failed to download or decode."),
    force: bool = typer.Option(False, help="Start the folder over when its input or config changed."),
) -> None:
    """Download a source into a dataset folder of WebDataset shards with a Parquet manifest."""
    source_options = {k: v for k, v in {"caption_column": caption_column, "images": images,
                                        "videos": videos}.items() if v is not None}
    section = DownloadSection(source=source, input=input, source_options=source_options, shard_size=shard_size,
                              limit=limit, allow_private_addresses=allow_private_addresses,
                              thread_count=thread_count, video_max_side=video_max_side,
                              image_max_side=image_max_side, decode_check=decode_check, retries=retries, max_failure_rate=max_failure_rate)
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


def _parse_size(text: str, option: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w < 8 or h < 8:
            raise ValueError
        return w, h
    except ValueError:
        fail(f"{option} must look like 512x320 (width x height)")


def _run_score(dataset: str, section: ScoreSection, force: bool, ray_address: Optional[str]) -> dict:
    from curate.scoring.stage import score
    from curate.scoring.weights import WeightsMissing

    try:
        return score(dataset, list(section.scorers), clip_model=section.clip_model,
                     aesthetic_model=section.aesthetic_model, batch_size=section.batch_size, actors=section.actors,
                     frames=section.frames, positions=section.positions, dedup_threshold=section.dedup_threshold,
                     force=force, address=ray_address)
    except WeightsMissing as exc:
        fail(f"model weights missing: {exc}")
    except ProvenanceMismatch as exc:
        fail(f"{dataset}: {exc}; rerun with --force to rescore")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to continue", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _run_select(dataset: str, section: SelectSection, out: str, force: bool, ray_address: Optional[str]) -> dict:
    from curate.predicate import PredicateError
    from curate.selection import Selection, select
    from curate.stats.query import QueryError

    sel = Selection(where=section.where, top=section.top, by=section.by, quotas=dict(section.quotas),
                    video_size=tuple(section.video_size), image_size=tuple(section.image_size),
                    max_frames=section.max_frames)
    try:
        return select(dataset, out, sel, force=force, address=ray_address)
    except (PredicateError, QueryError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except ProvenanceMismatch as exc:
        fail(f"{out}: {exc}; rerun with --force to start it over")
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to continue", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command("score")
def score_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    scorers: str = typer.Option("clip,aesthetic,motion,quality,dedup", help="Comma-separated: clip, aesthetic, motion, quality, dedup."),
    clip_model: Optional[str] = typer.Option(None, help="open_clip NAME:PRETRAINED, or a local checkpoint path (default ViT-L-14:openai)."),
    aesthetic_model: Optional[str] = typer.Option(None, help="Path to sac+logos+ava1-l14-linearMSE.pth (default: the standard caches)."),
    batch_size: int = typer.Option(32, min=1, help="Samples per model batch."),
    actors: Optional[int] = typer.Option(None, min=1, help="Scorer actors (default: one per GPU, else 1)."),
    frames: int = typer.Option(3, min=1, help="Frames sampled per video."),
    positions: str = typer.Option("first,middle,last", help="Frame positions: first,middle,last or uniform."),
    dedup_threshold: float = typer.Option(0.95, help="CLIP cosine at or above which a sample is a near-duplicate."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
    force: bool = typer.Option(False, help="Rescore when the scorer config changed."),
) -> None:
    """Add score columns (queryable in `samples`); never drops a row. Resumable per shard."""
    section = ScoreSection(scorers=[s.strip() for s in scorers.split(",") if s.strip()], clip_model=clip_model,
                           aesthetic_model=aesthetic_model, batch_size=batch_size, actors=actors, frames=frames,
                           positions=positions, dedup_threshold=dedup_threshold)
    typer.echo(json.dumps(_run_score(dataset, section, force, ray_address)))


@app.command("select")
def select_cmd(
    dataset: str = typer.Argument(..., help="Scored dataset folder."),
    out: str = typer.Option(..., "--out", help="Training dataset folder to write."),
    where: str = typer.Option("TRUE", help="Predicate over `samples` columns, e.g. \"aesthetic_score >= 5.5 AND clip_score >= 0.28\"."),
    top: Optional[float] = typer.Option(None, help="Keep this fraction (0-1] of what passes --where, best by --by."),
    by: Optional[str] = typer.Option(None, help="Column that ranks samples for --top and --quota."),
    quota: list[str] = typer.Option([], help="SOURCE=N: at most N samples from SOURCE (repeatable)."),
    video_size: str = typer.Option("512x320", help="Training geometry for videos (resize + center crop)."),
    image_size: str = typer.Option("512x512", help="Training geometry for images."),
    max_frames: Optional[int] = typer.Option(None, min=1, help="Cap the frames kept per video."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
    force: bool = typer.Option(False, help="Start --out over when the selection changed."),
) -> None:
    """Write the samples that pass the thresholds, re-encoded to the training geometry, as a new dataset folder."""
    quotas = {}
    for item in quota:
        source, _, n = item.partition("=")
        if not n.isdigit():
            fail(f"--quota {item!r}: expected SOURCE=N")
        quotas[source] = int(n)
    section = SelectSection(where=where, top=top, by=by, quotas=quotas,
                            video_size=list(_parse_size(video_size, "--video-size")),
                            image_size=list(_parse_size(image_size, "--image-size")), max_frames=max_frames)
    _finish(_run_select(dataset, section, out, force, ray_address))


@app.command("report")
def report_cmd(
    dataset: str = typer.Argument(..., help="Scored dataset folder."),
    out: str = typer.Option("report.html", "--out", help="HTML file to write."),
    where: Optional[str] = typer.Option(None, help="Selection predicate whose thresholds are drawn and counted."),
) -> None:
    """Static HTML: score histograms per source with thresholds, kept/dropped counts, thumbnails at quantiles."""
    from curate.predicate import PredicateError
    from curate.stats.query import QueryError
    from curate.stats.report import write

    try:
        typer.echo(write(dataset, out, where))
    except (PredicateError, QueryError, FileNotFoundError) as exc:
        fail(str(exc))


@app.command("run")
def run_cmd(
    pipeline: str = typer.Argument(..., help="Pipeline recipe YAML (see pipelines/)."),
    out: str = typer.Option(..., "--out", help="Dataset folder."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
    force: bool = typer.Option(False, help="Start over when the input or config changed."),
    describe: bool = typer.Option(False, help="Print the plan (stages, inputs, outputs, resources) and exit."),
) -> None:
    """Run the stages of a pipeline recipe: download, then score and select when the recipe has them."""
    try:
        recipe = load_pipeline(pipeline)
    except ConfigError as exc:
        fail(str(exc))
    if describe:
        typer.echo(describe_plan(recipe, out))
        return
    _run_stages(recipe, out, force, ray_address)


def describe_plan(recipe, out: str) -> str:
    """What `curate run` will do, stage by stage, before it does it."""
    dl = recipe.download
    lines = [f"pipeline {recipe.name}: " + " -> ".join(
        s for s, on in (("download", True), ("score", recipe.score), ("select", recipe.select)) if on),
        f"  download  {dl.source} from {dl.input}" + (f" (first {dl.limit} rows)" if dl.limit else ""),
        f"            shards of {dl.shard_size} samples -> {os.path.join(out, 'shards')}/NNNNN.tar|.parquet",
        f"            1 CPU per shard task, {dl.thread_count} video fetches each, img2dataset with "
        f"{dl.image_thread_count} threads for images; private addresses "
        f"{'ALLOWED' if dl.allow_private_addresses else 'refused'}; {dl.retries} retries; byte cap {dl.max_bytes}"]
    if recipe.score:
        from curate.scoring.stage import run_name

        sc = recipe.score
        models = [s for s in sc.scorers if s in ("clip", "aesthetic")]
        lines += [f"  score     {', '.join(sc.scorers)} on {sc.frames} frames ({sc.positions}), batch {sc.batch_size}"
                  f" -> {os.path.join(out, 'scores', run_name(list(sc.scorers)))}/",
                  "            decoding in CPU tasks; " + (f"{', '.join(models)} in an actor pool, 1 GPU per actor when "
                                                           "the cluster has GPUs" if models else "weight-free, CPU only")]
    if recipe.select:
        se = recipe.select
        beside = os.path.dirname(os.path.abspath(out))
        target = se.out if os.path.isabs(se.out) else os.path.join(beside, se.out)
        lines += [f"  select    WHERE {se.where}" + (f", top {se.top} by {se.by}" if se.top else "")
                  + (f", quotas {se.quotas}" if se.quotas else ""),
                  f"            videos {se.video_size[0]}x{se.video_size[1]}"
                  + (f" (<= {se.max_frames} frames)" if se.max_frames else "")
                  + f", images {se.image_size[0]}x{se.image_size[1]} -> {target}"]
    return "\n".join(lines)


def _run_stages(recipe, out: str, force: bool, ray_address: Optional[str]) -> dict:
    results = {"download": _run_download(recipe.download, out, force, ray_address)}
    typer.echo(json.dumps({"download": results["download"]}))
    _finish(results["download"], echo=False)
    if recipe.score:
        results["score"] = _run_score(out, recipe.score, force, ray_address)
        typer.echo(json.dumps({"score": results["score"]}))
    if recipe.select:
        beside = os.path.dirname(os.path.abspath(out))
        target = recipe.select.out if os.path.isabs(recipe.select.out) else os.path.join(beside, recipe.select.out)
        results["select"] = _run_select(out, recipe.select, target, force, ray_address)
        results["select"]["out"] = target
        typer.echo(json.dumps({"select": results["select"]}))
        _finish(results["select"], echo=False)
    return results


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("demo_out", "--out", help="Folder for the corpus and the curated dataset."),
    train_steps: int = typer.Option(300, min=0, help="Steps of tiny F-base training on the selection (0 skips training)."),
    ray_address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray cluster to run on."),
) -> None:
    """Generate the demo corpus, serve it on 127.0.0.1, run pipelines/demo.yaml end to end, then train a tiny
    model on the selected shards and sample a GIF from it."""
    from curate.demo.run import DEMO_RECIPE, prepare
    from curate.stats.summary import render, summarize

    srv, urls = prepare(out)
    try:
        recipe = load_pipeline(DEMO_RECIPE)
        recipe.download.input = urls
        dataset = os.path.join(out, "dataset")
        typer.echo("note: no pretrained CLIP / aesthetic weights are available offline, so this demo scores and "
                   "selects with the weight-free scorers (motion, quality, dedup); with weights in the standard "
                   "caches add clip and aesthetic to pipelines/demo.yaml.")
        results = _run_stages(recipe, dataset, True, ray_address)
        typer.echo(f"\n== curate stats {dataset}\n" + render(summarize(dataset)))
        if recipe.select:
            from curate.stats.report import write

            page = write(dataset, os.path.join(out, "report.html"), recipe.select.where)
            typer.echo(f"\n== report: {page}\n== selected for training: {results['select']['out']} "
                       f"({results['select']['kept']} kept, {results['select']['dropped']} dropped)")
            if train_steps:
                _demo_train(results["select"]["out"], os.path.join(out, "run"), train_steps)
    finally:
        srv.shutdown()


def _demo_train(data: str, run_dir: str, steps: int) -> None:
    from pathlib import Path

    recipe = Path(DEMO_TRAIN_RECIPE)
    typer.echo(f"\n== curate train {recipe.name} --data {data} --steps {steps} --out {run_dir}")
    train_commands.train(recipe=recipe, data=[Path(data)], steps=steps, out=Path(run_dir))
    gif = Path(run_dir) / "sample.gif"
    typer.echo(f"\n== curate sample {run_dir} --prompt ... --out {gif}")
    train_commands.sample(checkpoint=Path(run_dir), prompt="a red circle moving on a teal background", out=gif,
                          frames=8, steps=25, guidance=4.0)


# The trainer's commands live with the trainer; registered here so `curate --help` lists every stage.
app.command("train")(train_commands.train)
app.command("sample")(train_commands.sample)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
