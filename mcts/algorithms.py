"""Every search algorithm by name: the tree searches of `mcts.search` and the baselines of
`mcts.baselines`, under one signature and one budget (`SearchConfig`).

    run_algorithm(problems, proposer, scorer, config)   config.algorithm: one of ALGORITHMS
"""

from __future__ import annotations

from typing import Callable, Sequence

from mcts.answers import AnswerJudge, SearchResult
from mcts.baselines import BASELINES
from mcts.policy.base import StepProposer, StepScorer
from mcts.config import ALGORITHMS, SearchConfig, TREE_RULES
from mcts.search import TreeSearch

__all__ = ["ALGORITHMS", "run_algorithm"]

def run_algorithm(problems: Sequence[str], proposer: StepProposer, scorer: StepScorer | None,
                  config: SearchConfig, *, on_tree: Callable[[int, dict], None] | None = None,
                  judge: AnswerJudge | None = None) -> list[SearchResult]:
    """Runs `config.algorithm` on a batch of problems (one tree or set of traces per problem).

    Args:
        problems: [P] problem statements.
        proposer: the policy.
        scorer: the PRM (may be None for greedy and self_consistency, which do not score).
        config: budget and rules.
        on_tree: called with (index, tree JSON) for every tree of a tree search.
        judge: the `AnswerJudge` of `answer_selection='ebc'` (`treesearch.loaders.load_judge`).

    Returns:
        [P] results.
    """
    if config.algorithm in TREE_RULES:
        if scorer is None:
            raise ValueError(f"{config.algorithm} needs a scorer")
        search = TreeSearch(problems, proposer, scorer, config, judge=judge)
        results = search.run()
        if on_tree is not None:
            for b in range(len(problems)):
                on_tree(b, search.to_json(b))
        return results
    return BASELINES[config.algorithm](problems, proposer, scorer, config, judge=judge)
