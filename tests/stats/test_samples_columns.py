"""The `samples` view has exactly the documented columns: every column of schemas/manifest.yaml and
schemas/scores.yaml is one of its columns, and every column it has is documented there. The per-sample score
tables come from the score stage's own writer (every registered per-sample scorer); a dataset-wide scorer's
table is written where its stage writes it (scores/<name>/all.parquet) with its registered columns."""

import pyarrow as pa

from curate import schema
from curate.scoring import registry
from curate.scoring.options import ScoreSection
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
    specs = registry.specs(registry.SCORERS)
    stage = ScoreStage(root, ScoreSection(scorers=list(registry.SCORERS)))
    stage.content, stage.needs = {"00000": ("digest", 1)}, {"00000": set(stage.scorers)}
    stage.write("00000", [{"key": "k0"}])
    scores = schema.load("scores")
    for spec in specs:
        if not spec.per_sample:
            write_table(pa.table({"key": ["k0"], **{c: pa.nulls(1, scores.field(c).type) for c in spec.columns}}),
                        str(tmp_path / "ds" / "scores" / spec.name / "all.parquet"))
    view = set(run(connect(root), "SELECT * FROM samples LIMIT 0").column_names)
    documented = set(schema.load("manifest").names) | set(scores.names)
    assert documented - view == set(), "documented but not in samples"
    assert view - documented == set(), "in samples but not documented"
