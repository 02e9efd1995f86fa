"""The caption tests' model: a tiny random Qwen2-VL saved once per session (tiny_vlm.py builds it)."""

from __future__ import annotations

import pytest
from tiny_vlm import save_tiny_qwen2_vl


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> str:
    """The folder of a tiny random Qwen2-VL, built once per session."""
    folder = str(tmp_path_factory.mktemp("tiny_qwen2_vl"))
    save_tiny_qwen2_vl(folder)
    return folder
