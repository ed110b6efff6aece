"""The baselines (ARCHITECTURE.md), under the same budget accounting as the tree search.

    greedy                     one chain of thought at temperature 0
    best_of_n                  N sampled solutions, the one with the highest PRM value
    self_consistency           N sampled solutions, majority vote over their answers
    weighted_self_consistency  N sampled solutions, vote weighted by PRM value
    beam                       step-level beam search with the PRM

N is `config.simulations`. Solutions are sampled in waves of `config.width` per problem, all
problems together (one policy call per step for every live solution of every problem); a new wave
starts only while the problem is under its token budget, so the budget may be overshot by at most
one wave, and the tokens actually spent are reported. Every function takes
`(problems, proposer, scorer, config, judge=None)` (the judge of `answer_selection='ebc'`) and
returns one `SearchResult` per problem.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from mcts.policy.base import Prefix, StepProposer, StepScorer
from mcts.answers import AnswerJudge, Candidate, SearchResult, aggregate_step_values, candidate_fields, choose_answer
from mcts.config import SearchConfig
from mcts.traces import Counters, Trace, propose, sample_traces

__all__ = ["BASELINES", "beam", "best_of_n", "greedy", "self_consistency", "weighted_self_consistency"]


def _results(problems: Sequence[str], solutions: list[list[Trace]], counters: Counters, config: SearchConfig,
             simulations: Sequence[int], seconds: Sequence[float],
             judge: AnswerJudge | None) -> list[SearchResult]:
    out = []
    for b in range(len(problems)):
        candidates = [Candidate(t.answer, config.solution_value(aggregate_step_values(t.step_values, config.step_aggregate),
                                                                t.added), t.prefix.steps) for t in solutions[b]]
        chosen, value = choose_answer(candidates, config.selection, problem=problems[b], judge=judge)
        out.append(SearchResult(
            answer=chosen.answer if chosen else None, trace="".join(chosen.steps) if chosen else "",
            value=float(value), tokens=int(counters.tokens[b]), simulations=int(simulations[b]),
            policy_calls=int(counters.policy_calls[b]), scorer_calls=int(counters.scorer_calls[b]),
            seconds=float(seconds[b]), num_candidates=sum(c.answer is not None for c in candidates),
            **candidate_fields(candidates),
        ))
    return out


def _sample_solutions(problems: Sequence[str], proposer: StepProposer, scorer: StepScorer | None,
                      config: SearchConfig, n: int, temperature: float,
                      judge: AnswerJudge | None) -> list[SearchResult]:
    """Up to n solutions per problem, in waves of `config.width`; then `config.selection` chooses."""
    start = time.perf_counter()
    counters = Counters.zeros(len(problems))
    solutions: list[list[Trace]] = [[] for _ in problems]
    seconds = np.zeros(len(problems))
    while True:
        wave = []
        for b, problem in enumerate(problems):
            todo = min(config.width, n - len(solutions[b]))
            if todo <= 0 or config.over_budget(int(counters.tokens[b])):
                continue
            wave += [Trace(b, Prefix(problem)) for _ in range(todo)]
        if not wave:
            break
        sample_traces(wave, proposer, scorer, max_depth=config.max_depth, temperature=temperature,
                      counters=counters, truncation=config.truncation)
        now = time.perf_counter() - start
        for trace in wave:
            solutions[trace.owner].append(trace)
            seconds[trace.owner] = now
    return _results(problems, solutions, counters, config, [len(s) for s in solutions], seconds, judge)


def greedy(problems, proposer, scorer, config: SearchConfig,
           judge: AnswerJudge | None = None) -> list[SearchResult]:
    """One greedy solution per problem (no scorer call is made)."""
    return _sample_solutions(problems, proposer, None, config, n=1, temperature=0.0, judge=judge)


def best_of_n(problems, proposer, scorer, config: SearchConfig,
              judge: AnswerJudge | None = None) -> list[SearchResult]:
    """N sampled solutions; the one with the highest PRM value (`config.step_aggregate` over its
    steps) wins."""
    if scorer is None:
        raise ValueError("best_of_n needs a scorer")
    return _sample_solutions(problems, proposer, scorer, config, config.simulations, config.temperature, judge)


def self_consistency(problems, proposer, scorer, config: SearchConfig,
                     judge: AnswerJudge | None = None) -> list[SearchResult]:
    """N sampled solutions, majority vote (no scorer call is made)."""
    return _sample_solutions(problems, proposer, None, config, config.simulations, config.temperature, judge)


def weighted_self_consistency(problems, proposer, scorer, config: SearchConfig,
                              judge: AnswerJudge | None = None) -> list[SearchResult]:
    """N sampled solutions, each answer's votes weighted by its solutions' PRM values."""
    if scorer is None:
        raise ValueError("weighted_self_consistency needs a scorer")
    return _sample_solutions(problems, proposer, scorer, config, config.simulations, config.temperature, judge)


def beam(problems, proposer: StepProposer, scorer: StepScorer, config: SearchConfig,
         judge: AnswerJudge | None = None) -> list[SearchResult]:
    """Step-level beam search: every live beam samples `width` next steps, the PRM scores them, and
    the `width` best partial solutions (by `config.step_aggregate` of their step values; finished
    ones stay in the running) are kept. Ends when every kept beam is finished, at the depth limit,
    or over the token budget; the best finished beam is the answer (an unfinished best beam is
    completed greedily when `config.complete_unfinished`)."""
    if scorer is None:
        raise ValueError("beam needs a scorer")
    start = time.perf_counter()
    P, k = len(problems), config.width
    counters = Counters.zeros(P)
    beams: list[list[Trace]] = [[Trace(b, Prefix(p))] for b, p in enumerate(problems)]
    expansions = np.zeros(P, np.int64)
    seconds = np.zeros(P)
    value: Callable[[Trace], float] = lambda t: aggregate_step_values(t.step_values, config.step_aggregate)
    while True:
        live = [t for b in range(P) if not config.over_budget(int(counters.tokens[b]))
                for t in beams[b] if not t.stopped]
        if not live:
            break
        # greedy decoding has one answer per prefix: asking for k copies would only be charged
        proposals = propose(proposer, [t.prefix for t in live], 1 if config.temperature == 0 else k,
                            config.temperature, config.truncation)
        counters.charge_policy([t.owner for t in live], proposals)
        children: list[tuple[Trace, object]] = []
        for parent, steps in zip(live, proposals):
            expansions[parent.owner] += 1
            if not steps:
                parent.stopped = True
                continue
            for step in {s.text: s for s in steps}.values():
                child = Trace(parent.owner, parent.prefix.extend(step.text), list(parent.step_values),
                              parent.tokens + step.num_tokens, step.finished, added=[*parent.added, step])
                child.stopped = step.finished or child.prefix.depth >= config.max_depth
                children.append((child, step))
        if children:
            values = scorer.score([Prefix(c.prefix.problem, c.prefix.steps[:-1]) for c, _ in children],
                                  [s for _, s in children])
            counters.charge_scorer([c.owner for c, _ in children])
            for (child, _), v in zip(children, values):
                child.step_values.append(float(v))
        expanded = {id(t) for t in live}
        pool: list[list[Trace]] = [[t for t in beams[b] if id(t) not in expanded or t.stopped] for b in range(P)]
        for child, _ in children:
            pool[child.owner].append(child)
        now = time.perf_counter() - start
        for b in range(P):
            if any(id(t) in expanded for t in beams[b]):
                # stable sort: on equal values the earlier (finished, then first sampled) beam stays
                beams[b] = sorted(pool[b], key=value, reverse=True)[:k]
                seconds[b] = now
    if config.complete_unfinished:
        unfinished = [b for b in range(P) if not any(t.finished for t in beams[b]) and beams[b]]
        tops = [max(beams[b], key=value) for b in unfinished]
        tops = [Trace(t.owner, t.prefix, list(t.step_values), t.tokens, added=list(t.added)) for t in tops
                if t.prefix.depth < config.max_depth]
        sample_traces(tops, proposer, scorer, max_depth=config.max_depth, temperature=0.0, counters=counters)
        for t in tops:
            beams[t.owner].append(t)
            seconds[t.owner] = time.perf_counter() - start
    solutions = [[t for t in beams[b] if t.finished] for b in range(P)]
    return _results(problems, solutions, counters, config, expansions, seconds, judge)


BASELINES: dict[str, Callable[..., list[SearchResult]]] = {
    "greedy": greedy,
    "best_of_n": best_of_n,
    "self_consistency": self_consistency,
    "weighted_self_consistency": weighted_self_consistency,
    "beam": beam,
}
