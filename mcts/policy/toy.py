"""The toy world's scripted policy: a `StepProposer` that slips like a model, in microseconds.

For each prefix it reads the expression of the last step (or the problem) and proposes the next
reduction of `mcts.envs.arith`'s canonical solution with probability 1 - eps, or a plausible slip
with probability eps:

    off by a few      17 + 5 = 23, so 23 * 3 - 8
    swapped digits    13 * 12 = 165, so 165 - 8     (156 with two digits swapped)
    wrong operator    17 * 5 = 85, so 85 * 3 - 8

eps grows with the operands' digits and with `*` (`ToyPolicyConfig.error_rate`). A slip is not
repaired later: the next step reduces the wrong expression, so errors propagate as in a real model.
Every step is one draw from an explicit distribution over whole step texts (`distribution`), so its
log-probability is exact; temperature T reweights that distribution to p^(1/T) (T -> 0 is greedy,
the canonical solution). The toy world's tokenizer is character-level: a step's `num_tokens` is
its length, delimiter included.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from mcts.envs.arith import (
    DELIMITER,
    OPERATORS,
    Expr,
    FinalAnswer,
    answer_step,
    apply_op,
    parse_expression,
    parse_step,
    reduce_once,
    reduction_step,
    replace_at,
)
from mcts.policy.base import Prefix, SamplingTruncation, Step, check_propose_args
from mcts.options import option

__all__ = ["ScriptedPolicy", "ToyPolicyConfig", "current_expression"]



def _digits(x: int) -> int:
    return len(str(abs(x)))


@dataclasses.dataclass(frozen=True)
class ToyPolicyConfig:
    """How often and how the scripted policy slips.

    eps(a op b) = min(max_eps, base_eps * (1 + digit_factor * (digits(a) + digits(b) - 2))
                               * (mul_factor if op is '*' else 1))
    """

    base_eps: float = option(0.05,
        "slip probability of a one-digit + or - reduction")
    digit_factor: float = option(0.5,
        "relative increase of eps per operand digit beyond the first of each operand")
    mul_factor: float = option(2.0, "eps multiplier for '*'")
    max_eps: float = option(0.5,
        "cap on eps; at most 0.5 keeps the correct step the most likely one")
    answer_eps: float = option(0.0,
        "slip probability of the final-answer step (copying the value into the box)")
    off_by: tuple[int, ...] = option((-3, -2, -1, 1, 2, 3),
        "the offsets of an off-by-a-few slip")
    slip_weights: tuple[float, float, float] = option((0.5, 0.25, 0.25),
        "relative weights of the slip kinds: off by a few, swapped digits, wrong operator")

    def __post_init__(self):
        for name in ("base_eps", "max_eps", "answer_eps"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("digit_factor", "mul_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not self.off_by or any(not isinstance(d, int) or d == 0 for d in self.off_by):
            raise ValueError(f"off_by must be a non-empty tuple of non-zero ints, got {self.off_by!r}")
        if (len(self.slip_weights) != 3 or any(not (math.isfinite(w) and w >= 0) for w in self.slip_weights)
                or sum(self.slip_weights) <= 0):
            raise ValueError(f"slip_weights must be 3 non-negative weights with a positive sum "
                             f"(off by, swapped digits, wrong operator), got {self.slip_weights!r}")
        if self.slip_weights[0] == 0:
            # the one kind that always exists; without it a step may have no slip to make
            raise ValueError(f"slip_weights[0] (off by a few) must be > 0, got {self.slip_weights!r}")

    def error_rate(self, op: str, a: int, b: int) -> float:
        """eps of the reduction `a op b`: the probability that the policy slips on it."""
        eps = self.base_eps * (1.0 + self.digit_factor * (_digits(a) + _digits(b) - 2))
        if op == "*":
            eps *= self.mul_factor
        return min(self.max_eps, eps)


# ---------------------------------------------------------------------------------------------------
# The step distribution of one state


def _swaps(value: int) -> list[int]:
    """Values with two adjacent digits of `value` swapped (no leading zero, never `value` itself)."""
    s = str(abs(value))
    sign = -1 if value < 0 else 1
    out = []
    for i in range(len(s) - 1):
        t = s[:i] + s[i + 1] + s[i] + s[i + 2:]
        if t != s and t[0] != "0":
            out.append(sign * int(t))
    return out


def _slips(value: int, config: ToyPolicyConfig, wrong_ops: list[tuple[str, int]],
           text_of) -> dict[str, float]:
    """Slip texts and their probabilities given a slip (summing to 1).

    `text_of(op, wrong_value)` writes a slip; `wrong_ops` are (operator, value) of the other
    operators. Kinds without candidates drop out and the rest are renormalised; within a kind the
    candidates are equally likely; texts reached by two kinds add up.
    """
    kinds = [
        [text_of(None, value + d) for d in config.off_by],
        [text_of(None, v) for v in _swaps(value)],
        [text_of(op, v) for op, v in wrong_ops if v != value],
    ]
    weights = [w if texts else 0.0 for w, texts in zip(config.slip_weights, kinds)]
    total = sum(weights)
    slips: dict[str, float] = {}
    for w, texts in zip(weights, kinds):
        for text in texts:
            slips[text] = slips.get(text, 0.0) + w / total / len(texts)
    return slips


_HOLE = -987654321987654321  # a literal no expression of the world holds; filled in by text_of


@lru_cache(maxsize=1 << 16)
def _base_distribution(expr: Expr, config: ToyPolicyConfig) -> tuple[tuple[str, ...], tuple[float, ...], bool]:
    """(step texts without delimiter, probabilities, finished) at temperature 1; the correct step first."""
    red = reduce_once(expr)
    if red is None:  # fully reduced: the final answer
        eps = config.answer_eps
        correct = answer_step(expr)
        slips = _slips(expr, config, [], lambda op, v: answer_step(v)) if eps > 0 else {}
        finished = True
    else:
        eps = config.error_rate(red.op, red.a, red.b)
        correct = reduction_step(red.a, red.op, red.b, red.result, red.after)

        # Slips differ from each other only in the operator and the value written twice: render
        # once with a hole and fill it in (rendering is what the cold path spends its time on).
        hole = str(_HOLE)
        templates = {op: reduction_step(red.a, op, red.b, _HOLE, replace_at(expr, red.path, _HOLE))
                     for op in OPERATORS}

        def text_of(op: str | None, v: int) -> str:
            return templates[op or red.op].replace(hole, str(v))

        wrong_ops = [(op, apply_op(op, red.a, red.b)) for op in OPERATORS if op != red.op]
        slips = _slips(red.result, config, wrong_ops, text_of) if eps > 0 else {}
        finished = False
    texts = (correct, *slips)
    probs = (1.0 - eps, *(eps * p for p in slips.values()))
    keep = [i for i, p in enumerate(probs) if p > 0]  # eps = 1 drops the correct step
    return tuple(texts[i] for i in keep), tuple(probs[i] for i in keep), finished


@dataclasses.dataclass(frozen=True)
class _Table:
    """The sampling table of one (state, temperature): shared `Step`s and cumulative probabilities."""

    steps: tuple[Step, ...]
    probs: tuple[float, ...]
    cumulative: tuple[float, ...]
    greedy: Step


@lru_cache(maxsize=1 << 16)
def _table(expr: Expr, config: ToyPolicyConfig, temperature: float) -> _Table:
    texts, probs, finished = _base_distribution(expr, config)
    if temperature != 1.0:
        logits = [math.log(p) / temperature for p in probs]
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = sum(weights)
        probs = tuple(w / total for w in weights)
    steps = tuple(Step(t + DELIMITER, math.log(p) if p > 0 else -math.inf, len(t) + len(DELIMITER), finished)
                  for t, p in zip(texts, probs))
    cumulative = tuple(itertools.accumulate(probs))
    best = max(range(len(texts)), key=lambda i: (probs[i], -i))
    # Greedy decoding draws from a point mass; its step reports the temperature-1 log-probability,
    # as vLLM reports the model's, so that priors built from it still say something.
    base_logprob = math.log(_base_distribution(expr, config)[1][best])
    greedy = dataclasses.replace(steps[best], logprob=base_logprob)
    return _Table(steps, probs, cumulative, greedy)


# ---------------------------------------------------------------------------------------------------
# The policy


def current_expression(prefix: Prefix) -> Expr | None:
    """The expression the next step reduces: that of the latest step that writes one (steps that
    cannot be read are passed over), else the problem's; None once a final answer was given.

    Raises ValueError when neither a step nor the problem is an expression of the toy world.
    """
    for step in reversed(prefix.steps):
        parsed = parse_step(step)
        if isinstance(parsed, FinalAnswer):
            return None
        if parsed is not None:
            return parsed
    return _problem_expression(prefix.problem)


@lru_cache(maxsize=1 << 14)
def _problem_expression(problem: str) -> Expr:
    try:
        return parse_expression(problem)
    except ValueError as err:
        raise ValueError(f"ScriptedPolicy: {problem!r} is not a toy-world expression") from err


class ScriptedPolicy:
    """A noisy scripted `StepProposer` for the toy world, deterministic under its seed.

    The random draws come from a `numpy.random.Generator` owned by the instance: the same seed and
    the same sequence of calls give the same steps.
    """

    delimiter: str = DELIMITER

    def __init__(self, config: ToyPolicyConfig | None = None, seed: int = 0):
        """Args:
            config: slip rates and kinds (default `ToyPolicyConfig()`).
            seed: seed of the policy's generator.
        """
        self.config = ToyPolicyConfig() if config is None else config
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restarts the generator from `seed`, as a fresh `ScriptedPolicy(config, seed)` would."""
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def distribution(self, prefix: Prefix, temperature: float = 1.0) -> list[tuple[Step, float]]:
        """Every step the policy can propose after `prefix`, with its probability at `temperature`.

        Args:
            prefix: the problem and the steps so far.
            temperature: > 0.

        Returns:
            (step, probability) pairs, the canonical next step first; empty after a final answer.
        """
        _check_temperature(temperature, allow_zero=False)
        expr = current_expression(prefix)
        if expr is None:
            return []
        table = _table(expr, self.config, float(temperature))
        return list(zip(table.steps, table.probs))

    def error_rate(self, prefix: Prefix) -> float:
        """eps of the next step after `prefix` (0 after a final answer)."""
        expr = current_expression(prefix)
        if expr is None:
            return 0.0
        red = reduce_once(expr)
        return self.config.answer_eps if red is None else self.config.error_rate(red.op, red.a, red.b)

    def propose(self, prefixes: Sequence[Prefix], n: int, temperature: float = 1.0, *,
                greedy: bool = False, top_p: float | None = None, top_k: int | None = None,
                min_p: float | None = None) -> list[list[Step]]:
        """Samples `n` next steps for every prefix.

        Args:
            prefixes: [P] partial solutions.
            n: samples per prefix (>= 1).
            temperature: >= 0; 0 means greedy.
            greedy: take the most likely step (the canonical one) `n` times instead of sampling.
            top_p, top_k, min_p: truncation of the step distribution at `temperature` (over whole
                steps, this policy's unit): the smallest set of most likely steps reaching mass
                top_p, the k most likely, the steps at least min_p times as likely as the most
                likely; None or off values (1, 0, 0) keep every step. Log-probabilities stay
                those of the untruncated, untempered distribution.

        Returns:
            [P][n] steps; an empty list for a prefix that already gave its final answer.
        """
        check_propose_args(n, temperature)
        greedy = greedy or temperature == 0
        exprs = [current_expression(p) for p in prefixes]
        if greedy:
            return [[] if e is None else [_table(e, self.config, 1.0).greedy] * n for e in exprs]
        truncation = SamplingTruncation.of(top_p=top_p, top_k=top_k, min_p=min_p)  # validated
        uniforms = self._rng.random(len(prefixes) * n).tolist()
        out: list[list[Step]] = []
        for i, expr in enumerate(exprs):
            if expr is None:
                out.append([])
                continue
            table = _table(expr, self.config, float(temperature))
            steps, cumulative = _truncate(table.steps, table.probs, truncation) if truncation.active else (
                table.steps, table.cumulative)
            last = len(steps) - 1
            out.append([steps[min(bisect.bisect_right(cumulative, u), last)]
                        for u in uniforms[i * n:(i + 1) * n]])
        return out


def _truncate(steps: Sequence[Step], probs: Sequence[float],
              truncation: SamplingTruncation) -> tuple[list[Step], list[float]]:
    """The steps kept by top-k, then top-p, then min-p (most likely first), and their renormalised
    cumulative probabilities."""
    order = sorted(range(len(steps)), key=lambda j: -probs[j])
    if truncation.top_k:
        order = order[:truncation.top_k]
    if truncation.top_p < 1:
        kept, mass = [], 0.0
        for j in order:
            kept.append(j)
            mass += probs[j]
            if mass >= truncation.top_p:
                break
        order = kept
    if truncation.min_p:
        order = [j for j in order if probs[j] >= truncation.min_p * probs[order[0]]]
    total = sum(probs[j] for j in order)
    return [steps[j] for j in order], list(itertools.accumulate(probs[j] / total for j in order))


def _check_temperature(temperature: float, allow_zero: bool) -> None:
    ok = math.isfinite(temperature) and (temperature >= 0 if allow_zero else temperature > 0)
    if not ok:
        raise ValueError(f"temperature must be {'>= 0' if allow_zero else '> 0'}, got {temperature}")
