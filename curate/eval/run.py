"""`curate eval`: an eval recipe (prompts, sampler, metrics) over checkpoints -> generated folders + one results
table (RUN_DIR/results.parquet, one row per checkpoint x metric with its protocol); `compare` sets two runs side
by side.

Each step is a stage: `generate` per checkpoint, then one metric stage per metric (curate.eval.metric_stage), so
a rerun does nothing again and a changed setting is refused by name before any work, unless forced. Metrics: the
weight-free video quality measures and the text-overlay rate (OCR) always; CLIPSIM when the recipe's CLIP weights
resolve; FVD when the I3D weights resolve and a real folder is given. A metric whose weights are missing is a
`skipped` row that says why (never random weights); a wrong weight file fails the run before any number is written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from curate import provenance, schema
from curate.atomic import publish
from curate.config import ConfigError, expand_path, from_mapping, load_yaml, option_help, to_mapping
from curate.eval.fvd_options import FVDOptions
from curate.eval.generate import GenerateOptions, GenerateStage, checkpoint_label, read_prompts
from curate.shards.folder import DatasetFolder
from curate.storage import write_json

RESULTS = "results.parquet"
QUALITY_METRICS = ("temporal_flickering", "motion_score", "dynamic_degree", "sharpness", "contrast", "noise_sigma")


_FVD = FVDOptions()  # the recipe's fvd_* keys default to `curate fvd`'s flags


@dataclass
class MetricsSection:
    clip_model: str | None = field(default="ViT-B-32:openai", metadata=option_help(
        "CLIPSIM's CLIP (open_clip NAME:PRETRAINED or a checkpoint); null skips CLIPSIM."))
    clip_frames: int = field(default=16, metadata=option_help("Frames per video for CLIPSIM."))
    fvd: bool = field(default=True, metadata=option_help("Compute FVD (needs `real` and the I3D weights)."))
    i3d_weights: str | None = field(default=None, metadata=option_help(
        "i3d_pretrained_400.pt (default: the standard cache, ~/.cache/curate)."))
    fvd_frames: int = field(default=_FVD.frames, metadata=option_help("Frames per clip for FVD."))
    fvd_max_clips: int = field(default=_FVD.max_clips, metadata=option_help("Clips per side for FVD."))
    fvd_resize: str = field(default=_FVD.resize, metadata=option_help("crop (VideoGPT/StyleGAN-V) or squash (TF FVD)."))
    quality_frames: int = field(default=16, metadata=option_help("Frames per video for the weight-free measures."))
    max_clips: int | None = field(default=None, metadata=option_help("Only the first N videos for CLIPSIM and quality."))
    ocr: bool = field(default=True, metadata=option_help(
        "Text-overlay rate: share of videos where the ocr scorer reads text (a reproduced watermark shows here)."))
    ocr_frames: int = field(default=3, metadata=option_help("Frames per video the OCR reads, spread over quality_frames."))

    def fvd_options(self) -> FVDOptions:
        return FVDOptions(max_clips=self.fvd_max_clips, frames=self.fvd_frames, resize=self.fvd_resize)


@dataclass
class EvalRecipe:
    name: str
    description: str = ""
    prompts: list = field(default_factory=list, metadata=option_help("Prompts written in the recipe."))
    prompts_from: str | None = field(default=None, metadata=option_help(
        "A prompt file (one per line) or a dataset folder whose captions are the prompts."))
    real: str | None = field(default=None, metadata=option_help("Dataset folder of real videos, FVD's reference."))
    generate: GenerateOptions = field(default_factory=GenerateOptions)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    def __post_init__(self):
        if bool(self.prompts) == bool(self.prompts_from):
            raise ConfigError(f"{self.name}: give exactly one of `prompts` (a list) and `prompts_from` (a path)")


def load_eval_recipe(path: str) -> EvalRecipe:
    """An eval recipe file or a bundled one (`tiny`, `eval/msrvtt`), strictly read."""
    from curate.bundled import recipe_path

    name = str(path)
    found = recipe_path(name if os.path.exists(name) or name.startswith("eval/") else f"eval/{name}")
    try:
        recipe = from_mapping(EvalRecipe, load_yaml(found), "")
        base = os.path.dirname(os.path.abspath(found))
        for owner, name in ((recipe, "prompts_from"), (recipe, "real"), (recipe.metrics, "i3d_weights")):
            if getattr(owner, name):
                where = name if owner is recipe else f"metrics.{name}"
                setattr(owner, name, expand_path(getattr(owner, name), base, where))
    except ConfigError as exc:
        raise ConfigError(f"{found}: {exc}") from None
    return recipe


def _write_prompts(recipe: EvalRecipe, out: str) -> str:
    if recipe.prompts_from:
        return recipe.prompts_from
    path = os.path.join(out, "prompts.txt")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(" ".join(str(p).split()) + "\n" for p in recipe.prompts)
    publish(tmp, path)
    return path


def _row(base: dict, metric: str, value=None, status="ok", reason=None, protocol=None, counts=None) -> dict:
    return dict(base, metric=metric, value=None if value is None else float(value), status=status, reason=reason,
                protocol=json.dumps(protocol or {}, sort_keys=True, default=str),
                counts=json.dumps(counts or {}, sort_keys=True, default=str))


def metric_stages(gen_dir: str, recipe: EvalRecipe, real: str | None, device: str) -> tuple[dict, dict]:
    """The metric stages of one generated folder ({metric: MetricStage}, weights checked) and the metrics that will
    not run ({metric: reason}): never random weights, and a metric the recipe turns off says so."""
    from curate.eval.clipsim import ClipSim
    from curate.eval.fvd import FVD
    from curate.eval.metric_stage import MetricStage
    from curate.eval.text_overlay import TextOverlay
    from curate.eval.video_quality import VideoQuality
    from curate.weightfile import WeightsMissing

    m = recipe.metrics
    folder = {"folder": gen_dir}
    stages = {"video_quality": MetricStage(VideoQuality(frames=m.quality_frames), folder, m.max_clips)}
    skipped = {}
    if m.ocr:
        stages["text_overlay_rate"] = MetricStage(TextOverlay(frames=m.quality_frames, ocr_frames=m.ocr_frames),
                                                  folder, m.max_clips)
    else:
        skipped["text_overlay_rate"] = "the recipe sets ocr: false"
    if not m.clip_model:
        skipped["clipsim"] = "the recipe sets no clip_model"
    else:
        stages["clipsim"] = MetricStage(ClipSim(clip_model=m.clip_model, frames=m.clip_frames, device=device), folder,
                                        m.max_clips)
    options = m.fvd_options()
    if not m.fvd:
        skipped["fvd"] = "the recipe sets fvd: false"
    elif not real:
        skipped["fvd"] = "no real folder (recipe `real` or --real)"
    else:
        stages["fvd"] = MetricStage(FVD(frames=options.frames, resize=options.resize, batch_size=options.batch_size,
                                        weights=m.i3d_weights, device=device),
                                    {"generated": gen_dir, "real": real}, options.max_clips)
    for name in [n for n in stages if n in ("clipsim", "fvd")]:
        try:
            stages[name].metric.check()
        except WeightsMissing as exc:
            skipped[name] = f"{'CLIP' if name == 'clipsim' else 'I3D'} weights missing: {exc}"
            del stages[name]
    return stages, skipped


def metric_rows(base: dict, name: str, result: dict, recipe: EvalRecipe) -> list[dict]:
    """The results-table rows of one metric stage's result."""
    if result.get("failed_shards"):
        reason = "; ".join(f"{f['shard']}: {f['error']}" for f in result["failed_shards"])[:500]
        names = QUALITY_METRICS if name == "video_quality" else (name,)
        return [_row(base, n, status="failed", reason=f"{reason} (rerun to continue)") for n in names]
    if name == "video_quality":
        m = recipe.metrics
        counts = {"clips": result["clips"], "skipped": result["skipped"]}
        return [_row(base, n, result[n], counts=counts, protocol={
            "frames": m.quality_frames, "max_clips": m.max_clips,
            "measure": result["protocol"].get("dynamic" if n == "dynamic_degree" else n)}) for n in QUALITY_METRICS]
    if name == "fvd":
        counts = {"real": result["real"]["clips"], "generated": result["generated"]["clips"]}
    else:
        counts = {"clips": result["clips"], "skipped": result["skipped"]}
    return [_row(base, name, result["value"], protocol=result["protocol"], counts=counts)]


def measure(gen_dir: str, base: dict, recipe: EvalRecipe, real: str | None, echo=print, *, force: bool = False,
            device: str = "cpu", address: str | None = None) -> list[dict]:
    """The metric rows of one generated folder, each metric through its stage (resumed when measured before)."""
    stages, skipped = metric_stages(gen_dir, recipe, real, device)
    return _measure(stages, skipped, base, recipe, echo, lambda name: force, address)[0]


def _measure(stages: dict, skipped: dict, base: dict, recipe: EvalRecipe, echo, forced, address) -> tuple[list, dict]:
    """Rows of the metrics (run, or skipped with their reason), and each stage's provenance."""
    from curate.eval.metric_stage import run_metric

    rows, records = [], {}
    for name in ("video_quality", "text_overlay_rate", "clipsim", "fvd"):
        if name in skipped:
            rows.append(_row(base, name, status="skipped", reason=skipped[name]))
            echo(f"{base['checkpoint']}: {name} skipped: {skipped[name]}")
            continue
        stage = stages[name]
        result = run_metric(stage, force=forced(name), address=address)
        echo(json.dumps({stage.name: {"checkpoint": base["checkpoint"], "resumed": result["resumed"],
                                      "measured_shards": result["measured_shards"],
                                      "failed_clips_this_run": result["failed_clips_this_run"],
                                      "failed_shards": result["failed_shards"]}}, default=str))
        rows += metric_rows(base, name, result, recipe)
        records[stage.name] = stage.read_provenance()
    return rows, records


def describe(checkpoints: list[str], recipe: str, gpus: int | None = None) -> str:
    """The plan of `evaluate` before anything runs: per model, the videos, and the FLOP model's estimates of
    time and peak GPU memory per video (bf16 on GPUs), and the metrics that will run."""
    from curate.train import sample_plan
    from curate.train.sample import resolve_source

    spec = load_eval_recipe(recipe)
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    prompts = len(spec.prompts) if spec.prompts else len(read_prompts(spec.prompts_from, spec.generate.caption_seed,
                                                                       spec.generate.max_prompts))
    videos = min(prompts, spec.generate.max_prompts or prompts) * spec.generate.per_prompt
    lines = [f"eval recipe {spec.name}: {spec.description}".rstrip(": ")]
    for checkpoint in checkpoints:
        source = resolve_source(checkpoint)
        numbers = sample_plan.plan(source, spec.generate.sampler, spec.generate.sampler.precision or "bf16")
        lines += sample_plan.render(checkpoint_label(source), numbers, videos, gpus)
    m = spec.metrics
    lines.append(f"metrics: weight-free video quality ({m.quality_frames} frames); "
                 + (f"CLIPSIM {m.clip_model}" if m.clip_model else "no CLIPSIM") + "; "
                 + (f"FVD against {spec.real or '--real'} ({m.fvd_max_clips} clips of {m.fvd_frames} frames)"
                    if m.fvd else "no FVD"))
    return "\n".join(lines)


def evaluate(checkpoints: list[str], recipe: str, out: str, *, real: str | None = None,
             clip_model: str | None = None, i3d_weights: str | None = None, force: bool = False,
             address: str | None = None, echo=print) -> dict:
    """Generate with each checkpoint or released model and measure every folder, each step a stage: a rerun
    generates and measures nothing again and returns the recorded metrics. Before any work, every stage whose
    recorded settings or input differ is named and refused unless `force`, which starts over only those stages
    (and the metrics of videos generated anew). Writes OUT/results.parquet and OUT/eval.json (recipe,
    checkpoints, every stage's provenance). `real`, `clip_model`, `i3d_weights` override the recipe's."""
    from curate import engine
    from curate.eval.metric_stage import run_device
    from curate.provenance import ProvenanceMismatch
    from curate.train.sample import resolve_source

    spec = load_eval_recipe(recipe)
    if clip_model:
        spec.metrics.clip_model = clip_model
    if i3d_weights:
        spec.metrics.i3d_weights = i3d_weights
    real = real or spec.real
    if real and spec.metrics.fvd and not DatasetFolder(real).exists():
        raise FileNotFoundError(f"FVD's real folder {real} is not a dataset folder (no shards/)")
    if spec.metrics.i3d_weights and not os.path.isfile(spec.metrics.i3d_weights):
        raise FileNotFoundError(f"I3D weights file {spec.metrics.i3d_weights} does not exist")  # named, so not skipped
    if not checkpoints:
        raise ValueError("give at least one checkpoint or run folder")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    prompts = _write_prompts(spec, out)
    paths = [resolve_source(c) for c in checkpoints]
    labels = [checkpoint_label(p) for p in paths]
    if len(set(labels)) != len(labels):
        raise ValueError(f"checkpoints share a label: {labels}; evaluate them in separate runs")
    device = run_device(None, address)
    plans = []
    for path, label in zip(paths, labels):
        generate = GenerateStage(path, prompts, os.path.join(out, "generated", label), spec.generate)
        plans.append((label, generate, *metric_stages(generate.out, spec, real, device)))
    changed = {}  # (label, stage name) -> why a rerun without --force is refused
    for label, generate, stages, _ in plans:
        for stage in [generate, *stages.values()]:
            if (refused := engine.refusal(stage)) is not None:
                changed[(label, stage.name)] = str(refused)
    if changed and not force:
        raise ProvenanceMismatch("; ".join(f"{label} {name}: {why}" for (label, name), why in changed.items()))
    rows, records, created = [], {}, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for label, generate, stages, skipped in plans:
        summary = engine.run_stage(generate, force=(label, generate.name) in changed, address=address)
        echo(json.dumps({"generate": summary}, default=str))
        regenerated = summary["ran"] > 0  # new videos: their metrics start over

        def forced(name, label=label, regenerated=regenerated):
            return regenerated or (label, stages[name].name) in changed

        base = {"recipe": spec.name, "checkpoint": label, "checkpoint_path": generate.checkpoint,
                "checkpoint_sha256": generate.checkpoint_sha256, "checkpoint_step": _step(generate.out),
                "generated": generate.out, "videos": len(generate.items), "created_at": created}
        measured, metric_records = _measure(stages, skipped, base, spec, echo, forced, address)
        rows += measured
        records[label] = {"generate": generate.read_provenance(), **metric_records}
    table = schema.table("eval_results", rows)
    tmp = os.path.join(out, f".{RESULTS}.tmp")
    pq.write_table(table, tmp)
    publish(tmp, os.path.join(out, RESULTS))
    write_json(os.path.join(out, "eval.json"), {"recipe": to_mapping(spec), "checkpoints": dict(zip(labels, [
        g.checkpoint for _, g, _, _ in plans])), "real": real, "prompts": prompts, "created_at": created,
        "versions": provenance.package_versions(), "provenance": records})
    return {"out": out, "results": os.path.join(out, RESULTS), "rows": len(rows), "checkpoints": labels,
            "table": render(rows)}


def _step(gen_dir: str) -> int | None:
    """The checkpoint step the folder's videos were sampled from (every row has it)."""
    import duckdb

    found = duckdb.connect().execute(f"SELECT max(checkpoint_step) FROM read_parquet('{gen_dir}/shards/*.parquet')"
                                     ).fetchone()
    return found[0] if found else None


def read_results(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, RESULTS) if os.path.isdir(run_dir) else run_dir
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: not an eval run folder")
    return pq.read_table(path).to_pylist()


def _format(value) -> str:
    return "-" if value is None else f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + lines)


def render(rows: list[dict]) -> str:
    """The results as an aligned text table (skipped metrics show their reason)."""
    lines = [[r["checkpoint"], r["metric"], _format(r["value"]) if r["status"] == "ok" else r["status"],
              (r["reason"] or "")[:70]] for r in rows]
    return _table(["checkpoint", "metric", "value", "note"], lines)


def compare(run_a: str, run_b: str) -> str:
    """Metrics of two eval runs side by side with B - A. Rows match by (checkpoint, metric); when each run has a
    single checkpoint they match by metric alone (two models, one recipe)."""
    a, b = read_results(run_a), read_results(run_b)
    single = len({r["checkpoint"] for r in a}) == 1 and len({r["checkpoint"] for r in b}) == 1

    def key(row):
        return row["metric"] if single else (row["checkpoint"], row["metric"])

    index_a, index_b = {key(r): r for r in a}, {key(r): r for r in b}
    lines = []
    for k in list(index_a) + [k for k in index_b if k not in index_a]:
        ra, rb = index_a.get(k), index_b.get(k)
        va = ra["value"] if ra and ra["status"] == "ok" else None
        vb = rb["value"] if rb and rb["status"] == "ok" else None
        name = k if single else f"{k[0]} {k[1]}"
        lines.append([name, _format(va), _format(vb), _format(vb - va) if va is not None and vb is not None else "-"])
    label_a = f"A: {a[0]['checkpoint']}" if single and a else "A"
    label_b = f"B: {b[0]['checkpoint']}" if single and b else "B"
    return _table(["metric", label_a, label_b, "B - A"], lines)
