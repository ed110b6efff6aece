"""Enhanced Borda Count (LLaMA-Berry; ARCHITECTURE.md): ranking candidate solutions from
pairwise preferences and their local values.

    pref_probs [N, N]  P(i > j) from the PPRM (`prm.pairwise.PPRM.preference_probs`)
    preference_matrix  beats[i, j] = P(i > j) >= 0.5 (i != j); a tie (0.5) beats both ways
    transitive_closure i beats j in the closure when a chain i > k1 > ... > j exists (Floyd-Warshall);
                       the solutions of a cycle a > b > c > a all beat each other
    borda_scores       the number of other solutions each beats in the closure
    ebc_rank           global quality = alpha * borda / (N - 1) + (1 - alpha) * local_q, and the
                       order best first: by global quality, then local Q, then index (deterministic)
    ebc_select         the chosen `mcts.answers.Candidate` of a problem, given a PPRM
    EBCJudge           a PPRM and alpha as an `mcts.answers.AnswerJudge`: what the `ebc` answer rule
                       asks (`python -m mcts.search --answer-selection ebc --pprm DIR|tiny`)

Everything but `ebc_select` and `EBCJudge` is a pure NumPy function of arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from mcts.answers import Candidate

__all__ = ["EBCJudge", "borda_scores", "ebc_rank", "ebc_select", "global_quality", "preference_matrix",
           "transitive_closure"]


def preference_matrix(pref_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The "beats" relation of preference probabilities.

    Args:
        pref_probs: [N, N] P(i > j); the diagonal is ignored.
        threshold: i beats j when P(i > j) >= threshold.

    Returns:
        bool [N, N], False on the diagonal.
    """
    probs = np.asarray(pref_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1]:
        raise ValueError(f"pref_probs must be a square [N, N] matrix, got shape {probs.shape}")
    beats = probs >= threshold
    np.fill_diagonal(beats, False)
    return beats


def transitive_closure(beats: np.ndarray) -> np.ndarray:
    """The transitive closure of a relation (Floyd-Warshall over booleans).

    Args:
        beats: bool [N, N], beats[i, j]: i beats j.

    Returns:
        bool [N, N]: True where a chain of one or more beats leads from i to j. The diagonal is True
        exactly for solutions on a cycle.
    """
    closure = np.array(beats, dtype=bool, copy=True)
    if closure.ndim != 2 or closure.shape[0] != closure.shape[1]:
        raise ValueError(f"beats must be a square [N, N] matrix, got shape {closure.shape}")
    for k in range(closure.shape[0]):
        # i reaches j through k: one vectorised row/column update per k
        closure |= closure[:, k:k + 1] & closure[k:k + 1, :]
    return closure


def borda_scores(closure: np.ndarray) -> np.ndarray:
    """int [N]: how many other solutions each one beats in the closure (the diagonal is not counted)."""
    closure = np.asarray(closure, dtype=bool)
    return closure.sum(axis=1) - np.diagonal(closure)


def global_quality(borda: np.ndarray, local_q: np.ndarray, alpha: float) -> np.ndarray:
    """float [N]: alpha * borda / (N - 1) + (1 - alpha) * local_q (the Borda part is 0 when N = 1)."""
    borda = np.asarray(borda, dtype=np.float64)
    n = borda.shape[0]
    normalised = borda / (n - 1) if n > 1 else np.zeros_like(borda)
    return alpha * normalised + (1.0 - alpha) * np.asarray(local_q, dtype=np.float64)


def ebc_rank(pref_probs: np.ndarray, local_q: Sequence[float] | np.ndarray, alpha: float = 0.5,
             threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Ranks N solutions by Enhanced Borda Count.

    Args:
        pref_probs: [N, N] P(i > j).
        local_q: [N] each solution's local value (its node's Q, or its PRM value).
        alpha: weight of the normalised Borda score in [0, 1]; 0 ranks by local Q alone, 1 by Borda
            alone.
        threshold: see `preference_matrix`.

    Returns:
        (order, quality): int [N] indices best first (ties: higher local Q, then lower index), and
        float [N] the global quality of each solution.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    local = np.asarray(local_q, dtype=np.float64)
    probs = np.asarray(pref_probs, dtype=np.float64)
    if local.shape != (probs.shape[0],):
        raise ValueError(f"local_q has shape {local.shape}, pref_probs {probs.shape}")
    quality = global_quality(borda_scores(transitive_closure(preference_matrix(probs, threshold))), local, alpha)
    # lexsort sorts by its last key first: quality desc, then local Q desc, then index asc
    order = np.lexsort((np.arange(local.shape[0]), -local, -quality))
    return order, quality


def ebc_select(problem: str, candidates: Sequence["Candidate"], pprm, alpha: float = 0.5,
               ) -> tuple["Candidate | None", float]:
    """The candidate an Enhanced Borda Count over the PPRM's preferences picks.

    As `mcts.answers.choose_answer` does, candidates without an answer only take part when no
    candidate states one. Local Q is each candidate's `value`.

    Args:
        problem: the problem text.
        candidates: finished solutions (`answer`, `value`, `steps`).
        pprm: anything with `preference_probs(problem, solutions) -> [N, N]` (a `prm.pairwise.PPRM`).
        alpha: see `ebc_rank`.

    Returns:
        (the chosen candidate or None when there are none, its global quality).
    """
    if not candidates:
        return None, 0.0
    pool = [c for c in candidates if c.answer is not None] or list(candidates)
    if len(pool) == 1:
        return pool[0], float(global_quality(np.zeros(1), np.array([pool[0].value]), alpha)[0])
    probs = pprm.preference_probs(problem, [list(c.steps) for c in pool])
    order, quality = ebc_rank(probs, [c.value for c in pool], alpha)
    best = int(order[0])
    return pool[best], float(quality[best])


class EBCJudge:
    """Enhanced Borda Count with a PPRM as the search's answer judge (`mcts.answers.AnswerJudge`):
    `select(problem, candidates)` ranks a problem's finished candidates by `ebc_select`, their
    values (the search's local Q) beside the PPRM's preferences.
    `treesearch.loaders.load_judge(pprm, alpha=...)` builds one from a folder.

    Attributes:
        pprm: anything with `preference_probs(problem, solutions) -> [N, N]` (a `prm.pairwise.PPRM`).
        alpha: the weight of the normalised Borda score (see `ebc_rank`).
    """

    def __init__(self, pprm, alpha: float = 0.5):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.pprm, self.alpha = pprm, alpha

    def select(self, problem: str, candidates: Sequence["Candidate"]) -> tuple["Candidate | None", float]:
        """The candidate EBC picks and its global quality (see `ebc_select`)."""
        return ebc_select(problem, candidates, self.pprm, self.alpha)
