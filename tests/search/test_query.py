"""`curate search` by text and by image on a dataset embedded with a tiny random CLIP; another CLIP refused."""

import json

from typer.testing import CliRunner

from curate.cli import app
from curate.search.query import search

runner = CliRunner()


def test_text_query_finds_the_planted_match_first(searchable):
    hits = search(searchable["root"], searchable["query"], top=3).to_pylist()
    assert hits[0]["key"] == "planted" and abs(hits[0]["score"] - 1.0) < 1e-3
    assert hits[0]["caption"] == "caption <5>" and hits[0]["path"].endswith("shards/00001.tar")
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_image_query_through_the_cli(searchable, tmp_path):
    result = runner.invoke(app, ["search", searchable["root"], "--image", searchable["images"][2], "--top", "2",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert hits[0]["key"] == "k2" and abs(hits[0]["score"] - 1.0) < 1e-3 and len(hits) == 2
    table = runner.invoke(app, ["search", searchable["root"], searchable["query"], "--top", "1"])
    assert table.exit_code == 0 and table.output.splitlines()[2].split()[:2] == ["1", "planted"]


def test_another_clip_or_no_query_is_refused(searchable):
    result = runner.invoke(app, ["search", searchable["root"], searchable["query"], "--clip-model", "ViT-B-32:openai"])
    assert result.exit_code == 2 and "ViT-B-32:openai" in result.output and "--clip-model" in result.output
    assert runner.invoke(app, ["search", searchable["root"]]).exit_code == 2
    assert runner.invoke(app, ["search", searchable["root"], searchable["query"], "--format", "xml"]).exit_code == 2
