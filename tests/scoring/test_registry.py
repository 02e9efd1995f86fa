"""The scorer registry: every registered scorer's columns are documented in schemas/scores.yaml and every documented
score column is written by one registered scorer; a new scorer is one file plus one registration line, and
`curate score` then runs it and writes its column."""

import importlib
import sys

import pyarrow as pa
import pytest
import ray.cloudpickle
from test_stage import SHARDS, build_dataset, scores_of
from typer.testing import CliRunner

from curate import schema, storage
from curate.cli import app
from curate.scoring import registry
from curate.scoring.clip_score import CLIP_EMBEDDING
from curate.scoring.scorer_set import ScorerContext

# A scorer as a user would write it in its own module; "brightest" is its one line in registry.SCORERS.
BRIGHTEST_MODULE = '''
"""Brightest pixel of the sampled frames (a throwaway scorer for the registry test)."""

from curate.scoring.registry import CPU, ScorerSpec
from curate.scoring.sample import SampleError, frames_of

BRIGHTEST = "brightest_pixel"
BRIGHTEST_ERROR = "brightest_pixel_error"


class BrightestScorer:
    name = "brightest"
    columns = (BRIGHTEST, BRIGHTEST_ERROR)

    def check_weights(self):
        """Weight-free."""

    def setup(self):
        """Nothing to load."""

    def provenance(self):
        return {"scorer": self.name, "version": "1", "model": "numpy max"}

    def score_batch(self, samples):
        rows = []
        for sample in samples:
            try:
                rows.append({BRIGHTEST: int(frames_of(sample).max()), BRIGHTEST_ERROR: None})
            except SampleError as error:
                rows.append({BRIGHTEST: None, BRIGHTEST_ERROR: str(error)})
        return rows


SPEC = ScorerSpec("brightest", BrightestScorer.columns, CPU, lambda context: BrightestScorer())
'''


def test_every_scorer_is_registered_under_its_own_name():
    for name, module in registry.SCORERS.items():
        assert registry.spec(name).name == name, module
    with pytest.raises(ValueError, match="unknown scorer\\(s\\) bogus; choose from clip, aesthetic, motion"):
        registry.specs(["motion", "bogus"])
    with pytest.raises(ValueError, match="\\(none given\\)"):
        registry.specs([])
    assert [s.name for s in registry.specs(["dedup", "quality", "clip"])] == ["clip", "quality", "dedup"]


def test_registered_and_documented_score_columns_agree():
    writers: dict[str, list[str]] = {}
    for spec in registry.specs(registry.SCORERS):
        for column in spec.columns:
            writers.setdefault(column, []).append(spec.name)
    documented = set(schema.load("scores").names) - {"key"}
    assert set(writers) - documented == set(), "written by a registered scorer but not in schemas/scores.yaml"
    assert documented - set(writers) == set(), "documented in schemas/scores.yaml but written by no scorer"
    assert {column: names for column, names in writers.items() if len(names) > 1} == {}, "a column has two writers"


def test_each_per_sample_spec_lists_the_columns_its_scorer_produces():
    context = ScorerContext()  # builds the scorers without loading any weights
    for spec in registry.specs(registry.SCORERS):
        if spec.per_sample:
            scorer = spec.factory(context)
            assert scorer.name == spec.name
            assert set(scorer.columns) - {CLIP_EMBEDDING} == set(spec.columns), spec.name  # the embedding: apart


def test_a_spec_says_where_it_runs_and_has_an_error_column():
    with pytest.raises(ValueError, match="runs='gpu'; choose from cpu, model, dataset"):
        registry.ScorerSpec("x", ("x", "x_error"), "gpu", lambda context: None)
    with pytest.raises(ValueError, match="writes a `\\*_error` column"):
        registry.ScorerSpec("x", ("x",), registry.CPU, lambda context: None)


@pytest.fixture
def brightest_registered(tmp_path, monkeypatch):
    """The throwaway scorer's file, registered with its one line."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "brightest_scorer.py").write_text(BRIGHTEST_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(registry.SCORERS, "brightest", "brightest_scorer")
    yield
    sys.modules.pop("brightest_scorer", None)


@pytest.fixture
def brightest(brightest_registered, monkeypatch):
    """...with its columns documented, as schemas/scores.yaml would document them."""
    documented = schema.load

    def load(name):
        loaded = documented(name)
        if name != "scores":
            return loaded
        return loaded.append(pa.field("brightest_pixel", pa.int32())).append(pa.field("brightest_pixel_error", pa.string()))

    monkeypatch.setattr(schema, "load", load)
    # Ray's workers import a scorer module by name; this one sits in a tmp folder they do not have on their path, so
    # it travels by value (a scorer under curate/ needs nothing of the kind)
    module = importlib.import_module("brightest_scorer")
    ray.cloudpickle.register_pickle_by_value(module)
    yield
    ray.cloudpickle.unregister_pickle_by_value(module)


def test_a_scorer_is_one_file_and_one_registration(brightest, ray_local, demo_media, tmp_path):
    root = build_dataset(tmp_path / "ds", demo_media[0], SHARDS)
    result = CliRunner().invoke(app, ["score", root, "--scorers", "brightest"])
    assert result.exit_code == 0, result.output
    rows = scores_of(root)
    assert rows["k000"]["brightest_pixel"] > 0 and rows["k003"]["brightest_pixel"] > 0  # a video, an image
    corrupt = rows["k002"]
    assert corrupt["brightest_pixel"] is None and "decod" in corrupt["brightest_pixel_error"].lower()
    assert rows["k004"]["brightest_pixel"] is None and rows["k004"]["brightest_pixel_error"] is None  # failed row
    record = storage.read_json(f"{root}/scores/brightest/_provenance.json")
    assert record["columns"] == ["brightest_pixel", "brightest_pixel_error"] and record["model"]["version"] == "1"
    unknown = CliRunner().invoke(app, ["score", root, "--scorers", "bright"])
    assert unknown.exit_code == 2 and "unknown scorer(s) bright; choose from clip" in unknown.output
    assert "dedup, brightest" in unknown.output


def test_an_undocumented_column_is_refused_before_any_work(brightest_registered, ray_local, demo_media, tmp_path):
    root = build_dataset(tmp_path / "ds", demo_media[0], SHARDS)
    result = CliRunner().invoke(app, ["score", root, "--scorers", "brightest"])
    assert result.exit_code == 2
    assert "scorer brightest writes brightest_pixel, brightest_pixel_error, not documented in schemas/scores.yaml" \
        in result.output
    assert not storage.exists(f"{root}/scores/brightest")
