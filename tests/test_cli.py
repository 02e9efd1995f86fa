"""The CLI contract users script against: every command's help shows its options, exit codes, output formats."""

import glob
import json
import os
import re

import pytest
import typer
from typer.testing import CliRunner

from curate.cli import app
from curate.config import ConfigError
from curate.pipeline import load_pipeline
from curate.shards.folder import DatasetFolder
from curate.shards.writer import ShardWriter

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(__file__))


def commands(group=None, path: tuple = ()):
    """(path, command) of every command of the CLI, sub-commands included: the list is the CLI's own."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, path + (name,))
        else:
            yield path + (name,), command


COMMANDS = list(commands())


def flat(text: str) -> str:
    return " ".join(text.split())  # help wraps lines at the terminal's width


def test_every_command_is_listed_in_the_top_level_help():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"download", "retry-failed", "score", "select", "stats", "query", "report", "run", "demo", "generate",
            "fvd", "eval", "grid", "train", "sample", "study serve", "study results"} <= names
    for group in ((), ("study",)):
        result = runner.invoke(app, [*group, "--help"])
        listed = [p[len(group)] for p, _ in COMMANDS if p[: len(group)] == group]
        assert result.exit_code == 0 and all(f"  {name} " in result.output for name in listed), result.output


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_lists_every_option_with_its_help(path, command):
    """At 80 columns (the runner's width) every option's full name and the start of its help are shown."""
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and result.output.startswith(f"Usage: root {' '.join(path)} ")
    shown = flat(result.output)
    for param in command.params:
        if param.hidden:
            continue
        names = [name for name in param.opts if name.startswith("-")] or [param.name]
        assert all(f" {name}" in shown for name in names), (names, result.output)
        assert param.help, f"{' '.join(path)} {names[0]} has no help"
        assert flat(param.help)[:30] in shown, (names, param.help)


@pytest.fixture()
def dataset(tmp_path):
    writer = ShardWriter(DatasetFolder(str(tmp_path / "ds")), "00000")
    for i in range(3):
        writer.add({"key": f"k{i}", "row": i, "source": "urls", "modality": "video", "caption": f"a, \"b\" {i}",
                    "status": "failed_to_download", "error_reason": "http_404", "extra": "{}"})
    writer.close()
    return str(tmp_path / "ds")


def test_query_formats(dataset):
    out = runner.invoke(app, ["query", dataset, "SELECT key, caption FROM samples ORDER BY row", "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output)[2] == {"key": "k2", "caption": 'a, "b" 2'}
    out = runner.invoke(app, ["query", dataset, "SELECT key FROM samples ORDER BY row", "--format", "csv"])
    assert out.output.splitlines() == ["key", "k0", "k1", "k2"]
    out = runner.invoke(app, ["query", dataset, "SELECT count(*) AS n FROM samples"])
    assert "(1 rows)" in out.output


@pytest.mark.parametrize("sql", ["SELECT nope FROM samples", "DELETE FROM samples", "SELEC 1"])
def test_bad_query_exit_2(dataset, sql):
    result = runner.invoke(app, ["query", dataset, sql])
    assert result.exit_code == 2 and "error:" in result.output


def test_stats_json(dataset):
    result = runner.invoke(app, ["stats", dataset, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["error_reason"] == {"http_404": 3}


@pytest.mark.parametrize("args,choices", [
    (["download", "nosuch", "{tmp}", "--out", "{tmp}/o"], ["webvid", "laion-coco", "msrvtt", "folder", "urls"]),
    (["query", "{ds}", "SELECT 1", "--format", "xml"], ["table", "csv", "json"]),
    (["sample", "{tmp}", "--prompt", "x", "--out", "{tmp}/v.avi"], [".mp4", ".gif"]),
    (["select", "{ds}", "--out", "{tmp}/s", "--video-size", "abc"], ["512x320"]),
    (["run", "nosuch", "--out", "{tmp}/o"], ["demo", "webvid10m"]),
    (["train", "nosuch"], ["train/tiny_f_base"]),
    (["eval", "{tmp}", "--recipe", "nosuch", "--out", "{tmp}/e"], ["tiny", "msrvtt"]),
], ids=lambda v: v[0] if isinstance(v[0], str) and not v[0].startswith(".") else None)
def test_bad_input_exits_2_naming_the_valid_choices(args, choices, dataset, tmp_path):
    result = runner.invoke(app, [a.format(tmp=tmp_path, ds=dataset) for a in args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert all(choice in result.output for choice in choices), result.output


def test_usage_errors_exit_2(tmp_path):
    assert runner.invoke(app, ["download", "urls", str(tmp_path / "missing.txt"), "--out", "o"]).exit_code == 2
    assert runner.invoke(app, ["stats", str(tmp_path)]).exit_code == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ndownload: {source: urls, input: u.txt, shard_sise: 3}\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown key(s) download.shard_sise" in result.output


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "pipelines", "*.yaml"))))
def test_shipped_recipes_parse(path, monkeypatch):
    for var in re.findall(r"\$\{(\w+)\}", open(path, encoding="utf-8").read()):  # WEBVID_DIR, ...
        monkeypatch.setenv(var, "/data")
    recipe = load_pipeline(path)
    assert recipe.download.input.startswith(("/data", ROOT))


def test_recipe_errors(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ConfigError, match="download"):
        load_pipeline(str(bad))
    bad.write_text("name: x\ndownload: {source: urls}\n")
    with pytest.raises(ConfigError, match="missing required key"):
        load_pipeline(str(bad))


def test_run_describe_prints_the_plan_without_running(tmp_path):
    recipe = os.path.join(ROOT, "pipelines", "demo.yaml")
    result = runner.invoke(app, ["run", recipe, "--out", str(tmp_path / "ds"), "--describe"])
    assert result.exit_code == 0
    assert "pipeline demo: download -> score -> dedup -> select" in result.output
    assert "private addresses ALLOWED" in result.output and "WHERE (modality = 'image'" in result.output
    assert not (tmp_path / "ds").exists()


def test_split_recipe_describes_split_then_work_on_the_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("FOOTAGE_DIR", str(tmp_path))
    result = runner.invoke(app, ["run", "footage", "--out", str(tmp_path / "ds"), "--describe"])
    assert result.exit_code == 0, result.output
    assert "pipeline footage: download -> split -> score -> dedup -> select" in result.output
    clips = str(tmp_path / "footage_clips")
    assert f"split: {tmp_path / 'ds'} -> {clips}: transnetv2 shots, clips 2-60 s" in result.output
    assert "WHERE static = false" in result.output and not (tmp_path / "ds").exists()


@pytest.mark.parametrize("describe", [[], ["--describe"]])
def test_recipe_path_with_an_unset_variable_names_it(tmp_path, monkeypatch, describe):
    monkeypatch.delenv("WEBVID_DIR", raising=False)
    result = runner.invoke(app, ["run", "webvid10m", "--out", str(tmp_path / "o"), *describe])
    assert result.exit_code == 2
    assert "download.input: ${WEBVID_DIR}/results_10M_train.csv needs the environment variable(s) WEBVID_DIR" \
        in result.output


@pytest.mark.parametrize("flags, message", [
    (["--scorers", "bogus"], "unknown scorer(s) bogus; choose from clip, aesthetic, motion"),
    (["--scorers", "clip,aesthetics"], "unknown scorer(s) aesthetics; choose from clip, aesthetic"),
    (["--positions", "random"], "unknown frame positions 'random'; choose from first,middle,last, uniform"),
])
def test_score_refuses_unknown_names_naming_the_valid_ones(dataset, flags, message):
    result = runner.invoke(app, ["score", dataset, *flags])
    assert result.exit_code == 2 and message in result.output


def test_recipe_with_an_unknown_scorer_is_exit_2_before_anything_runs(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ndownload: {source: urls, input: u.txt}\nscore: {scorers: [clip, bogus]}\n")
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o"), "--describe"])
    assert result.exit_code == 2 and "unknown scorer(s) bogus; choose from clip" in result.output
