"""Fixtures for the evaluation tests: dataset folders of synthetic videos written as the data plane writes them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scoring"))  # synthetic_media, tiny_clip helpers

from eval_media import write_folder  # noqa: E402


@pytest.fixture
def folder_factory(tmp_path):
    def make(name: str, samples: list[dict]) -> str:
        return str(write_folder(tmp_path / name, samples))

    return make
