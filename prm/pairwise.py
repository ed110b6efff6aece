"""The pairwise preference reward model (PPRM) of LLaMA-Berry (ARCHITECTURE.md).

P(a > b | problem): the PRM backbone reads both solutions in one sequence and a scalar head at its
last token gives the logit,

    <bos> problem \\n A: \\n a_1 \\n a_2 \\n ... B: \\n b_1 \\n ... b_K \\n
                                                             ^ p(a, b) = sigmoid(head)

trained with the Bradley-Terry / logistic loss (BCE on the logit) on pairs that differ in
correctness, each pair in both orders, (a, b) -> 1 and (b, a) -> 0, so that the position of a
solution tells the model nothing. At inference both orders are read as well and averaged,

    P(a > b) = (p(a, b) + 1 - p(b, a)) / 2,

which makes P(a > b) + P(b > a) = 1 exactly.

With `PRMConfig.pair_reading = "separate"` the PPRM is a Bradley-Terry model instead: the backbone
reads each solution alone, in the PRM's layout (problem, then its steps), the head gives one score
s per solution at its last token, and

    P(a > b) = sigmoid(s(a) - s(b)),

trained with the same logistic loss on (chosen, rejected) pairs (`prm.rows.encode_pair_rows`
makes rows that carry both sequences). It has no position bias by construction, scores N
solutions in N readings instead of N(N - 1), and starts well from a trained PRM, whose head at
the last step already scores a solution (the toy PPRM is built that way). A PPRM folder is a PRM
folder with mode "pairwise" (`prm.model.PRM.save_pretrained`); `preference_probs` gives the
matrix `prm.ebc` ranks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prm.model import PRM, encode_pieces, normalize_step

__all__ = ["PPRM", "pair_pieces", "symmetric_matrix", "symmetrize"]

LABEL_A = "A:"
LABEL_B = "B:"


def pair_pieces(a_steps: Sequence[str], b_steps: Sequence[str], delimiter: str) -> list[str]:
    """The pieces after the problem line: "A:", a's steps, "B:", b's steps (each piece ends with
    the delimiter)."""
    return [LABEL_A + delimiter, *(normalize_step(s, delimiter) for s in a_steps),
            LABEL_B + delimiter, *(normalize_step(s, delimiter) for s in b_steps)]


def symmetrize(p_ab: float | np.ndarray, p_ba: float | np.ndarray) -> float | np.ndarray:
    """P(a > b) from the two readings: (p(a, b) + 1 - p(b, a)) / 2."""
    return (p_ab + 1.0 - p_ba) / 2.0


def symmetric_matrix(raw: np.ndarray) -> np.ndarray:
    """[N, N] P[i, j] = (raw[i, j] + 1 - raw[j, i]) / 2 from one-order readings raw[i, j] = p(i, j);
    the diagonal is 0.5. P + P.T = 1."""
    raw = np.asarray(raw, dtype=np.float64)
    probs = symmetrize(raw, raw.T)
    np.fill_diagonal(probs, 0.5)
    return probs


class PPRM(PRM):
    """A PRM whose head reads a pair of solutions: see the module docstring.

    Build one with `PPRM.from_backbone(folder, PRMConfig(mode="pairwise"))` (a causal LM or a PRM
    folder: a trained PRM's backbone is a good start), train it with `prm.train` (`--kind pprm`),
    load it with `PPRM.from_pretrained(folder)` (`trust_remote_code=True` lets a backbone folder run
    its own code, as for `PRM`).
    """

    expected_mode = "pairwise"

    def encode_pair(self, problem: str, a_steps: Sequence[str], b_steps: Sequence[str]) -> list[int]:
        """Token ids of the pair sequence (problem, then A's and B's steps)."""
        return encode_pieces(self.tokenizer, self.head_ids(problem),
                             pair_pieces(a_steps, b_steps, self.config.delimiter))[0]

    @property
    def separate(self) -> bool:
        """True for a Bradley-Terry PPRM (each solution read alone)."""
        return self.config.pair_reading == "separate"

    def encode_solution(self, problem: str, steps: Sequence[str]) -> list[int]:
        """Token ids of one solution read alone (the PRM layout), cut to `max_length` from the left."""
        ids = self.encode(problem, steps)[0]
        return ids[-self.max_length:] if self.max_length is not None and len(ids) > self.max_length else ids

    def solution_scores(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        """Bradley-Terry scores s (logits) of (problem, steps) solutions, each read alone, one batched pass."""
        rows = []
        for problem, steps in items:
            ids = self.encode_solution(problem, steps)
            rows.append((ids, [len(ids) - 1]))
        return [v[0] for v in self._values(rows, reading=self.head_logits)]

    def compare(self, pairs: Sequence[tuple[str, Sequence[str], Sequence[str]]]) -> list[float]:
        """One-order readings p(a, b) of (problem, a_steps, b_steps) triples, in one batched pass
        (separate reading: sigmoid(s(a) - s(b)))."""
        if self.separate:
            items = [(p, a) for p, a, _ in pairs] + [(p, b) for p, _, b in pairs]
            scores = self.solution_scores(items)
            n = len(pairs)
            return [float(1.0 / (1.0 + np.exp(scores[n + i] - scores[i]))) for i in range(n)]
        rows = []
        for problem, a, b in pairs:
            ids = self.encode_pair(problem, a, b)
            if self.max_length is not None and len(ids) > self.max_length:
                ids = ids[-self.max_length:]
            rows.append((ids, [len(ids) - 1]))
        return [v[0] for v in self._values(rows)]

    def prefer(self, pairs: Sequence[tuple[str, Sequence[str], Sequence[str]]]) -> list[float]:
        """P(a > b) of each (problem, a_steps, b_steps), both orders read and averaged."""
        both = list(pairs) + [(p, b, a) for p, a, b in pairs]
        values = self.compare(both)
        n = len(pairs)
        return [float(symmetrize(values[i], values[n + i])) for i in range(n)]

    def preference_probs(self, problem: str, solutions: Sequence[Sequence[str]]) -> np.ndarray:
        """[N, N] P(i > j) between the solutions of one problem (all ordered pairs in one batched
        pass, symmetrised; diagonal 0.5)."""
        n = len(solutions)
        if self.separate:
            s = np.array(self.solution_scores([(problem, list(x)) for x in solutions]), dtype=np.float64)
            probs = 1.0 / (1.0 + np.exp(s[None, :] - s[:, None]))  # [i, j] = sigmoid(s_i - s_j)
            np.fill_diagonal(probs, 0.5)
            return probs
        order = [(i, j) for i in range(n) for j in range(n) if i != j]
        raw = np.full((n, n), 0.5)
        if order:
            values = self.compare([(problem, solutions[i], solutions[j]) for i, j in order])
            for (i, j), v in zip(order, values):
                raw[i, j] = v
        return symmetric_matrix(raw)

    def score(self, prefixes, steps):  # noqa: D401 - a PPRM is not a step scorer
        raise TypeError("a PPRM compares two solutions (prefer / preference_probs); it does not score steps")

    score_traces = score_outcomes = score
