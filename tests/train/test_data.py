"""Joint shard loader: shapes, fps from stride, mixing, rank split, determinism, mid-epoch resume; the batches of
the loader before its plan cache and compact index (recorded golden); uint8 shaping against torchvision."""

from __future__ import annotations

import gc
import io
import itertools
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from curate.train.data import JointBatches, LoaderConfig, decode_clip, make_loader, shape_frames, to_model_range

# one uint8 grey level in [-1, 1] units, plus the slack of torch's fixed-point uint8 resize (measured <= 1.002 levels
# from the exact float resize: 0.5 from rounding, the rest from its 8-bit-fraction weights)
GREY_LEVEL = 1.05 / 127.5
GOLDEN = Path(__file__).with_name("loader_golden.json")

pytestmark = pytest.mark.usefixtures("one_thread")


def config(dirs, **kw) -> LoaderConfig:
    base = dict(dirs=(str(dirs),), frames=4, height=32, width=32, batch_size=2, image_ratio=0.5, seed=3)
    return LoaderConfig(**{**base, **kw})


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_batches_have_preset_geometry_and_fps_from_stride(mixed_dataset):
    batches = take(JointBatches(config(mixed_dataset, frame_stride=(2, 3))), 8)
    assert {b["modality"] for b in batches} == {"video", "image"}
    for b in batches:
        frames = 4 if b["modality"] == "video" else 1
        assert b["pixels"].shape == (2, 3, frames, 32, 32) and b["pixels"].dtype == torch.uint8
        assert all(c.startswith("a ") for c in b["captions"])
        if b["modality"] == "video":
            assert set(b["fps"].tolist()) <= {12.0, 8.0}  # 24 fps source at stride 2 or 3
        else:
            assert b["fps"].tolist() == [24.0, 24.0]


def test_videos_decord_cannot_copy_train_and_fps_comes_from_the_container(tmp_path, dataset_writer):
    """16x16 videos (decord 0.6 fails on that width) load through the one decoder; without metadata fps, the
    container's 24 fps over the stride conditions."""
    folder = dataset_writer(tmp_path, videos=4, images=0, size=(16, 16), frames=8)
    (batch,) = take(JointBatches(config(folder, height=16, width=16, image_ratio=0.0, frame_stride=(2, 2))), 1)
    assert batch["pixels"].shape == (2, 3, 4, 16, 16) and batch["fps"].tolist() == [12.0, 12.0]
    data = (folder / "shards" / "00000.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        clip = tf.extractfile("v000.mp4").read()
    frames, fps = decode_clip(clip, 4, (2, 2), np.random.default_rng(0), None)
    assert frames.shape == (4, 16, 16, 3) and fps == 12.0


def test_image_ratio_selects_modality(mixed_dataset):
    assert {b["modality"] for b in take(JointBatches(config(mixed_dataset, image_ratio=0.0)), 4)} == {"video"}
    assert {b["modality"] for b in take(JointBatches(config(mixed_dataset, image_ratio=1.0)), 4)} == {"image"}


def test_deterministic_given_seed(mixed_dataset):
    a, b = (take(JointBatches(config(mixed_dataset)), 5) for _ in range(2))
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"])
    other = take(JointBatches(config(mixed_dataset, seed=4)), 5)
    assert [x["keys"] for x in a] != [x["keys"] for x in other]


def test_ranks_split_each_epoch_disjointly(mixed_dataset):
    cfg = config(mixed_dataset, image_ratio=0.0)  # 8 videos, 2 ranks x batch 2: one epoch = 2 batches per rank
    per_rank = [[k for b in take(JointBatches(cfg, rank, 2), 2) for k in b["keys"]] for rank in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == [f"v{i:03d}" for i in range(8)]


def test_resume_mid_epoch_with_workers_matches_uninterrupted(mixed_dataset):
    cfg = config(mixed_dataset)
    full = take(JointBatches(cfg), 7)
    resumed = take(make_loader(config(mixed_dataset, num_workers=2), start_batch=3), 4)
    assert [b["batch_index"] for b in resumed] == [3, 4, 5, 6]
    for x, y in zip(full[3:], resumed):
        assert x["keys"] == y["keys"] and torch.equal(x["pixels"], y["pixels"]) and torch.equal(x["fps"], y["fps"])


class _FinalizedIn:
    """Garbage (a reference cycle) that records which process finalizes it."""

    def __init__(self, log: Path):
        self.log, self.cycle = log, self

    def __del__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_a_loader_worker_never_finalizes_the_parents_objects(mixed_dataset, tmp_path, monkeypatch):
    # a Ray ObjectRef finalized in a forked worker crashed it with SIGSEGV: workers must leave the parent's
    # garbage to the parent, even when their own collector runs
    log = tmp_path / "finalized"
    batches = JointBatches.batches

    def collecting(self, *args):
        gc.collect()
        yield from batches(self, *args)

    monkeypatch.setattr(JointBatches, "batches", collecting)
    gc.disable()
    try:
        _FinalizedIn(log)
        take(make_loader(config(mixed_dataset, num_workers=1)), 2)
    finally:
        gc.enable()
    assert log.read_text().split() == [str(os.getpid())]


def test_source_smaller_than_a_global_batch_is_refused(mixed_dataset):
    with pytest.raises(ValueError, match="fewer than world_size x batch_size"):
        JointBatches(config(mixed_dataset, batch_size=8), rank=0, world_size=2)


def test_undecodable_sample_is_replaced_by_the_next_one(tmp_path, dataset_writer):
    data = dataset_writer(tmp_path / "d", videos=4, images=0, per_shard=4)
    src = data / "shards" / "00000.tar"
    broken = tmp_path / "broken.tar"
    with tarfile.open(src) as tin, tarfile.open(broken, "w") as tout:
        for info in tin:
            payload = tin.extractfile(info).read()
            if info.name == "v001.mp4":
                payload = b"\x00not a video" * 10
                info.size = len(payload)
            tout.addfile(info, io.BytesIO(payload))
    broken.replace(src)
    cfg = config(data, image_ratio=0.0, batch_size=4)
    with pytest.warns(UserWarning, match="v001"):
        batch = next(iter(JointBatches(cfg)))
    assert "v001" not in batch["keys"] and batch["pixels"].shape[0] == 4


@pytest.fixture(scope="module")
def golden_folders(tmp_path_factory, dataset_writer):
    """The two folders the golden was recorded on (keys, counts and shard layout matter; content barely)."""
    root = tmp_path_factory.mktemp("golden")
    return {"a": dataset_writer(root / "a", videos=13, images=7, per_shard=4, size=(24, 32)),
            "b": dataset_writer(root / "b", videos=7, images=9, per_shard=3, size=(24, 32))}


def golden_config(case: dict, folders: dict) -> LoaderConfig:
    kw = {**case["config"], "dirs": tuple(str(folders[d]) for d in case["config"]["dirs"])}
    if "frame_stride" in kw:
        kw["frame_stride"] = tuple(kw["frame_stride"])
    return LoaderConfig(frames=4, height=16, width=16, **kw)


@pytest.mark.parametrize("name", ["one_rank", "rank1_of_2", "rank2_of_3_two_dirs", "resume_worker1_of_2"])
def test_plans_equal_the_recorded_plans_of_the_uncached_loader(golden_folders, name):
    """40 batches (many epochs of each source) per config: the same source, samples and fallbacks, in order, as
    the loader that redrew the epoch permutation per batch and kept a Sample object per sample."""
    case = json.loads(GOLDEN.read_text())[name]
    loader = JointBatches(golden_config(case, golden_folders), case["rank"], case["world"], case["start_batch"])
    planned = itertools.islice(loader._planned(case["worker"], case["num_workers"]), len(case["plans"]))
    got = [[k, source, [[s.key for s in candidates] for candidates, _ in plan]] for k, source, plan in planned]
    assert got == case["plans"]


def test_loader_batches_equal_the_recorded_batches(golden_folders):
    """Through the DataLoader (2 workers, rank 1 of 2, resumed at batch 3): keys, modality and fps as recorded."""
    case = json.loads(GOLDEN.read_text())["loader"]
    loader = make_loader(golden_config(case, golden_folders), case["rank"], case["world"], case["start_batch"])
    got = [[b["batch_index"], b["modality"], b["keys"], b["fps"].tolist()]
           for b in itertools.islice(iter(loader), len(case["batches"]))]
    assert got == case["batches"]


@pytest.mark.parametrize("height, width", [(336, 596), (48, 80), (321, 240), (17, 23), (64, 64)])
def test_uint8_shaping_equals_torchvision_and_the_float_resize_within_a_grey_level(height, width):
    """Square target: torchvision's Resize(side) + CenterCrop(side) is then exactly a cover-resize and center crop."""
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, height, width, 3), dtype=np.uint8))
    ours = shape_frames(frames, 64, 64)
    assert ours.dtype == torch.uint8 and ours.shape == (3, 3, 64, 64)
    x = frames.permute(0, 3, 1, 2)
    resize_crop = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(64)])
    assert torch.equal(ours, resize_crop(x).permute(1, 0, 2, 3))  # torchvision's own uint8 resize: the same bytes
    # the float path the loader had (float resize, then [-1, 1]): torchvision's float resize, in the trainer's units
    float_reference = (resize_crop(x.float()) / 127.5 - 1).clamp(-1, 1).permute(1, 0, 2, 3)
    diff = (to_model_range(ours) - float_reference).abs().max().item()
    assert diff <= GREY_LEVEL


def test_to_model_range_maps_uint8_onto_minus_one_one():
    assert to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_shard_index_is_scanned_once_per_node_and_again_when_the_tar_changes(mixed_dataset, tmp_path, monkeypatch):
    import os
    import shutil

    from curate.train import data

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    tar = sorted((Path(mixed_dataset) / "shards").glob("*.tar"))[0]
    copy = tmp_path / "shard.tar"
    shutil.copy(tar, copy)
    scans = []
    real = data._scan_shard
    monkeypatch.setattr(data, "_scan_shard", lambda path: scans.append(path) or real(path))
    first = data.scan_shard(copy)
    again = data.scan_shard(copy)  # another rank on this node, or a resumed run: the stored index
    assert len(scans) == 1 and set(first) == set(again)
    for modality in first:
        for field in ("keys", "offsets", "sizes", "shard"):
            assert np.array_equal(getattr(first[modality], field), getattr(again[modality], field))
        assert again[modality].tars == [str(copy)] and again[modality][0] == first[modality][0]
    shutil.copy(sorted((Path(mixed_dataset) / "shards").glob("*.tar"))[-1], copy)  # the shard rewritten
    os.utime(copy, ns=(1, 1))
    rewritten = data.scan_shard(copy)
    assert len(scans) == 2 and {m: list(p.keys) for m, p in rewritten.items()} == \
        {m: list(p.keys) for m, p in real(copy).items()}
