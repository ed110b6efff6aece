"""Metrics of PRMs and PPRMs: pure functions of scores and labels, and a model's on records.

Pure functions (NumPy, no model):

    step_auc(scores, labels)                  ROC AUC of step scores against 0/1 step labels
    first_error_accuracy(values, labels)      how often the PRM finds the first wrong step
    predicted_first_error(values)             the first step a PRM's values call wrong
    pairwise_accuracy(probs)                  how often P(correct > wrong) is above 1/2

With a model: `step_metrics` (a PRM on step records) and `pairwise_metrics` (a PPRM on pairs),
what training (`prm.train --eval-data`), the toy builds (`prm.toy`) and `python -m prm.eval` report.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from mcts.policy.base import Prefix

if TYPE_CHECKING:
    from prm.model import PRM
    from prm.pairwise import PPRM

__all__ = ["first_error_accuracy", "pairwise_accuracy", "pairwise_metrics", "predicted_first_error", "step_auc",
           "step_metrics"]


# ---------------------------------------------------------------------------------------------------
# Metrics


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def step_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC: the probability that a random positive step scores above a random negative one,
    ties counting 1/2 (the Mann-Whitney U statistic from average ranks).

    Args:
        scores: [S] step scores.
        labels: [S] 0/1 labels (1: correct step).

    Returns:
        AUC in [0, 1]; NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def predicted_first_error(values: Sequence[float], threshold: float = 0.5) -> int:
    """The index of the first step whose value is below `threshold`, or -1 when none is."""
    for i, v in enumerate(values):
        if v < threshold:
            return i
    return -1


def first_error_accuracy(values: Sequence[Sequence[float]], labels: Sequence[Sequence[int]],
                         threshold: float = 0.5) -> float:
    """First-error accuracy over traces.

    Per trace, the predicted first error is the first step whose value is < `threshold` (-1 when
    none), and the oracle's is the first step labelled 0 (-1 when none:
    `mcts.envs.arith.first_error`); the accuracy is the fraction of traces where the two are equal.
    A correct trace thus counts as a hit only when every step value is >= threshold, and a wrong
    one only when the PRM's first low value is exactly at the first wrong step.

    Args:
        values: [T][K_t] step values.
        labels: [T][K_t] 0/1 labels.
        threshold: the value below which a step is predicted wrong.

    Returns:
        Accuracy in [0, 1] (NaN for no traces).
    """
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} traces of values but {len(labels)} of labels")
    if not values:
        return math.nan
    hits = 0
    for v, y in zip(values, labels):
        truth = next((i for i, label in enumerate(y) if not label), -1)
        hits += predicted_first_error(v, threshold) == truth
    return hits / len(values)


def pairwise_accuracy(probs: Sequence[float]) -> float:
    """Fraction of pairs where P(correct > wrong) > 1/2; exactly 1/2 counts as half."""
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return math.nan
    return float(((p > 0.5) + 0.5 * (p == 0.5)).mean())


# ---------------------------------------------------------------------------------------------------
# With models


def step_metrics(prm: "PRM", records: Sequence[Mapping], threshold: float = 0.5) -> dict:
    """A PRM against the step labels of records (canonical, with "labels").

    Returns:
        {traces, steps, wrong_steps, step_auc, first_error_acc, step_acc (value >= threshold iff
        correct), outcome_auc (last step value against the last label), seconds}.
    """
    records = [r for r in records if "labels" in r]
    if not records:
        raise ValueError("no records with 'labels' to evaluate against")
    started = time.perf_counter()
    values = prm.score_traces([Prefix(r["problem"], tuple(r["steps"])) for r in records])
    seconds = time.perf_counter() - started
    labels = [list(r["labels"]) for r in records]
    flat_v = np.array([x for v in values for x in v])
    flat_y = np.array([x for y in labels for x in y])
    keep = ~np.isnan(flat_v)
    return {
        "traces": len(records),
        "steps": int(flat_y.size),
        "wrong_steps": int((flat_y == 0).sum()),
        "step_auc": step_auc(flat_v[keep], flat_y[keep]),
        "first_error_acc": first_error_accuracy(values, labels, threshold),
        "step_acc": float(((flat_v[keep] >= threshold) == (flat_y[keep] == 1)).mean()),
        "outcome_auc": step_auc([v[-1] for v in values], [y[-1] for y in labels]),
        "seconds": round(seconds, 2),
    }


def pairwise_metrics(pprm: "PPRM", pairs: Sequence[Mapping]) -> dict:
    """A PPRM on (problem, chosen, rejected) pairs: {pairs, pairwise_acc, one_order_acc}.

    pairwise_acc uses the symmetrised P(chosen > rejected); one_order_acc the raw reading with the
    chosen solution in position A and B alike (how much the averaging is needed).
    """
    if not pairs:
        return {"pairs": 0, "pairwise_acc": math.nan, "one_order_acc": math.nan}
    items = [(p["problem"], p["chosen"], p["rejected"]) for p in pairs]
    raw = pprm.compare(items + [(p, b, a) for p, a, b in items])
    n = len(items)
    sym = [(raw[i] + 1 - raw[n + i]) / 2 for i in range(n)]
    one = [raw[i] for i in range(n)] + [1 - raw[n + i] for i in range(n)]
    return {"pairs": n, "pairwise_acc": pairwise_accuracy(sym), "one_order_acc": pairwise_accuracy(one)}
