"""Training from object storage (moto S3 on 127.0.0.1): shards streamed from s3://, the run folder in s3://,
resume from it; the same numbers as the same run on local disk."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
import torch
import yaml
from typer.testing import CliRunner

from curate import storage
from curate.cli import app
from curate.train import checkpoints, preflight
from curate.train.data import JointBatches, LoaderConfig, make_loader
from curate.train.loop import Trainer
from curate.train.recipe import recipe_from_dict

TESTS = Path(__file__).resolve().parents[1]


def _write_dataset():
    # tests/train/conftest.py writes curated shards; conftest modules are not importable by name
    spec = importlib.util.spec_from_file_location("train_conftest_s3", TESTS / "train" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_dataset


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> Path:
    """8 videos and 8 images over 4 shards, with a manifest per shard as the select stage leaves them."""
    root = _write_dataset()(tmp_path_factory.mktemp("sel"), videos=8, images=8)
    for tar in sorted((root / "shards").glob("*.tar")):
        storage.write_table(pa.table({"key": [tar.stem]}), str(tar.with_suffix(".parquet")))
    return root


def upload(folder: Path, url: str) -> str:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.write_bytes(storage.join(url, *path.relative_to(folder).parts), path.read_bytes())
    return url


def _keys(url: str) -> list[str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) + 1:] for o in listing.get("Contents", []))


def recipe_dict(data_dir: str) -> dict:
    return {
        "name": "t", "stage": "base", "trainable": "all",
        "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
        "data": {"dirs": [data_dir], "frames": 2, "height": 8, "width": 8, "image_ratio": 0.25, "num_workers": 1},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {"steps": 4, "batch_size": 2, "micro_batch_size": 1, "log_every": 1, "checkpoint_every": 2,
                  "ema_decay": 0.9, "cpu_threads": 1, "precision": "fp32"},
    }


def test_loader_streams_s3_shards_like_local_disk(local_data, s3_bucket):
    data = upload(local_data, s3_bucket + "/sel")

    def cfg(directory, **kw):
        return LoaderConfig(dirs=(directory,), frames=4, height=32, width=32, batch_size=2, image_ratio=0.5, seed=3, **kw)

    remote = JointBatches(cfg(data), rank=1, world_size=2)
    assert {m.tar for source in remote.sources for s in source for m in (s.media, s.caption, s.meta)} == {
        storage.join(data, "shards", f"{i:05d}.tar") for i in range(4)}  # members are read from the bucket
    local = list(itertools.islice(iter(JointBatches(cfg(str(local_data)), rank=1, world_size=2)), 6))
    # two loader workers (forked, each with its own S3 client), resumed mid-stream: the same batches in order
    streamed = list(itertools.islice(iter(make_loader(cfg(data, num_workers=2), rank=1, world_size=2, start_batch=2)), 4))
    assert [b["batch_index"] for b in streamed] == [2, 3, 4, 5]
    for x, y in zip(local[2:], streamed):
        assert x["keys"] == y["keys"] and x["captions"] == y["captions"]
        assert torch.equal(x["pixels"], y["pixels"]) and torch.equal(x["fps"], y["fps"])


def test_train_from_s3_into_an_s3_run_folder_equals_local_and_resumes(local_data, s3_bucket, tmp_path):
    data, run = upload(local_data, s3_bucket + "/sel"), s3_bucket + "/runs/x"
    reference = Trainer(recipe_from_dict(recipe_dict(str(local_data))), tmp_path / "local")
    reference.run()
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_dict("unused")))
    runner = CliRunner()

    first = runner.invoke(app, ["train", str(recipe_file), "--data", data, "--out", run, "--steps", "2"])
    assert first.exit_code == 0, first.output
    assert _keys(run) == ["checkpoints/step_00000002.config.json", "checkpoints/step_00000002.pt", "log.jsonl",
                          "text_encoder.pt"]
    # a crash while uploading step 3: a multipart upload never completed is no object, so no checkpoint
    bucket, _, prefix = run[len("s3://"):].partition("/")
    s3 = boto3.client("s3")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/checkpoints/step_00000003.pt")["UploadId"]
    s3.upload_part(Bucket=bucket, Key=f"{prefix}/checkpoints/step_00000003.pt", UploadId=upload_id, PartNumber=1,
                   Body=b"\0" * 1024)
    assert checkpoints.latest_checkpoint(run) == storage.join(run, "checkpoints", "step_00000002.pt")

    second = runner.invoke(app, ["train", str(recipe_file), "--data", data, "--out", run, "--steps", "4"])
    assert second.exit_code == 0, second.output
    assert f"resumed from {run}/checkpoints/step_00000002.pt at step 2" in second.output
    ckpt = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run))
    assert ckpt["step"] == 4 and ckpt["config"]["text_encoder_path"] == storage.join(run, "text_encoder.pt")
    model = reference.model.state_dict()
    assert all(torch.equal(model[k], ckpt["model"][k]) for k in model)
    assert all(torch.equal(reference.ema[k], ckpt["ema"][k]) for k in reference.ema)
    local_log = [json.loads(line) for line in (tmp_path / "local" / "log.jsonl").read_text().splitlines()]
    s3_log = [json.loads(line) for line in storage.read_bytes(storage.join(run, "log.jsonl")).decode().splitlines()]
    assert [e["step"] for e in s3_log] == [1, 2, 3, 4]
    assert [e["loss"] for e in s3_log] == [e["loss"] for e in local_log]

    # sampling straight from the S3 run folder (checkpoint and tiny text encoder read from S3)
    shown = runner.invoke(app, ["sample", run, "--prompt", "a red square", "--out", str(tmp_path / "s3.gif"),
                                "--frames", "2", "--steps", "2", "--seed", "3"])
    assert shown.exit_code == 0, shown.output
    here = runner.invoke(app, ["sample", str(tmp_path / "local"), "--prompt", "a red square", "--out",
                               str(tmp_path / "local.gif"), "--frames", "2", "--steps", "2", "--seed", "3"])
    assert here.exit_code == 0, here.output
    assert (tmp_path / "s3.gif").read_bytes() == (tmp_path / "local.gif").read_bytes()


def test_preflight_checks_s3_folders(local_data, s3_bucket, tmp_path):
    data, run = upload(local_data, s3_bucket + "/sel"), s3_bucket + "/runs/y"
    storage.write_json(storage.join(s3_bucket, "empty", "shards", "00000_stats.json"), {})
    recipe = recipe_from_dict(recipe_dict(data)).replace(
        data={"dirs": [data, s3_bucket + "/missing", s3_bucket + "/empty"]})
    assert preflight.check(recipe, run, gpus=0) == [
        f"data.dirs: {s3_bucket}/missing: not a curated dataset folder (no shards/ inside)",
        f"data.dirs: {s3_bucket}/empty: shards/ holds no .tar shard",
    ]
    recipe = recipe_from_dict(recipe_dict(data))
    Trainer(recipe, run).run(steps=2)
    assert preflight.check(recipe, run, gpus=0) == []  # the same recipe resumes
    changed = preflight.check(recipe.replace(optim={"lr": 1e-4}), run, gpus=0)
    assert len(changed) == 1 and "different recipe (optim.lr)" in changed[0]
    assert preflight.check(recipe.replace(init_from=run, stage="finetune", train={"resume": "none"}),
                           s3_bucket + "/runs/z", gpus=0) == []  # init_from an S3 run folder

