"""The `curate` command line: thin wrappers that build a stage's options from flags and run it.

Each data command's flags are generated from its option dataclass (curate/config.py), so a flag, its default
and its recipe key are one field. Exit codes: 0 done, 1 some shards failed or the failure budget was exceeded
(the folder is kept; rerun to continue), 2 bad usage or an input/config that cannot be used, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from typing import Optional

import typer

from curate.cli_params import section_from_flags, with_options
from curate.config import CaptionSection, ConfigError, SelectSection
from curate.download.stage import DownloadSection
from curate.eval.fvd_options import FVDOptions
from curate.eval.generate import GenerateOptions
from curate.scoring.options import ScoreSection
from curate.split.options import SplitSection
from curate.train.sampler_options import SamplerOptions
from curate.train import commands as train_commands

# rich_markup_mode=None: click's plain help; rich's table cuts long option names ("--max-failure-…") at 80 columns
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Curate video/image collections into WebDataset training shards, query them, train on them.")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
RAY_ADDRESS = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to run on (default: local).")
FORCE = typer.Option(False, "--force", help="Start over when the input or settings changed since the last run.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when torch can use a GPU).")


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def usage_errors(where: str = ""):
    """Every error a user can fix becomes one line and exit 2; Ctrl-C says how to continue."""
    from curate.predicate import PredicateError
    from curate.provenance import ProvenanceMismatch
    from curate.weightfile import WeightsMissing
    from curate.stats.query import QueryError

    try:
        yield
    except ProvenanceMismatch as exc:
        fail(f"{where}: {exc}; rerun with --force to start over")
    except WeightsMissing as exc:
        fail(f"model weights missing: {exc}")
    except (ConfigError, PredicateError, QueryError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to continue", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def finish(summary: dict, echo: bool = True) -> None:
    """Print the summary; exit 1 when it lists failed shards."""
    if echo:
        typer.echo(json.dumps(summary, default=str))
    if summary.get("failed_shards"):
        for item in summary["failed_shards"]:
            typer.echo(f"shard {item['shard']} failed: {item['error']}", err=True)
        raise typer.Exit(EXIT_FAILED)


@app.command("download")
@with_options(DownloadSection, exclude=("source", "input"))
def download_cmd(
    source: str = typer.Argument(..., help="webvid, laion-coco, laion-aesthetics, journeydb, msrvtt, panda70m, "
                                           "openvid, folder or urls."),
    input: str = typer.Argument(..., help="The source's metadata file or folder, in its distributed format."),
    out: str = typer.Option(..., "--out", help="Dataset folder to create or continue."),
    caption_column: Optional[str] = typer.Option(None, help="laion-*/urls: the caption column to use."),
    images: Optional[str] = typer.Option(None, help="journeydb: folder holding the NNN.tgz image archives."),
    videos: Optional[str] = typer.Option(None, help="msrvtt: folder holding videoN.mp4 files; openvid: the "
                                         "OpenVid_partN.zip archives or an extracted folder (several: commas)."),
    whole_videos: bool = typer.Option(False, "--whole-videos", help="panda70m: store each source video whole "
                                      "(its windows in extra, for `split`) instead of one cut clip per window."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Download a source into a dataset folder of WebDataset shards with a Parquet manifest."""
    from curate import engine
    from curate.download.stage import DownloadStage

    source_options = {k: v for k, v in {"caption_column": caption_column, "images": images, "videos": videos,
                                        "whole_videos": whole_videos or None}.items() if v is not None}
    with usage_errors(out):
        section = section_from_flags(DownloadSection, options, source=source, input=input,
                                     source_options=source_options)
        summary = engine.run_stage(DownloadStage(out, section), force=force, address=ray_address)
    finish(summary)


@app.command("retry-failed")
def retry_failed_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    ray_address: Optional[str] = RAY_ADDRESS,
) -> None:
    """Re-attempt only the rows that failed to download or decode; successes are kept as they are."""
    from curate.download.retry import retry_failed

    with usage_errors(dataset):
        summary = retry_failed(dataset, ray_address)
    finish(summary)


@app.command("split")
@with_options(SplitSection, exclude=("out",))
def split_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder whose videos to split."),
    out: str = typer.Option(..., "--out", help="Dataset folder of single-shot clips to write (or continue)."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Split long videos into single-shot clips: a new dataset folder (clips + the images as they are) that score,
    select, train, query and report read unchanged. Resumable per shard."""
    from curate.split.stage import split

    with usage_errors(out):
        section = section_from_flags(SplitSection, options, out=out)
        summary = split(dataset, out, section, force=force, address=ray_address)
    finish(summary)


@app.command("score")
@with_options(ScoreSection)
def score_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Add score columns (queryable in `samples`), one folder per scorer; never drops a row. Resumable per shard:
    shards whose content changed (e.g. after retry-failed) are scored again."""
    from curate.pipeline import score

    with usage_errors(dataset):
        section = section_from_flags(ScoreSection, options)
        summary = score(dataset, section.scorers, force=force, address=ray_address,
                        **{k: v for k, v in vars(section).items() if k != "scorers"})
    finish(summary)


@app.command("caption")
@with_options(CaptionSection)
def caption_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Caption every success sample with a vision-language model (an OpenAI-compatible endpoint such as vLLM,
    SGLang, TGI or Ollama; or, with --backend hf, a Qwen2-VL / Qwen2.5-VL model in-process) into captions/<name>/,
    shown in `samples` as caption_<name>. Failures are rows; resumable per shard. The API key is read from
    --api-key-env and never printed."""
    from curate.caption.stage import caption

    with usage_errors(dataset):
        section = section_from_flags(CaptionSection, options)
        summary = caption(dataset, section, force=force, address=ray_address)
    finish(summary)


@app.command("select")
@with_options(SelectSection, exclude=("out",))
def select_cmd(
    dataset: str = typer.Argument(..., help="Scored dataset folder."),
    out: str = typer.Option(..., "--out", help="Training dataset folder to write."),
    quota: list[str] = typer.Option([], help="SOURCE=N: at most N samples from SOURCE (repeatable)."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Write the samples that pass the thresholds, re-encoded to the training geometry, as a new dataset folder."""
    from curate.selection import select

    quotas = {}
    for item in quota:
        source, _, n = item.partition("=")
        if not n.isdigit():
            fail(f"--quota {item!r}: expected SOURCE=N")
        quotas[source] = int(n)
    with usage_errors(out):
        section = section_from_flags(SelectSection, options, quotas=quotas, out=out)
        summary = select(dataset, out, section, force=force, address=ray_address)
    finish(summary)


@app.command("stats")
def stats_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Counts by source, modality, status and error reason; success rate; resolution/duration/fps quantiles."""
    from curate.stats.summary import render, summarize

    with usage_errors(dataset):
        summary = summarize(dataset)
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
    from curate.stats.query import connect, run

    if format not in ("table", "csv", "json"):
        fail("--format must be table, csv or json")
    with usage_errors(dataset):
        table = run(connect(dataset), sql)
    _print_table(table, format)


@app.command("search")
def search_cmd(
    dataset: str = typer.Argument(..., help="Dataset folder scored with clip (its stored embeddings are searched)."),
    text: Optional[str] = typer.Argument(None, help="Text query, e.g. \"a red car at night\"."),
    image: Optional[str] = typer.Option(None, "--image", help="Search by an image (or a video's middle frame)."),
    top: int = typer.Option(20, "--top", min=1, help="How many samples to show."),
    format: str = typer.Option("table", "--format", help="table, csv or json."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write an HTML page of thumbnails here."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help=(
        "Only as a check: the CLIP the embeddings came from is the one used; another is refused.")),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=(
        "Read a pickled CLIP file whose checksum is not published (as curate score was allowed to).")),
) -> None:
    """Nearest samples to a text or an image by CLIP cosine, through the index stored beside the embeddings
    (embeddings/_index/, built on first use and again only when the embeddings change)."""
    from curate.search import page
    from curate.search.query import search

    if format not in ("table", "csv", "json"):
        fail("--format must be table, csv or json")
    with usage_errors(dataset):
        hits = search(dataset, text, image, top, clip_model, trust_checkpoint)
        if html:
            page.write(dataset, text if text is not None else f"image: {image}", hits, html)
    _print_table(hits, format)


@app.command("report")
def report_cmd(
    dataset: str = typer.Argument(..., help="Scored dataset folder."),
    out: str = typer.Option("report.html", "--out", help="HTML file to write."),
    where: Optional[str] = typer.Option(None, help="Selection predicate whose thresholds are drawn and counted."),
) -> None:
    """Static HTML: score histograms per source with thresholds, kept/dropped counts, thumbnails at quantiles."""
    from curate.report import write

    with usage_errors(dataset):
        typer.echo(write(dataset, out, where))


@app.command("run")
def run_cmd(
    pipeline: str = typer.Argument(..., help="Pipeline recipe: a YAML file or a bundled name (see pipelines/)."),
    out: str = typer.Option(..., "--out", help="Dataset folder."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    describe: bool = typer.Option(False, help="Print the plan (stages, inputs, outputs, resources) and exit."),
) -> None:
    """Run the stages of a pipeline recipe in order: download, then score, dedup and select when it has them."""
    from curate import pipeline as pipelines
    from curate.bundled import recipe_path

    with usage_errors(out):
        recipe = pipelines.load_pipeline(str(recipe_path(pipeline)))
        if describe:
            typer.echo(pipelines.describe(recipe, out))
            return
        results = run_recipe(recipe, out, force, ray_address)
    for summary in results.values():
        finish(summary, echo=False)


def run_recipe(recipe, out: str, force: bool, ray_address: Optional[str]) -> dict:
    from curate import pipeline as pipelines

    return pipelines.run(recipe, out, force=force, address=ray_address,
                         echo=lambda name, summary: typer.echo(json.dumps({name: summary}, default=str)))


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("demo_out", "--out", help="Folder for the corpus and the curated dataset."),
    train_steps: int = typer.Option(1500, min=0, help="Steps of the toy world's F-base, after its image model (0 skips training; below ~1200 the GIF is still noise)."),
    ray_address: Optional[str] = RAY_ADDRESS,
) -> None:
    """Generate the demo corpus, serve it on 127.0.0.1, run pipelines/demo.yaml end to end, then train a tiny
    model of the toy world (pipelines/toy: image, then F-base) and sample a GIF from it."""
    from curate.demo.run import run_demo

    with usage_errors(out):
        run_demo(out, train_steps, ray_address, echo=typer.echo)


@app.command("generate")
@with_options(GenerateOptions)
def generate_cmd(
    checkpoint: str = typer.Argument(..., help="A checkpoint file, a run folder (its latest checkpoint) or "
                                               "videocrafter2:PATH (the released model.ckpt)."),
    prompts: str = typer.Option(..., "--prompts", help="A text file (one prompt per line) or a dataset folder "
                                                       "(its captions; one picked per row when it lists several)."),
    out: str = typer.Option(..., "--out", help="Dataset folder of generated videos to create or continue."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Sample videos for prompts into a dataset folder (manifest rows: prompt key, checkpoint, seed, sampler),
    resumable per shard; GPU actors when the cluster has GPUs."""
    from curate.eval.generate import generate

    with usage_errors(out):
        summary = generate(checkpoint, prompts, out, section_from_flags(GenerateOptions, options), force=force,
                           address=ray_address)
    finish(summary)


@app.command("fvd")
@with_options(FVDOptions)
def fvd_cmd(
    real_dir: str = typer.Argument(..., help="Dataset folder of real videos (features kept per protocol)."),
    gen_dir: str = typer.Argument(..., help="Dataset folder of generated videos."),
    i3d_weights: Optional[str] = typer.Option(None, help="i3d_pretrained_400.pt (pytorch-i3d layout) or the "
                                                         "TorchScript i3d_torchscript.pt (default: the standard cache)."),
    device: Optional[str] = DEVICE,
    i3d_trust: bool = typer.Option(False, help="Load a TorchScript I3D file (it is code: only files you trust)."),
    out: Optional[str] = typer.Option(None, "--out", help="Result JSON (default GEN_DIR/eval/fvd.json)."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Frechet Video Distance between two folders, printed and written with its whole protocol and provenance.
    Per-clip features are kept (GEN_DIR/eval/fvd/, the real folder's under REAL_DIR/eval/fvd_reference/): a rerun
    measures nothing again; other settings or folders are refused unless --force."""
    from curate.eval.fvd import fvd

    with usage_errors(gen_dir):
        result = fvd(real_dir, gen_dir, section_from_flags(FVDOptions, options), i3d_weights=i3d_weights,
                     i3d_trust=i3d_trust, device=device, out=out, force=force, address=ray_address)
    finish(result)


@app.command("eval")
def eval_cmd(
    targets: list[str] = typer.Argument(..., help="Checkpoints, run folders or videocrafter2:PATH (the released "
                                                  "model); or `compare RUN_A RUN_B`."),
    recipe: str = typer.Option("tiny", "--recipe", help="Eval recipe: a YAML file or a bundled name (msrvtt, tiny)."),
    out: Optional[str] = typer.Option(None, "--out", help="Eval run folder (generated videos, results.parquet)."),
    real: Optional[str] = typer.Option(None, help="Real videos for FVD (overrides the recipe's)."),
    clip_model: Optional[str] = typer.Option(None, help="CLIP for CLIPSIM (overrides the recipe's)."),
    i3d_weights: Optional[str] = typer.Option(None, help="I3D weights for FVD (overrides the recipe's)."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    describe: bool = typer.Option(False, "--describe", help="Print the plan (videos, estimated time and peak GPU "
                                                            "memory per video, metrics) and exit."),
) -> None:
    """Generate with each checkpoint and measure it: one results table (checkpoint x metric, with protocol),
    queryable with DuckDB. `curate eval compare RUN_A RUN_B` prints two runs side by side."""
    from curate.eval.run import compare, describe as describe_plan, evaluate

    with usage_errors(out or targets[0]):
        if targets[0] == "compare":
            if len(targets) != 3:
                fail("usage: curate eval compare RUN_A RUN_B")
            typer.echo(compare(targets[1], targets[2]))
            return
        if describe:
            typer.echo(describe_plan(targets, recipe))
            return
        if not out:
            fail("--out RUN_DIR is required")
        result = evaluate(targets, recipe, out, real=real, clip_model=clip_model,
                          i3d_weights=i3d_weights, force=force, address=ray_address, echo=typer.echo)
    typer.echo(result["table"])
    typer.echo(f"results: {result['results']} (query with DuckDB: SELECT * FROM read_parquet('{result['results']}'))")


@app.command("grid")
@with_options(SamplerOptions)
def grid_cmd(
    inputs: list[str] = typer.Argument(..., help="Checkpoints, run folders, videocrafter2:PATH or generated "
                                                 "folders: the columns."),
    prompts: str = typer.Option(..., "--prompts", help="Prompt file, one per line: the rows."),
    out: str = typer.Option("grid.mp4", "--out", help="grid.mp4 or grid.gif."),
    seed: int = typer.Option(0, help="Seed of the first row (the same seed across a row)."),
    videos: Optional[str] = typer.Option(None, "--videos", help="Folder for the checkpoint columns' generated "
                                                                "videos, one per checkpoint (default: OUT_videos/)."),
    ray_address: Optional[str] = RAY_ADDRESS,
    force: bool = FORCE,
    **options,
) -> None:
    """Side-by-side samples (the paper's Fig. 1): inputs as columns, prompts as rows, labels on the frames.
    Checkpoint columns are sampled through `generate` (resumable; GPU actors when the cluster has GPUs)."""
    from curate.eval.grid import grid

    with usage_errors(out):
        typer.echo(json.dumps(grid(inputs, prompts, out, section_from_flags(SamplerOptions, options), seed=seed,
                                   videos=videos, force=force, address=ray_address), default=str))


study_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="A blind A/B preference study between generated folders.")
app.add_typer(study_app, name="study")


@study_app.command("serve")
def study_serve_cmd(
    gen_dirs: list[str] = typer.Argument(..., help="Two or more generated dataset folders (curate generate)."),
    port: int = typer.Option(8000, help="Port on the host below."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    votes: str = typer.Option("study_votes.jsonl", help="Vote log (appended, fsynced); reused across restarts."),
    seed: Optional[int] = typer.Option(None, help="Seed for pair order and sides (default: random)."),
) -> None:
    """Show raters pairs of videos for the same prompt and seed, models hidden and sides randomised."""
    from curate.eval.study.app import serve

    if len(gen_dirs) < 2:
        fail("give at least two generated folders")
    with usage_errors(gen_dirs[0]):
        serve(gen_dirs, port=port, host=host, votes=votes, seed=seed)


@study_app.command("results")
def study_results_cmd(
    votes: str = typer.Argument("study_votes.jsonl", help="The study's vote log."),
    bootstrap: int = typer.Option(1000, min=0, help="Bootstrap resamples for the model table (3+ models)."),
    format: str = typer.Option("table", "--format", help="table, csv or json (the pairwise table)."),
) -> None:
    """Win rate of each model over each other with 95% Wilson intervals (ties apart); Bradley-Terry for 3+ models."""
    from curate.eval.study.results import results

    with usage_errors(votes):
        table = results(votes, bootstrap_samples=bootstrap)
    if format == "table":
        typer.echo(str(table))
    elif format == "csv":
        typer.echo(table.pairs.to_csv(index=False))
    else:
        typer.echo(table.pairs.to_json(orient="records"))


# The trainer's commands live with the trainer; registered here so `curate --help` lists every stage.
app.command("train")(train_commands.train)
app.command("sample")(train_commands.sample)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
