"""Fixtures for the split tests: a short edited video with known cuts."""

from __future__ import annotations

import pytest
from split_dataset import TIMELINE

from curate.split import synthetic


@pytest.fixture(scope="session")
def edited(tmp_path_factory) -> tuple[str, synthetic.EditedVideo]:
    video = synthetic.edited_video(64, 48, 12.0, TIMELINE, seed=1)
    path = str(tmp_path_factory.mktemp("edited") / "edited.mp4")
    synthetic.write(video, path)
    return path, video
