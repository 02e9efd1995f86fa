"""`curate eval` on a tiny run: the recipes load strictly, the demo's eval (two checkpoints, weight-free metrics,
skipped rows with reasons, a 2x2 grid), CLIPSIM and FVD rows with weight files given, DuckDB over the table,
and compare."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import av
import duckdb
import numpy as np
import open_clip
import pytest
import torch
from tiny_run import tiny_run

from curate import schema
from curate.config import ConfigError
from curate.demo.run import demo_eval
from curate.eval.fvd import fvd as fvd_of
from curate.eval.fvd_options import FVDOptions
from curate.eval.i3d import InceptionI3d
from curate.eval.run import compare, evaluate, load_eval_recipe, render
from curate.provenance import ProvenanceMismatch


QUALITY = ["temporal_flickering", "motion_score", "dynamic_degree", "sharpness", "contrast", "noise_sigma",
           "text_overlay_rate"]


def test_recipes_load_strictly(tmp_path, monkeypatch):
    tiny = load_eval_recipe("tiny")
    assert len(tiny.prompts) == 4 and tiny.prompts_from is None and tiny.metrics.clip_model is None
    assert (tiny.generate.sampler.frames, tiny.generate.sampler.steps, tiny.generate.sampler.width) == (10, 8, 32)
    monkeypatch.delenv("MSRVTT_DATASET", raising=False)
    with pytest.raises(ConfigError, match="environment variable"):
        load_eval_recipe("msrvtt")
    monkeypatch.setenv("MSRVTT_DATASET", str(tmp_path / "msrvtt"))
    paper = load_eval_recipe("eval/msrvtt")
    assert paper.prompts_from == paper.real == str(tmp_path / "msrvtt")
    assert (paper.generate.sampler.frames, paper.generate.sampler.steps, paper.generate.sampler.guidance, paper.generate.sampler.eta) == (16, 50, 12, 1)
    assert (paper.metrics.clip_model, paper.metrics.fvd_max_clips, paper.metrics.fvd_frames) == ("ViT-B-32:openai", 2048, 16)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompts: [a]\ngenerate: {stepz: 3}\n")
    with pytest.raises(ConfigError, match="generate.stepz"):
        load_eval_recipe(str(bad))
    bad.write_text("name: x\nprompts: [a]\nprompts_from: p.txt\n")
    with pytest.raises(ConfigError, match="exactly one"):
        load_eval_recipe(str(bad))
    relative = tmp_path / "rel.yaml"
    relative.write_text("name: x\nprompts_from: prompts.txt\n")
    assert load_eval_recipe(str(relative)).prompts_from == str(tmp_path / "prompts.txt")


# The tiny recipe with fewer prompts and steps (seconds a video on a busy 2-core machine); 10 frames: I3D needs
# at least 9.
SMALL = """name: small
prompts: [a red circle moving on a teal background, a blue square moving on a grey background]
generate: {frames: 10, height: 32, width: 32, fps: 8, steps: 2, guidance: 4.0}
metrics: {clip_model: null, fvd_frames: 10, quality_frames: 10}
"""


@pytest.fixture(scope="module")
def small_recipe(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("recipe") / "small.yaml"
    path.write_text(SMALL)
    return str(path)


@pytest.fixture(scope="module")
def demo(ray_local, tmp_path_factory, small_recipe):
    run = tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("demo_eval")
    lines: list[str] = []
    return run, out, demo_eval(str(run), str(out), small_recipe, echo=lines.append), lines


def captioned_videos(folder: str) -> list[tuple[str, np.ndarray, str]]:
    """(key, frames, caption) of every video of a generated folder, decoded here with PyAV."""
    out = []
    for tar_path in sorted(Path(folder, "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(members):
            if name.endswith(".mp4"):
                key = name[:-4]
                with av.open(io.BytesIO(members[name])) as container:
                    frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
                out.append((key, frames, members[f"{key}.txt"].decode()))
    return out


def open_clip_clipsim(model_dir: str, folder: str) -> float:
    """CLIPSIM computed with open_clip alone: its eval transform per frame, cosine to the caption, mean over
    frames, then over videos."""
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    scores = []
    with torch.no_grad():
        for _, frames, caption in captioned_videos(folder):
            images = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
            text = model.encode_text(tokenizer([caption]))
            images, text = (torch.nn.functional.normalize(x, dim=-1) for x in (images, text))
            scores.append(float((images @ text.T).mean()))
    return float(np.mean(scores))


def decoded_videos(folder: str) -> list[np.ndarray]:
    videos = []
    for tar_path in sorted(Path(folder, "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    with av.open(io.BytesIO(tar.extractfile(member).read())) as container:
                        videos.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    return videos


def test_demo_eval_table_of_two_checkpoints(demo):
    run, out, result, lines = demo
    con = duckdb.connect()
    rows = con.execute("SELECT checkpoint, checkpoint_step, metric, value, status, reason, protocol, counts, videos "
                       "FROM read_parquet(?) ORDER BY checkpoint_step, metric", [result["results"]]).fetchall()
    assert result["checkpoints"] == [f"{run.name}-step1", f"{run.name}-step2"]
    assert len(rows) == 2 * (len(QUALITY) + 2)
    assert set(schema.load("eval_results").names) == {d[0] for d in con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [result["results"]]).fetchall()}
    for checkpoint, step, metric, value, status, reason, protocol, counts, videos in rows:
        assert checkpoint == f"{run.name}-step{step}" and videos == 2
        if metric in QUALITY:
            assert status == "ok" and value is not None and reason is None
            assert json.loads(counts) == {"clips": 2, "skipped": 0} and json.loads(protocol)["frames"] == 10
        else:  # no weights offline, no real folder: recorded with the reason, never a number
            assert status == "skipped" and value is None
            assert reason == {"clipsim": "the recipe sets no clip_model",
                              "fvd": "no real folder (recipe `real` or --real)"}[metric]
    assert any("fvd skipped" in line for line in lines) and "temporal_flickering" in result["table"]
    # VBench's temporal flickering from frames decoded here with PyAV
    for step in (1, 2):
        videos = decoded_videos(str(out / "eval" / "generated" / f"{run.name}-step{step}"))
        expected = np.mean([(255 - np.abs(np.diff(v.astype(float), axis=0)).mean()) / 255 for v in videos])
        value = con.execute("SELECT value FROM read_parquet(?) WHERE metric = 'temporal_flickering' AND "
                            "checkpoint_step = ?", [result["results"], step]).fetchone()[0]
        assert value == pytest.approx(expected, abs=1e-9)


def test_demo_grid_is_two_checkpoints_by_two_prompts(demo):
    run, out, result, _ = demo
    assert result["grid"] == str(out / "grid.mp4")
    with av.open(result["grid"]) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 10  # the recipe's frames
    # 2 columns of 32 px cells scaled x4 (>= 128 px) with gaps; two rows with their label bands
    assert frames[0].width >= 2 * 128 and frames[0].height >= 2 * 128


def test_clipsim_and_fvd_rows_with_weight_files(demo, tmp_path, small_recipe, folder_factory, tiny_clip_folder):
    run, out, _, _ = demo
    copy = tmp_path / "eval"
    shutil.copytree(out / "eval", copy)
    clip = tiny_clip_folder
    i3d = tmp_path / "i3d_pretrained_400.pt"
    torch.save(InceptionI3d().state_dict(), i3d)  # random weights saved as the real file is laid out
    real = str(copy / "generated" / f"{run.name}-step1")
    lines: list[str] = []
    result = evaluate([str(run)], small_recipe, str(copy), real=real, clip_model=str(clip), i3d_weights=str(i3d),
                      echo=lines.append)
    assert json.loads(lines[0])["generate"]["ran"] == 0  # the videos were already there: resumed, not redone
    rows = {r["metric"]: r for r in duckdb.connect().execute(
        "SELECT * FROM read_parquet(?)", [result["results"]]).fetch_df().to_dict("records")}
    assert set(rows) == set(QUALITY) | {"clipsim", "fvd"}
    generated = str(copy / "generated" / f"{run.name}-step2")  # the run's latest checkpoint's videos
    assert rows["clipsim"]["status"] == "ok" and json.loads(rows["clipsim"]["counts"]) == {"clips": 2, "skipped": 0}
    assert rows["clipsim"]["value"] == pytest.approx(open_clip_clipsim(str(clip), generated), abs=1e-4)
    fvd = rows["fvd"]
    assert fvd["status"] == "ok" and fvd["value"] > 0
    # FVD of the videos against themselves is ~0 (random I3D weights: every FVD here is small, so relative to the
    # others); against the same videos brightened, and the row's (another checkpoint's videos), far from it
    options = dict(i3d_weights=str(i3d), out=str(tmp_path / "fvd.json"))
    with pytest.raises(ProvenanceMismatch, match="input differs .*: real"):  # the eval measured it against step1's
        fvd_of(generated, generated, FVDOptions(frames=10), **options)
    itself = fvd_of(generated, generated, FVDOptions(frames=10), force=True, **options)["value"]
    brighter = folder_factory("brighter", [
        {"key": key, "caption": caption, "frames": np.clip(frames.astype(int) + 80, 0, 255).astype(np.uint8)}
        for key, frames, caption in captioned_videos(generated)])
    shifted = fvd_of(generated, brighter, FVDOptions(frames=10), **options)["value"]
    assert abs(itself) < 1e-3 * shifted and abs(itself) < 1e-3 * fvd["value"], (itself, shifted, fvd["value"])
    protocol = json.loads(fvd["protocol"])
    assert protocol["extractor_sha256"] == hashlib.sha256(i3d.read_bytes()).hexdigest() and protocol["frames"] == 10
    assert json.loads(fvd["counts"]) == {"real": 2, "generated": 2}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate([str(run)], small_recipe, str(copy), i3d_weights=str(tmp_path / "absent.pt"))


def result_rows(out: Path) -> int:
    return len(pq_rows(str(out / "eval")))


def stage_tables(folder: Path) -> dict[str, int]:
    """mtime of every generated shard and per-clip metric table under an eval run folder."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.glob("generated/*/shards/*"))
            + sorted(folder.glob("generated/*/eval/*/*.parquet"))}


def test_rerun_resumes_then_changed_metric_settings_are_refused_and_forced(demo, tmp_path, small_recipe):
    run, out, result, _ = demo
    copy = tmp_path / "eval"
    shutil.copytree(out / "eval", copy)
    checkpoints = [str(run / "checkpoints" / "step_00000001.pt"), str(run)]
    before = stage_tables(copy)
    lines: list[str] = []
    again = evaluate(checkpoints, small_recipe, str(copy), echo=lines.append)
    shown = [json.loads(line) for line in lines if line.startswith("{")]
    assert [s["generate"]["ran"] for s in shown if "generate" in s] == [0, 0]
    metrics = [(name, s) for line in shown for name, s in line.items() if name != "generate"]
    assert {name for name, _ in metrics} == {"video_quality", "text_overlay"} and len(metrics) == 4
    assert all(s["resumed"] and s["measured_shards"] == 0 for _, s in metrics)
    assert stage_tables(copy) == before  # nothing generated or measured again
    assert again["rows"] == result_rows(out) and [r["value"] for r in pq_rows(str(copy))] == [
        r["value"] for r in pq_rows(str(out / "eval"))]  # the recorded values
    record = json.loads((copy / "eval.json").read_text())["provenance"][f"{run.name}-step2"]
    assert set(record) == {"generate", "video_quality", "text_overlay"}
    assert record["video_quality"]["config"]["frames"] == 10 and record["generate"]["checkpoint_sha256"]

    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(small_recipe).read_text().replace("quality_frames: 10", "quality_frames: 6"))
    with pytest.raises(ProvenanceMismatch, match=r"step1 video_quality: .*frames: 10 -> 6"):
        evaluate(checkpoints, str(changed), str(copy), echo=lambda _: None)
    assert stage_tables(copy) == before  # refused before any stage ran
    forced = evaluate(checkpoints, str(changed), str(copy), force=True, echo=lambda _: None)
    after = stage_tables(copy)
    assert {k for k in after if after[k] != before[k]} == {k for k in before if "/eval/" in k}  # videos kept
    rows = {(r["checkpoint"], r["metric"]): r for r in pq_rows(forced["out"])}
    assert json.loads(rows[(f"{run.name}-step2", "sharpness")]["protocol"])["frames"] == 6


def write_results(folder: Path, checkpoint: str, values: dict) -> str:
    folder.mkdir()
    rows = [{"checkpoint": checkpoint, "metric": m, "value": v, "status": "ok" if v is not None else "skipped",
             "reason": None if v is not None else "weights missing"} for m, v in values.items()]
    import pyarrow.parquet as pq

    pq.write_table(schema.table("eval_results", rows), folder / "results.parquet")
    return str(folder)


def test_compare_sets_two_runs_side_by_side(tmp_path, demo):
    a = write_results(tmp_path / "a", "base", {"clipsim": 0.30, "fvd": 485.0, "temporal_flickering": None})
    b = write_results(tmp_path / "b", "spa", {"clipsim": 0.2962, "fvd": 653.0, "dynamic_degree": 0.5})
    lines = compare(a, b).splitlines()
    assert lines[0].split() == ["metric", "A:", "base", "B:", "spa", "B", "-", "A"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table["clipsim"] == ["0.3000", "0.2962", "-0.0038"]
    assert table["fvd"] == ["485.0000", "653.0000", "168.0000"]
    assert table["temporal_flickering"] == ["-", "-", "-"] and table["dynamic_degree"] == ["-", "0.5000", "-"]
    _, out, _, _ = demo  # two checkpoints per run: rows match by checkpoint and metric
    same = compare(str(out / "eval"), str(out / "eval")).splitlines()
    assert len(same) == 1 + 2 * (len(QUALITY) + 2) and all(line.split()[-1] in ("0.0000", "-") for line in same[1:])
    assert "skipped" in render(pq_rows(a))


def pq_rows(folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(folder, "results.parquet")).to_pylist()


def test_cli_eval_and_compare(demo, small_recipe, tmp_path):
    """What a user types: `curate eval CKPT --recipe R --out DIR`, then `curate eval compare A B`."""
    from typer.testing import CliRunner

    from curate.cli import app

    run, out, result, _ = demo
    runner = CliRunner()
    last = str(run / "checkpoints" / "step_00000002.pt")
    done = runner.invoke(app, ["eval", last, "--recipe", small_recipe, "--out", str(tmp_path / "cli_eval")])
    assert done.exit_code == 0, done.output
    assert "temporal_flickering" in done.output and "results:" in done.output
    compared = runner.invoke(app, ["eval", "compare", os.path.dirname(result["results"]), str(tmp_path / "cli_eval")])
    assert compared.exit_code == 0, compared.output
    assert "temporal_flickering" in compared.output
    bundled = runner.invoke(app, ["eval", last, "--recipe", "nosuch", "--out", str(tmp_path / "x")])
    assert bundled.exit_code == 2 and "error:" in bundled.output


def test_released_model_row_beside_a_trained_checkpoint(ray_local, tmp_path_factory, small_recipe, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.train.released import random_checkpoint

    run = tiny_run(tmp_path_factory)
    vc2 = random_checkpoint("videocrafter2_tiny", tmp_path / "model.ckpt")
    source = f"videocrafter2_tiny:{vc2}"
    described = CliRunner().invoke(app, ["eval", source, str(run), "--recipe", small_recipe, "--describe"])
    assert described.exit_code == 0, described.output
    assert "videocrafter2_tiny: 2 videos of 10 frames at 32x32, fps 8" in described.output
    assert described.output.count("per video (estimate from the FLOP model)") == 2
    result = evaluate([source, str(run)], small_recipe, str(tmp_path / "eval"), echo=lambda _: None)
    assert result["checkpoints"] == ["videocrafter2_tiny", f"{run.name}-step2"]
    rows = duckdb.connect().execute("SELECT checkpoint, checkpoint_step, checkpoint_path, checkpoint_sha256, metric, "
                                    "status FROM read_parquet(?)", [result["results"]]).fetchall()
    mine = [r for r in rows if r[0] == "videocrafter2_tiny"]
    assert len(mine) == len(QUALITY) + 2 and all(r[1] is None and r[2] == f"videocrafter2_tiny:{vc2}" for r in mine)
    assert mine[0][3] == hashlib.sha256(vc2.read_bytes()).hexdigest()
    assert all(r[5] == "ok" for r in mine if r[4] in QUALITY)
    videos = decoded_videos(str(tmp_path / "eval" / "generated" / "videocrafter2_tiny"))
    assert [v.shape for v in videos] == [(10, 32, 32, 3)] * 2
    assert "videocrafter2_tiny" in result["table"] and f"{run.name}-step2" in result["table"]
