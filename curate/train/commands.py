"""`curate train` and `curate sample`: typer command functions (registered by curate/cli.py).

Bad usage or an unusable recipe exits with status 2 and a one-line reason. torch and the model
code are imported inside the commands, so `curate --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curate.cli_params import section_from_flags, with_options
from curate.train.sampler_options import SamplerOptions


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _location(value: str):
    """A URL as given (a Path would fold its "//"), a local folder as a Path."""
    from curate import storage

    return value if storage.is_remote(value) else Path(value)


def train(
    recipe: Annotated[Path, typer.Argument(help="Training recipe: a YAML file, or a bundled recipe's name such as tiny_f_base.")],
    data: Annotated[
        Optional[list[str]], typer.Option("--data", help="Curated dataset folder (DIR/shards/*.tar), a path or a URL such as s3://bucket/prefix; repeat for several. Replaces the recipe's data.dirs.")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Train until this many optimizer steps in total (default: the recipe's).")] = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder for checkpoints and log.jsonl, a path or a URL such as s3://bucket/runs/x (default: runs/RECIPE_NAME).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers (default: the recipe's train.num_workers; 1 = no Ray).")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Override init_from: a run folder / checkpoint, videocrafter2:PATH or sd21:PATH.")] = None,
    describe: Annotated[bool, typer.Option("--describe", help="Print the plan (resolved recipe, parameters, data mix, memory and step-time estimates, preflight) and exit.")] = False,
) -> None:
    """Train a U-Net stage (image / base / finetune) from a recipe; resumes from the run folder's latest checkpoint.

    Before anything starts, every path, weight file, resource and batch setting is checked (preflight):
    each problem is one line, all are listed, the exit status is 2 and the run folder is left untouched.
    """
    import os

    from curate.bundled import recipe_path
    from curate.train.recipe import RecipeError, load_recipe  # torch loads only when a training command runs

    try:
        spec = load_recipe(recipe_path(recipe))  # a file, or a bundled recipe's name
        changes: dict = {}
        if data:
            changes["data"] = {"dirs": [str(_location(d)) for d in data], "weights": []}
        if workers is not None:
            changes["train"] = {"num_workers": workers}
        if init_from is not None:
            changes["init_from"] = init_from
        spec = spec.replace(**changes) if changes else spec
        if steps is not None and steps < 1:
            _fail("--steps must be >= 1")
    except (RecipeError, FileNotFoundError) as err:
        _fail(f"{recipe}: {err}")
    if steps is not None:
        spec = spec.replace(train={"steps": steps})
    run_dir = _location(out) if out else Path("runs") / spec.name
    address = os.environ.get("RAY_ADDRESS")
    from curate.train import preflight

    problems = preflight.check(spec, run_dir, address=address)
    if describe:
        from curate.train.describe import plan, render

        typer.echo(render(spec, run_dir, plan(spec)) if not spec.batch_problem() else f"(no plan: {spec.batch_problem()})")
        typer.echo("preflight: " + ("ready to start" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            typer.echo(f"  {problem}")
        return
    if problems:
        for problem in problems:
            typer.echo(f"error: {recipe}: {problem}", err=True)
        raise typer.Exit(2)
    if spec.train.num_workers > 1:
        from curate.train.distributed import RunStopped, train_distributed

        try:
            train_distributed(spec, run_dir, steps, address=address)
        except RunStopped as err:  # resources not granted or lost, workers failing: a message, exit 1
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1)
        typer.echo(f"done: run folder {run_dir} (log.jsonl, checkpoints/)")
    else:
        from curate.train.loop import train as train_single

        try:
            logs = train_single(spec, run_dir, steps)
        except (RecipeError, FileNotFoundError) as err:
            _fail(str(err))
        if logs:
            typer.echo(f"done: step {logs[-1].step}, loss {logs[-1].loss:.4f}, run folder {run_dir}")
        else:
            typer.echo(f"nothing to do: {run_dir} is already at the requested step")


@with_options(SamplerOptions)
def sample(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint file (RUN/checkpoints/step_*.pt) or a run folder (its "
                                                  "latest), local or a URL (s3://...); or videocrafter2:PATH, the "
                                                  "released model.ckpt.")],
    prompt: Annotated[str, typer.Option(help="Text prompt.")],
    out: Annotated[Path, typer.Option(help="Output video: .mp4 or .gif.")],
    seed: Annotated[int, typer.Option(help="Seed of the initial noise and DDIM noise.")] = 0,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (default: cuda when torch can use a "
                                                       "GPU).")] = None,
    **options,
) -> None:
    """Sample a video from a checkpoint or the released VideoCrafter2 with DDIM and classifier-free guidance."""
    from curate.config import ConfigError
    from curate.train.sample import VideoSampler, write_video

    if out.suffix.lower() not in (".mp4", ".gif"):
        _fail(f"--out must end in .mp4 or .gif, got {out.name}")
    try:
        sampler = VideoSampler(checkpoint, device=device)
        settings = sampler.options(section_from_flags(SamplerOptions, options))
        video = sampler.sample(prompt, settings, seed)
    except (FileNotFoundError, ValueError, ConfigError) as err:
        _fail(str(err))
    write_video(video, out, settings.save_fps)
    typer.echo(f"wrote {out} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]}, {settings.save_fps:g} fps)")
