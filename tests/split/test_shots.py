"""Clip windows from transitions: trimming, length limits, long shots cut, gradual transitions, static clips."""

from __future__ import annotations

import numpy as np

from curate.split.shots import (ClipSettings, Transition, clip_windows, shots, transitions_from_cuts,
                                transitions_from_scores)


def test_transitions_are_runs_above_the_threshold():
    scores = np.array([0, 0.875, 0, 0, 0.625, 0.75, 0.5, 0.25, 0])
    assert transitions_from_scores(scores, 0.5) == [Transition(1, 2, 0.875), Transition(4, 6, 0.75)]
    assert not Transition(1, 2, 0.9).gradual and Transition(4, 7, 0.8).gradual and not Transition(4, 6, 0.8).gradual
    assert transitions_from_cuts([5, 0, 5, 3], scores) == [Transition(3, 3, 0.0), Transition(5, 5, scores[5])]


def test_shots_leave_transition_frames_out_and_drop_beside_gradual_ones():
    cuts = [Transition(10, 10, 0.9), Transition(20, 26, 0.7), Transition(40, 41, 0.8)]
    assert shots(cuts, 50) == [(0, 10, None, 0.9), (10, 20, 0.9, 0.7), (26, 40, 0.7, 0.8), (41, 50, 0.8, None)]
    assert shots(cuts, 50, "drop") == [(0, 10, None, 0.9), (41, 50, 0.8, None)]


def test_clip_windows_trim_limit_split_and_flag_static():
    fps = 10.0
    scores = np.zeros(400, np.float32)
    motion = np.full(400, 3.0, np.float32)
    motion[200:] = 0.1  # the second shot holds still
    cuts = [Transition(15, 15, 0.9), Transition(200, 200, 0.95)]
    settings = ClipSettings(min_seconds=2.0, max_seconds=8.0, trim_frames=1)
    windows, dropped = clip_windows(cuts, scores, motion, fps, settings)
    # shot 0-15 is 1.3 s after trimming: dropped; 16-199 and 201-399 -> 3 equal windows each, <= 80 frames
    assert dropped == {"short": 1, "static": 0}
    spans = [(w.start, w.end) for w in windows]
    assert spans[:3] == [(16, 77), (77, 138), (138, 199)] and spans[3:] == [(201, 267), (267, 333), (333, 399)]
    assert all(b - a <= 80 for a, b in spans)
    assert [w.static for w in windows] == [False] * 3 + [True] * 3
    assert windows[0].boundary_confidence == 0.9 and windows[3].boundary_confidence == 0.95
    kept, dropped = clip_windows(cuts, scores, motion, fps, ClipSettings(max_seconds=8.0, drop_static=True))
    assert len(kept) == 3 and dropped["static"] == 3
