"""The select stage: per-source quotas and --top rank by a column; the kept set is what DuckDB counts."""

import os

from curate.config import SelectSection
from curate.selection import select
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter
from curate.stats.query import connect, run


def mixed_sources(root, media_dir):
    """Six images from two sources with a known ranking column (width = rank)."""
    writer = ShardWriter(DatasetFolder(str(root)), "00000")
    for n in range(6):
        source = "laion-coco" if n % 2 else "journeydb"
        writer.add({"key": f"k{n}", "row": n, "source": source, "modality": "image", "caption": f"c{n}",
                    "status": "success", "width": 100 + n, "sha256": f"{n}", "extra": "{}"},
                   os.path.join(media_dir, f"image_00{n % 4}.jpg"), "jpg")
    writer.close()
    return str(root)


def kept_keys(out):
    return sorted(r["key"] for r in run(connect(out), "SELECT key FROM samples").to_pylist())


def test_quotas_keep_the_best_per_source(ray_local, demo_media, tmp_path):
    root = mixed_sources(tmp_path / "ds", demo_media[0])
    section = SelectSection(where="width > 100", by="width", quotas={"journeydb": 1, "laion-coco": 2},
                            image_size=(16, 16))
    summary = select(root, str(tmp_path / "q"), section)
    # journeydb: k2 (102), k4 (104) pass -> best 1 = k4; laion-coco: k1, k3, k5 -> best 2 = k5, k3
    assert summary["kept"] == 3 and kept_keys(str(tmp_path / "q")) == ["k3", "k4", "k5"]
    top = select(root, str(tmp_path / "t"), SelectSection(where="TRUE", top=0.5, by="width", image_size=(16, 16)))
    assert top["kept"] == 3 and kept_keys(str(tmp_path / "t")) == ["k3", "k4", "k5"]
    (count,) = connect(root).execute("SELECT count(*) FROM samples WHERE width > 100").fetchone()
    assert count == 5  # the quota, not the predicate, removed two
