"""The batched search loop (ARCHITECTURE.md) and `python -m mcts.search`.

One round, for all B trees at once:

    leaves = select(forest, L)                       mcts.core, native code
    steps  = proposer.propose(prefixes, width)       ONE batched policy call for every leaf
    scores = scorer.score(child prefixes, steps)     ONE batched PRM call for every new step
    expand(forest, leaves, ...); backup(forest, leaves, values)

Step texts live here, on the Python side, keyed by (tree, node); the Forest holds the numbers.
Trees stop on their own (simulation budget, token budget, an answer whose value reaches
`stop_value`, a full tree); a stopped tree is closed by pruning its root, so `select` skips it.

Everything the tree search and the baselines (`mcts.baselines`) share lives here too: the budget
and answer-choice configuration, `sample_traces` (many traces advanced one step per batched call),
`choose_answer`, and the per-problem `SearchResult`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from mcts.core import EXPANDED, PRUNED, TERMINAL, Forest, backup, expand, select
from mcts.grading import extract_answer, normalize
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer

__all__ = [
    "ALGORITHMS", "TREE_RULES", "Candidate", "SearchConfig", "SearchResult", "Trace", "TreeSearch",
    "choose_answer", "distinct_answers", "main", "make_parser", "run_algorithm", "sample_traces", "tree_search",
]


def _help(text: str) -> dict:
    return {"help": text}


# ---------------------------------------------------------------------------------------------------
# Configuration

@dataclasses.dataclass(frozen=True)
class TreeRules:
    """How a tree algorithm maps onto the core's rules."""

    select: str
    backup: str


# The tree algorithms: ReST-MCTS* selects by UCT over the quality value, which the `quality` backup
# keeps as the visit-weighted mean of the children's values (mcts/core/reference.py).
TREE_RULES: dict[str, TreeRules] = {
    "mcts_star": TreeRules(select="mcts_star", backup="quality"),
    "uct": TreeRules(select="uct", backup="mean"),
    "puct": TreeRules(select="puct", backup="mean"),
}
BASELINE_NAMES = ("greedy", "best_of_n", "self_consistency", "weighted_self_consistency", "beam")
ALGORITHMS = (*TREE_RULES, *BASELINE_NAMES)
ANSWER_SELECTIONS = ("max_value", "weighted_vote", "majority", "ebc")
LEAF_VALUES = ("mean", "max")
PRIORS = ("length_normalized", "sequence", "uniform")
STEP_AGGREGATES = ("min", "last", "mean", "prod")
CANDIDATE_VALUES = ("q", "path")
# Default progressive widening: a node may grow to this many times `width` children. Measured with
# benchmarks/search_quality.py (tiny policy, oracle PRM at noise 0.1, 80 fresh 1-4 operation
# problems, 3 seeds, 32 simulations): MCTS* 0.417 with children fixed at 4 and terminals revisited,
# 0.467 with up to 16 and terminals closed (best-of-32: 0.450).
WIDENING_FACTOR = 4


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Budget, tree rules and answer choice of one search. Every algorithm reads the same budget
    fields, so methods are compared at equal compute."""

    algorithm: str = dataclasses.field(default="mcts_star", metadata=_help(
        f"one of {', '.join(ALGORITHMS)}"))
    simulations: int = dataclasses.field(default=32, metadata=_help(
        "tree search: selected leaves per tree (each is expanded or re-valued and backed up); "
        "best_of_n / self-consistency: sampled traces per problem"))
    budget_tokens: int | None = dataclasses.field(default=None, metadata=_help(
        "stop a problem once its policy calls generated this many tokens (checked between rounds, "
        "so one round may overshoot); None: no token budget"))
    width: int = dataclasses.field(default=4, metadata=_help(
        "tree search: steps sampled per expanded leaf; beam: beam width and samples per beam; "
        "sampling baselines: traces generated side by side per problem"))
    max_children: int | None = dataclasses.field(default=None, metadata=_help(
        "tree search, progressive widening: the most children a node may get. A node with fewer "
        "has a 'new step' arm beside its children, valued at what the PRM said the node is worth "
        "and open while no child is worth as much; selecting it samples `width` more steps there "
        "and adds the ones its children do not hold yet. None: 4 * width (greedy decoding: width); "
        "equal to width: children fixed at expansion"))
    revisit_terminals: bool = dataclasses.field(default=False, metadata=_help(
        "tree search: a finished answer may be selected again after its first backup (it adds no "
        "information: its value is fixed); False closes it once backed up, so simulations go to "
        "open nodes"))
    leaves_per_tree: int = dataclasses.field(default=1, metadata=_help(
        "leaves selected per tree and round (kept apart by virtual loss)"))
    c: float = dataclasses.field(default=1.0, metadata=_help("exploration constant of the select rule"))
    virtual_loss: float = dataclasses.field(default=1.0, metadata=_help(
        "weight of a pending selection, in visits that returned 0"))
    temperature: float = dataclasses.field(default=1.0, metadata=_help("sampling temperature of the policy"))
    top_p: float | None = dataclasses.field(default=None, metadata=_help(
        "nucleus sampling: keep the most likely tokens (steps, for the scripted policy) up to this mass; "
        "None: the policy's own setting (off by default)"))
    top_k: int | None = dataclasses.field(default=None, metadata=_help(
        "keep the k most likely tokens (0: off); None: the policy's own setting (off by default)"))
    min_p: float | None = dataclasses.field(default=None, metadata=_help(
        "keep the tokens at least this fraction as likely as the most likely one (0: off); None: the "
        "policy's own setting (off by default)"))
    max_depth: int = dataclasses.field(default=16, metadata=_help(
        "most steps in a solution; a step at this depth that gives no answer ends its branch"))
    stop_value: float | None = dataclasses.field(default=None, metadata=_help(
        "stop a tree once a finished answer's step value reaches this; None: never early"))
    answer_selection: str | None = dataclasses.field(default=None, metadata=_help(
        f"how the answer is chosen among finished traces: {', '.join(ANSWER_SELECTIONS)} (Enhanced "
        "Borda Count over a pairwise PPRM's preferences and the candidates' values: needs --pprm); "
        "None: the algorithm's own (max_value for trees, best_of_n and beam; majority for "
        "self_consistency; weighted_vote for weighted_self_consistency)"))
    # 'max' by measurement (benchmarks/search_quality.py): MCTS* with the tiny policy and the oracle
    # at noise 0.1 on 80 problems of 1-4 operations, 3 seeds, 0.579 against 0.554 for 'mean', and
    # with the scripted policy on 100 problems of 5-6 operations, 2 seeds, 0.915 / 0.900 against
    # 0.895 / 0.875 at 16 / 32 simulations (UCT 0.935 / 0.950 against 0.910 / 0.945). A leaf whose
    # samples hold one right step among wrong ones is worth that step: the mean buried it under its
    # siblings.
    leaf_value: str = dataclasses.field(default="max", metadata=_help(
        "value backed up from a freshly expanded leaf: 'max' (the best of its children's PRM "
        "values) or 'mean' (their prior-weighted mean)"))
    prior: str = dataclasses.field(default="length_normalized", metadata=_help(
        "children's priors: 'length_normalized' (exp of the mean token log-probability), "
        "'sequence' (exp of the step's log-probability) or 'uniform'; normalised over siblings"))
    rollout_depth: int = dataclasses.field(default=0, metadata=_help(
        "ReST-MCTS*: greedy rollout of this many steps from the best new child of each expanded "
        "leaf; the leaf's value is the max PRM value seen (0: no rollout)"))
    step_aggregate: str = dataclasses.field(default="mean", metadata=_help(
        "how the PRM values of a sampled trace's steps make its value: mean, min, last or prod "
        "(min and prod suit a calibrated PRM; one wrong step score sinks them, so mean is the "
        "robust default under label noise)"))
    candidate_value: str = dataclasses.field(default="q", metadata=_help(
        "tree search: the value of a finished solution for answer choice: 'q' (its answer node's "
        "Q) or 'path' (`step_aggregate` over its steps' PRM values, as best-of-N values a trace)"))
    complete_unfinished: bool = dataclasses.field(default=True, metadata=_help(
        "when a search ends without a finished answer, complete its best partial trace greedily "
        "(the tokens count toward the problem's total)"))
    tree_backend: str = dataclasses.field(default="auto", metadata=_help(
        "backend of the tree operations: auto, cpp, numba, numpy (mcts.core)"))

    def __post_init__(self):
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.algorithm in ALGORITHMS, f"algorithm={self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        need(self.simulations >= 1, f"simulations must be >= 1, got {self.simulations}")
        need(self.budget_tokens is None or self.budget_tokens >= 1,
             f"budget_tokens must be None or >= 1, got {self.budget_tokens}")
        need(self.width >= 1, f"width must be >= 1, got {self.width}")
        need(self.max_children is None or self.max_children >= self.width,
             f"max_children must be None or >= width ({self.width}), got {self.max_children}")
        need(self.leaves_per_tree >= 1, f"leaves_per_tree must be >= 1, got {self.leaves_per_tree}")
        need(math.isfinite(self.c) and self.c >= 0, f"c must be finite and >= 0, got {self.c}")
        need(math.isfinite(self.virtual_loss) and self.virtual_loss >= 0,
             f"virtual_loss must be finite and >= 0, got {self.virtual_loss}")
        need(math.isfinite(self.temperature) and self.temperature >= 0,
             f"temperature must be finite and >= 0, got {self.temperature}")
        need(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be None or in (0, 1], got {self.top_p}")
        need(self.top_k is None or self.top_k >= 0, f"top_k must be None or >= 0, got {self.top_k}")
        need(self.min_p is None or 0 <= self.min_p <= 1, f"min_p must be None or in [0, 1], got {self.min_p}")
        need(self.max_depth >= 1, f"max_depth must be >= 1, got {self.max_depth}")
        need(self.max_depth < 2**15 - 1, f"max_depth must be < {2**15 - 1} (depth is int16), got {self.max_depth}")
        need(self.stop_value is None or 0 <= self.stop_value <= 1,
             f"stop_value must be None or in [0, 1], got {self.stop_value}")
        need(self.answer_selection is None or self.answer_selection in ANSWER_SELECTIONS,
             f"answer_selection={self.answer_selection!r} is not one of {', '.join(ANSWER_SELECTIONS)}")
        need(self.leaf_value in LEAF_VALUES, f"leaf_value={self.leaf_value!r} is not one of {', '.join(LEAF_VALUES)}")
        need(self.prior in PRIORS, f"prior={self.prior!r} is not one of {', '.join(PRIORS)}")
        need(self.candidate_value in CANDIDATE_VALUES,
             f"candidate_value={self.candidate_value!r} is not one of {', '.join(CANDIDATE_VALUES)}")
        need(self.rollout_depth >= 0, f"rollout_depth must be >= 0, got {self.rollout_depth}")
        need(self.step_aggregate in STEP_AGGREGATES,
             f"step_aggregate={self.step_aggregate!r} is not one of {', '.join(STEP_AGGREGATES)}")

    @property
    def selection(self) -> str:
        """The answer-choice rule in effect."""
        if self.answer_selection is not None:
            return self.answer_selection
        return {"self_consistency": "majority", "weighted_self_consistency": "weighted_vote"}.get(
            self.algorithm, "max_value")

    @property
    def children_per_node(self) -> int:
        """The most children a node of a tree search can get (with widening, its slot block)."""
        if self.max_children is not None:
            return self.max_children
        # Greedy decoding has one step per prefix: widening would only draw it again.
        return self.width if self.temperature == 0 else WIDENING_FACTOR * self.width

    @property
    def truncation(self) -> dict[str, float | int]:
        """The sampling truncation set here (top_p, top_k, min_p), for `StepProposer.propose`."""
        return {k: v for k, v in (("top_p", self.top_p), ("top_k", self.top_k), ("min_p", self.min_p))
                if v is not None}

    def over_budget(self, tokens: int) -> bool:
        return self.budget_tokens is not None and tokens >= self.budget_tokens


# ---------------------------------------------------------------------------------------------------
# Results and answer choice

@dataclasses.dataclass
class Candidate:
    """A finished solution: its answer (None when it states none), value and steps."""

    answer: str | None
    value: float
    steps: tuple[str, ...]


@dataclasses.dataclass
class SearchResult:
    """What one search found for one problem."""

    answer: str | None  # the chosen final answer
    trace: str  # the steps of the chosen solution, joined
    value: float  # the chosen solution's value (its step value, or the vote share for votes)
    tokens: int  # tokens generated by the policy for this problem
    simulations: int  # leaves backed up (trees), traces sampled (sampling baselines), beam rounds
    policy_calls: int  # batched policy calls this problem took part in
    scorer_calls: int  # batched scorer calls this problem took part in
    seconds: float  # wall time from the start of its batch to the end of its search
    num_candidates: int  # finished solutions the answer was chosen from
    # distinct answers among those solutions, in the order found: what a perfect selector could pick
    # (pass@k of the search, with a gold answer at hand)
    candidate_answers: list[str] = dataclasses.field(default_factory=list)

    def record(self) -> dict:
        return dataclasses.asdict(self)


def choose_answer(candidates: Sequence[Candidate], rule: str, *, problem: str | None = None,
                  judge=None) -> tuple[Candidate | None, float]:
    """The chosen solution among finished candidates, and its score under `rule`.

    max_value: the candidate with the highest value (first on ties).
    weighted_vote: answers are grouped by their normalised spelling; the group with the largest
      sum of values wins (its best candidate is returned, the score is its share of the total).
    majority: as weighted_vote with every value counted as 1.
    ebc: Enhanced Borda Count (LLaMA-Berry): `judge.select(problem, candidates)`, where `judge` is
      the search's scorer loaded with a PPRM (`load_scorer(..., pprm=...)`, a `prm.ebc.EBCScorer`);
      it combines the PPRM's Borda score with each candidate's value (its local Q); the score is
      the chosen candidate's global quality.
    Candidates without an answer only win when no candidate states one.

    Args:
        candidates: the finished solutions of one problem.
        rule: one of ANSWER_SELECTIONS.
        problem: the problem text (read by the PPRM; needed by "ebc" only).
        judge: anything with `select(problem, candidates) -> (Candidate | None, float)` (needed by
            "ebc" only; the scorer of the search).
    """
    if rule == "ebc":
        if problem is None or not callable(getattr(judge, "select", None)):
            raise ValueError("answer_selection 'ebc' needs the problem text and a scorer loaded with a "
                             "pairwise PPRM (--pprm DIR|tiny; mcts.search.load_scorer(prm, pprm=...))")
        return judge.select(problem, candidates)
    if not candidates:
        return None, 0.0
    answered = [c for c in candidates if c.answer is not None]
    if not answered:
        best = max(candidates, key=lambda c: c.value)
        return best, best.value
    if rule == "max_value":
        best = max(answered, key=lambda c: c.value)
        return best, best.value
    groups: dict[str, list[Candidate]] = collections.defaultdict(list)
    for c in answered:
        groups[normalize(c.answer)].append(c)
    weight = (lambda c: 1.0) if rule == "majority" else (lambda c: max(c.value, 0.0))
    totals = {key: sum(weight(c) for c in members) for key, members in groups.items()}
    # dict order is first appearance, so ties go to the answer found first
    key = max(totals, key=lambda k: totals[k])
    total = sum(totals.values())
    best = max(groups[key], key=lambda c: c.value)
    return best, (totals[key] / total if total > 0 else 0.0)


def distinct_answers(candidates: Sequence[Candidate]) -> list[str]:
    """The stated answers of `candidates`, one per normalised spelling, in order."""
    seen: dict[str, str] = {}
    for c in candidates:
        if c.answer is not None:
            seen.setdefault(normalize(c.answer), c.answer)
    return list(seen.values())


def aggregate_step_values(values: Sequence[float], how: str) -> float:
    """One value for a trace from the PRM values of its steps."""
    if not values:
        return 0.0
    if how == "min":
        return float(min(values))
    if how == "last":
        return float(values[-1])
    if how == "mean":
        return float(sum(values) / len(values))
    return float(math.prod(values))


# ---------------------------------------------------------------------------------------------------
# Traces: many partial solutions advanced one step per batched call

@dataclasses.dataclass
class Trace:
    """A partial or finished solution of problem `owner`, grown one step at a time."""

    owner: int
    prefix: Prefix
    step_values: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    finished: bool = False  # stated an answer (or the policy ended it)
    stopped: bool = False  # no further step: finished, depth limit or the policy gave none

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


# ---------------------------------------------------------------------------------------------------
# The tree search

class TreeSearch:
    """MCTS over reasoning steps for a batch of problems: one tree per problem in one Forest.

    Usage: `TreeSearch(problems, proposer, scorer, config).run()` returns one `SearchResult` per
    problem; `to_json(b)` dumps tree b for inspection.
    """

    def __init__(self, problems: Sequence[str], proposer: StepProposer, scorer: StepScorer,
                 config: SearchConfig):
        if config.algorithm not in TREE_RULES:
            raise ValueError(f"TreeSearch runs {', '.join(TREE_RULES)}, not {config.algorithm!r}")
        self.problems = list(problems)
        self.proposer, self.scorer, self.config = proposer, scorer, config
        self.rules = TREE_RULES[config.algorithm]
        B = len(self.problems)
        # Each backed-up leaf allocates at most `children_per_node` nodes (real children, then the
        # empty slots that progressive widening fills later: a node's children stay contiguous).
        self.forest = Forest.empty(B, 1 + config.simulations * config.children_per_node)
        # [tree][node]: the step into each node; None for the root and for empty widening slots.
        self.steps: list[list[Step | None]] = [[None] for _ in range(B)]
        # [tree] {node: its arm, the next empty slot}, for every node that may still widen.
        self.arms: list[dict[int, int]] = [{} for _ in range(B)]
        self._closed_arms: list[tuple[int, int]] = []  # (tree, slot) of saturated nodes, closed after backup
        self.simulations = np.zeros(B, np.int64)
        self.counters = Counters.zeros(B)
        self.done = np.zeros(B, bool)
        self.seconds = np.zeros(B)
        self.completions: dict[int, Trace] = {}
        self._start = 0.0

    # -- text of the tree

    def prefix(self, b: int, node: int) -> Prefix:
        path = self.forest.path(b, node)
        return Prefix(self.problems[b], tuple(self.steps[b][s].text for s in path[1:]))

    def answer_of(self, b: int, node: int) -> str | None:
        step = self.steps[b][node]
        return extract_answer(step.text) if step is not None and step.finished else None

    # -- the loop

    def run(self) -> list[SearchResult]:
        self._start = time.perf_counter()
        self._stop_where(self.forest.num_trees * [False])  # a batch of 0 trees is done at once
        while not self.done.all():
            self.round()
        self.forest.flags[:, 0] &= ~PRUNED  # reopen the roots closed by _stop_where
        if self.config.complete_unfinished:
            self._complete_unfinished()
        return [self.result(b) for b in range(self.forest.num_trees)]

    def round(self) -> None:
        """One round for every live tree: select, propose, score, expand (or widen), back up.

        A selected leaf is one of three kinds: a finished answer or dead end (backed up with its
        value, then closed unless `revisit_terminals`), an empty widening slot (the 'new step' arm
        of its parent: more steps are sampled at the parent), or a leaf to expand. Expansions and
        widenings share one policy call and one scorer call.
        """
        cfg, f = self.config, self.forest
        leaves = select(f, cfg.leaves_per_tree, self.rules.select, cfg.c, cfg.virtual_loss, backend=cfg.tree_backend)
        B, L = leaves.shape
        values = np.zeros((B, L), np.float64)
        to_expand: list[tuple[int, int, int]] = []  # (tree, slot, leaf)
        to_widen: list[tuple[int, int, int]] = []  # (tree, slot, the node that gets more children)
        closing: list[tuple[int, int]] = []
        for b, slot in zip(*np.nonzero(leaves >= 0)):
            b, slot, leaf = int(b), int(slot), int(leaves[b, slot])
            if f.flags[b, leaf] & TERMINAL:
                values[b, slot] = self._terminal_value(b, leaf)
                closing.append((b, leaf))
            elif self._is_slot(b, leaf):
                to_widen.append((b, slot, int(f.parent[b, leaf])))
            else:
                to_expand.append((b, slot, leaf))
        asked = [*to_expand, *to_widen]
        prefixes = [self.prefix(b, node) for b, _, node in asked]
        proposed = self._propose(asked, prefixes)
        proposed[len(to_expand):] = [self._new_siblings(b, node, steps)
                                     for (b, _, node), steps in zip(to_widen, proposed[len(to_expand):])]
        rewards = self._score(asked, prefixes, proposed)
        n = len(to_expand)
        self._expand(leaves, to_expand, proposed[:n], rewards[:n], values)
        self._widen(leaves, to_widen, proposed[n:], rewards[n:], values)
        backup(f, leaves, values, self.rules.backup, backend=cfg.tree_backend)
        if not cfg.revisit_terminals:
            for b, leaf in closing:
                f.flags[b, leaf] |= PRUNED
        for b, arm in self._closed_arms:
            f.flags[b, arm] |= PRUNED
            f.visits[b, arm], f.value_sum[b, arm] = 0, 0.0
        self._closed_arms = []
        self._gate_arms()
        self.simulations += (leaves >= 0).sum(axis=1)
        self._stop_where((leaves < 0).all(axis=1))

    def _is_slot(self, b: int, node: int) -> bool:
        """An empty widening slot (allocated, holding no step yet)."""
        return node != 0 and self.steps[b][node] is None

    def _new_siblings(self, b: int, node: int, steps: list[Step]) -> list[Step]:
        """The proposed steps at `node` that none of its children holds, as many as fit its slots."""
        held = {self.steps[b][k].text for k in self.forest.children(b, node) if not self._is_slot(b, int(k))}
        end = int(self.forest.first_child[b, node] + self.forest.num_children[b, node])
        room = end - self.arms[b][node]
        return [s for s in steps if s.text not in held][:room]

    def _terminal_value(self, b: int, node: int) -> float:
        # A finished answer is worth its step value; a dead end (depth limit, no proposal) nothing.
        return 0.0 if self._dead_end(b, node) else float(self.forest.reward[b, node])

    def _propose(self, to_expand, prefixes: list[Prefix]) -> list[list[Step]]:
        """Distinct proposed steps per leaf (duplicates merged: they would be the same node)."""
        if not to_expand:
            return []
        cfg = self.config
        # Greedy decoding has one answer per prefix: asking for `width` copies would only be charged.
        n = 1 if cfg.temperature == 0 else cfg.width
        proposals = propose(self.proposer, prefixes, n, cfg.temperature, cfg.truncation)
        self.counters.charge_policy([b for b, _, _ in to_expand], proposals)
        distinct = []
        for steps in proposals:
            seen: dict[str, Step] = {}
            for step in steps:
                seen.setdefault(step.text, step)
            distinct.append(list(seen.values())[: self.config.width])
        return distinct

    def _score(self, to_expand, prefixes: list[Prefix], children: list[list[Step]]) -> list[list[float]]:
        pairs = [(prefix, step) for prefix, steps in zip(prefixes, children) for step in steps]
        if not pairs:
            return [[] for _ in children]
        flat = self.scorer.score([p for p, _ in pairs], [s for _, s in pairs])
        self.counters.charge_scorer([b for (b, _, _), steps in zip(to_expand, children) if steps])
        out, i = [], 0
        for steps in children:
            out.append([float(v) for v in flat[i:i + len(steps)]])
            i += len(steps)
        return out

    def _priors(self, steps: list[Step]) -> np.ndarray:
        if self.config.prior == "uniform" or not steps:
            return np.full(len(steps), 1.0 / max(len(steps), 1))
        if self.config.prior == "sequence":
            logits = np.array([s.logprob for s in steps], np.float64)
        else:
            logits = np.array([s.logprob / max(s.num_tokens, 1) for s in steps], np.float64)
        logits = np.where(np.isfinite(logits), logits, -1e9)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def _expand(self, leaves, to_expand, children, rewards, values) -> None:
        cfg, f = self.config, self.forest
        B, L = leaves.shape
        K = cfg.children_per_node  # real children first, then the empty slots widening may fill
        expand_leaves = np.full((B, L), -1, np.int32)
        counts = np.zeros((B, L), np.int32)
        priors = np.zeros((B, L, K), np.float32)
        reward_block = np.zeros((B, L, K), np.float32)
        terminal = np.zeros((B, L, K), np.uint8)
        for (b, slot, leaf), steps, r in zip(to_expand, children, rewards):
            if not steps:  # the policy cannot continue this prefix: a dead end
                f.flags[b, leaf] |= TERMINAL
                values[b, slot] = 0.0
                continue
            k = len(steps)
            child_depth = int(f.depth[b, leaf]) + 1
            expand_leaves[b, slot] = leaf
            # Children at the depth limit end their branch: nothing to widen.
            counts[b, slot] = K if K > cfg.width and child_depth < cfg.max_depth else k
            p = self._priors(steps)
            priors[b, slot, :k] = p
            reward_block[b, slot, :k] = r
            terminal[b, slot, :k] = [s.finished or child_depth >= cfg.max_depth for s in steps]
            values[b, slot] = float(np.dot(p, r)) if cfg.leaf_value == "mean" else max(r)
        first = expand(f, expand_leaves, counts, priors, reward_block, terminal, backend=cfg.tree_backend)
        for (b, slot, leaf), steps in zip(to_expand, children):
            start = int(first[b, slot])
            if start >= 0:
                assert start == len(self.steps[b]), "node ids are allocated in order"
                empty = int(counts[b, slot]) - len(steps)
                self.steps[b].extend([*steps, *[None] * empty])
                if empty:
                    f.flags[b, start + len(steps): start + len(steps) + empty] = PRUNED
                    self._set_arm(b, leaf, start + len(steps), pulls=0)
        if cfg.rollout_depth > 0:
            self._rollouts(to_expand, children, rewards, first, values)

    def _widen(self, leaves, to_widen, new_steps, rewards, values) -> None:
        """Fills the selected arm slots (and the slots after them) with the new steps sampled at
        their parents. The selected slot becomes the first new child and is backed up with its
        value; the next empty slot becomes the arm, pulled once more. A node whose samples held
        nothing new is saturated: its arm is closed and it widens no more."""
        cfg, f = self.config, self.forest
        q = f.q_values()
        for (b, slot, node), steps, r in zip(to_widen, new_steps, rewards):
            arm = self.arms[b].pop(node)
            assert arm == leaves[b, slot], "the selected slot is its parent's arm"
            pulls = int(f.visits[b, arm])
            f.visits[b, arm], f.value_sum[b, arm] = 0, 0.0  # the backup gives the new child its first visit
            if not steps:
                values[b, slot] = q[b, node]  # a draw of what the node already holds: no news
                self._closed_arms.append((b, arm))
                continue
            child_depth = int(f.depth[b, node]) + 1
            for i, (step, value) in enumerate(zip(steps, r)):
                self.steps[b][arm + i] = step
                f.reward[b, arm + i] = value
                f.flags[b, arm + i] = TERMINAL if step.finished or child_depth >= cfg.max_depth else 0
            start = int(f.first_child[b, node])
            filled = arm + len(steps)
            f.prior[b, start:filled] = self._priors(self.steps[b][start:filled])
            if filled < start + int(f.num_children[b, node]):
                self._set_arm(b, node, filled, pulls + 1)
            values[b, slot] = float(r[0])

    def _gate_arms(self) -> None:
        """An arm is open only while the node's children disappoint: none has a Q up to the
        node's worth. A node with a child as good as the PRM said the node is spends nothing on
        more samples (its arm reopens if that child's Q falls)."""
        f = self.forest
        q = f.q_values()
        for b, arms in enumerate(self.arms):
            for node, arm in arms.items():
                start = int(f.first_child[b, node])
                if q[b, start:arm].max() < f.reward[b, arm]:
                    f.flags[b, arm] &= ~PRUNED
                else:
                    f.flags[b, arm] |= PRUNED

    def _set_arm(self, b: int, node: int, slot: int, pulls: int) -> None:
        """Makes `slot` the open 'new step' arm of `node`: a bandit arm beside its children whose
        value is what the PRM said `node` is worth (the root, which the PRM does not score, is
        worth 1: the problem has a solution) and whose visits are the widenings made so far.
        Selection then widens where the PRM trusts a node more than the children found so far,
        and less often the more it has already widened there. The arm's visits also enter the
        `quality` backup's mean, so a node the PRM trusts keeps part of its value while its first
        children disappoint."""
        f = self.forest
        worth = 1.0 if node == 0 else float(f.reward[b, node])
        self.arms[b][node] = slot
        f.flags[b, slot] = 0
        f.reward[b, slot] = worth
        f.visits[b, slot] = pulls
        f.value_sum[b, slot] = worth * pulls
        f.prior[b, slot] = 1.0 / (1 + slot - int(f.first_child[b, node]))

    def _rollouts(self, to_expand, children, rewards, first, values) -> None:
        """ReST-MCTS*'s optional greedy rollout: from the best new child of each expanded leaf, a
        few greedy steps scored by the PRM; the leaf's value becomes the max value seen."""
        starts = []
        for (b, slot, leaf), steps, r in zip(to_expand, children, rewards):
            if first[b, slot] < 0 or not steps:
                continue
            j = int(np.argmax(r))
            if steps[j].finished:
                continue
            starts.append((b, slot, Trace(b, self.prefix(b, int(first[b, slot]) + j))))
        if not starts:
            return
        cfg = self.config
        sample_traces([t for _, _, t in starts], self.proposer, self.scorer, max_depth=cfg.max_depth,
                      temperature=0.0, counters=self.counters, max_steps=cfg.rollout_depth)
        for b, slot, trace in starts:
            if trace.step_values:
                values[b, slot] = max(values[b, slot], max(trace.step_values))

    def _stop_where(self, nothing_selected: np.ndarray) -> None:
        cfg = self.config
        now = time.perf_counter() - self._start
        for b in np.nonzero(~self.done)[0]:
            b = int(b)
            stop = (nothing_selected[b] or self.simulations[b] >= cfg.simulations
                    or cfg.over_budget(int(self.counters.tokens[b])) or bool(self.forest.full[b])
                    or (cfg.stop_value is not None and self._best_answer_value(b) >= cfg.stop_value))
            if stop:
                self.done[b] = True
                self.seconds[b] = now
                self.forest.flags[b, 0] |= PRUNED  # a pruned root has no selectable leaf

    def _best_answer_value(self, b: int) -> float:
        best = -math.inf
        for node, step in enumerate(self.steps[b]):
            if step is not None and step.finished and self.answer_of(b, node) is not None:
                best = max(best, float(self.forest.reward[b, node]))
        return best

    # -- answers

    def candidates(self, b: int) -> list[Candidate]:
        """Every finished solution in tree b (and its greedy completion, if one was made), valued
        by `candidate_value`: 'q' (the answer node's Q: its reward once visited) or 'path'
        (`step_aggregate` over the PRM values of the steps on its path, as the sampling baselines
        value their traces)."""
        q = self.forest.q_values(b)
        out = []
        for node, step in enumerate(self.steps[b]):
            if step is None or not step.finished:
                continue
            if self.config.candidate_value == "path":
                path = self.forest.path(b, node)[1:]
                value = aggregate_step_values([float(self.forest.reward[b, s]) for s in path],
                                              self.config.step_aggregate)
            else:
                value = float(q[node])
            out.append(Candidate(self.answer_of(b, node), value, self.prefix(b, node).steps))
        if b in self.completions:
            t = self.completions[b]
            how = self.config.step_aggregate if self.config.candidate_value == "path" else "last"
            out.append(Candidate(t.answer, aggregate_step_values(t.step_values, how), t.prefix.steps))
        return out

    def _best_partial(self, b: int) -> int:
        """The end of the greedy path by Q, preferring children that are not dead ends (terminal
        without an answer) so that a completion from it can still succeed."""
        node, f = 0, self.forest
        q = self.forest.q_values(b)
        while f.num_children[b, node] > 0:
            kids = [int(k) for k in f.children(b, node) if not self._is_slot(b, int(k))]
            node = max(kids, key=lambda k: (not self._dead_end(b, k), q[k]))
        return node

    def _dead_end(self, b: int, node: int) -> bool:
        return bool(self.forest.flags[b, node] & TERMINAL) and self.answer_of(b, node) is None

    def _complete_unfinished(self) -> None:
        need = [b for b in range(self.forest.num_trees)
                if not any(c.answer is not None for c in self.candidates(b))]
        traces = [Trace(b, self.prefix(b, self._best_partial(b))) for b in need]
        traces = [t for t in traces if t.prefix.depth < self.config.max_depth]
        if not traces:
            return
        sample_traces(traces, self.proposer, self.scorer, max_depth=self.config.max_depth, temperature=0.0,
                      counters=self.counters)
        for t in traces:
            if t.finished:
                self.completions[t.owner] = t
                self.seconds[t.owner] = time.perf_counter() - self._start

    def result(self, b: int) -> SearchResult:
        candidates = self.candidates(b)
        chosen, value = choose_answer(candidates, self.config.selection, problem=self.problems[b],
                                      judge=self.scorer)
        if chosen is None:
            steps = self.prefix(b, self._best_partial(b)).steps
            chosen = Candidate(None, 0.0, steps)
        return SearchResult(
            answer=chosen.answer, trace="".join(chosen.steps), value=float(value),
            tokens=int(self.counters.tokens[b]), simulations=int(self.simulations[b]),
            policy_calls=int(self.counters.policy_calls[b]), scorer_calls=int(self.counters.scorer_calls[b]),
            seconds=float(self.seconds[b]), num_candidates=len(candidates),
            candidate_answers=distinct_answers(candidates),
        )

    def to_json(self, b: int) -> dict:
        """Tree b as plain JSON: one record per node, parents before children."""
        f = self.forest
        q = self.forest.q_values(b)
        nodes = []
        for s in range(int(f.num_nodes[b])):
            step = self.steps[b][s]
            if self._is_slot(b, s):
                continue
            flags = int(f.flags[b, s])
            nodes.append({
                "id": s, "parent": int(f.parent[b, s]), "depth": int(f.depth[b, s]),
                "step": step.text if step else None, "logprob": step.logprob if step else None,
                "prior": float(f.prior[b, s]), "reward": float(f.reward[b, s]),
                "visits": int(f.visits[b, s]), "q": float(q[s]),
                "expanded": bool(flags & EXPANDED), "terminal": bool(flags & TERMINAL),
                "answer": self.answer_of(b, s),
            })
        return {"problem": self.problems[b], "algorithm": self.config.algorithm, "nodes": nodes}


def tree_search(problems: Sequence[str], proposer: StepProposer, scorer: StepScorer,
                config: SearchConfig) -> list[SearchResult]:
    return TreeSearch(problems, proposer, scorer, config).run()


def run_algorithm(problems: Sequence[str], proposer: StepProposer, scorer: StepScorer | None,
                  config: SearchConfig, *, on_tree: Callable[[int, dict], None] | None = None
                  ) -> list[SearchResult]:
    """Runs `config.algorithm` on a batch of problems (one tree or set of traces per problem).

    Args:
        problems: [P] problem statements.
        proposer: the policy.
        scorer: the PRM (may be None for greedy and self_consistency, which do not score).
        config: budget and rules.
        on_tree: called with (index, tree JSON) for every tree of a tree search.

    Returns:
        [P] results.
    """
    if config.algorithm in TREE_RULES:
        if scorer is None:
            raise ValueError(f"{config.algorithm} needs a scorer")
        search = TreeSearch(problems, proposer, scorer, config)
        results = search.run()
        if on_tree is not None:
            for b in range(len(problems)):
                on_tree(b, search.to_json(b))
        return results
    from mcts import baselines

    return baselines.BASELINES[config.algorithm](problems, proposer, scorer, config)


# ---------------------------------------------------------------------------------------------------
# Command line: python -m mcts.search --problem-file FILE ...

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcts.search",
        description="Search every problem of a problem file in batched rounds, choose and grade "
                    "answers, and write one JSON line per problem.")
    io = parser.add_argument_group("input and output")
    io.add_argument("--problem-file", required=True, help="JSONL problems: MATH-500, GSM8K, the toy world, "
                    "or any JSONL with a problem/question field (answer optional)")
    io.add_argument("--limit", type=int, default=None, help="search only the first N problems")
    io.add_argument("--out", default="results.jsonl", help="results, one JSON line per problem "
                    "(written atomically after every batch)")
    io.add_argument("--resume", action="store_true", help="keep the problems already in --out and "
                    "search only the others")
    io.add_argument("--trees-out", default=None, help="folder for one JSON file per searched tree")
    models = parser.add_argument_group("models")
    models.add_argument("--model", default="tiny", help="the policy: a local transformers model folder, "
                        "'tiny' (the toy world's tiny transformer, built on first use) or 'scripted' "
                        "(the toy world's scripted policy)")
    models.add_argument("--prm", default="oracle", help="the scorer: a local PRM folder, 'tiny' (the toy "
                        "world's trained PRM, built on first use: python -m prm.toy build) or 'oracle' "
                        "(the toy world's oracle, with --oracle-noise)")
    models.add_argument("--oracle-noise", type=float, default=0.1,
                        help="probability that the oracle PRM flips a step's score")
    models.add_argument("--pprm", default=None, help="a pairwise PPRM folder or 'tiny' (the toy world's, "
                        "built on first use): the judge of --answer-selection ebc")
    models.add_argument("--ebc-alpha", type=float, default=0.5, help="--answer-selection ebc: weight of the "
                        "normalised Borda score against the candidates' values (in [0, 1])")
    models.add_argument("--backend", default="hf", choices=POLICY_BACKENDS,
                        help="what runs --model: hf (transformers, CPU or GPU) or vllm (pip install -e .[vllm])")
    models.add_argument("--device", default=None, help="torch device of the models (default: cuda if "
                        "available, else cpu)")
    models.add_argument("--max-new-tokens", type=int, default=None, help="most tokens in one step")
    models.add_argument("--tensor-parallel-size", type=int, default=None,
                        help="--backend vllm: GPUs one engine shards the model over")
    models.add_argument("--dtype", default=None, help="--backend vllm: weights' dtype (auto, float16, "
                        "bfloat16, float32)")
    models.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="--backend vllm: fraction of the GPU's memory the engine may take")
    models.add_argument("--delimiter", default=None, help="the step delimiter of --model DIR, as a Python "
                        "string literal (default: what the folder declares, else '\\n\\n')")
    search = parser.add_argument_group("search (shared by every algorithm, for equal budgets)")
    for field in dataclasses.fields(SearchConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "algorithm":
            search.add_argument(flag, default=field.default, choices=ALGORITHMS, help=field.metadata["help"])
        elif field.type in ("bool", bool):
            search.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                help=field.metadata["help"])
        else:
            kind = {"int | None": int, "float | None": float, "str | None": str}.get(
                field.type, type(field.default))
            search.add_argument(flag, type=kind, default=field.default, help=field.metadata["help"])
    search.add_argument("--batch", type=int, default=16, help="problems searched together (trees per forest)")
    search.add_argument("--seed", type=int, default=0, help="seed of the run: batch k's policy sampling is "
                        "seeded from (seed, k), the oracle's noise from seed")
    where = parser.add_argument_group("where the search runs (mcts.executor)")
    where.add_argument("--executor", default="local", choices=("local", "ray"), help="local: this process; "
                       "ray: the batches are shared out over Ray actors, one policy and one PRM each "
                       "(pip install -e .[ray]); same results for the same seed")
    where.add_argument("--actors", type=int, default=None, help="--executor ray: number of actors "
                       "(default: one per GPU of the cluster, else 1)")
    where.add_argument("--ray-address", default=None, help="--executor ray: the cluster to join ('auto', "
                       "'ray://host:10001'); default: start a local one")
    return parser


class CliError(Exception):
    """A bad argument or input: printed as one line, exit status 2, nothing written."""


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SearchConfig)}
    try:
        return SearchConfig(**values)
    except ValueError as err:
        message = str(err)
        for name in values:  # name the flag, not the field
            message = message.replace(f"{name}=", f"--{name.replace('_', '-')}=").replace(
                f"{name} must", f"--{name.replace('_', '-')} must")
        raise CliError(message) from None


def _check_toy(problems: Sequence[str], what: str) -> None:
    from mcts.envs.arith import ArithParseError, parse_expression

    for text in problems:
        try:
            parse_expression(text)
        except ArithParseError:
            raise ValueError(f"{what} only knows the toy arithmetic world, but {text[:60]!r} is not an "
                             f"arithmetic expression") from None


POLICY_BACKENDS = ("hf", "vllm")


def load_proposer(model: str, *, backend: str = "hf", problems: Sequence[str] = (), seed: int = 0,
                  device: str | None = None, max_new_tokens: int | None = None,
                  delimiter: str | None = None, engine_options: Mapping[str, Any] | None = None) -> StepProposer:
    """The policy named by `model`: 'scripted' (the toy world's scripted policy), 'tiny' (the toy
    world's tiny transformer, built on first use), or a local transformers model folder (its step
    delimiter: `delimiter`, else what the folder declares, else blank lines), run by `backend`:
    'hf' (transformers) or 'vllm' (mcts.policy.vllm_policy; for 'tiny', its built folder).

    `engine_options`: more `VLLMPolicyConfig` fields for --backend vllm (tensor_parallel_size,
    dtype, gpu_memory_utilization); the transformers backend refuses them.

    Raises ValueError (or OSError for an unreadable folder) with a message naming what is wrong;
    `problems` are checked to be toy-world expressions where the policy needs them.
    """
    engine_options = {k: v for k, v in (engine_options or {}).items() if v is not None}
    if engine_options and backend != "vllm":
        raise ValueError(f"{', '.join(sorted(engine_options))}: vLLM engine options need --backend vllm")
    if model == "scripted":
        from mcts.policy.toy import ScriptedPolicy

        _check_toy(problems, "--model scripted")
        return ScriptedPolicy(seed=seed)
    if backend not in POLICY_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(POLICY_BACKENDS)}")
    options = {"seed": seed, "device": device, "max_new_tokens": max_new_tokens, "delimiter": delimiter}
    options = {k: v for k, v in options.items() if v is not None}
    if backend == "vllm":
        from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig

        if model == "tiny":
            from mcts.envs.tiny_models import ensure_toy_policy

            model = str(ensure_toy_policy())
        options.pop("device", None)  # vLLM places the model itself
        return VLLMPolicy.from_pretrained(Path(model), VLLMPolicyConfig(**options, **engine_options))
    if model == "tiny":
        from mcts.envs.tiny_models import load_toy_policy

        return load_toy_policy(**options)
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    return HFPolicy.from_pretrained(Path(model), HFPolicyConfig(**options))


def load_scorer(prm: str, *, problems: Sequence[str] = (), golds: dict[str, str] | None = None,
                oracle_noise: float = 0.0, seed: int = 0, device: str | None = None, pprm: str | None = None,
                ebc_alpha: float = 0.5, progress: bool = True) -> StepScorer:
    """The scorer named by `prm`, optionally with a pairwise judge for `answer_selection='ebc'`.

    Args:
        prm: 'oracle' (the toy world's oracle PRM, flipping a score with probability
            `oracle_noise`; `golds` maps problem text to gold answer), 'tiny' (the toy world's
            trained PRM, built on first use: `prm.toy.ensure_toy_prm`) or a local PRM folder.
        pprm: None, 'tiny' (the toy world's PPRM, built on first use) or a local PPRM folder: the
            scorer then also ranks finished candidates by Enhanced Borda Count
            (`prm.ebc.EBCScorer`, what `choose_answer(..., 'ebc')` calls).
        ebc_alpha: EBC's weight of the normalised Borda score against the candidates' values.
        progress: show the build's progress bar when a 'tiny' model is built on first use.

    Returns:
        A `StepScorer`; ValueError (or OSError for an unreadable folder) names what is wrong.
    """
    if prm == "oracle":
        from mcts.envs.arith import OraclePRM

        _check_toy(problems, "--prm oracle")
        scorer: StepScorer = OraclePRM(noise=oracle_noise, seed=seed, answers=golds)
    else:
        try:
            from prm.model import PRM
        except ImportError:
            raise ValueError("a PRM folder needs prm.model (the trainable PRM), which this install lacks") from None
        if prm == "tiny":
            from prm.toy import ensure_toy_prm

            prm = str(ensure_toy_prm(progress=progress))
        scorer = PRM.from_pretrained(Path(prm), device=device)
    if pprm is None:
        return scorer
    from prm.ebc import EBCScorer
    from prm.pairwise import PPRM

    if pprm == "tiny":
        from prm.toy import ensure_toy_pprm

        pprm = str(ensure_toy_pprm(progress=progress))
    try:
        judge = PPRM.from_pretrained(Path(pprm), device=device)
    except OSError as err:
        raise ValueError(f"--pprm {pprm}: {err}") from None
    return EBCScorer(scorer, judge, alpha=ebc_alpha)


def _delimiter(text: str | None) -> str | None:
    """--delimiter as typed: '\\n\\n' means two newlines."""
    if text is None:
        return None
    try:
        value = text.encode("utf-8").decode("unicode_escape") if "\\" in text else text
    except UnicodeDecodeError:
        raise CliError(f"--delimiter {text!r}: not a valid escape sequence") from None
    if not value:
        raise CliError("--delimiter must not be empty")
    return value


def read_results(path: Path) -> list[dict]:
    """The records of an existing results file (for --resume); bad lines raise CliError."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CliError(f"{path}:{lineno}: malformed JSON ({err.msg}); cannot resume from it") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise CliError(f"{path}:{lineno}: field 'id': missing or not a string; cannot resume from it")
            records.append(record)
    return records


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Writes JSON lines to a temporary file beside `path`, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_tree(folder: Path, problem_id: str, tree: dict) -> None:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in problem_id)
    target = folder / f"{safe}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"id": problem_id, **tree}, handle, ensure_ascii=False)
    os.replace(tmp, target)


def summarize(records: Sequence[dict], searched: int, seconds: float) -> str:
    """The end-of-run table over every record of the results file; the rate counts only the
    `searched` problems of this run."""
    graded = [r for r in records if r.get("correct") is not None]
    n = len(records)
    rows = [
        ("problems", f"{n}"),
        ("graded", f"{len(graded)}"),
        ("accuracy", f"{sum(r['correct'] for r in graded) / len(graded):.3f}" if graded else "n/a"),
        ("answered", f"{sum(r['answer'] is not None for r in records) / n:.3f}" if n else "n/a"),
        ("tokens / problem", f"{sum(r['tokens'] for r in records) / n:.1f}" if n else "n/a"),
        ("simulations / problem", f"{sum(r['simulations'] for r in records) / n:.1f}" if n else "n/a"),
        ("searched in this run", f"{searched}"),
        ("problems / s (this run)", f"{searched / seconds:.2f}" if searched and seconds > 0 else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_cli(args: argparse.Namespace) -> int:
    from mcts.executor import EngineLoadError, EngineSpec, ExecutorError, make_executor, search_problems
    from mcts.problems import ProblemFileError, load_problems

    config = _config_from_args(args)
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    if args.limit is not None and args.limit < 0:
        raise CliError(f"--limit must be >= 0, got {args.limit}")
    if args.actors is not None and args.actors < 1:
        raise CliError(f"--actors must be >= 1, got {args.actors}")
    if args.executor != "ray" and (args.actors is not None or args.ray_address is not None):
        raise CliError("--actors and --ray-address need --executor ray")
    try:
        problems = load_problems(args.problem_file, limit=args.limit)
    except ProblemFileError as err:
        raise CliError(str(err)) from None
    if (config.selection == "ebc") != (args.pprm is not None):
        raise CliError("--answer-selection ebc needs --pprm DIR|tiny (the pairwise judge), and --pprm is "
                       "only read by --answer-selection ebc")
    if not 0.0 <= args.ebc_alpha <= 1.0:
        raise CliError(f"--ebc-alpha must be in [0, 1], got {args.ebc_alpha}")
    judge = {"pprm": args.pprm, "ebc_alpha": args.ebc_alpha} if args.pprm is not None else {}
    spec = EngineSpec(model=args.model, prm=args.prm, backend=args.backend, device=args.device, seed=args.seed,
                      oracle_noise=args.oracle_noise, max_new_tokens=args.max_new_tokens,
                      delimiter=_delimiter(args.delimiter), config=config, scorer_options=judge,
                      proposer_options={"tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype,
                                        "gpu_memory_utilization": args.gpu_memory_utilization})
    if config.selection == "ebc" and not spec.needs_scorer:
        raise CliError(f"--answer-selection ebc: --algorithm {config.algorithm} loads no scorer to judge with")
    try:
        executor = make_executor(args.executor, actors=args.actors, address=args.ray_address)
    except ImportError as err:
        raise CliError(f"--executor {args.executor}: {err}") from None
    out = Path(args.out)
    try:
        run = search_problems(problems, spec, executor, batch=args.batch, out_path=out, resume=args.resume,
                              trees_out=args.trees_out, progress=True)
    except EngineLoadError as err:
        raise CliError(f"--{err.part} {err.name}: {err.reason}") from None
    except ExecutorError as err:
        raise CliError(f"--executor {args.executor}: {err}") from None
    finally:
        executor.close()
    if not run.searched:
        print(f"nothing to search: all {len(problems)} problems are already in {out}", file=sys.stderr)
    print(summarize(run.records, run.searched, run.seconds))
    print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
