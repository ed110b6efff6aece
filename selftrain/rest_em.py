"""ReST-EM, the no-search baseline: sample solutions of every training problem from the policy,
keep the verified-correct ones, fine-tune on them, repeat (rejection sampling; Singh et al. 2023).

The samples are stored as a tree of independent chains (one per sample, sharing nothing), so the
same harvest gives the same kinds of data as a searched tree: SFT solutions, and PRM targets in
which a correct sample's steps are all labelled 1 and a wrong one's all 0 (without a tree nothing
finer can be inferred). With `rest_em_samples` left at None each problem gets as many samples as
fit in the tokens that the tree search of the same configuration spends per problem (measured on
the first shard), so the two loops compare at equal generated tokens.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from mcts.policy.base import Prefix
from mcts.answers import Candidate, SearchResult, candidate_fields, choose_answer
from mcts.trees import tree_from_solutions
from mcts.traces import Counters, sample_traces, Trace
from mcts.config import SearchConfig
from selftrain.rest_mcts import harvest_stage, train_and_hand_on
from selftrain.run import RunContext

__all__ = ["SampledChains", "chain_tree", "iteration"]


def chain_tree(problem: str, traces: Sequence[Trace]) -> dict:
    """Independent samples as one tree JSON (`mcts.trees`): a chain per sample, sharing nothing."""
    return tree_from_solutions(problem, [(t.prefix.steps, t.answer) for t in traces], "rest_em",
                               share_prefixes=False).to_json()


@dataclasses.dataclass(frozen=True)
class SampledChains:
    """ReST-EM's sampling as a `treesearch.executor.SearchRunner`: `config.simulations` solutions per
    problem at the config's temperature and depth, the majority answer as the result, and the
    samples as a tree of independent chains (`chain_tree`) for the harvest."""

    name: str = "rest_em"

    def __call__(self, texts: Sequence[str], proposer, scorer, config: SearchConfig, *, on_tree,
                 cache: dict) -> list[SearchResult]:
        started = time.perf_counter()
        samples = config.simulations
        counters = Counters.zeros(len(texts))
        traces = [Trace(b, Prefix(text, ())) for b, text in enumerate(texts) for _ in range(samples)]
        sample_traces(traces, proposer, None, max_depth=config.max_depth, temperature=config.temperature,
                      counters=counters)
        results = []
        for b, text in enumerate(texts):
            mine = [t for t in traces if t.owner == b]
            on_tree(b, chain_tree(text, mine))
            candidates = [Candidate(t.answer, 1.0, t.prefix.steps) for t in mine if t.finished]
            chosen, value = choose_answer(candidates, "majority")
            results.append(SearchResult(
                answer=chosen.answer if chosen else None, trace="".join(chosen.steps) if chosen else "",
                value=float(value), tokens=int(counters.tokens[b]), simulations=samples,
                policy_calls=int(counters.policy_calls[b]), scorer_calls=0,
                seconds=time.perf_counter() - started, num_candidates=len(mine), **candidate_fields(candidates)))
        return results


def samples_for(ctx: RunContext, k: int) -> int:
    """config.rest_em_samples, else the samples that spend the tree search's tokens per problem: a
    probe of the first shard with the same policy (its search is not kept)."""
    cfg = ctx.config
    if cfg.rest_em_samples is not None:
        return cfg.rest_em_samples

    def work(folder) -> dict:
        from mcts.algorithms import run_algorithm

        policy, prm = ctx.models(k - 1)
        shard = [p.problem for p in ctx.train[:cfg.batch]]
        proposer = ctx.load_policy(policy, cfg.seed)
        tree_tokens = sum(r.tokens for r in run_algorithm(shard, proposer, ctx.load_prm(prm), cfg.search)) / len(shard)
        one = SampledChains()(shard, proposer, None, dataclasses.replace(cfg.search, simulations=1),
                              on_tree=lambda b, tree: None, cache={})
        sample_tokens = max(1.0, sum(r.tokens for r in one) / len(shard))
        return {"samples": max(1, round(tree_tokens / sample_tokens)), "tree_tokens_per_problem": tree_tokens,
                "sample_tokens": sample_tokens}

    return int(ctx.stage(k, "budget", work)["samples"])


def iteration(ctx: RunContext, k: int) -> None:
    policy, prm = ctx.models(k - 1)
    cfg = ctx.config
    n = samples_for(ctx, k)
    search = dataclasses.replace(cfg.search, algorithm="self_consistency", simulations=n)
    ctx.search(k, "search", ctx.train, policy, None, search, seed=cfg.seed * 1000 + k, runner=SampledChains())
    harvest_stage(ctx, k)
    train_and_hand_on(ctx, k)
