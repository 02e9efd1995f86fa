"""FVD options declared once: the CLI's flags and defaults, an eval recipe's fvd_* defaults, a bad value refused."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.eval.fvd_options import FVDOptions
from curate.eval.run import MetricsSection


def test_recipe_defaults_are_the_options_defaults():
    assert MetricsSection().fvd_options() == FVDOptions()
    assert MetricsSection(fvd_frames=10, fvd_resize="squash").fvd_options() == FVDOptions(frames=10, resize="squash")


def test_cli_flags_come_from_the_options(tmp_path):
    result = CliRunner().invoke(app, ["fvd", "--help"])
    for f in dataclasses.fields(FVDOptions):
        assert "--" + f.name.replace("_", "-") in result.output
    bad = CliRunner().invoke(app, ["fvd", str(tmp_path), str(tmp_path), "--resize", "bogus"])
    assert bad.exit_code == 2 and "crop" in bad.output and "squash" in bad.output
    with pytest.raises(ValueError, match="choose from"):
        FVDOptions(resize="stretch")
