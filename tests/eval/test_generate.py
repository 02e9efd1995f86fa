"""The generate stage on a tiny trained run: manifest rows in the samples view, H.264 yuv420p members, seeds,
resume after a partial run (complete shards untouched, the lost one rebuilt identically), refused changes,
and prompts picked from a dataset folder's captions."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny_run import tiny_run

from curate.config import from_mapping
from curate.eval.generate import GenerateOptions, GenerateStage, generate, read_prompts
from curate.provenance import ProvenanceMismatch
from curate.stats.query import connect
from curate.stats.query import run as query

PROMPTS = ["a red square", "a blue square", "a green square"]
SETTINGS = dict(per_prompt=2, seed=10, frames=3, steps=2, guidance=4.0, shard_size=4)


def options(**keys) -> GenerateOptions:
    """GenerateOptions from flat keys, as a recipe's `generate:` section or the CLI's flags give them."""
    return from_mapping(GenerateOptions, keys)


def decode(data: bytes) -> tuple[np.ndarray, str, str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt


def members(root: str, sid: str) -> dict[str, bytes]:
    with tarfile.open(os.path.join(root, "shards", f"{sid}.tar")) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


@pytest.fixture(scope="module")
def generated(ray_local, tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    base = tmp_path_factory.mktemp("gen")
    prompts = base / "prompts.txt"
    prompts.write_text("\n".join([PROMPTS[0], "", *PROMPTS[1:]]) + "\n")  # blank lines are not prompts
    out = str(base / "out")
    summary = generate(str(run), str(prompts), out, options(**SETTINGS))
    return run, str(prompts), out, summary


def test_rows_in_the_samples_view_with_generation_columns(generated):
    run, _, out, summary = generated
    assert summary["videos"] == 6 and summary["shards"] == 2 and not summary["failed_shards"]
    rows = query(connect(out), "SELECT * FROM samples ORDER BY row").to_pylist()
    assert [(r["prompt_key"], r["seed"], r["caption"]) for r in rows] == [
        ("p00000", 10, PROMPTS[0]), ("p00000", 11, PROMPTS[0]), ("p00001", 12, PROMPTS[1]),
        ("p00001", 13, PROMPTS[1]), ("p00002", 14, PROMPTS[2]), ("p00002", 15, PROMPTS[2])]
    ckpt = run / "checkpoints" / "step_00000002.pt"  # a run folder means its latest checkpoint
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    for row in rows:
        assert row["status"] == "success" and row["source"] == "generate" and row["modality"] == "video"
        assert row["key"] == f"{row['prompt_key']}_s{row['seed']}"
        assert (row["checkpoint"], row["checkpoint_sha256"], row["checkpoint_step"]) == (str(ckpt), digest, 2)
        assert (row["sample_steps"], row["guidance"], row["eta"]) == (2, 4.0, 1.0)
        data = members(out, row["shard"])
        media = data[f"{row['key']}.mp4"]
        assert row["sha256"] == hashlib.sha256(media).hexdigest() and row["size_bytes"] == len(media)
        frames, codec, pix_fmt = decode(media)
        assert (codec, pix_fmt) == ("h264", "yuv420p")  # what browsers play (the A/B study serves these)
        assert frames.shape == (3, 16, 16, 3) == (row["num_frames"], row["height"], row["width"], 3)
        assert (row["fps"], row["codec"]) == (8.0, "h264")
        assert data[f"{row['key']}.txt"].decode() == row["caption"]
        meta = json.loads(data[f"{row['key']}.json"])
        extra = json.loads(meta["extra"])
        assert extra["line"] >= 1 and extra["sampler"]["steps"] == 2 and meta["sha256"] == row["sha256"]
    provenance = json.loads(open(os.path.join(out, "provenance.json")).read())
    assert provenance["complete"] and provenance["checkpoint_sha256"] == digest
    assert provenance["config"]["sampler"]["guidance"] == 4.0 and provenance["config"]["seed"] == 10


def test_different_seeds_give_different_videos(generated):
    _, _, out, _ = generated
    data = members(out, "00000")
    first, second = decode(data["p00000_s10.mp4"])[0], decode(data["p00000_s11.mp4"])[0]
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 5


def test_resume_rebuilds_only_the_lost_shard_identically(generated):
    run, prompts, out, _ = generated
    shards = os.path.join(out, "shards")
    kept = os.stat(os.path.join(shards, "00000.parquet"))
    before = members(out, "00001")
    # a crash while writing shard 00001: its manifest (the completion mark) never appeared
    os.remove(os.path.join(shards, "00001.parquet"))
    os.remove(os.path.join(shards, "00001.tar"))
    summary = generate(str(run), prompts, out, options(**SETTINGS))
    assert summary["ran"] == 1 and summary["skipped_shards"] == 1
    after = os.stat(os.path.join(shards, "00000.parquet"))
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert members(out, "00001") == before  # same seed, same video: byte for byte
    assert generate(str(run), prompts, out, options(**SETTINGS))["ran"] == 0


def test_other_settings_or_prompts_are_refused_before_any_work(generated, tmp_path):
    run, prompts, out, _ = generated
    with pytest.raises(ProvenanceMismatch):
        generate(str(run), prompts, out, options(**dict(SETTINGS, guidance=7.0)))
    other = tmp_path / "other.txt"
    other.write_text("a yellow square\n")
    with pytest.raises(ProvenanceMismatch):
        generate(str(run), str(other), out, options(**SETTINGS))
    with pytest.raises(ProvenanceMismatch):  # another checkpoint
        generate(str(run / "checkpoints" / "step_00000001.pt"), prompts, out, options(**SETTINGS))
    assert sorted(os.listdir(os.path.join(out, "shards")))[0] == "00000.parquet"


def test_missing_checkpoint_or_prompts_fail_clearly(generated, tmp_path):
    run, prompts, _, _ = generated
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        GenerateStage(str(tmp_path / "nothing.pt"), prompts, str(tmp_path / "o"), GenerateOptions())
    with pytest.raises(FileNotFoundError, match="prompts not found"):
        GenerateStage(str(run), str(tmp_path / "none.txt"), str(tmp_path / "o"), GenerateOptions())
    assert not (tmp_path / "o").exists()


def write_msrvtt_like(root, rows: list[tuple[str, list[str]]], shards: int = 1) -> str:
    """A dataset folder as `curate download msrvtt` writes it: caption = the first sentence, all in extra."""
    os.makedirs(root / "shards", exist_ok=True)
    for s in range(shards):
        part = rows[s::shards]
        pq.write_table(pa.Table.from_pylist([
            {"key": key, "caption": caps[0], "status": "success",
             "extra": json.dumps({"video_id": key, "all_captions": caps})} for key, caps in part]
            + [{"key": f"failed{s}", "caption": "x", "status": "failed_to_download", "extra": None}]),
            root / "shards" / f"{s:05d}.parquet")
    return str(root)


def test_one_caption_per_video_picked_with_a_fixed_seed_and_recorded(tmp_path):
    rng = random.Random(0)
    rows = [(f"msrvtt_video{i}", [f"video {i} caption {j}" for j in range(20)]) for i in range(40)]
    folder = write_msrvtt_like(tmp_path / "a", rows)
    prompts = read_prompts(folder, caption_seed=0)
    assert [p.key for p in prompts] == [key for key, _ in rows]  # success rows only, in manifest order
    for prompt, (_, captions) in zip(prompts, rows):
        assert prompt.text == captions[prompt.extra["caption_index"]]
        assert prompt.extra["captions"] == 20 and prompt.extra["caption_seed"] == 0
    picks = [p.extra["caption_index"] for p in prompts]
    assert len(set(picks)) > 5  # not always the first caption
    assert [p.extra["caption_index"] for p in read_prompts(folder, caption_seed=0)] == picks
    assert [p.extra["caption_index"] for p in read_prompts(folder, caption_seed=1)] != picks
    # the pick belongs to the video, not to its position: other shards and order give the same captions
    shuffled = rows[:]
    rng.shuffle(shuffled)
    again = {p.key: p.text for p in read_prompts(write_msrvtt_like(tmp_path / "b", shuffled, shards=3))}
    assert again == {p.key: p.text for p in prompts}
    assert len(read_prompts(folder, limit=7)) == 7


def test_a_failed_sample_is_a_row_and_its_shard_is_redone(generated, tmp_path):
    run, prompts, _, _ = generated
    # 7x9 pixels do not fit the tiny U-Net's downsampling: every sample fails inside the model
    stage = GenerateStage(str(run), prompts, str(tmp_path / "bad"),
                          options(frames=2, steps=1, height=7, width=9, shard_size=2))
    model_cls, kwargs = stage.model()
    results = model_cls(**kwargs)(stage.expand("00000"))
    stage.write("00000", results)
    rows = pq.read_table(tmp_path / "bad" / "shards" / "00000.parquet").to_pylist()
    assert [(r["prompt_key"], r["seed"]) for r in rows] == [("p00000", 0), ("p00001", 1)]
    for row in rows:
        assert (row["status"], row["error_reason"]) == ("failed_to_generate", "generation_error")
        assert row["error_message"].startswith("RuntimeError") and row["sha256"] is None
    with tarfile.open(tmp_path / "bad" / "shards" / "00000.tar") as tar:
        assert tar.getnames() == []
    assert rows[0]["checkpoint_step"] == 2 and len(rows) == 2
    assert stage.todo() == ["00000", "00001"]  # the failed shard is tried again, with the unwritten one


def test_an_actor_granted_a_gpu_that_torch_cannot_use_stops_with_the_reason(monkeypatch):
    import torch

    from curate import device
    from curate.eval.generate import GenerateModel
    from curate.train.sampler_options import SamplerOptions

    monkeypatch.setattr(device, "granted_gpus", lambda: ["0"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(device.DeviceError, match="not falling back to the CPU"):
        GenerateModel("any.pt", SamplerOptions())
