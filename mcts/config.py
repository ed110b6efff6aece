"""`SearchConfig`: the budget and rules that every algorithm shares, so that they compare at equal
compute, and the names of the algorithms and their rules.

    SearchConfig(algorithm="mcts_star", simulations=32, width=4, ...)   frozen; refuses bad values
    TREE_RULES       tree algorithm -> the core's select and backup rules
    ALGORITHMS       every name `mcts.algorithms.run_algorithm` runs (tree searches and baselines)

Every field is a flag of `python -m mcts.search` (read from the dataclass by `treesearch.cli`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from mcts.answers import ANSWER_SELECTIONS, STEP_AGGREGATES, mean_token_logprob
from mcts.core.native import BACKENDS
from mcts.policy.base import Step, check_truncation
from mcts.options import option, require

__all__ = ["ALGORITHMS", "ARM_GATES", "BASELINE_NAMES", "CANDIDATE_VALUES", "EXPANSIONS", "LEAF_VALUES", "PRIORS", "TREE_RULES", "UNSCORED",
           "WIDENING_FACTOR",
           "SearchConfig", "TreeRules"]



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
UNSCORED = ("greedy", "self_consistency")  # the algorithms that never call the scorer
BASELINE_NAMES = ("greedy", "best_of_n", "self_consistency", "weighted_self_consistency", "beam")
ALGORITHMS = (*TREE_RULES, *BASELINE_NAMES)
LEAF_VALUES = ("mean", "max")
PRIORS = ("length_normalized", "sequence", "uniform")
CANDIDATE_VALUES = ("q", "path")
ARM_GATES = ("gated", "until_exhausted", "trusted", "open")
EXPANSIONS = ("step", "rollout")
# Default progressive widening: a node may grow to this many times `width` children. Measured with
# benchmarks/search_quality.py (tiny policy, oracle PRM at noise 0.1, 80 fresh 1-4 operation
# problems, 3 seeds, 32 simulations): MCTS* 0.417 with children fixed at 4 and terminals revisited,
# 0.467 with up to 16 and terminals closed (best-of-32: 0.450).
# Raising it does not pay (one seed, same setting): 32 children at most 0.562, 64 at most 0.575,
# against 0.588 at 16. Where the tree falls short of best-of-32 is the 4-operation problems: the
# policy's first step there is spread thin (64 samples at a root hold 54-64 distinct steps, the right
# ones 0-10 % of the mass), so 12 of 20 such trees never held a right first step; each wrong child
# is also 10 % likely to look right to the noisy oracle and draw simulations after it.
WIDENING_FACTOR = 4


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Budget, tree rules and answer choice of one search. Every algorithm reads the same budget
    fields, so methods are compared at equal compute."""

    algorithm: str = option("mcts_star",
        f"one of {', '.join(ALGORITHMS)}")
    simulations: int = option(32,
        "tree search: selected leaves per tree (each is expanded or re-valued and backed up); "
        "best_of_n / self-consistency: sampled traces per problem")
    budget_tokens: int | None = option(None,
        "stop a problem once its policy calls generated this many tokens (checked between rounds, "
        "so one round may overshoot); None: no token budget")
    width: int = option(4,
        "tree search: steps sampled per expanded leaf; beam: beam width and samples per beam; "
        "sampling baselines: traces generated side by side per problem")
    max_children: int | None = option(None,
        "tree search, progressive widening: the most children a node may get. A node with fewer "
        "has a 'new step' arm beside its children, valued at what the PRM said the node is worth "
        "and open while no child is worth as much; selecting it samples `width` more steps there "
        "and adds the ones its children do not hold yet. None: 4 * width (greedy decoding: width); "
        "equal to width: children fixed at expansion")
    revisit_terminals: bool = option(False,
        "tree search: a finished answer may be selected again after its first backup (it adds no "
        "information: its value is fixed); False closes it once backed up, so simulations go to "
        "open nodes")
    leaves_per_tree: int = option(1,
        "leaves selected per tree and round (kept apart by virtual loss)")
    # 1 by measurement (benchmarks/search_quality.py, shipped tiny policy and toy PRM, problem set 1,
    # 80 problems, 2 seeds, MCTS* at 32 simulations): 0.637 against 0.625 at c = 0.5 and 0.613 at 2.
    c: float = option(1.0, "exploration constant of the select rule")
    virtual_loss: float = option(1.0,
        "weight of a pending selection, in visits that returned 0")
    # 1 for the trees by measurement (benchmarks/search_quality.py, oracle at noise 0.1, problem sets
    # 0 / 1, 80 problems, 2 seeds, MCTS* at 32 simulations, arm_gate until_exhausted): 0.675 / 0.731
    # at T=1, 0.606 / 0.644 at 1.3, 0.575 / 0.619 at 1.6. A hotter policy writes more distinct steps
    # but fewer right ones (pass@k 0.819 / 0.838 at 1, 0.781 / 0.787 at 1.3), at 15-42 % more tokens.
    temperature: float = option(1.0, "sampling temperature of the policy")
    top_p: float | None = option(None,
        "nucleus sampling: keep the most likely tokens (steps, for the scripted policy) up to this mass; "
        "None: the policy's own setting (off by default)")
    top_k: int | None = option(None,
        "keep the k most likely tokens (0: off); None: the policy's own setting (off by default)")
    min_p: float | None = option(None,
        "keep the tokens at least this fraction as likely as the most likely one (0: off); None: the "
        "policy's own setting (off by default)")
    # On the step tree (expansion='step'), True was better (benchmarks/search_quality.py, the
    # shipped tiny policy and PRM, 1-4 operations, MCTS* at 32 simulations, logprob_weight 0). With
    # the format-6 toy PRM, where it was chosen: 0.540
    # against 0.487 on 200 problems of problem set 2 (2 seeds), 0.494 against 0.487 on set 1, 0.537
    # against 0.512 on set 0, 0.542 against 0.500 on examples/toy_arith.jsonl. With the format-7 PRM:
    # 0.570 against 0.552 on set 2 (+0.090 over greedy, paired 95% CI [+0.045, +0.138], against
    # +0.072), 0.506 against 0.544 on set 1, 0.550 against 0.525 on set 0, 0.583 against 0.542 on the
    # examples; 16-19 % more tokens. With the policy re-weighted to 1-4 operations and the format-8
    # PRM (shipped now): 0.625 against 0.600 on set 2, 0.637 and 0.637 on set 1, 0.594 against 0.600
    # on set 0, 0.833 against 0.750 on the examples; 13-18 % more tokens. A weak policy's likeliest
    # step is often its right one, and `width` samples at T=1 all miss it often enough to leave the
    # tree below greedy. False since the rollout expansion became the default (see `expansion`):
    # a rollout tree samples a whole solution per simulation, and the measured rollout default
    # leaves the greedy step out (with it, 0.606 against 0.637 on set 1 at logprob_weight 0).
    greedy_child: bool = option(False,
        "tree search: every expanded node also gets the policy's greedy step as a child (one more "
        "greedy decoding per expansion, its tokens charged), so the greedy solution stays in the tree "
        "however the samples fall; --no-greedy-child: the samples alone")
    max_depth: int = option(16,
        "most steps in a solution; a step at this depth that gives no answer ends its branch")
    stop_value: float | None = option(None,
        "stop a tree once a finished answer's step value reaches this; None: never early")
    # None (the highest value) by measurement against 'weighted_vote' (benchmarks/search_quality.py
    # --set answer_selection=weighted_vote, oracle at noise 0.1, problem sets 0 / 1, 80 problems, 2
    # seeds): best-of-32 0.569 / 0.650 against 0.706 / 0.706, MCTS* 0.619 / 0.688 against 0.644 /
    # 0.719. A vote counts how often an answer was written, and on the hard problems the policy's
    # usual mistakes outnumber a right answer it writes rarely. Also measured offline on the same
    # candidates (problem sets 0 / 1, seed 0, not shipped): a posterior under the oracle's flip noise
    # over the whole tree (every descendant's label is evidence about its ancestors; constant prior or
    # the policy's token probability per step, max or noisy-or per answer) never beat the value plus
    # log-probability: best-of-32 0.700 / 0.700 at best against 0.712 / 0.712, MCTS* until_exhausted
    # 0.638 / 0.712 at best, the same as with it.
    answer_selection: str | None = option(None,
        f"how the answer is chosen among finished traces: {', '.join(ANSWER_SELECTIONS)} (Enhanced "
        "Borda Count over a pairwise PPRM's preferences and the candidates' values: needs --pprm); "
        "None: the algorithm's own (max_value for trees, best_of_n and beam; majority for "
        "self_consistency; weighted_vote for weighted_self_consistency)")
    # 'max' by measurement (benchmarks/search_quality.py): MCTS* with the tiny policy and the oracle
    # at noise 0.1 on 80 problems of 1-4 operations, 3 seeds, 0.579 against 0.554 for 'mean', and
    # with the scripted policy on 100 problems of 5-6 operations, 2 seeds, 0.915 / 0.900 against
    # 0.895 / 0.875 at 16 / 32 simulations (UCT 0.935 / 0.950 against 0.910 / 0.945). A leaf whose
    # samples hold one right step among wrong ones is worth that step: the mean buried it under its
    # siblings.
    leaf_value: str = option("max",
        "value backed up from a freshly expanded leaf: 'max' (the best of its children's PRM "
        "values) or 'mean' (their prior-weighted mean)")
    prior: str = option("length_normalized",
        "children's priors: 'length_normalized' (exp of the mean token log-probability), "
        "'sequence' (exp of the step's log-probability) or 'uniform'; normalised over siblings")
    # With the PRM's value alone choosing the answer (logprob_weight 0), 'step' was better on the
    # development set (benchmarks/search_quality.py, tiny policy,
    # MCTS* at 32 simulations, 2 seeds, problem set 1, 80 problems). Shipped toy PRM: 'step' 0.637
    # (pass@k 0.731, 2,180 tokens a problem); 'rollout' 0.606 (pass@k 0.800, 2,402 tokens); 'rollout'
    # without the greedy child, candidate_value='path' 0.637 (pass@k 0.812, 2,352 tokens); that at
    # width 2, 0.581 at 1,077 tokens. Oracle at noise 0.1: 'step' 0.725 (pass@k 0.756, 1,971 tokens),
    # 'rollout' 0.619, without the greedy child with 'path' 0.700 (pass@k 0.819, 1,672 tokens;
    # best-of-32 0.688). Then on set 0 and held-out set 2 (README, search section) that variant gave
    # 0.613 against 0.594 (set 0) and 0.655 against 0.625 (set 2) with the shipped PRM, and 0.640
    # against 0.667 on set 2 with the oracle. A rollout finishes every
    # branch whatever the PRM says of its steps, so the answer choice meets many more wrong
    # candidates (oracle, set 1: a right one picked on 85 % of the problems holding one, against
    # the step tree's 96 %). A node whose widening draws nothing new closes, so on easy problems
    # the rollout trees run out of open nodes early (2 operations: 11 of 32 simulations).
    # 'rollout' (with greedy_child False, candidate_value 'path' and logprob_weight 1), by
    # measurement on the two development sets with the answer choice that weighs the policy's
    # confidence (logprob_weight 1; benchmarks/search_quality.py, MCTS* at 32 simulations, 2 seeds,
    # 80 problems each): 0.656 against 0.588 for the step tree (with its greedy child and Q values)
    # on set 0, 0.656 against 0.656 on set 1; best-of-16 at the same weight 0.644 and 0.675. On
    # held-out set 2 (200 problems): 0.688 against 0.655, best-of-16 0.645, greedy 0.530. Disclosed:
    # set 2 had been looked at with logprob_weight 0 before this choice (figures above).
    expansion: str = option("rollout",
        "tree search: what a simulation adds. 'step': the selected leaf's `width` sampled steps, "
        "valued by the PRM (`leaf_value`); 'rollout': the same steps, and the best of them by PRM "
        "value is continued by sampling (at `temperature`) to a finished answer, every step of the "
        "continuation a node of the tree (with a widening arm where nodes widen), and the simulation "
        "backs up that answer's value from its end. Each simulation then yields a finished "
        "candidate, as a best-of-N sample does, and later ones branch where the PRM trusted a step "
        "more than the answers found below it")
    # 'until_exhausted', with `widen_unseen` 0.2 (see there: the pair became the default together),
    # was the default until 'trusted' (below).
    # Alone, before `widen_unseen`, 'gated' was kept by measurement (benchmarks/search_quality.py,
    # MCTS* at 32 simulations, 2 seeds, 80 problems): with the shipped PRM 'until_exhausted' gave
    # 0.631 against 0.656 on set 0 and 0.650 against 0.656 on set 1 ('open' 0.650), at 15 % more
    # tokens; with the oracle it gave 0.675 against 0.644 and 0.731 against 0.719 ('open' 0.662). A
    # saturating PRM turns the extra candidates into false positives; a sharp scorer turns them into
    # right answers. With the oracle and 'until_exhausted', c = 0.5 gave 0.706 / 0.694 (sets 0 / 1),
    # width 3 0.650 / 0.713 and width 2 0.588 / 0.650 at 75 % / 50 % of its tokens: no setting beats
    # best-of-32 (0.706 on both) by 3 points. There the trees hold a right answer as often as
    # best-of-32 does (pass@k 0.819 / 0.838 against 0.806 / 0.825), so the margin is the choice's,
    # where a wrong answer whose steps the noise flipped to 1.0 looks as good as a right one
    # (solved@k, added to the benchmark later, corrects that: pass@k counts right answers reached
    # through a wrong step, and on set 2 the choice keeps 94-97 % of the problems some solution
    # solves at every step). Nor does a noise-free oracle (--oracle-noise 0, where the choice is all
    # but perfect) give the trees 3 points: best-of-32 0.725 / 0.744, gated 0.694 / 0.787,
    # 'until_exhausted' 0.731 / 0.775, with max_children 64 0.719 / 0.781, at width 6 (37 % more
    # tokens than best-of-32) 0.725 / 0.750.
    # 'trusted' by measurement (benchmarks/search_quality.py --tree-variant trusted:arm_gate=trusted,
    # tiny policy, MCTS* at 32 simulations, 200 problems, seeds 0 and 1), against 'until_exhausted'
    # (the default before, with the same widen_unseen 0.2). Why: under a rollout that ends wrong,
    # every node of the rollout backs up 0, so a right node whose next step failed has Q 0, and
    # 'until_exhausted' then widens its parent and every ancestor above it, each new branch failing
    # the same way. Of the 26 / 22 problems of oracle sets 0 / 1 (seed 0) whose trees held no
    # solution right at every step, 8 / 13 had a deepest right node with a single child drawn (a
    # rollout's) and its arm still open after 32 simulations; at 4 of those of set 1 the policy
    # writes the right next step there 21-62 % of the time (most of the others are lotteries: the
    # right next step under 5 %, where neither tree nor best-of-32 does well). 'trusted' keeps a
    # node's arm shut while the PRM trusts one of its children as much as the node, so the draws go
    # to the deepest node the PRM still trusts. Oracle at noise 0.1, fresh problem sets 12-16 (drawn
    # after every choice above), paired against best-of-32: 'trusted' +2.0 / +3.7 / +0.3 / -0.3 /
    # -1.0, 'until_exhausted' -0.7 / +1.8 / -0.3 / -0.3 / -2.0 ('trusted' +1.2 a set ahead, never
    # behind), at 95-98 % of its tokens (70-76 % of best-of-32's); on sets 2 and 3, drawn before,
    # +3.7 / +1.8 against +5.0 / +1.8; on sets 17 / 18, drawn after the choice, +4.0 / +1.3
    # against +0.3 / +0.3 (over the nine, +1.7 against +0.7). The shipped toy PRM: 0.662 against
    # 0.644 on set 0 (80 problems), 0.688 against 0.690 on set 2 and 0.618 against 0.618 on set 5
    # (best-of-32 0.644, 0.682 and 0.623). The shipped examples:
    # 0.750 at seeds 0 and 1 against 0.792 (one problem of 24; greedy 0.708). Tried with it and
    # dropped (oracle): widen_unseen 0.1 -2.0 and 0.3 -2.8 against it on set 15; c 0.5 -1.7 and c 2
    # -2.5 on set 16; max_children 32 +0.3 / -2.0 / +1.0 on sets 12 / 13 / 14. More draws at a
    # node whose right step is rare buy false positives (wrong answers the noise flipped to 1)
    # about as fast as the right answer.
    arm_gate: str = option("trusted",
        "tree search: when a node's 'new step' arm may be selected. 'gated': only while none of its "
        "children has a Q up to the node's PRM value (a tree with nothing left to select stops "
        "early); 'until_exhausted': gated, but a tree with nothing left to select opens every arm "
        "for the rest of its budget; 'trusted' (the default): as 'until_exhausted', but a child "
        "whose PRM value reaches the node's also shuts the arm, whatever its Q, so a failure below "
        "a step the PRM trusts is searched for below that step; 'open': always")
    # 0.2, with arm_gate 'until_exhausted' (kept with 'trusted', the default gate since: see there),
    # by measurement (benchmarks/search_quality.py, tiny policy, MCTS* at 32 simulations, 2
    # seeds). Oracle at noise 0.1, 'until_exhausted', development
    # sets 0 / 1 (80 problems): 0.700 / 0.681 at 0.05, 0.688 / 0.681 at 0.1, 0.669 / 0.725 at 0.15,
    # 0.725 / 0.744 at 0.2 (0.725 / 0.719 with max_children 32), 0.669 / 0.725 at 0.25, 0.662 /
    # 0.725 at 0.3, 0.650 / 0.719 at 0.4, against 0.675 / 0.731 without it, the gated tree's 0.644 /
    # 0.719 and best-of-32's 0.706 / 0.706: 0.2 stands above its neighbours, partly by luck. Then on
    # problems held out from that choice (200 each): set 2 0.738 against best-of-32's 0.688 (seeds
    # 0, 1; 0.685 at 0.3) and 0.750 against 0.750 (seeds 2, 3), set 3 0.718 against 0.700 (seeds 0,
    # 1) and 0.740 against 0.710 (seeds 2, 3), set 4 0.723 against 0.725; at 72-75 % of best-of-32's
    # tokens, where the gated tree without it was 3.0-8.5 points below best-of-32. Gated, with the
    # oracle: 0.631 / 0.681 at 0.2 against 0.644 / 0.719. With the shipped toy PRM, sets 0 / 1:
    # 0.644 / 0.688 with 'until_exhausted' (1,995 / 2,194 tokens) and at 0.2 gated (1,749 / 2,052),
    # against the gated tree's 0.656 / 0.656 (2,147 / 2,352) and best-of-32's 0.644 / 0.688; on
    # held-out set 2, 0.690 with 'until_exhausted' and 0.703 gated against 0.688 (1,974 / 1,780 /
    # 2,051 tokens). After the pair became the default, on fresh problem sets (200 each, seeds 0,
    # 1): set 5, the shipped PRM 0.618 against the gated tree's 0.598, best-of-16's 0.588 and
    # best-of-32's 0.623 (2,083 / 2,171 / 1,325 / 2,650 tokens); the oracle 0.700 against 0.635 and
    # 0.682 (seeds 2, 3: 0.698 against 0.608 and 0.677), set 6 0.695 against 0.652 and 0.690 (seeds
    # 2, 3: 0.720 against 0.623 and 0.677). Over the fourteen held-out oracle runs of sets 2-11 the
    # mean paired difference from best-of-32 is +1.8 (README, oracle section). On the shipped
    # examples, 0.792 at seeds 0 and 1 against the gated tree's 0.750 and greedy's 0.708. So the
    # pair is level with the gated tree with the learned PRM, at fewer tokens, and well ahead of it
    # with a sharp scorer. Tried and dropped: halving the floor whenever a tree has nothing left to
    # select (down to 0.02, for the rest of its budget) gave 0.700 against 0.725 on oracle set 0 at
    # 2,851 tokens (pass@k 0.844 against 0.838): the extra candidates bring false positives as fast
    # as right answers. So was keeping the arm of a node whose children the PRM all values below the
    # node itself, while the unseen mass is at least 0.05: 0.688 / 0.706 on sets 0 / 1 against 0.725
    # / 0.744, +0.7 and +1.0 on fresh sets 8 and 9 at 5 % more tokens; at 0.02, -4.8 and +0.0. And
    # halving the floor as above, but only in a tree none of whose answers has every step valued 0.5
    # or more (down to 0.025): +0.7 and -3.3 on fresh sets 10 and 11, at 9-13 % more tokens. Why it
    # helps: the policy is often fairly sure of a wrong step (`7 + 16 = 22` has probability 0.70),
    # and one draw of four that repeats it closed the node before its right step (0.16) came up; a
    # node whose children hold all but a fifth of the probability, on the other hand, spends no
    # simulation on more draws.
    widen_unseen: float | None = option(0.2,
        "tree search, progressive widening: a node keeps its 'new step' arm while the policy's "
        "probability of a step none of its children holds (1 minus the sum of their steps' "
        "probabilities, from their log-probabilities) is at least this. A node whose children hold "
        "nearly all of it gets no arm; one that still misses much keeps its arm after a widening "
        "that drew nothing new. None (--widen-unseen none): the arm closes at the first widening "
        "that draws nothing new")
    rollout_depth: int = option(0,
        "ReST-MCTS*: greedy rollout of this many steps from the best new child of each expanded "
        "leaf; the leaf's value is the max PRM value seen (0: no rollout)")
    step_aggregate: str = option("mean",
        "how the PRM values of a sampled trace's steps make its value: mean, min, last or prod "
        "(min and prod suit a calibrated PRM; one wrong step score sinks them, so mean is the "
        "robust default under label noise)")
    # 'path' with the rollout expansion (chosen with it: see `expansion`); a rollout tree's answers
    # are whole sampled solutions, valued as best-of-N values its samples.
    candidate_value: str = option("path",
        "tree search: the value of a finished solution for answer choice: 'q' (its answer node's "
        "Q) or 'path' (`step_aggregate` over its steps' PRM values, as best-of-N values a trace)")
    # 1 by measurement (benchmarks/search_quality.py --logprob-weight W, shipped tiny policy and toy
    # PRM, 1-4 operations, 2 seeds; the same candidates are chosen among at every W, since the
    # choice comes after the search). Chosen on problem set 1 (80 problems), 0 against 1:
    # best-of-16 0.656 -> 0.675, best-of-32 -> 0.688, weighted SC-16 0.606 -> 0.619, MCTS* 0.637 ->
    # 0.656 (an offline sweep over the same candidates put the plateau at W = 1-2 per token, the
    # gain at 0.5 half as large). Confirmed on set 2 (200 problems): best-of-16 0.635 -> 0.645,
    # weighted SC-16 0.568 -> 0.573, MCTS* 0.625 -> 0.655. The toy PRM saturates: many candidates,
    # right and wrong, get values of 1.0 or nearly, and the policy's confidence separates them.
    logprob_weight: float = option(1.0,
        "answer choice: each finished solution's value plus this weight times the policy's mean "
        "log-probability per token over the solution (how sure the policy was of it; the PRM and "
        "the policy then judge together), for every algorithm that values its solutions; 0: the "
        "PRM's value alone")
    complete_unfinished: bool = option(True,
        "when a search ends without a finished answer, complete its best partial trace greedily "
        "(the tokens count toward the problem's total)")
    tree_backend: str = option("auto",
        "backend of the tree operations: auto, cpp, numba, numpy (mcts.core)")

    def __post_init__(self):
        require(self.algorithm in ALGORITHMS, f"algorithm={self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        require(self.simulations >= 1, f"simulations must be >= 1, got {self.simulations}")
        require(self.budget_tokens is None or self.budget_tokens >= 1,
             f"budget_tokens must be None or >= 1, got {self.budget_tokens}")
        require(self.width >= 1, f"width must be >= 1, got {self.width}")
        require(self.max_children is None or self.max_children >= self.width,
             f"max_children must be None or >= width ({self.width}), got {self.max_children}")
        require(self.leaves_per_tree >= 1, f"leaves_per_tree must be >= 1, got {self.leaves_per_tree}")
        require(math.isfinite(self.c) and self.c >= 0, f"c must be finite and >= 0, got {self.c}")
        require(math.isfinite(self.virtual_loss) and self.virtual_loss >= 0,
             f"virtual_loss must be finite and >= 0, got {self.virtual_loss}")
        require(math.isfinite(self.temperature) and self.temperature >= 0,
             f"temperature must be finite and >= 0, got {self.temperature}")
        check_truncation(self.top_p, self.top_k, self.min_p)  # the policies' own rule (mcts.policy.base)
        require(self.max_depth >= 1, f"max_depth must be >= 1, got {self.max_depth}")
        require(self.max_depth < 2**15 - 1, f"max_depth must be < {2**15 - 1} (depth is int16), got {self.max_depth}")
        require(self.stop_value is None or 0 <= self.stop_value <= 1,
             f"stop_value must be None or in [0, 1], got {self.stop_value}")
        require(self.answer_selection is None or self.answer_selection in ANSWER_SELECTIONS,
             f"answer_selection={self.answer_selection!r} is not one of {', '.join(ANSWER_SELECTIONS)}")
        require(self.leaf_value in LEAF_VALUES, f"leaf_value={self.leaf_value!r} is not one of {', '.join(LEAF_VALUES)}")
        require(self.prior in PRIORS, f"prior={self.prior!r} is not one of {', '.join(PRIORS)}")
        require(self.candidate_value in CANDIDATE_VALUES,
             f"candidate_value={self.candidate_value!r} is not one of {', '.join(CANDIDATE_VALUES)}")
        require(math.isfinite(self.logprob_weight) and self.logprob_weight >= 0,
             f"logprob_weight must be finite and >= 0, got {self.logprob_weight}")
        require(self.arm_gate in ARM_GATES, f"arm_gate={self.arm_gate!r} is not one of {', '.join(ARM_GATES)}")
        require(self.rollout_depth >= 0, f"rollout_depth must be >= 0, got {self.rollout_depth}")
        require(self.widen_unseen is None or 0 < self.widen_unseen <= 1,
             f"widen_unseen must be None or in (0, 1], got {self.widen_unseen}")
        require(self.expansion in EXPANSIONS, f"expansion={self.expansion!r} is not one of {', '.join(EXPANSIONS)}")
        require(self.expansion == "step" or self.rollout_depth == 0,
             "rollout_depth (a greedy rollout that only values a leaf) needs expansion='step' "
             "(--expansion step): expansion='rollout', the default, keeps a sampled rollout in the tree")
        require(self.tree_backend in ("auto", *BACKENDS),
             f"tree_backend={self.tree_backend!r} is not one of auto, {', '.join(BACKENDS)}")
        require(self.step_aggregate in STEP_AGGREGATES,
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
            return max(self.max_children, self.first_children)
        # Greedy decoding has one step per prefix: widening would only draw it again.
        return self.width if self.temperature == 0 else WIDENING_FACTOR * self.width + int(self.greedy_child)

    @property
    def first_children(self) -> int:
        """The most children a tree search's expansion gives a node: `width` samples, and the greedy
        step with `greedy_child`."""
        return self.width + int(self.greedy_child and self.temperature > 0)

    @property
    def widens(self) -> bool:
        """Whether a tree search's nodes may get children after their expansion (progressive widening)."""
        return self.children_per_node > self.first_children

    @property
    def truncation(self) -> dict[str, float | int]:
        """The sampling truncation set here (top_p, top_k, min_p), for `StepProposer.propose`."""
        return {k: v for k, v in (("top_p", self.top_p), ("top_k", self.top_k), ("min_p", self.min_p))
                if v is not None}

    @property
    def needs_scorer(self) -> bool:
        """Whether the algorithm calls the scorer at all (greedy and self-consistency never do)."""
        return self.algorithm not in UNSCORED

    def solution_value(self, value: float, steps: Sequence[Step]) -> float:
        """A finished solution's value for the answer choice: `value` (the PRM's, by
        `candidate_value` or `step_aggregate`), plus `logprob_weight` times the policy's mean
        token log-probability over `steps`."""
        return value + self.logprob_weight * mean_token_logprob(steps) if self.logprob_weight else value

    def over_budget(self, tokens: int) -> bool:
        return self.budget_tokens is not None and tokens >= self.budget_tokens
