"""Joint shard loader: shapes, fps from stride, mixing, rank split, determinism, mid-epoch resume."""

from __future__ import annotations

import io
import itertools
import tarfile

import pytest
import torch

from curate.train.data import JointBatches, LoaderConfig, make_loader

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
        assert b["pixels"].shape == (2, 3, frames, 32, 32)
        assert b["pixels"].min() >= -1 and b["pixels"].max() <= 1
        assert all(c.startswith("a ") for c in b["captions"])
        if b["modality"] == "video":
            assert set(b["fps"].tolist()) <= {12.0, 8.0}  # 24 fps source at stride 2 or 3
        else:
            assert b["fps"].tolist() == [24.0, 24.0]


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
