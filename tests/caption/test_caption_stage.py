"""The caption stage end to end against the loopback pixel server: every success sample captioned from its own
frames, failures as rows, the `samples` columns, resume, refusal of changed settings, a SIGKILL mid-run, bad
input (exit 2), and the API key in no output. The hf backend on a tiny random Qwen2-VL: the same rows, each
sample's caption the model's answer to its own frames, weights hashes in provenance, resume, a missing model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from caption_data import API_KEY, KEY_ENV, build_dataset, two_colours
from tiny_vlm import save_tiny_qwen2_vl
from typer.testing import CliRunner

from curate.caption.frames import caption_frames
from curate.caption.hf import HFCaptioner
from curate.caption.stage import caption
from curate.cli import app
from curate.config import CaptionSection, ConfigError, SelectSection
from curate.demo.chat_server import start
from curate.provenance import ProvenanceMismatch
from curate.selection import select
from curate.shards.folder import DatasetFolder
from curate.shards.reader import samples
from curate.stats.query import connect, run

SHARDS = {"00000": [two_colours("red", "blue"), two_colours("green", "white"), ("blue",), ("yellow",) * 8,
                    "broken", "failed"],
          "00001": [two_colours("white", "red"), ("purple",), two_colours("blue", "green")]}


def files_containing(root: str, text: str) -> list[str]:
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if text.encode() in open(path, "rb").read():
                hits.append(path)
    return hits


def test_caption_run_rows_view_resume_and_changed_prompt(ray_local, tmp_path):
    root = str(tmp_path / "ds")
    expected = build_dataset(root, str(tmp_path / "media"), SHARDS)
    slow = start(latency_s=3)
    try:  # the bound on the whole run: shards left unwritten for the next run, not failure rows
        bounded = caption(root, CaptionSection(model="tiny-vlm", endpoint=slow.base_url, name="tiny",
                                               api_key_env=KEY_ENV, max_run_seconds=1))
    finally:
        slow.shutdown()
    assert len(bounded["failed_shards"]) == 2 and "time bound" in bounded["failed_shards"][0]["error"]
    assert not [n for n in os.listdir(os.path.join(root, "captions", "tiny")) if n.endswith(".parquet")]
    # the slow answer (5 s) outlasts the per-request timeout (3 s); an ordinary one on a loaded machine does not
    server = start(faults=["429", "500", "drop", "slow"], retry_after=1, slow_s=5)
    try:
        section = CaptionSection(model="tiny-vlm", endpoint=server.base_url, name="tiny", concurrency=4, timeout=3,
                                 frames=4, api_key_env=KEY_ENV)
        summary = caption(root, section)
        assert summary["captioned_shards"] == 2 and not summary["failed_shards"], summary["failed_shards"]
        rows = {r["key"]: r for r in run(connect(root), "SELECT * FROM samples ORDER BY key").to_pylist()}
        assert len(rows) == 9
        for key, text in expected.items():
            row = rows[key]
            if row["caption_tiny"] is None:
                continue
            assert row["caption_tiny"] == text, key  # its own frames, in order
            assert row["caption"] == f"source caption {int(key[1:])}"  # the source caption stays beside it
            assert row["caption_tiny_model"] == "tiny-vlm" and len(row["caption_tiny_prompt_sha256"]) == 64
            assert row["caption_tiny_prompt_tokens"] > 0 and row["caption_tiny_completion_tokens"] > 0
        assert rows["k000"]["caption_tiny"] == "4 frames: red, red, blue, blue"
        assert rows["k002"]["caption_tiny"] == "1 frames: blue" and rows["k002"]["caption_tiny_frames"] == 1
        assert rows["k003"]["caption_tiny_error"].startswith("empty_answer")  # all yellow: empty answer
        assert rows["k004"]["caption_tiny_error"].startswith("decode_error")
        assert rows["k005"]["caption_tiny"] is None and rows["k005"]["caption_tiny_error"] is None  # not a success
        assert rows["k007"]["caption_tiny_error"].startswith("refused")  # all purple: refusal
        assert summary["captioned"] == 5 and summary["failed_samples"] == 3
        # one attempt per sample sent + one retry per injected fault (more only if an ordinary answer timed out)
        assert sum(r["caption_tiny_attempts"] or 0 for r in rows.values()) >= 7 + 4
        assert server.authorizations == {f"Bearer {API_KEY}"}
        assert not files_containing(root, API_KEY)

        picked = select(root, str(tmp_path / "train"), SelectSection(where="modality = 'image'", caption="tiny"))
        assert picked["kept"] == 2
        texts = {s.key: s.caption_text for sid in DatasetFolder(str(tmp_path / "train")).complete_shards()
                 for s in samples(str(tmp_path / "train"), sid, ["caption"], captions=True)}
        assert texts == {"k002": "1 frames: blue", "k007": "source caption 7"}  # refused: the source caption stays
        record = json.loads((tmp_path / "train" / "provenance.json").read_text())
        assert record["caption"]["run"] == "tiny" and record["caption"]["replaced"] == 1
        with pytest.raises(ConfigError, match="choose from tiny"):
            select(root, str(tmp_path / "other"), SelectSection(caption="nope"))

        received = server.received  # (answers may still trail: a request the client gave up on ends later)
        again = caption(root, section)
        assert again["captioned_shards"] == 0 and again["skipped_shards"] == 2 and server.received == received
        prompt = tmp_path / "prompt.txt"
        prompt.write_text("Name the colours.")
        with pytest.raises(ProvenanceMismatch):
            caption(root, CaptionSection(model="tiny-vlm", endpoint=server.base_url, name="tiny",
                                         prompt_file=str(prompt)))
    finally:
        server.shutdown()


def test_kill_mid_run_then_resume_captions_every_sample_once(ray_address, tmp_path):
    """SIGKILL `curate caption` once its first shard table landed, rerun it: every success key once, right. Both
    runs drive the session's Ray: the kill takes the driver, and Ray ends its job's tasks and actors."""
    root = str(tmp_path / "ds")
    colours = ["red", "green", "blue", "white"]
    expected = build_dataset(root, str(tmp_path / "media"), {
        f"{s:05d}": [two_colours(colours[(s + i) % 4], colours[(s + i + 1) % 4]) for i in range(2)]
        for s in range(6)})
    server = start(latency_s=0.3)
    cmd = [sys.executable, "-m", "curate.cli", "caption", root, "--endpoint", server.base_url, "--model", "tiny-vlm",
           "--name", "tiny", "--concurrency", "2", "--api-key-env", KEY_ENV, "--ray-address", ray_address]
    out = os.path.join(root, "captions", "tiny")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline and not (os.path.isdir(out) and any(n.endswith(".parquet")
                                                                           for n in os.listdir(out))):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        first_output = proc.communicate()[0].decode()
        written = [n for n in os.listdir(out) if n.endswith(".parquet")]
        assert 0 < len(written) < 6
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        # a worker of the killed run may still land the shard it was on: at least what was there is skipped
        assert summary["skipped_shards"] >= len(written)
        assert summary["captioned_shards"] + summary["skipped_shards"] == 6
        assert summary["captioned_shards"] >= 1
        assert API_KEY not in rerun.stdout + rerun.stderr + first_output
    finally:
        server.shutdown()
    table = duckdb.sql(f"SELECT key, caption FROM read_parquet('{out}/*.parquet')").fetchall()
    assert sorted(k for k, _ in table) == sorted(expected)  # every sample once
    assert dict(table) == expected
    assert not [n for n in os.listdir(out) if n.startswith(".")] and not files_containing(root, API_KEY)


@pytest.mark.parametrize("flags, message", [
    (["--backend", "bogus"], "choose from openai"),
    (["--endpoint", "localhost:8000"], "not an http(s) URL"),
    (["--api-key-env", "CURATE_NO_SUCH_KEY_VAR"], "CURATE_NO_SUCH_KEY_VAR"),
    (["--name", "Bad-Name"], "--name"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "--prompt-file"),
])
def test_bad_input_exits_2_naming_the_problem(tmp_path, flags, message):
    root = str(tmp_path / "ds")
    build_dataset(root, str(tmp_path / "media"), {"00000": [("blue",)]})
    args = ["caption", root, "--model", "m", "--endpoint", "http://127.0.0.1:9/v1", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not os.path.exists(os.path.join(root, "captions"))  # nothing written


def test_recipe_caption_section_runs_after_download(tmp_path):
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.mp4\ta\n")
    (tmp_path / "prompt.txt").write_text("Name the colours.")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndownload: {source: urls, input: urls.txt}\n"
                      "caption: {model: tiny-vlm, endpoint: 'http://127.0.0.1:9/v1', name: r,\n"
                      "          prompt_file: prompt.txt}\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "ds"), "--describe"])
    assert result.exit_code == 0, result.output
    assert "pipeline r: download -> caption" in result.output and "-> caption_r" in result.output


def test_hf_backend_captions_each_sample_from_its_own_frames_and_resumes(ray_local, tmp_path, tiny_vlm):
    root = str(tmp_path / "ds")
    build_dataset(root, str(tmp_path / "media"), SHARDS)
    model = str(tmp_path / "model")  # a copy: its weights are replaced below
    shutil.copytree(tiny_vlm, model)
    section = CaptionSection(model=model, backend="hf", name="hf", batch_size=3, max_tokens=8)
    summary = caption(root, section)
    assert summary["captioned_shards"] == 2 and not summary["failed_shards"], summary["failed_shards"]
    rows = {r["key"]: r for r in run(connect(root), "SELECT * FROM samples ORDER BY key").to_pylist()}

    # every success sample's row holds what the model answers to that sample's own frames, asked alone
    captioner = HFCaptioner(model, section.prompt(), section.max_tokens, "cpu")
    answered = 0
    for sid in DatasetFolder(root).complete_shards():
        for sample in samples(root, sid):
            row = rows[sample.key]
            if sample.key == "k004":  # the broken file
                assert row["caption_hf"] is None and row["caption_hf_error"].startswith("decode_error")
                continue
            frames = caption_frames(sample.media, sample.row["modality"], section.frames, section.max_side)
            expected = captioner.answer([frames])[0]
            assert row["caption_hf"] == getattr(expected, "text", None), sample.key
            assert row["caption_hf_frames"] == (4 if sample.row["modality"] == "video" else 1)
            assert row["caption_hf_prompt_tokens"] == getattr(expected, "prompt_tokens", None)
            assert row["caption_hf_model"] == model and row["caption_hf_attempts"] == 1
            answered += row["caption_hf"] is not None
    assert answered == summary["captioned"] > 0 and summary["failed_samples"] == 9 - 1 - answered  # k005: no row
    assert rows["k005"]["caption_hf"] is None and rows["k005"]["caption_hf_error"] is None
    assert rows["k000"]["caption_hf_prompt_tokens"] > rows["k002"]["caption_hf_prompt_tokens"]  # 4 frames vs 1

    record = json.loads((tmp_path / "ds" / "captions" / "hf" / "_provenance.json").read_text())
    digest = hashlib.sha256((tmp_path / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert record["config"]["weights_sha256"] == {"model.safetensors": digest}
    assert record["model_path"] == model and record["transformers"] and record["endpoint"] is None

    assert caption(root, section)["skipped_shards"] == 2  # resume: nothing left to do
    table = tmp_path / "ds" / "captions" / "hf" / "00001.parquet"
    before = duckdb.sql(f"SELECT * FROM read_parquet('{table}') ORDER BY key").fetchall()
    table.unlink()
    again = caption(root, section)
    assert again["captioned_shards"] == 1 and again["skipped_shards"] == 1
    assert duckdb.sql(f"SELECT * FROM read_parquet('{table}') ORDER BY key").fetchall() == before  # greedy: the same

    save_tiny_qwen2_vl(model, seed=1)  # other weights under the same folder: another model
    with pytest.raises(ProvenanceMismatch, match="weights_sha256"):
        caption(root, section)


@pytest.mark.parametrize("flags, message", [
    (["--model", "tiny-org/absent-vlm"], "hf download tiny-org/absent-vlm"),
    (["--model", "/nonexistent/model"], "/nonexistent/model: no such model folder"),
    (["--model", "m", "--endpoint", "http://127.0.0.1:9/v1"], "--endpoint is for the openai backend"),
])
def test_hf_backend_missing_model_exits_2(tmp_path, monkeypatch, flags, message):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    root = str(tmp_path / "ds")
    build_dataset(root, str(tmp_path / "media"), {"00000": [("blue",)]})
    result = CliRunner().invoke(app, ["caption", root, "--backend", "hf", *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not os.path.exists(os.path.join(root, "captions"))  # nothing written


def test_recipe_hf_caption_runs_on_actors(tmp_path, tiny_vlm):
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.mp4\ta\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndownload: {{source: urls, input: urls.txt}}\n"
                      f"caption: {{model: '{tiny_vlm}', backend: hf, name: r, batch_size: 4}}\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "ds"), "--describe"])
    assert result.exit_code == 0, result.output
    assert "(hf) on 4 frame(s) per video, batches of 4 -> caption_r" in result.output
    assert "actor(s), 1.0 GPU each when the cluster has GPUs, batch 4" in result.output
