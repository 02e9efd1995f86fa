"""The `samples` view has exactly the documented columns: every column of schemas/manifest.yaml and
schemas/scores.yaml is one of its columns, and every column it has is documented there. The score tables come
from the score stage's own writer, one table per scorer."""

import pyarrow as pa

from curate import dedup, schema
from curate.scoring.options import ScoreSection
from curate.scoring.scorer_set import SCORER_NAMES
from curate.scoring.stage import ScoreStage
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter
from curate.stats.query import connect, run
from curate.storage import write_table


def test_samples_view_columns_are_the_documented_ones(tmp_path):
    root = str(tmp_path / "ds")
    writer = ShardWriter(DatasetFolder(root), "00000")
    writer.add({"key": "k0", "row": 0, "source": "urls", "modality": "video", "caption": "c", "status": "failed",
                "error_reason": "x", "error_message": "x"})
    writer.close()
    stage = ScoreStage(root, ScoreSection(scorers=list(SCORER_NAMES)))
    stage.content, stage.needs = {"00000": ("digest", 1)}, {"00000": set(SCORER_NAMES)}
    stage.write("00000", [{"key": "k0"}])
    scores = schema.load("scores")
    write_table(pa.table({"key": ["k0"], **{c: pa.nulls(1, scores.field(c).type) for c in dedup.COLUMNS}}),
                str(tmp_path / "ds" / "scores" / dedup.NAME / "all.parquet"))
    view = set(run(connect(root), "SELECT * FROM samples LIMIT 0").column_names)
    documented = set(schema.load("manifest").names) | set(scores.names)
    assert documented - view == set(), "documented but not in samples"
    assert view - documented == set(), "in samples but not documented"
