"""`curate demo`: the demo corpus through pipelines/demo.yaml end to end, then a model of the toy world and its GIF."""

from __future__ import annotations

import os
import shutil

from pathlib import Path

from curate.bundled import recipe_path
from curate.demo import corpus, server, world

DEMO_RECIPE = str(recipe_path("demo"))
SPLIT_RECIPE = str(recipe_path("demo_split"))
# The model the demo trains: the toy world's image -> F-base recipes (scripts/reproduce_toy.py's first two stages).
# The demo corpus shows curation (broken files, scores, selection), but a model trained a few hundred CPU steps on
# its 160x96 textured clips sampled a 16x16 noisy blob; the world's shapes on a flat background are learnt sooner.
# F-base starts from the image model: from scratch, 400 steps of toy F-base still sampled pure noise here.
WORLD_DATA_RECIPE = "toy/world"
WORLD_IMAGE_RECIPE = "toy/image"
WORLD_TRAIN_RECIPE = "toy/f_base"
WORLD_EVAL_RECIPE = "toy"


def prepare(out: str, seed: int = 0) -> tuple[server.MediaServer, str]:
    """Corpus into out/corpus, a server on loopback, and the URL list (url TAB caption) that points at it."""
    root = os.path.join(out, "corpus")
    shutil.rmtree(root, ignore_errors=True)
    entries = corpus.generate(root, seed=seed)
    srv = server.start(os.path.join(root, "media"))
    urls = os.path.join(root, "urls.txt")
    with open(urls, "w", encoding="utf-8") as f:
        for e in entries:
            name = e["name"]
            url = f"{srv.base_url}/{name}"
            if name.startswith("html/"):
                url = f"{srv.base_url}/{name}"
            f.write(f"{url}\t{e['caption']}\n")
    return srv, urls


def world_dataset(out: str, ray_address: str | None, echo=print, **sizes) -> str:
    """The toy world (curate.demo.world) served on 127.0.0.1 and fetched by the download stage of
    pipelines/toy/world.yaml into out/world_dataset: every video and image, as the base models of
    scripts/reproduce_toy.py train on them (its score and select stages pick the spatial fine-tunes' images)."""
    import json

    from curate import pipeline
    from curate.pipeline import load_pipeline

    srv, urls, _ = world.prepare(out, **sizes)
    try:
        recipe = load_pipeline(str(recipe_path(WORLD_DATA_RECIPE)))
        recipe.download.input = urls
        recipe.score = recipe.select = None
        dataset = os.path.join(out, "world_dataset")
        # force: the server's port, so every URL, is new on each run
        results = pipeline.run(recipe, dataset, force=True, address=ray_address,
                               echo=lambda name, summary: echo(json.dumps({name: summary}, default=str)))
    finally:
        srv.shutdown()
    if results["download"].get("failed_shards"):
        raise RuntimeError(f"downloading the toy world failed: {json.dumps(results, default=str)}")
    return dataset


def train_world(out: str, steps: int, ray_address: str | None, echo=print, image_steps: int | None = None,
                sample_steps: int = 25, **sizes) -> tuple[Path, Path]:
    """(run folder, GIF): on the downloaded world, pipelines/toy/image.yaml (`image_steps`, default its own count)
    into out/image_run, then pipelines/toy/f_base.yaml from it for `steps` into out/run, then world.demo_gif of
    that run's latest checkpoint (the world's demo prompt, scaled up to be seen)."""
    from curate.train import commands as train_commands

    dataset = world_dataset(out, ray_address, echo, **sizes)
    image_dir, run_dir = Path(out) / "image_run", Path(out) / "run"
    for folder in (image_dir, run_dir):  # fresh models, as the corpus is fresh: never resume another recipe's run
        shutil.rmtree(folder, ignore_errors=True)
    echo(f"\n== curate train {WORLD_IMAGE_RECIPE} --data {dataset} --init-from '' --out {image_dir}"
         + (f" --steps {image_steps}" if image_steps else ""))
    train_commands.train(recipe=Path(recipe_path(WORLD_IMAGE_RECIPE)), data=[dataset], steps=image_steps,
                         out=str(image_dir), init_from="")
    echo(f"\n== curate train {WORLD_TRAIN_RECIPE} --data {dataset} --init-from {image_dir} --steps {steps} "
         f"--out {run_dir}")
    train_commands.train(recipe=Path(recipe_path(WORLD_TRAIN_RECIPE)), data=[dataset], steps=steps, out=str(run_dir),
                         init_from=str(image_dir))
    gif = world.demo_gif(str(run_dir), str(run_dir / "sample.gif"), steps=sample_steps)
    echo(f"\n== sampled {gif}: {world.DEMO_PROMPT!r}")
    return run_dir, Path(gif)


def split_long_video(out: str, ray_address: str | None, echo=print) -> dict:
    """pipelines/demo_split.yaml: the corpus's long edited video (curate.demo.corpus.long_video) read as a folder
    into out/long_dataset and split into single-shot clips in out/clips."""
    import json

    from curate import pipeline
    from curate.pipeline import load_pipeline

    recipe = load_pipeline(SPLIT_RECIPE)
    recipe.download.input = os.path.dirname(corpus.long_video(os.path.join(out, "corpus")))
    echo("\n== the long edited video split into single-shot clips (pipelines/demo_split.yaml)")
    results = pipeline.run(recipe, os.path.join(out, "long_dataset"), force=True, address=ray_address,
                           echo=lambda name, summary: echo(json.dumps({name: summary}, default=str)))
    if results.get("split") is None or results["split"].get("failed_shards"):
        raise RuntimeError(f"splitting the demo's long video failed: {json.dumps(results, default=str)}")
    return results["split"]


def run_demo(out: str, train_steps: int, ray_address: str | None, echo=print) -> dict:
    """The whole demo: corpus -> served on loopback -> pipelines/demo.yaml (download, score, dedup, select) ->
    stats and HTML report; then the toy world downloaded the same way -> its image and F-base recipes trained
    -> a sampled GIF -> the eval of the F-base run's first and last checkpoints."""
    import json

    from curate import pipeline
    from curate.pipeline import load_pipeline
    from curate.report import write
    from curate.stats.summary import render, summarize

    srv, urls = prepare(out)
    try:
        recipe = load_pipeline(DEMO_RECIPE)
        recipe.download.input = urls
        dataset = os.path.join(out, "dataset")
        echo("note: no pretrained CLIP / aesthetic weights are available offline, so this demo scores and selects "
             "with the weight-free scorers (motion, quality, dedup); with weights in the standard caches add clip "
             "and aesthetic to pipelines/demo.yaml.")
        results = pipeline.run(recipe, dataset, force=True, address=ray_address,
                               echo=lambda name, summary: echo(json.dumps({name: summary}, default=str)))
    finally:
        srv.shutdown()
    echo(f"\n== curate stats {dataset}\n" + render(summarize(dataset)))
    selected = results.get("select")
    if selected is None or selected.get("failed_shards"):
        raise RuntimeError(f"the demo pipeline stopped early: {json.dumps(results, default=str)}")
    page = write(dataset, os.path.join(out, "report.html"), recipe.select.where)
    echo(f"\n== report: {page}\n== selected for training: {selected['out']} "
         f"({selected['kept']} kept, {selected['dropped']} dropped)")
    results["split"] = split_long_video(out, ray_address, echo)
    if train_steps:
        echo("\n== the toy world (curate/demo/world.py) served on 127.0.0.1 and downloaded, for the demo's model")
        run_dir, gif = train_world(out, train_steps, ray_address, echo)
        results["gif"] = str(gif)
        echo(f"\n== curate eval (first and last checkpoint of {run_dir}, recipe {WORLD_EVAL_RECIPE}) and a 2x2 grid")
        results["eval"] = demo_eval(str(run_dir), out, recipe=WORLD_EVAL_RECIPE, echo=echo)
    return results


DEMO_PROMPTS = 2  # grid rows: the tiny recipe's first prompts


def demo_eval(run_dir: str, out_dir: str, recipe: str = "tiny", echo=print) -> dict:
    """The demo's evaluation: the run's first and last checkpoints through the tiny recipe (generate + weight-free
    metrics -> results table), then a 2x2 grid (those checkpoints x the recipe's first two prompts) from the
    generated folders, so its cells are the table's videos."""
    from curate.eval.grid import grid
    from curate.eval.run import evaluate, load_eval_recipe
    from curate.train.checkpoints import latest_checkpoint

    found = sorted((os.path.join(run_dir, "checkpoints", n) for n in os.listdir(os.path.join(run_dir, "checkpoints"))
                    if n.startswith("step_") and n.endswith(".pt")))
    if len(found) < 2:
        raise ValueError(f"{run_dir} has {len(found)} checkpoint(s); the demo grid compares the first and the last")
    first, last = found[0], str(latest_checkpoint(run_dir))
    result = evaluate([first, last], recipe, os.path.join(out_dir, "eval"), echo=echo)
    echo(result["table"])
    spec = load_eval_recipe(recipe)
    folders = [os.path.join(result["out"], "generated", label) for label in result["checkpoints"]]
    drawn = grid(folders, spec.prompts[:DEMO_PROMPTS], os.path.join(out_dir, "grid.mp4"), spec.generate.sampler)
    echo(f"grid: {drawn['out']} ({', '.join(drawn['columns'])} x {drawn['rows']} prompts)")
    return {"grid": drawn["out"], "results": result["results"], "table": result["table"],
            "checkpoints": result["checkpoints"]}
