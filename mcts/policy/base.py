"""The contracts between the search loop, the policy and the scorer (ARCHITECTURE.md).

Every policy backend (vLLM, transformers, the toy world's scripted policy) implements
`StepProposer`; every critic (trained PRM, oracle, PPRM-based) implements `StepScorer`. The search
calls each exactly once per round with the prefixes of every selected leaf of every tree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, Sequence, runtime_checkable


@dataclasses.dataclass(frozen=True)
class Step:
    """One proposed reasoning step.

    text: the step's text, including its trailing delimiter when the policy emitted one.
    logprob: sum of the log-probabilities of the step's tokens under the policy.
    num_tokens: number of generated tokens (the unit of the search budget).
    finished: the step holds a final answer or ends the sequence (EOS): the node is terminal.
    """

    text: str
    logprob: float = 0.0
    num_tokens: int = 0
    finished: bool = False


@dataclasses.dataclass(frozen=True)
class Prefix:
    """A partial solution: the problem statement and the steps taken so far."""

    problem: str
    steps: tuple[str, ...] = ()

    def extend(self, step: str) -> "Prefix":
        return Prefix(self.problem, (*self.steps, step))

    @property
    def depth(self) -> int:
        return len(self.steps)


def check_propose_args(n: int, temperature: float) -> None:
    """The argument checks every `StepProposer.propose` makes (ValueError naming the argument)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")


@runtime_checkable
class StepProposer(Protocol):
    """Proposes next steps for many prefixes in one batched call."""

    delimiter: str

    def propose(self, prefixes: Sequence[Prefix], n: int, temperature: float = 1.0) -> list[list[Step]]:
        """Returns, for each prefix, `n` sampled next steps (fewer if a prefix cannot continue)."""
        ...

    def reseed(self, seed: int) -> None:
        """Restarts the sampling from `seed`: the calls that follow draw exactly as those of a fresh
        proposer seeded with `seed`. The executors (`treesearch.executor`) reseed at the start of every
        shard, so a shard's steps do not depend on which worker searched it or what came before."""
        ...


@runtime_checkable
class StepScorer(Protocol):
    """Scores the last step of each (prefix, step) pair in one batched call."""

    def score(self, prefixes: Sequence[Prefix], steps: Sequence[Step]) -> list[float]:
        """Returns one value in [0, 1] per pair: the PRM's estimate that prefix + step is on a
        path to a correct answer."""
        ...
