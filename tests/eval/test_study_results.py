"""The study's statistics against independent references: statsmodels' Wilson interval and a Bradley-Terry fit
as a logistic regression, and recovery of a known ordering from synthetic votes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curate.eval.study.preference import bootstrap_bradley_terry, bradley_terry, wilson
from curate.eval.study.results import results, summarize

proportion = pytest.importorskip("statsmodels.stats.proportion")


@pytest.mark.parametrize("k,n", [(8, 10), (0, 10), (10, 10), (1, 1), (37, 120), (500, 1000)])
def test_wilson_matches_statsmodels(k, n):
    low, high = proportion.proportion_confint(k, n, alpha=0.05, method="wilson")
    assert wilson(k, n) == pytest.approx((low, high), abs=1e-12)


def test_wilson_known_value_and_empty():
    # 8 of 10 by hand: z = 1.959964, centre (0.8 + z^2/20) / (1 + z^2/10) = 0.716697,
    # half-width z * sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.226621
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))


def _synthetic_votes(strengths: dict[str, float], per_pair: int, seed: int, tie_rate: float = 0.0) -> list[dict]:
    """Votes drawn from a Bradley-Terry model with these log-strengths, sides at random."""
    rng = np.random.default_rng(seed)
    models, votes = sorted(strengths), []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            p_a = 1 / (1 + math.exp(strengths[b] - strengths[a]))
            for n in range(per_pair):
                left, right = (a, b) if rng.random() < 0.5 else (b, a)
                if rng.random() < tie_rate:
                    choice = "tie"
                else:
                    winner = a if rng.random() < p_a else b
                    choice = "left" if winner == left else "right"
                votes.append({"rater": f"r{n % 5}", "pair": f"{a}-{b}-{n}", "choice": choice,
                              "left": {"model": left}, "right": {"model": right}})
    return votes


def test_bradley_terry_equals_logistic_regression_mle():
    """The BT MLE is a logistic regression without intercept on x = e_i - e_j (statsmodels, Newton)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    k = 4
    wins = rng.integers(3, 30, size=(k, k)).astype(float)
    np.fill_diagonal(wins, 0)
    rows, outcome = [], []
    for i in range(k):
        for j in range(k):
            for _ in range(int(wins[i, j])):
                x = np.zeros(k)
                x[i], x[j] = 1, -1
                rows.append(x[1:])  # model 0 is the reference (its log-strength is 0)
                outcome.append(1)
    fit = sm.Logit(np.array(outcome + [0] * len(outcome)), np.vstack(rows + [-r for r in rows])).fit(disp=0, tol=1e-12)
    reference = np.concatenate([[0.0], fit.params])
    ours = bradley_terry(wins, prior=0.0)
    assert ours == pytest.approx(reference - reference.mean(), abs=1e-6)


def test_bradley_terry_recovers_a_known_ordering_with_bootstrap_intervals():
    truth = {"base": 0.0, "spa_dir": 0.8, "p_base": -0.6, "lora": 0.3}
    result = summarize(_synthetic_votes(truth, per_pair=150, seed=1, tie_rate=0.1), bootstrap_samples=300)
    models = result.models
    assert list(models["model"]) == ["spa_dir", "lora", "base", "p_base"]
    centred = {m: s - np.mean(list(truth.values())) for m, s in truth.items()}
    for row in models.to_dict("records"):
        assert row["ci_low"] < row["bt_log_strength"] < row["ci_high"]
        assert row["ci_low"] < centred[row["model"]] < row["ci_high"]
    assert models["ties"].sum() == 2 * sum(result.pairs["ties"])  # each tie counts for both models
    assert len(result.pairs) == 6 and (result.pairs["a_wins"] + result.pairs["b_wins"] + result.pairs["ties"]
                                       == result.pairs["votes"]).all()


def test_bradley_terry_stays_finite_when_a_model_never_wins():
    wins = np.array([[0, 10, 3], [0, 0, 4], [2, 5, 0]], dtype=float)
    strength = bradley_terry(wins, prior=0.5)
    assert np.isfinite(strength).all() and strength.argmin() == 1
    low, high = bootstrap_bradley_terry(wins, samples=50)
    assert np.isfinite(low).all() and (low <= high).all()


def test_results_table_for_two_models_from_a_log(tmp_path):
    votes = [{"rater": "r", "pair": str(n), "choice": c, "left": {"model": left}, "right": {"model": right}}
             for n, (c, left, right) in enumerate(
                 [("left", "new", "old")] * 6 + [("right", "old", "new")] * 2 + [("left", "old", "new")] * 2
                 + [("tie", "new", "old")] * 3)]
    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in votes) + '{"rater": "torn')
    result = results(str(path))
    assert result.models is None and result.votes == 13 and result.raters == 1
    [row] = result.pairs.to_dict("records")
    assert (row["model_a"], row["model_b"], row["a_wins"], row["b_wins"], row["ties"]) == ("new", "old", 8, 2, 3)
    assert row["a_win_rate"] == 0.8 and (row["ci_low"], row["ci_high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert row["tie_rate"] == pytest.approx(3 / 13)
    text = str(result)
    assert "new" in text and "0.800" in text and "Wilson" in text
