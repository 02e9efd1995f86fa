"""`curate demo`: generate the corpus, serve it on 127.0.0.1, run pipelines/demo.yaml on it end to end."""

from __future__ import annotations

import os
import shutil

from curate.bundled import recipe_path
from curate.demo import corpus, server

DEMO_RECIPE = str(recipe_path("demo"))


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


def run_demo(out: str, train_steps: int, ray_address: str | None, echo=print) -> dict:
    """The whole demo: corpus -> served on loopback -> pipelines/demo.yaml (download, score, dedup, select) ->
    stats and HTML report -> tiny F-base training on the selection -> a sampled GIF."""
    import json
    from pathlib import Path

    from curate import pipeline
    from curate.config import load_pipeline
    from curate.stats.report import write
    from curate.stats.summary import render, summarize
    from curate.train import commands as train_commands

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
    if train_steps:
        run_dir = Path(out) / "run"
        echo(f"\n== curate train tiny_f_base --data {selected['out']} --steps {train_steps} --out {run_dir}")
        train_commands.train(recipe=Path(recipe_path("tiny_f_base")), data=[Path(selected["out"])], steps=train_steps,
                             out=run_dir)
        gif = run_dir / "sample.gif"
        echo(f"\n== curate sample {run_dir} --prompt ... --out {gif}")
        train_commands.sample(checkpoint=run_dir, prompt="a red circle moving on a teal background", out=gif,
                              frames=8, steps=25, guidance=4.0)
        from curate.eval.run import demo_eval

        echo(f"\n== curate eval (first and last checkpoint of {run_dir}, recipe tiny) and a 2x2 grid")
        results["eval"] = demo_eval(str(run_dir), out, echo=echo)
    return results
