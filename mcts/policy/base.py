"""The contracts between the search loop, the policy and the scorer (ARCHITECTURE.md).

Every policy backend (vLLM, transformers, the toy world's scripted policy) implements
`StepProposer`; every critic (trained PRM, oracle, PPRM-based) implements `StepScorer`. The search
calls each exactly once per round with the prefixes of every selected leaf of every tree.

`SamplingTruncation` (with `check_truncation`) is the one definition of the sampling truncation a
`propose` call may ask for (top_p, top_k, min_p) and of its valid values.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
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


def check_truncation(top_p: float | None = None, top_k: int | None = None, min_p: float | None = None) -> None:
    """Checks sampling truncation values; None (not set) passes. Raises ValueError naming the value.

    top_p: nucleus sampling, in (0, 1] (1: off); top_k: an int >= 0 (0: off); min_p: in [0, 1]
    (0: off).
    """
    def real(x) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    if top_p is not None and not (real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] (1: off), got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
        raise ValueError(f"top_k must be an int >= 0 (0: off), got {top_k!r}")
    if min_p is not None and not (real(min_p) and 0.0 <= min_p <= 1.0):
        raise ValueError(f"min_p must be in [0, 1] (0: off), got {min_p!r}")


@dataclasses.dataclass(frozen=True)
class SamplingTruncation:
    """The truncation of a policy's sampling distribution, validated (`check_truncation`).

    top_p: keep the smallest set of most likely tokens (steps, for the scripted policy) reaching
        this mass; 1 turns it off.
    top_k: keep the k most likely; 0 turns it off.
    min_p: keep those at least this fraction as likely as the most likely one; 0 turns it off.

    Greedy decoding ignores it. `StepProposer.propose` takes the same three as keywords, None
    meaning "the policy's own setting": `policy_truncation.override(top_p=..., ...)`.
    """

    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    def __post_init__(self):
        check_truncation(self.top_p, self.top_k, self.min_p)

    @classmethod
    def of(cls, top_p: float | None = None, top_k: int | None = None,
           min_p: float | None = None) -> "SamplingTruncation":
        """The truncation with the values given; None is the off value of its field."""
        return cls().override(top_p=top_p, top_k=top_k, min_p=min_p)

    def override(self, top_p: float | None = None, top_k: int | None = None,
                 min_p: float | None = None) -> "SamplingTruncation":
        """This truncation with the values given (not None) replaced, validated."""
        changes = {k: v for k, v in (("top_p", top_p), ("top_k", top_k), ("min_p", min_p)) if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def active(self) -> bool:
        """Whether it removes anything (some field is not at its off value)."""
        return self.top_p < 1.0 or self.top_k > 0 or self.min_p > 0.0

    def as_dict(self) -> dict[str, float | int]:
        """{"top_p": ..., "top_k": ..., "min_p": ...}, e.g. the keywords of `propose`."""
        return {"top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p}


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
