"""Reproduce the VideoCrafter2 findings at toy scale on a CPU: world -> curate pipeline -> staged training -> table.

    python scripts/reproduce_toy.py [--out runs/toy] [--smoke] [--jobs 2] [--seeds 3]

1. data:   the toy world (curate.demo.world) served on 127.0.0.1; pipelines/toy/world.yaml through the stages'
           Python API (download -> score motion+quality -> select the high-quality images by thresholds); the
           base models train on the downloaded shards themselves (every low-quality video + the whole image pool:
           a select of everything would be the same data re-encoded).
2. train:  `curate train` runs (the CLI command, called in a pool of `--jobs` processes of one thread each, so
           torch loads once per process, not once per run), in dependency waves: image -> f_base, p_base ->
           f_spa_dir, f_spa_lora, p_spa_dir, f_spatemp_dir. A run already at its step count is skipped, an
           interrupted one resumes from its latest checkpoint.
3. sample: every variant on the held-out prompts (combinations never seen as video) x `--seeds` seeds, in the
           same pool; raw uint8 frames are kept (H.264 at 16 px would halve the colour resolution that the
           metrics measure).
4. table:  world metrics (curate.demo.world_metrics) and the weight-free video metrics
           (curate.eval.video_quality.clip_quality) per variant, mean +- standard deviation over seeds, with
           reference rows measured by the same code on the real training data; OUT/table.md, OUT/table.json and
           OUT/grid.gif (variants x prompts, seed 0). FVD is left out: without the I3D weights offline it would
           be a random-feature distance, not FVD.
Every step is resumable: finished outputs are kept and skipped (delete OUT/data.json to rebuild the data).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "pipelines", "toy")
# (variant, recipe file, starts from, trains on): "base" = videos + whole image pool, "hq" = selected images
STAGES = (
    ("image", "image.yaml", None, "hq"),
    ("f_base", "f_base.yaml", "image", "base"),
    ("p_base", "p_base.yaml", "image", "base"),
    ("f_spa_dir", "f_spa_dir.yaml", "f_base", "hq"),
    ("f_spa_lora", "f_spa_lora.yaml", "f_base", "hq"),
    ("p_spa_dir", "p_spa_dir.yaml", "p_base", "hq"),
    ("f_spatemp_dir", "f_spatemp_dir.yaml", "f_base", "hq"),
)
VIDEO_VARIANTS = ("f_base", "p_base", "f_spa_dir", "f_spa_lora", "p_spa_dir", "f_spatemp_dir")
WORLD_COLUMNS = ("color_accuracy", "shape_accuracy", "direction_accuracy", "speed", "jitter", "edge_strength",
                 "object_contrast", "flicker", "mark_strength")
GENERAL_COLUMNS = ("temporal_flickering", "dynamic_degree")
SMOKE = {"world": {"videos_per_combo": 1, "images_per_pair": 6}, "steps": 2, "prompts": 2, "seeds": 2,
         "sample_steps": 2}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json(path: str, data) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


# ---- 1. data -------------------------------------------------------------------------------------------------

def curation_report(dataset: str, hq: str, truth: list[dict]) -> dict:
    """How the thresholds split the image pool, against the world's ground truth (matched by URL file name)."""
    import pyarrow.parquet as pq

    from curate.shards.folder import DatasetFolder

    by_name = {e["name"]: e for e in truth}

    def names(root):
        folder = DatasetFolder(root)
        return {os.path.basename(row["url"]) for sid in folder.complete_shards()
                for row in pq.read_table(folder.manifest(sid), columns=["url", "status", "modality"]).to_pylist()
                if row["status"] == "success" and row["modality"] == "image"}

    pool, kept = names(dataset), names(hq)
    counts = {}
    for name in pool:
        quality = by_name[name]["quality"]
        counts.setdefault(quality, {"pool": 0, "kept": 0})
        counts[quality]["pool"] += 1
        counts[quality]["kept"] += name in kept
    degraded = sum(c["pool"] for q, c in counts.items() if q != "high")
    return {"images_in_pool": len(pool), "kept": len(kept), "by_quality": counts,
            "degraded_removed": degraded - sum(c["kept"] for q, c in counts.items() if q != "high"),
            "degraded_in_pool": degraded}


def build_data(out: str, smoke: bool) -> dict:
    done = os.path.join(out, "data.json")
    if os.path.exists(done):
        log(f"data: done before ({done})")
        return json.load(open(done))
    from curate import pipeline
    from curate.config import replace_options
    from curate.pipeline import load_pipeline
    from curate.demo import world

    started = time.time()
    srv, urls, truth = world.prepare(out, **(SMOKE["world"] if smoke else {}))
    log(f"data: world of {len(truth)} files served at {srv.base_url}")
    recipe = load_pipeline(os.path.join(RECIPES, "world.yaml"))
    recipe.download.input = urls
    dataset = os.path.join(out, "dataset")
    recipe.select = replace_options(recipe.select, {"out": os.path.join(out, "hq_images")})
    try:
        # force: the server's port (so every URL) changes between runs; data.json marks a finished pass instead
        results = pipeline.run(recipe, dataset, force=True,
                               echo=lambda name, summary: log(f"data: {name} {json.dumps(summary, default=str)}"))
    finally:
        srv.shutdown()
        import ray

        ray.shutdown()  # Ray's daemons would hold memory and CPU through the hour of training that follows
    if "select" not in results or results["select"].get("failed_shards"):
        raise SystemExit(f"the data pipeline stopped early: {json.dumps(results, default=str)}")
    report = {"dataset": dataset, "hq": recipe.select.out, "base": dataset, "hq_where": recipe.select.where,
              "curation": curation_report(dataset, recipe.select.out, truth), "seconds": round(time.time() - started),
              "stages": results}
    write_json(done, report)
    log(f"data: curation {json.dumps(report['curation'])}")
    return report


# ---- 2. train ------------------------------------------------------------------------------------------------

def finished_step(run_dir: str) -> int:
    from curate.train.checkpoints import latest_checkpoint

    latest = latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    return int(latest.stem.split("_")[-1]) if latest else 0


def train_args(name: str, recipe: str, init: str | None, data: str, out: str, steps: int | None) -> list[str]:
    """`curate train ...` as a user would type it."""
    args = ["train", os.path.join(RECIPES, recipe), "--data", data, "--out", os.path.join(out, "runs", name)]
    if init:
        args += ["--init-from", os.path.join(out, "runs", init)]
    if steps:
        args += ["--steps", str(steps)]
    return args


def start_worker() -> None:
    """A pool process: one thread, as each run's recipe asks (cpu_threads: 1), set before torch loads."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def train_run(args: list[str], log_path: str) -> float:
    """`curate train ARGS` in this pool process, its output appended to the run's train.log; returns seconds."""
    from curate.cli import app

    started = time.time()
    with open(log_path, "a", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        try:
            app(args, prog_name="curate")
        except SystemExit as done:  # the CLI's own exit: 0 when done, 2 when its checks refused the run
            if done.code:
                raise RuntimeError(f"curate {' '.join(args)} exited with status {done.code}") from None
    return round(time.time() - started, 1)


def train_all(pool: ProcessPoolExecutor, out: str, data: dict, steps: int | None,
              base_steps: int | None = None) -> dict:
    """Each wave's runs, as many at a time as the pool has processes; returns wall seconds per run (0 when skipped). `steps`
    replaces every recipe's step count (smoke), `base_steps` only F-base's and P-base's (a shorter budget)."""
    from curate.train.recipe import load_recipe

    timings, pending = {}, list(STAGES)
    while pending:
        ready = [s for s in pending if s[2] is None or s[2] in timings]
        pending = [s for s in pending if s not in ready]
        running = {}
        for name, recipe, init, source in ready:
            wanted = steps or (base_steps if name in ("f_base", "p_base") else None)
            target = wanted or load_recipe(os.path.join(RECIPES, recipe)).train.steps
            run_dir = os.path.join(out, "runs", name)
            if finished_step(run_dir) >= target:
                log(f"train: {name} already at step {finished_step(run_dir)}")
                timings[name] = 0.0
                continue
            os.makedirs(run_dir, exist_ok=True)
            log(f"train: {name} ({target} steps) from {init or 'scratch'} on {source}")
            args = train_args(name, recipe, init, data[source], out, wanted)
            running[pool.submit(train_run, args, os.path.join(run_dir, "train.log"))] = name
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                try:
                    timings[name] = future.result()
                except Exception as error:
                    raise SystemExit(f"training {name} failed ({error}); see its train.log") from None
                log(f"train: {name} done in {timings[name]} s")
    return timings


# ---- 3. sample -----------------------------------------------------------------------------------------------

def sample_variant(run_dir: str, prompts: list[str], seeds: list[int], steps: int, target: str) -> str:
    """Frames uint8 [prompts, seeds, T, H, W, 3] of one variant, saved to `target` (.npy). Runs in a child."""
    import torch

    torch.set_num_threads(1)
    from curate.demo import world
    from curate.train.sample import SamplerOptions, VideoSampler

    sampler = VideoSampler(run_dir, "cpu")
    frames, _, fps = world.clip_geometry(sampler.recipe.data)  # as the variant saw videos in training
    options = SamplerOptions(frames=frames, fps=fps, steps=steps, guidance=4.0)
    videos = [[sampler.sample(p, options, s).numpy() for s in seeds] for p in prompts]
    np.save(target + ".tmp.npy", np.asarray(videos))
    os.replace(target + ".tmp.npy", target)
    return target


def sample_all(pool: ProcessPoolExecutor, out: str, prompts: list[str], seeds: list[int],
               steps: int) -> dict[str, np.ndarray]:
    folder = os.path.join(out, "samples")
    os.makedirs(folder, exist_ok=True)
    key = json.dumps({"prompts": prompts, "seeds": seeds, "steps": steps})
    targets = {v: os.path.join(folder, f"{v}.npy") for v in VIDEO_VARIANTS}
    settings = os.path.join(folder, "settings.json")
    if not os.path.exists(settings) or open(settings).read() != key:  # other prompts/seeds: sample again
        for target in targets.values():
            if os.path.exists(target):
                os.remove(target)
        with open(settings, "w") as f:
            f.write(key)
    todo = [v for v, t in targets.items() if not os.path.exists(t)]
    if todo:
        log(f"sample: {', '.join(todo)} x {len(prompts)} prompts x {len(seeds)} seeds, {steps} DDIM steps")
        for done in pool.map(sample_variant, [os.path.join(out, "runs", v) for v in todo],
                             [prompts] * len(todo), [seeds] * len(todo), [steps] * len(todo),
                             [targets[v] for v in todo]):
            log(f"sample: wrote {done}")
    return {v: np.load(t) for v, t in targets.items()}


# ---- 4. metrics and table ------------------------------------------------------------------------------------

def measure_set(videos: list[tuple[np.ndarray, str]]) -> dict:
    from curate.demo import world_metrics
    from curate.eval.video_quality import clip_quality, summarise

    world_rows = [world_metrics.measure(frames, prompt) for frames, prompt in videos]
    general = summarise([clip_quality(frames) for frames, _ in videos])
    return {**world_metrics.summarise(world_rows), **{k: general[k] for k in GENERAL_COLUMNS}}


def variant_metrics(samples: np.ndarray, prompts: list[str]) -> dict:
    """Metrics per seed (over prompts), then mean and standard deviation over seeds."""
    per_seed = [measure_set([(samples[p, s], prompts[p]) for p in range(len(prompts))])
                for s in range(samples.shape[1])]
    result = {}
    for column in WORLD_COLUMNS + GENERAL_COLUMNS:
        values = [m[column] for m in per_seed if m[column] is not None]
        result[column] = {"mean": float(np.mean(values)) if values else None,
                          "std": float(np.std(values)) if values else None, "n": len(values)}
    return result


def reference_metrics(root: str, videos_only: bool, limit: int) -> dict:
    """The same metrics on the real training data as the base models see it (their recipes' frames and stride,
    resized to 16x16 by the loader's code)."""
    import torch

    from curate.demo import world
    from curate.eval.clips import iter_clips
    from curate.train.data import resize_center_crop
    from curate.train.recipe import load_recipe

    def as_trained(frames):  # the trainer's own resize to 16x16, back to uint8
        x = resize_center_crop(torch.from_numpy(frames), 16, 16)
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()

    frames, stride, _ = world.clip_geometry(load_recipe(os.path.join(RECIPES, "f_base.yaml")).data)
    clips = [(as_trained(c.frames), c.caption)
             for c in iter_clips(root, frames=frames, stride=stride, exact=False,
                                 videos_only=videos_only, limit=limit)
             if c.frames is not None]
    if not videos_only:
        clips = [(f, c) for f, c in clips if len(f) == 1]
    summary = measure_set(clips)
    return {c: {"mean": summary[c], "std": None, "n": len(clips)} for c in WORLD_COLUMNS + GENERAL_COLUMNS}


def cell(value: dict) -> str:
    if value["mean"] is None:
        return "n/a"
    return f"{value['mean']:.3f}" + (f" ± {value['std']:.3f}" if value["std"] is not None else "")


def render_table(rows: dict[str, dict], note: str) -> str:
    header = ["variant", *WORLD_COLUMNS, *GENERAL_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows.items():
        lines.append("| " + " | ".join([name] + [cell(metrics[c]) for c in header[1:]]) + " |")
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_grid(out: str, samples: dict[str, np.ndarray], prompts: list[str]) -> str:
    import torch

    from curate.eval.grid import compose
    from curate.train.sample import write_video

    cells = [[samples[v][p, 0] for v in VIDEO_VARIANTS] for p in range(len(prompts))]
    frames, _ = compose(cells, list(VIDEO_VARIANTS), [f"{p}  (seed 0)" for p in prompts], min_cell=96)
    return str(write_video(torch.from_numpy(frames), os.path.join(out, "grid.gif"), 4))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "toy"))
    parser.add_argument("--smoke", action="store_true", help="a tiny world, 2 steps per stage: checks every step runs")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes (one thread each)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, default=25, help="DDIM steps per sample")
    parser.add_argument("--base-steps", type=int, help="F-base and P-base steps (default: the recipes')")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from curate.demo import world

    started = time.time()
    data = build_data(out, args.smoke)
    prompts = world.held_out_prompts()[: SMOKE["prompts"] if args.smoke else None]
    seeds = list(range(SMOKE["seeds"] if args.smoke else args.seeds))
    sample_steps = SMOKE["sample_steps"] if args.smoke else args.sample_steps
    # spawn: a fork of this process would carry the data step's threads and Ray client into the workers
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=start_worker) as pool:
        train_seconds = train_all(pool, out, data, SMOKE["steps"] if args.smoke else None, args.base_steps)
        samples = sample_all(pool, out, prompts, seeds, sample_steps)
    log("metrics: variants and reference rows")
    rows = {v: variant_metrics(samples[v], prompts) for v in VIDEO_VARIANTS}
    limit = 24 if args.smoke else 200
    rows["real low-quality videos (train)"] = reference_metrics(data["base"], True, limit)
    rows["real high-quality images (selected)"] = reference_metrics(data["hq"], False, limit)
    note = (f"Held-out prompts ({len(prompts)}: combinations never seen as video) x seeds {seeds}; mean ± std over "
            f"seeds of the per-seed mean over prompts. Reference rows: the same code on the real training "
            f"data (single images have no motion: n/a). direction_accuracy chance = 0.25. "
            f"Curation: {json.dumps(data['curation'])}. "
            f"{'SMOKE RUN (2 training steps per stage): numbers mean nothing.' if args.smoke else ''}")
    table = render_table(rows, note)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(table)
    grid = write_grid(out, samples, prompts)
    result = {"rows": rows, "base_steps": args.base_steps, "prompts": prompts, "seeds": seeds,
              "sample_steps": sample_steps, "smoke": args.smoke,
              "curation": data["curation"], "train_seconds": train_seconds, "grid": grid,
              "seconds": round(time.time() - started)}
    write_json(os.path.join(out, "table.json"), result)
    log(f"done in {result['seconds']} s: {out}/table.md, table.json, grid.gif\n{table}")
    return result


if __name__ == "__main__":
    main()
