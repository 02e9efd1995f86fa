"""Synthetic edited videos: transitions where the timeline puts them; matching at +-1 frame; crossings."""

from __future__ import annotations

import numpy as np

from curate.split import synthetic


def test_timeline_transitions_are_where_the_frames_change():
    timeline = (("shot", 1.0, "pan"), ("cut", 0), ("shot", 1.0, "static"), ("fade", 4), ("shot", 1.0, "object"))
    video = synthetic.edited_video(32, 24, 10.0, timeline)
    assert len(video.frames) == 30 and video.transitions == [(10, 10), (18, 22)]
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(video.frames, video.frames[1:])]
    assert int(np.argmax(diff)) + 1 in (10, 20)  # the cut or the fade's darkest step
    assert max(diff[11:17]) == 0  # the static shot does not move


def test_match_counts_hits_within_one_frame_once():
    truth = [(10, 10), (30, 40)]
    assert synthetic.match([(9, 10), (11, 11), (41, 42), (60, 60)], truth) == (2, 2, 0)
    assert synthetic.match([(12, 12)], truth) == (0, 1, 2)


def test_crossings():
    truth = [(10, 10), (30, 40)]
    assert synthetic.crossings([(0, 10), (10, 30), (41, 50)], truth) == 0
    assert synthetic.crossings([(0, 11), (25, 45)], truth) == 2
