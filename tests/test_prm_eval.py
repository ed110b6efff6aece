"""Evaluation metrics on hand cases: AUC (with ties), first-error accuracy, pairwise accuracy."""

from __future__ import annotations

import math
import random

import pytest

from prm.eval import choose_among
from prm.metrics import first_error_accuracy, pairwise_accuracy, predicted_first_error, step_auc


def auc_by_pairs(scores, labels):
    """The definition: P(score of a positive > score of a negative), ties 1/2."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_cases():
    assert step_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert step_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert step_auc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5  # all tied
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4) 1, (0.8>0.1) 1, (0.4=0.4) 1/2, (0.4>0.1) 1
    assert step_auc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert step_auc([0.3, 0.7, 0.7, 0.7, 0.2], [0, 1, 0, 1, 1]) == pytest.approx(
        auc_by_pairs([0.3, 0.7, 0.7, 0.7, 0.2], [0, 1, 0, 1, 1]))


def test_auc_matches_the_pairwise_definition_on_random_data_with_ties():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 40)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)]
        labels = [rng.randint(0, 1) for _ in range(n)]
        if len(set(labels)) < 2:
            continue
        assert step_auc(scores, labels) == pytest.approx(auc_by_pairs(scores, labels), abs=1e-12)


def test_auc_of_one_class_is_nan_and_lengths_must_match():
    assert math.isnan(step_auc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        step_auc([0.1, 0.2, 0.3], [1, 0])


def test_first_error_accuracy():
    assert predicted_first_error([0.9, 0.6, 0.4, 0.8]) == 2
    assert predicted_first_error([0.9, 0.5]) == -1  # 0.5 is not below the threshold
    assert predicted_first_error([0.9, 0.5], threshold=0.6) == 1
    values = [
        [0.9, 0.8, 0.7],  # predicted -1, truth -1: hit
        [0.9, 0.2, 0.1],  # predicted 1, truth 1: hit
        [0.3, 0.2, 0.9],  # predicted 0, truth 1: miss (too early)
        [0.9, 0.9, 0.9],  # predicted -1, truth 2: miss
    ]
    labels = [[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert first_error_accuracy(values, labels) == 0.5
    # threshold 0.95: every trace is predicted to fail at step 0, which no trace does
    assert first_error_accuracy(values, labels, threshold=0.95) == 0.0
    assert first_error_accuracy(values + [[0.96, 0.1]], labels + [[0, 0]], threshold=0.95) == 0.0
    assert first_error_accuracy([[0.2, 0.1]], [[0, 0]]) == 1.0
    assert math.isnan(first_error_accuracy([], []))
    with pytest.raises(ValueError):
        first_error_accuracy([[0.1]], [])


def test_pairwise_accuracy():
    assert pairwise_accuracy([0.9, 0.6, 0.4, 0.5]) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert math.isnan(pairwise_accuracy([]))


class _OraclePRM:
    """A perfect PRM: each step's oracle label."""

    def score_traces(self, prefixes):
        from mcts.envs.arith import label_steps

        return [[float(y) for y in label_steps(p.problem, p.steps)] for p in prefixes]


def test_choose_among_hand_made_samples():
    right = ["3 * 4 = 12, so 2 + 12\n", "2 + 12 = 14, so 14\n", "The answer is \\boxed{14}.\n"]
    wrong = ["3 * 4 = 13, so 2 + 13\n", "2 + 13 = 15, so 15\n", "The answer is \\boxed{15}.\n"]
    problems = [{"problem": "2 + 3 * 4", "answer": 14}, {"problem": "1 + 1", "answer": 2}]
    other = [["1 + 1 = 3, so 3\n", "The answer is \\boxed{3}.\n"]] * 3
    traces = [("2 + 3 * 4", s) for s in (wrong, right, wrong)] + [("1 + 1", s) for s in other]
    votes = choose_among(None, problems, traces)
    assert votes["n"] == 3 and votes["accuracy"] == {"majority": 0.0, "pass@3": 0.5}
    scored = choose_among(_OraclePRM(), problems, traces)["accuracy"]
    assert scored["prm_best_min"] == scored["prm_best_prod"] == scored["prm_vote_min"] == 0.5  # the lone right one
    assert choose_among(None, [], [])["accuracy"] == {}  # nothing to choose among
    with pytest.raises(ValueError, match="same number of solutions"):
        choose_among(None, problems, traces[:-1])
