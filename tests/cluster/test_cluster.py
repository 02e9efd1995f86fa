"""`--ray-address` on a real 2-node cluster on this machine, the data in an S3 server (moto on 127.0.0.1): download,
score and select run on the worker node and equal a local run on local disk; a worker node killed mid-download
loses and duplicates nothing; Ray Train spans two nodes, checkpoints in S3, and resumes on fresh nodes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from curate import storage
from curate.stats.query import connect, run

# the single-process reference of data-parallel training lives with the training tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))
from ddp_reference import averaged_in_one_process  # noqa: E402

NAMES = ["video_000.mp4", "video_001.mp4", "video_003.mp4", "image_000.jpg", "image_001.jpg", "broken_missing.mp4"]
WHERE = "modality = 'image' OR motion_score > 1.0"


def manifest(folder) -> list[dict]:
    """Every manifest row of a dataset folder (local or s3://), in input order."""
    paths = storage.glob(storage.join(str(folder), "shards", "*.parquet"))
    return sorted((row for p in paths for row in storage.read_table(p).to_pylist()), key=lambda r: r["row"])


def tar_members(folder) -> dict[str, str]:
    """name -> sha256 of every member of every tar (each read to its end)."""
    out = {}
    for path in storage.glob(storage.join(str(folder), "shards", "*.tar")):
        with storage.open(path) as f, tarfile.open(fileobj=f) as tar:
            for member in tar:
                out[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return out


def ran_here(node, name: str) -> int:
    """Worker processes of `node` that ran a task or actor called `name` (Ray marks each in the worker's log)."""
    marks = (f":task_name:{name}", f":actor_name:{name}")
    return sum(any(m in p.read_text(errors="replace") for m in marks)
               for p in (node.session_dir / "logs").glob("worker-*.out"))


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def loopback_only(cluster) -> None:
    listening = cluster.listening()
    assert listening and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in listening), listening


@pytest.fixture(scope="module")
def urls(media_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("urls") / "urls.txt"
    path.write_text("".join(f"{media_server.base_url}/{n}\tcaption of {n}\n" for n in NAMES))
    return str(path)


def pipeline(curate, urls, out: str) -> None:
    """download -> score (motion, quality) -> select, each a `curate` CLI call as users run it."""
    ds, sel = storage.join(out, "ds"), storage.join(out, "sel")
    ok(curate("download", "urls", urls, "--out", ds, "--allow-private-addresses", "--retries", "0",
              "--shard-size", "2"))
    ok(curate("score", ds, "--scorers", "motion,quality", "--batch-size", "4"))
    ok(curate("select", ds, "--out", sel, "--where", WHERE, "--video-size", "32x32", "--image-size", "32x32"))


def single_node():
    """`curate` CLI calls in this test process, on the session's one-node Ray on 127.0.0.1 (no cluster, local disk):
    its workers are warm, where each CLI process would start its own job's."""
    from typer.testing import CliRunner

    from curate.cli import app

    def curate(*args):
        result = CliRunner().invoke(app, list(args))
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, f"{result.output}{result.exception!r}")
    return curate


def test_stages_run_on_the_worker_node_and_equal_a_local_run(cluster, urls, s3_bucket, ray_local, tmp_path):
    """The cluster run reads its input from and writes every output to S3; the reference runs on local disk, on the
    session's one-node Ray."""
    loopback_only(cluster)
    (worker,) = cluster.workers()
    s3_urls = s3_bucket + "/input/urls.txt"
    storage.write_bytes(s3_urls, open(urls, "rb").read())
    pipeline(cluster.curate, s3_urls, s3_bucket + "/cluster")
    pipeline(single_node(), urls, str(tmp_path / "local"))

    # the head has no CPUs: every download, score (weight-free: tasks, no actor pool) and select task ran in the
    # worker node's workers
    assert ran_here(worker, "process_unit") >= 1 and ran_here(cluster.head, "process_unit") == 0

    c, local = s3_bucket + "/cluster", tmp_path / "local"
    assert manifest(f"{c}/ds") == manifest(local / "ds") and len(manifest(f"{c}/ds")) == len(NAMES)
    assert tar_members(f"{c}/ds") == tar_members(local / "ds")
    sql = "SELECT key, status, motion_score, * EXCLUDE (key, status, motion_score) FROM samples ORDER BY key"
    scored = run(connect(f"{c}/ds"), sql).to_pylist()
    assert scored == run(connect(str(local / "ds")), sql).to_pylist()
    assert sum(r["motion_score"] is not None for r in scored) == 3  # the three downloaded videos
    assert manifest(f"{c}/sel") == manifest(local / "sel") and tar_members(f"{c}/sel") == tar_members(local / "sel")
    assert sorted(r["key"] for r in manifest(f"{c}/sel")) == sorted(
        r["key"] for r in scored if r["status"] == "success" and (r["modality"] == "image" or r["motion_score"] > 1.0))
    # nothing written outside the input and the two output prefixes
    assert {p.split("/")[3] for p in storage.walk_files(s3_bucket)} == {"input", "cluster"}
    loopback_only(cluster)


def test_worker_node_killed_mid_download_loses_and_duplicates_nothing(cluster, media_server, s3_bucket, tmp_path):
    """Dataset in S3: SIGKILL every process of the worker node once its first shard landed, start a fresh worker
    node, rerun."""
    count = 18
    names = [f"slow/video_00{i % 6}.mp4" if i % 3 == 0 else f"video_00{i % 6}.mp4" for i in range(count)]
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{media_server.base_url}/{n}?i={i}\tc{i}\n" for i, n in enumerate(names)))
    out = s3_bucket + "/ds"
    landed = lambda: storage.glob(f"{out}/shards/*.parquet")  # noqa: E731
    args = ("download", "urls", str(urls), "--out", out, "--allow-private-addresses", "--shard-size", "3",
            "--thread-count", "1", "--retries", "0")
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(cluster.command(*args), env=cluster.driver_env(), stdout=log, stderr=log,
                                  start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not landed() and driver.poll() is None:
            time.sleep(0.2)
        (worker,) = cluster.workers()
        worker.kill()
        assert 1 <= len(landed()) < count // 3, (tmp_path / "driver.log").read_text()[-2000:]
        fresh = cluster.start_node(2)
        try:  # the lost tasks are retried on the fresh node (or left for the rerun)
            driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    ok(cluster.curate(*args))
    rows = manifest(out)
    assert [r["row"] for r in rows] == list(range(count))
    assert len({r["key"] for r in rows}) == count and all(r["status"] == "success" for r in rows)
    members = tar_members(out)  # every tar reads to its end
    assert len(members) == 3 * count and {m.split(".")[0] for m in members} == {r["key"] for r in rows}
    assert all(members[f"{r['key']}.mp4"] == r["sha256"] for r in rows)
    assert ran_here(fresh, "process_unit") >= 1


def training_shards(demo_media, root):
    """Two shards of demo videos and images in the training format (KEY.mp4|jpg, KEY.txt, KEY.json)."""
    media, _ = demo_media
    items = [f"video_00{i}.mp4" for i in (0, 1, 2, 4)] + [f"image_00{i}.jpg" for i in range(4)]
    (root / "shards").mkdir(parents=True)
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tar:
            for name in items[shard::2]:
                key, ext = name.replace("_", "").split(".")
                video = ext == "mp4"
                meta = {"key": key, "source": "test", "modality": "video" if video else "image",
                        "num_frames": 24 if video else 1, "fps": 8 if video else None}
                with open(os.path.join(media, name), "rb") as f:
                    body = f.read()
                for member, data in ((f"{key}.{ext}", body), (f"{key}.txt", f"caption of {name}".encode()),
                                     (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


RECIPE = {
    "name": "cluster", "stage": "base", "trainable": "all",
    "model": {"preset": "tiny", "overrides": {"in_channels": 3, "out_channels": 3}},
    "data": {"frames": 2, "height": 8, "width": 8, "image_ratio": 0.25, "num_workers": 0},
    "optim": {"lr": 1e-3},
    "train": {"steps": 3, "batch_size": 2, "micro_batch_size": 1, "num_workers": 2, "log_every": 1,
              "checkpoint_every": 1, "cpu_threads": 1},
}


def test_ray_train_across_two_nodes_resumes_on_fresh_nodes(cluster, demo_media, s3_bucket, tmp_path):
    """2 CPU workers (gloo) on two 1-CPU worker nodes, shards and run folder in S3: 2 steps, both nodes lost, 1 more
    step on two fresh nodes; the checkpoint in S3 equals one process averaging the same global batch for 3 steps."""
    import torch
    import yaml

    from curate.train import checkpoints
    from curate.train.recipe import recipe_from_dict

    data = training_shards(demo_media, tmp_path / "data")
    s3_data, run_dir = s3_bucket + "/sel", s3_bucket + "/run"
    for path in sorted((data / "shards").iterdir()):
        storage.write_bytes(f"{s3_data}/shards/{path.name}", path.read_bytes())
    spec = dict(RECIPE, data=dict(RECIPE["data"], dirs=[s3_data]))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(spec))
    train = [sys.executable, "-m", "curate.cli", "train", str(tmp_path / "recipe.yaml"), "--out", run_dir]
    env = dict(cluster.driver_env(), RAY_ADDRESS=cluster.address)

    for node in cluster.workers():
        node.kill()
    for steps in (2, 3):
        nodes = cluster.start_nodes([1, 1])  # one worker per node: a placement across nodes
        result = subprocess.run(train + ["--steps", str(steps)], env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        assert all(ran_here(node, "RayTrainWorker") >= 1 for node in nodes)
        assert checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run_dir))["step"] == steps
        for node in nodes:
            node.kill()
    log = [json.loads(line) for line in storage.read_bytes(f"{run_dir}/log.jsonl").decode().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]  # resumed at step 3, nothing redone

    ckpt = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run_dir))
    local_spec = dict(RECIPE, data=dict(RECIPE["data"], dirs=[str(data)]))  # the same shards, from local disk
    reference = averaged_in_one_process(recipe_from_dict(local_spec), tmp_path / "ref", steps=3)
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for name, value in reference.ema.items():
        torch.testing.assert_close(ckpt["ema"][name], value, rtol=1e-5, atol=1e-6, msg=name)
