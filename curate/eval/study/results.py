"""The study's results from its vote log: each model's win rate over each other (Wilson 95%), ties apart, and
Bradley-Terry strengths with bootstrap intervals when more than two models were compared."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curate.eval.study.preference import bootstrap_bradley_terry, bradley_terry, wilson
from curate.eval.study.votes import read_votes

BT_PRIOR = 0.5


@dataclass
class StudyResults:
    """`pairs`: one row per pair of models; `models`: one row per model (Bradley-Terry), None for two models."""

    pairs: pd.DataFrame
    models: pd.DataFrame | None
    votes: int
    raters: int

    def __str__(self) -> str:
        text = [f"{self.votes} votes from {self.raters} raters",
                "win rate of model_a over model_b among decisive votes (ties apart), Wilson 95% interval:",
                self.pairs.to_string(index=False, float_format=lambda x: f"{x:.3f}")]
        if self.models is not None:
            text += [f"Bradley-Terry log-strength (mean 0; ties left out; {BT_PRIOR} virtual win each way per "
                     "compared pair), 95% bootstrap percentile interval over votes:",
                     self.models.to_string(index=False, float_format=lambda x: f"{x:.3f}")]
        return "\n".join(text)


def _counts(votes: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Model labels, the decisive win matrix wins[i, j] and the symmetric tie matrix."""
    models = sorted({v[side]["model"] for v in votes for side in ("left", "right")})
    index = {m: i for i, m in enumerate(models)}
    wins, ties = np.zeros((len(models), len(models))), np.zeros((len(models), len(models)))
    for v in votes:
        left, right = index[v["left"]["model"]], index[v["right"]["model"]]
        if v["choice"] == "tie":
            ties[left, right] += 1
            ties[right, left] += 1
        else:
            winner, loser = (left, right) if v["choice"] == "left" else (right, left)
            wins[winner, loser] += 1
    return models, wins, ties


def summarize(votes: list[dict], bootstrap_samples: int = 1000, seed: int = 0) -> StudyResults:
    models, wins, ties = _counts(votes)
    rows = []
    for i, j in itertools.combinations(range(len(models)), 2):
        decisive = int(wins[i, j] + wins[j, i])
        total = decisive + int(ties[i, j])
        if total == 0:
            continue
        low, high = wilson(int(wins[i, j]), decisive)
        rows.append({"model_a": models[i], "model_b": models[j], "votes": total, "a_wins": int(wins[i, j]),
                     "b_wins": int(wins[j, i]), "ties": int(ties[i, j]),
                     "a_win_rate": wins[i, j] / decisive if decisive else np.nan, "ci_low": low, "ci_high": high,
                     "tie_rate": ties[i, j] / total})
    pairs = pd.DataFrame(rows, columns=["model_a", "model_b", "votes", "a_wins", "b_wins", "ties", "a_win_rate",
                                        "ci_low", "ci_high", "tie_rate"])
    table = None
    if len(models) > 2 and wins.sum() > 0:
        strength = bradley_terry(wins, prior=BT_PRIOR)
        low, high = bootstrap_bradley_terry(wins, prior=BT_PRIOR, samples=bootstrap_samples, seed=seed)
        table = pd.DataFrame({"model": models, "bt_log_strength": strength, "ci_low": low, "ci_high": high,
                              "wins": wins.sum(axis=1).astype(int), "losses": wins.sum(axis=0).astype(int),
                              "ties": ties.sum(axis=1).astype(int)})
        table = table.sort_values("bt_log_strength", ascending=False, kind="stable").reset_index(drop=True)
        table.insert(0, "rank", range(1, len(table) + 1))
    return StudyResults(pairs=pairs, models=table, votes=len(votes), raters=len({v["rater"] for v in votes}))


def results(votes_path: str, bootstrap_samples: int = 1000, seed: int = 0) -> StudyResults:
    """The results table of the vote log at `votes_path` (print it, or use .pairs / .models as DataFrames)."""
    return summarize(read_votes(votes_path), bootstrap_samples=bootstrap_samples, seed=seed)
