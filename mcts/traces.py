"""Traces: many partial solutions advanced one step per batched call, and the budget ledger.

    Trace          a partial or finished solution of one problem
    Counters       per-problem tokens, policy calls and scorer calls, charged by every algorithm
    propose        `StepProposer.propose` with the sampling truncation passed only where one is set
    sample_traces  advances every live trace one step per round: one policy call (and one scorer
                   call) for all of them
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from mcts.grading import extract_answer
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer


@dataclasses.dataclass
class Trace:
    """A partial or finished solution of problem `owner`, grown one step at a time."""

    owner: int
    prefix: Prefix
    step_values: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    finished: bool = False  # stated an answer (or the policy ended it)
    stopped: bool = False  # no further step: finished, depth limit or the policy gave none
    added: list[Step] = dataclasses.field(default_factory=list)  # the steps `sample_traces` added, as proposed

    @property
    def answer(self) -> str | None:
        return extract_answer(self.prefix.steps[-1]) if self.finished and self.prefix.steps else None


@dataclasses.dataclass
class Counters:
    """Per-problem budget accounting shared by every algorithm."""

    tokens: np.ndarray  # int64 [P]
    policy_calls: np.ndarray  # int64 [P]
    scorer_calls: np.ndarray  # int64 [P]

    @classmethod
    def zeros(cls, n: int) -> "Counters":
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))

    def charge_policy(self, owners: Iterable[int], steps_per_owner: Iterable[Sequence[Step]]) -> None:
        called = set()
        for owner, steps in zip(owners, steps_per_owner):
            self.tokens[owner] += sum(s.num_tokens for s in steps)
            called.add(owner)
        for owner in called:
            self.policy_calls[owner] += 1

    def charge_scorer(self, owners: Iterable[int]) -> None:
        for owner in set(owners):
            self.scorer_calls[owner] += 1


def propose(proposer: StepProposer, prefixes: Sequence[Prefix], n: int, temperature: float,
            truncation: Mapping[str, float | int] | None = None) -> list[list[Step]]:
    """`proposer.propose`, with the sampling truncation passed only where one is set (and never
    to greedy decoding), so a policy without those options works until someone asks for them."""
    if not truncation or temperature == 0:
        return proposer.propose(prefixes, n, temperature)
    try:
        return proposer.propose(prefixes, n, temperature, **truncation)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise ValueError(f"{', '.join(sorted(truncation))}: the policy {type(proposer).__name__} takes no "
                         f"sampling truncation ({err})") from None


def sample_traces(traces: list[Trace], proposer: StepProposer, scorer: StepScorer | None, *,
                  max_depth: int, temperature: float, counters: Counters, max_steps: int | None = None,
                  stop: Callable[[Trace], bool] | None = None,
                  truncation: Mapping[str, float | int] | None = None) -> list[Trace]:
    """Advances every trace step by step until it stops, one policy call (and one scorer call when
    a scorer is given) per step for all of them together.

    Args:
        traces: modified in place.
        proposer: the policy; temperature 0 is greedy.
        scorer: scores every new step (its values go to `step_values`); None: no scoring.
        max_depth: a trace stops at this many steps.
        temperature: sampling temperature.
        counters: charged with the tokens and calls.
        max_steps: at most this many steps are added to each trace in this call (None: no limit).
        stop: checked for each live trace before every round; True stops it (e.g. a token budget).
        truncation: top_p / top_k / min_p for the policy (`SearchConfig.truncation`).

    Returns:
        `traces`.
    """
    added = 0
    while True:
        live = [t for t in traces if not t.stopped and not (stop is not None and stop(t))]
        if not live or (max_steps is not None and added >= max_steps):
            return traces
        proposals = propose(proposer, [t.prefix for t in live], 1, temperature, truncation)
        counters.charge_policy([t.owner for t in live], proposals)
        extended = []
        for trace, steps in zip(live, proposals):
            if not steps:
                trace.stopped = True
                continue
            step = steps[0]
            trace.prefix = trace.prefix.extend(step.text)
            trace.added.append(step)
            trace.tokens += step.num_tokens
            trace.finished = step.finished
            trace.stopped = step.finished or trace.prefix.depth >= max_depth
            extended.append((trace, step))
        if scorer is not None and extended:
            values = scorer.score([Prefix(t.prefix.problem, t.prefix.steps[:-1]) for t, _ in extended],
                                  [s for _, s in extended])
            counters.charge_scorer([t.owner for t, _ in extended])
            for (trace, _), v in zip(extended, values):
                trace.step_values.append(float(v))
        added += 1
