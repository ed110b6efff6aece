"""The search loop, the baselines and answer choice, on the toy world and on hand-made bandits."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mcts.core import native
from mcts.envs.arith import ArithConfig, OraclePRM, generate_problems
from mcts.grading import is_equivalent
from mcts.policy.base import Prefix, Step
from mcts.policy.toy import ScriptedPolicy
from mcts.algorithms import run_algorithm
from mcts.answers import Candidate, choose_answer
from mcts.config import ALGORITHMS, SearchConfig, TREE_RULES
from mcts.search import TreeSearch

PROBLEMS = generate_problems(12, seed=3, config=ArithConfig(min_ops=3, max_ops=5, max_operand=25))
TEXTS = [p["problem"] for p in PROBLEMS]


def accuracy(results, problems=PROBLEMS) -> float:
    return sum(is_equivalent(r.answer, str(p["answer"])) for r, p in zip(results, problems)) / len(problems)


class BanditPolicy:
    """Two first steps: 'good' leads to the answer 1 in one more step, 'bad' to the answer 2. The
    policy prefers 'bad' (prior 0.9), the scorer knows better: a search must overrule the prior."""

    delimiter = "\n"

    def __init__(self):
        self.calls = 0

    def propose(self, prefixes, n, temperature=1.0):
        self.calls += 1
        out = []
        for p in prefixes:
            if not p.steps:
                out.append([Step("bad\n", np.log(0.9), 4), Step("good\n", np.log(0.1), 5)][:n])
            else:
                answer = "1" if p.steps[0] == "good\n" else "2"
                out.append([Step(f"The answer is \\boxed{{{answer}}}.\n", 0.0, 7, True)])
        return out


class BanditScorer:
    def score(self, prefixes, steps):
        return [0.0 if "bad" in s.text or "{2}" in s.text else 1.0 for s in steps]


@pytest.mark.parametrize("algorithm", list(TREE_RULES))
def test_tree_search_overrules_a_wrong_prior(algorithm):
    # revisit_terminals: finished answers stay selectable, so visits pile up on the good one
    # greedy_child off: the value alone must overrule the prior (the greedy step is the wrong one)
    config = SearchConfig(algorithm=algorithm, simulations=6, width=2, c=0.5, revisit_terminals=True,
                          greedy_child=False)
    search = TreeSearch(["bandit"], BanditPolicy(), BanditScorer(), config)
    [result] = search.run()
    assert result.answer == "1" and result.trace == "good\nThe answer is \\boxed{1}.\n"
    tree = search.to_json(0)
    assert [n["step"] for n in tree["nodes"][:3]] == [None, "bad\n", "good\n"]
    assert tree["nodes"][2]["visits"] > tree["nodes"][1]["visits"]
    assert search.forest.virtual_loss.sum() == 0
    expanded_first_steps = sum(n["expanded"] for n in tree["nodes"][1:3])
    assert result.simulations == 6 and result.tokens == 9 + 7 * expanded_first_steps  # root: 4 + 5


@pytest.mark.parametrize("algorithm", list(TREE_RULES))
def test_finished_answers_are_backed_up_once_then_closed(algorithm):
    config = SearchConfig(algorithm=algorithm, simulations=20, width=2, c=0.5)
    search = TreeSearch(["bandit"], BanditPolicy(), BanditScorer(), config)
    [result] = search.run()
    assert result.answer == "1"
    tree = search.to_json(0)
    answers = [n for n in tree["nodes"] if n["terminal"]]
    assert answers and all(n["visits"] == 1 for n in answers)
    # the root's two first steps, each expanded once, and the two answers below them: then
    # nothing is left to select (the policy proposes nothing new: widening saturates)
    assert result.simulations < 20 and search.forest.virtual_loss.sum() == 0


class ThreeWays:
    """Three first steps, drawn in turn; each is followed by its own answer."""

    delimiter = "\n"

    def __init__(self):
        self.drawn = 0

    def propose(self, prefixes, n, temperature=1.0):
        out = []
        for p in prefixes:
            if p.steps:
                out.append([Step(f"\\boxed{{{p.steps[0][0]}}}\n", -0.1, 3, True)] * n)
            else:
                out.append([Step(f"{'abc'[(self.drawn + i) % 3]}\n", -0.1, 2) for i in range(n)])
                self.drawn += n
        return out


class TrustsEverything:
    def score(self, prefixes, steps):
        return [1.0] * len(steps)


@pytest.mark.parametrize("expansion", ["step", "rollout"])
def test_arm_gate_until_exhausted_spends_what_a_gated_tree_leaves(expansion):
    """The scorer trusts every step, so the first answer reaches the root's worth and the gate shuts
    the root's arm: a gated tree stops there. 'until_exhausted' then opens the arm and widens until
    a draw brings nothing new (the widening rule without `widen_unseen`: ThreeWays's steps claim
    more probability than there is); 'open' never shuts it."""
    found = {}
    for gate in ("gated", "until_exhausted", "open"):
        config = SearchConfig(algorithm="mcts_star", simulations=20, width=1, expansion=expansion, arm_gate=gate,
                              widen_unseen=None, complete_unfinished=False)
        search = TreeSearch(["three ways"], ThreeWays(), TrustsEverything(), config)
        [result] = search.run()
        found[gate] = (set(result.candidate_answers), result.simulations)
        assert search.forest.virtual_loss.sum() == 0
    assert found["gated"][0] < found["until_exhausted"][0] == found["open"][0] == {"a", "b", "c"}
    assert found["gated"][1] < found["until_exhausted"][1] < 20


class FixedBelow:
    """Three first steps, drawn in turn (a third of the probability each), all of them right; below
    each, the first two answers drawn are wrong (2) and the third is right (1)."""

    delimiter = "\n"

    def __init__(self):
        self.draws: dict[tuple[str, ...], int] = {}  # samples drawn at each prefix

    def propose(self, prefixes, n, temperature=1.0):
        out = []
        for p in prefixes:
            k = self.draws.get(p.steps, 0)
            self.draws[p.steps] = k + n
            if p.steps:
                out.append([Step(f"\\boxed{{{1 if k + i >= 2 else 2}}}\n", np.log(0.5), 3, True) for i in range(n)])
            else:
                out.append([Step(f"{'abc'[(k + i) % 3]}\n", np.log(1 / 3), 2) for i in range(n)])
        return out


class WrongIsTwo:
    """Trusts every step but the answer 2."""

    def score(self, prefixes, steps):
        return [0.0 if "boxed{2}" in s.text else 1.0 for s in steps]


@pytest.mark.parametrize("expansion", ["step", "rollout"])
def test_arm_gate_trusted_repairs_a_failure_below_the_step_the_prm_trusts(expansion):
    """The first step is right and its first answer wrong. Judged by Q, that child disappoints its
    parent, so 'until_exhausted' spends the next simulations on new first steps at the root, each
    failing the same way; 'trusted' keeps the root's arm shut while the PRM trusts a child as much
    as the root, and draws again below the first step, where the right answer is."""
    runs = {}
    for gate in ("until_exhausted", "trusted"):
        config = SearchConfig(algorithm="mcts_star", simulations=16, width=1, expansion=expansion, arm_gate=gate,
                              stop_value=1.0, complete_unfinished=False)
        policy = FixedBelow()
        search = TreeSearch(["fixed below"], policy, WrongIsTwo(), config)
        [result] = search.run()
        assert result.answer == "1" and search.forest.virtual_loss.sum() == 0
        runs[gate] = result.simulations, policy.draws[()]
    (ux_sims, ux_root), (trusted_sims, trusted_root) = runs["until_exhausted"], runs["trusted"]
    assert trusted_root == 1 < ux_root
    assert trusted_sims < ux_sims


class LikelyWrong:
    """The root's draws are 'a' (probability 0.8, leading to the wrong answer 2) six times, then
    'b' (0.2, leading to the right answer 1) forever; every answer step is certain."""

    delimiter = "\n"

    def __init__(self):
        self.drawn = 0
        self.answer_draws = {"a\n": 0, "b\n": 0}  # samples drawn after each first step

    def propose(self, prefixes, n, temperature=1.0):
        out = []
        for p in prefixes:
            if p.steps:
                self.answer_draws[p.steps[0]] += n
                answer = "1" if p.steps[0] == "b\n" else "2"
                out.append([Step(f"The answer is \\boxed{{{answer}}}.\n", 0.0, 7, True)] * n)
            else:
                out.append([Step("a\n", np.log(0.8), 2) if self.drawn + i < 6 else Step("b\n", np.log(0.2), 2)
                            for i in range(n)])
                self.drawn += n
        return out


@pytest.mark.parametrize("expansion", ["step", "rollout"])
def test_widen_unseen_keeps_widening_where_the_policy_holds_probability_back(expansion):
    """Two widenings at the root draw only 'a'. Without `widen_unseen` the root's arm closes after
    the first of them, so the tree never meets 'b'. With `widen_unseen` the arm stays while the root's
    children miss a fifth of the policy's probability, the tree finds 'b', and then, its children
    holding all of it, the root gets no more draws. Nodes whose one step is certain get no arm.
    The scorer trusts 'a' and 'b' and calls only the answer 2 wrong, so the root's arm stays
    ungated until 'b' is found."""
    found = {}
    for floor in (None, 0.1):
        config = SearchConfig(algorithm="mcts_star", simulations=12, width=2, expansion=expansion,
                              widen_unseen=floor, complete_unfinished=False)
        policy = LikelyWrong()
        search = TreeSearch(["likely wrong"], policy, BanditScorer(), config)
        [result] = search.run()
        found[floor] = result, policy.answer_draws["a\n"]
        assert search.forest.virtual_loss.sum() == 0
    (default, default_draws), (ruled, ruled_draws) = found[None], found[0.1]
    assert default.candidate_answers == ["2"] and default.answer == "2"
    assert ruled.answer == "1" and set(ruled.candidate_answers) == {"1", "2"}
    assert ruled.simulations < 12
    # below 'a' the one answer step is certain: without the rule the tree still widens there once
    # (a draw that brings nothing new closes it), the rule gives that node no arm
    assert ruled_draws < default_draws


def test_widen_unseen_is_checked():
    with pytest.raises(ValueError, match="widen_unseen"):
        SearchConfig(widen_unseen=0.0)
    with pytest.raises(ValueError, match="widen_unseen"):
        SearchConfig(widen_unseen=1.5)


@pytest.mark.parametrize("algorithm", list(TREE_RULES))
def test_tree_search_solves_toy_problems(algorithm):
    config = SearchConfig(algorithm=algorithm, simulations=24, width=3, leaves_per_tree=2)
    search = TreeSearch(TEXTS, ScriptedPolicy(seed=1), OraclePRM(), config)
    results = search.run()
    assert accuracy(results) >= 0.9
    assert all(r.simulations <= 24 + 1 for r in results)  # L = 2 per round: one round may overshoot by 1
    assert search.forest.virtual_loss.sum() == 0
    assert not (search.forest.flags[:, 0] & 8).any()  # roots reopened after the run
    for b, r in enumerate(results):
        # every generated token was charged to its own problem
        assert r.tokens >= sum(s.num_tokens for s in search.steps[b] if s is not None)


def test_search_is_batch_independent_and_backend_independent():
    """Greedy proposals make the search deterministic: a tree's result must not depend on which
    other trees share its forest, nor on the tree backend."""
    config = SearchConfig(algorithm="puct", simulations=10, width=2, temperature=0.0)
    alone = [run_algorithm([t], ScriptedPolicy(), OraclePRM(noise=0.2), config)[0] for t in TEXTS[:4]]
    for backend in native.available_backends():
        if backend == "cuda":
            continue
        cfg = dataclasses.replace(config, tree_backend=backend)
        batched = run_algorithm(TEXTS[:4], ScriptedPolicy(), OraclePRM(noise=0.2), cfg)
        for a, b in zip(alone, batched):
            assert (a.answer, a.trace, a.tokens, a.simulations) == (b.answer, b.trace, b.tokens, b.simulations)
            assert a.value == pytest.approx(b.value, abs=1e-12)


def test_greedy_tree_search_charges_each_generated_step_once():
    config = SearchConfig(algorithm="uct", simulations=12, width=4, temperature=0.0, complete_unfinished=False)
    search = TreeSearch(TEXTS[:3], ScriptedPolicy(), OraclePRM(), config)
    for b, r in enumerate(search.run()):
        assert r.tokens == sum(s.num_tokens for s in search.steps[b] if s is not None)
        assert all(search.forest.num_children[b] <= 1)  # one greedy child per expansion


def test_token_budget_stops_each_tree():
    config = SearchConfig(algorithm="uct", simulations=1000, width=4, budget_tokens=300, expansion="step")
    results = run_algorithm(TEXTS[:3], ScriptedPolicy(seed=2), OraclePRM(), config)
    for r in results:
        # checked between rounds: one round (one leaf, width steps of < 60 tokens) may overshoot
        assert 300 <= r.tokens < 300 + 4 * 60
        assert r.simulations < 1000


def test_stop_value_ends_a_tree_at_its_first_good_answer():
    slow = run_algorithm(TEXTS[:3], ScriptedPolicy(seed=0), OraclePRM(), SearchConfig("uct", simulations=40, expansion="step"))
    fast = run_algorithm(TEXTS[:3], ScriptedPolicy(seed=0), OraclePRM(),
                         SearchConfig("uct", simulations=40, stop_value=1.0, expansion="step"))
    assert all(f.simulations < s.simulations for f, s in zip(fast, slow))
    assert accuracy(fast, PROBLEMS[:3]) == 1.0


class DeadEndPolicy:
    delimiter = "\n"

    def propose(self, prefixes, n, temperature=1.0):
        return [[] if p.steps else [Step(f"step{i}\n", -1.0, 6) for i in range(n)] for p in prefixes]


def test_dead_ends_and_unanswered_searches():
    config = SearchConfig(algorithm="mcts_star", simulations=8, width=2)
    search = TreeSearch(["p"], DeadEndPolicy(), BanditScorer(), config)
    [result] = search.run()
    assert result.answer is None and result.num_candidates == 0
    assert result.trace in ("step0\n", "step1\n")  # the best partial solution is still reported
    assert search.forest.flags[0, 1] & 2 and search.forest.flags[0, 2] & 2  # marked terminal


def test_depth_limit_makes_terminal_nodes():
    config = SearchConfig(algorithm="uct", simulations=30, width=2, max_depth=2, complete_unfinished=False)
    search = TreeSearch(TEXTS[-1:], ScriptedPolicy(seed=5), OraclePRM(), config)
    search.run()
    assert int(search.forest.depth.max()) <= 2
    assert all(s is None or s.finished or search.forest.flags[0, i] & 2 for i, s in enumerate(search.steps[0])
               if search.forest.depth[0, i] == 2)


def test_rollouts_raise_leaf_values_and_cost_tokens():
    base = SearchConfig(algorithm="mcts_star", simulations=6, width=2, temperature=0.0, expansion="step")
    plain = run_algorithm(TEXTS[:2], ScriptedPolicy(), OraclePRM(), base)
    rolled = run_algorithm(TEXTS[:2], ScriptedPolicy(), OraclePRM(), dataclasses.replace(base, rollout_depth=2))
    assert all(r.tokens > p.tokens for r, p in zip(rolled, plain))


def test_choose_answer_rules():
    c = [Candidate("4", 0.9, ("a",)), Candidate("5", 0.3, ("b",)), Candidate("5", 0.35, ("c",)),
         Candidate(None, 1.0, ("d",))]
    best, value = choose_answer(c, "max_value")
    assert best.answer == "4" and value == 0.9  # a candidate without an answer never wins over one
    best, value = choose_answer(c, "majority")
    assert best.steps == ("c",) and value == pytest.approx(2 / 3)  # the best of the winning group
    best, value = choose_answer(c, "weighted_vote")
    assert best.answer == "4" and value == pytest.approx(0.9 / 1.55)
    assert choose_answer([Candidate("1", 0.5, ()), Candidate("2", 0.5, ())], "majority")[0].answer == "1"
    assert choose_answer([Candidate("$1$", 0.5, ()), Candidate("2", 0.5, ()), Candidate("1", 0.1, ())],
                         "majority")[0].answer == "$1$"  # answers are grouped by normalised spelling
    assert choose_answer([], "majority") == (None, 0.0)
    assert choose_answer([Candidate(None, 0.2, ("x",))], "max_value")[0].steps == ("x",)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a not in TREE_RULES])
def test_baselines_run_and_account(algorithm):
    scorer = OraclePRM()
    config = SearchConfig(algorithm=algorithm, simulations=6, width=3)
    results = run_algorithm(TEXTS, ScriptedPolicy(seed=4), scorer, config)
    assert accuracy(results) >= (0.9 if algorithm != "best_of_n" else 0.8)
    for r in results:
        assert r.tokens > 0 and r.policy_calls > 0
        if algorithm in ("greedy",):
            assert r.simulations == 1
        if algorithm in ("best_of_n", "self_consistency", "weighted_self_consistency"):
            assert r.simulations == 6 and r.num_candidates <= 6
        if algorithm in ("self_consistency", "greedy"):
            assert r.scorer_calls == 0


def test_self_consistency_needs_no_scorer_and_best_of_n_does():
    config = SearchConfig(algorithm="self_consistency", simulations=4)
    assert len(run_algorithm(TEXTS[:2], ScriptedPolicy(), None, config)) == 2
    with pytest.raises(ValueError, match="scorer"):
        run_algorithm(TEXTS[:2], ScriptedPolicy(), None, SearchConfig(algorithm="best_of_n"))


def test_sampling_baselines_respect_the_token_budget_in_waves():
    config = SearchConfig(algorithm="self_consistency", simulations=64, width=2, budget_tokens=200)
    for r in run_algorithm(TEXTS[:3], ScriptedPolicy(seed=9), None, config):
        assert r.simulations < 64 and r.simulations % 2 == 0
        assert r.tokens >= 200 and r.tokens < 200 + 2 * 400  # at most one wave of two solutions over


def test_beam_prefers_what_the_scorer_prefers():
    [result] = run_algorithm(["bandit"], BanditPolicy(), BanditScorer(), SearchConfig(algorithm="beam", width=2, logprob_weight=0.0))
    assert result.answer == "1" and result.value == 1.0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="budget_tokens"):
        SearchConfig(budget_tokens=0)
    with pytest.raises(ValueError, match="algorithm"):
        SearchConfig(algorithm="alphago")
    with pytest.raises(ValueError, match="answer_selection"):
        SearchConfig(answer_selection="vibes")
    with pytest.raises(ValueError, match="expansion"):
        SearchConfig(expansion="leap")
    with pytest.raises(ValueError, match="rollout_depth"):
        SearchConfig(expansion="rollout", rollout_depth=2)
    assert SearchConfig(algorithm="self_consistency").selection == "majority"
    assert SearchConfig(algorithm="self_consistency", answer_selection="max_value").selection == "max_value"


def test_trees_dump_as_json():
    search = TreeSearch(TEXTS[:2], ScriptedPolicy(), OraclePRM(), SearchConfig(simulations=5, width=2))
    search.run()
    tree = json.loads(json.dumps(search.to_json(1)))
    assert tree["problem"] == TEXTS[1] and tree["nodes"][0]["parent"] == -1
    ids = {n["id"] for n in tree["nodes"]}
    assert all(n["parent"] in ids for n in tree["nodes"][1:])
    assert sum(n["visits"] for n in tree["nodes"] if n["parent"] == 0) <= tree["nodes"][0]["visits"]


def test_prefixes_hold_the_path_texts():
    search = TreeSearch(["bandit"], BanditPolicy(), BanditScorer(), SearchConfig(simulations=3, width=2))
    search.run()
    deepest = int(np.argmax(search.forest.depth[0, : search.forest.num_nodes[0]]))
    prefix = search.prefix(0, deepest)
    assert isinstance(prefix, Prefix) and prefix.problem == "bandit" and len(prefix.steps) == 2


def _misleading_world(n: int = 24):
    """A scripted world whose greedy step is always wrong: every reduction slips with probability
    0.6, always to the same off-by-one text, so that slip is the most likely step (0.6 against
    0.4 for the right one) and greedy decoding never solves a problem; a sampled step is right
    with probability 0.4, a whole 3-operation solution with 0.4^3."""
    from mcts.policy.toy import ToyPolicyConfig

    config = ToyPolicyConfig(base_eps=0.6, max_eps=0.6, digit_factor=0.0, mul_factor=1.0, off_by=(1,),
                             slip_weights=(1.0, 0.0, 0.0))
    problems = generate_problems(n, seed=11, config=ArithConfig(min_ops=3, max_ops=3, max_operand=9))
    return problems, (lambda seed: ScriptedPolicy(config=config, seed=seed))


def test_tree_search_beats_sampling_where_the_greedy_step_is_wrong():
    problems, policy = _misleading_world()
    texts = [p["problem"] for p in problems]
    greedy = run_algorithm(texts, policy(0), OraclePRM(), SearchConfig("greedy"))
    bon = run_algorithm(texts, policy(0), OraclePRM(), SearchConfig("best_of_n", simulations=16, width=8))
    # the samples alone, and with the greedy step among every node's children (the default): here
    # the greedy step is always wrong, so it costs a child per node, and the tree still wins
    step = dict(expansion="step", candidate_value="q")  # the step tree; the rollout tree has its own test below
    tree = run_algorithm(texts, policy(0), OraclePRM(), SearchConfig("mcts_star", simulations=16, stop_value=1.0, **step,
                                                                     greedy_child=False))
    with_greedy = run_algorithm(texts, policy(0), OraclePRM(), SearchConfig("mcts_star", simulations=16, stop_value=1.0,
                                                                            greedy_child=True, **step))
    runs = (("greedy", greedy), ("bon", bon), ("tree", tree), ("with_greedy", with_greedy))
    acc = {name: accuracy(r, problems) for name, r in runs}
    tokens = {name: sum(x.tokens for x in r) for name, r in runs[1:]}
    assert acc["greedy"] == 0.0
    assert acc["tree"] >= 0.9 and acc["tree"] >= acc["bon"] + 0.1, acc
    assert acc["with_greedy"] >= acc["bon"] + 0.1, acc
    assert tokens["tree"] < tokens["bon"] and tokens["with_greedy"] < tokens["bon"], tokens


def test_widening_adds_children_where_the_first_ones_disappoint():
    """With children fixed at expansion, a root whose first samples are all wrong stays wrong;
    widening samples more first steps there, and only there."""
    problems, policy = _misleading_world(8)
    texts = [p["problem"] for p in problems]
    fixed = SearchConfig("mcts_star", simulations=16, width=2, max_children=2)
    wide = dataclasses.replace(fixed, max_children=8)
    a = TreeSearch(texts, policy(1), OraclePRM(), fixed)
    b = TreeSearch(texts, policy(1), OraclePRM(), wide)
    acc_fixed, acc_wide = accuracy(a.run(), problems), accuracy(b.run(), problems)
    assert acc_wide > acc_fixed
    for t in range(len(texts)):
        tree = b.to_json(t)
        kids: dict[int, list[dict]] = {}
        for n in tree["nodes"]:
            kids.setdefault(n["parent"], []).append(n)
        for parent, children in kids.items():
            if len(children) > 2:  # widened: no child was as good as the PRM said its parent is
                first = sorted(children, key=lambda n: n["id"])[:2]
                worth = 1.0 if parent == 0 else tree["nodes"][[n["id"] for n in tree["nodes"]].index(parent)]["reward"]
                assert min(n["reward"] for n in first) < worth
            assert len({n["step"] for n in children}) == len(children)  # distinct steps only
    assert b.forest.virtual_loss.sum() == 0


ROLLOUT = SearchConfig("mcts_star", simulations=8, width=1, greedy_child=False, expansion="rollout")


def test_a_rollout_simulation_adds_one_whole_solution():
    """With `expansion='rollout'` each simulation grafts a sampled continuation into the tree down
    to a finished answer: one simulation, one candidate, and nothing generated is left out of it."""
    search = TreeSearch(TEXTS[:4], ScriptedPolicy(seed=2), OraclePRM(), dataclasses.replace(ROLLOUT, simulations=1))
    for b, r in enumerate(search.run()):
        nodes = search.to_json(b)["nodes"]
        assert r.simulations == 1 and r.num_candidates == 1
        assert [n["depth"] for n in nodes] == list(range(len(nodes)))  # one chain from the root
        assert nodes[-1]["terminal"] and nodes[-1]["answer"] is not None and nodes[-1]["visits"] == 1
        assert all(n["visits"] == 1 for n in nodes)  # the backup ran from the chain's end
        assert r.trace == "".join(n["step"] for n in nodes[1:])
        assert r.tokens == sum(s.num_tokens for s in search.steps[b] if s is not None)
    assert search.forest.virtual_loss.sum() == 0


def test_rollout_trees_beat_sampling_where_the_greedy_step_is_wrong():
    problems, policy = _misleading_world()
    texts = [p["problem"] for p in problems]
    bon = run_algorithm(texts, policy(0), OraclePRM(), SearchConfig("best_of_n", simulations=16, width=8))
    search = TreeSearch(texts, policy(0), OraclePRM(), dataclasses.replace(ROLLOUT, simulations=16, width=4))
    tree = search.run()
    acc_bon, acc_tree = accuracy(bon, problems), accuracy(tree, problems)
    assert acc_tree >= acc_bon + 0.1, (acc_tree, acc_bon)
    assert sum(r.tokens for r in tree) < sum(r.tokens for r in bon)
    for b in range(len(texts)):
        nodes = search.to_json(b)["nodes"]
        kids: dict[int, list[dict]] = {}
        for n in nodes[1:]:
            kids.setdefault(n["parent"], []).append(n)
        for parent, children in kids.items():
            assert len({n["step"] for n in children}) == len(children)  # distinct steps only
        finished = [n for n in nodes if n["terminal"]]
        assert all(n["visits"] == 1 for n in finished)  # each backed up once, then closed
        assert tree[b].num_candidates == sum(n["answer"] is not None for n in finished)
        # the result carries every candidate it chose among, the chosen one too
        assert len(tree[b].candidates) == tree[b].num_candidates
        assert tree[b].trace in {"".join(c["steps"]) for c in tree[b].candidates}
        assert {c["answer"] for c in tree[b].candidates if c["answer"] is not None} == set(tree[b].candidate_answers)
    for r in bon:
        assert len(r.candidates) == 16 and r.trace in {"".join(c["steps"]) for c in r.candidates}
    assert search.forest.virtual_loss.sum() == 0


def test_rollout_trees_keep_their_budgets_with_several_leaves_a_round():
    config = dataclasses.replace(ROLLOUT, width=2, simulations=10, leaves_per_tree=3)
    search = TreeSearch(TEXTS, ScriptedPolicy(seed=4), OraclePRM(noise=0.2), config)
    results = search.run()
    assert search.forest.virtual_loss.sum() == 0 and not search.forest.full.any()
    assert all(r.simulations <= 10 + 2 and r.num_candidates >= 1 for r in results)
    budget = dataclasses.replace(config, budget_tokens=150)
    capped = run_algorithm(TEXTS, ScriptedPolicy(seed=4), OraclePRM(noise=0.2), budget)
    # checked between rounds: one round (3 leaves, each a whole continuation) may overshoot
    assert all(r.tokens < 150 + 3 * 250 for r in capped)
    assert sum(r.tokens for r in capped) < sum(r.tokens for r in results)


def test_rollout_search_is_backend_independent():
    config = dataclasses.replace(ROLLOUT, temperature=0.0, simulations=6)
    runs = {backend: run_algorithm(TEXTS[:4], ScriptedPolicy(), OraclePRM(noise=0.2),
                                   dataclasses.replace(config, tree_backend=backend))
            for backend in native.available_backends() if backend != "cuda"}
    first = next(iter(runs.values()))
    for results in runs.values():
        assert [(r.answer, r.trace, r.tokens, r.simulations) for r in results] == \
               [(r.answer, r.trace, r.tokens, r.simulations) for r in first]


class FlatScorer:
    """Every step is worth the same: only the policy can break the tie."""

    def score(self, prefixes, steps):
        return [0.5 for _ in steps]


@pytest.mark.parametrize("algorithm", ["mcts_star", "beam"])
def test_logprob_weight_lets_the_policy_break_the_prms_ties(algorithm):
    plain = SearchConfig(algorithm=algorithm, simulations=6, width=2, greedy_child=False, logprob_weight=0.0)
    [tied] = run_algorithm(["bandit"], BanditPolicy(), FlatScorer(), plain)
    [weighted] = run_algorithm(["bandit"], BanditPolicy(), FlatScorer(), dataclasses.replace(plain, logprob_weight=0.5))
    # 'bad' (p 0.9, 4 tokens) leads to 2, 'good' (p 0.1, 5 tokens) to 1; the answer step is sure (log p 0)
    assert weighted.answer == "2"
    assert weighted.value == pytest.approx(0.5 + 0.5 * np.log(0.9) / (4 + 7))
    assert tied.value == pytest.approx(0.5)


def test_mean_token_logprob_skips_what_it_cannot_weigh():
    from mcts.answers import mean_token_logprob

    steps = [Step("a", -2.0, 4), Step("b", -1.0, 1), Step("c", float("-inf"), 3), Step("d", -5.0, 0)]
    assert mean_token_logprob(steps) == pytest.approx(-3.0 / 5)
    assert mean_token_logprob([]) == 0.0
    with pytest.raises(ValueError, match="logprob_weight"):
        SearchConfig(logprob_weight=-1.0)


def test_path_candidate_value_aggregates_step_values():
    config = SearchConfig("mcts_star", simulations=12, width=2, candidate_value="path", step_aggregate="min",
                          logprob_weight=0.0)
    search = TreeSearch(TEXTS[:2], ScriptedPolicy(seed=0), OraclePRM(noise=0.3, seed=1), config)
    search.run()
    for b in range(2):
        for c in search.candidates(b):
            if b in search.completions and c.steps == search.completions[b][1].prefix.steps:
                continue
            node = next(i for i, s in enumerate(search.steps[b]) if s is not None and s.finished
                        and search.prefix(b, i).steps == c.steps)
            rewards = [float(search.forest.reward[b, s]) for s in search.forest.path(b, node)[1:]]
            assert c.value == pytest.approx(min(rewards))


def test_sampling_truncation_reaches_the_policy():
    policy = ScriptedPolicy(seed=0)
    prefix = [Prefix(TEXTS[0])]
    everything = {s.text for s in policy.propose(prefix, 300, 1.0)[0]}
    top1 = {s.text for s in policy.propose(prefix, 50, 1.0, top_k=1)[0]}
    assert len(everything) > 2 and top1 == {policy.propose(prefix, 1, 0.0)[0][0].text}
    assert len({s.text for s in policy.propose(prefix, 300, 1.0, top_p=0.99)[0]}) < len(everything)
    # through the search: top_k=1 makes every expansion a single (greedy) child
    search = TreeSearch(TEXTS[:2], ScriptedPolicy(seed=0), OraclePRM(), SearchConfig("uct", simulations=6, top_k=1))
    search.run()
    assert all(len({search.steps[b][k].text for k in search.forest.children(b, 0) if search.steps[b][k]}) == 1
               for b in range(2))
    with pytest.raises(ValueError, match="top_p"):
        SearchConfig(top_p=0.0)

    class NoTruncation:
        delimiter = "\n"

        def propose(self, prefixes, n, temperature=1.0):
            return policy.propose(prefixes, n, temperature)

    with pytest.raises(ValueError, match="takes no sampling truncation"):
        run_algorithm(TEXTS[:1], NoTruncation(), OraclePRM(), SearchConfig("best_of_n", simulations=2, min_p=0.1))


def test_every_algorithm_name_has_a_runner():
    from mcts.algorithms import ALGORITHMS
    from mcts.baselines import BASELINES

    # SearchConfig validates names against mcts.search.ALGORITHMS; it cannot import the baselines.
    assert set(ALGORITHMS) == {*TREE_RULES, *BASELINES}


class GreedyRightPolicy(BanditPolicy):
    """'good' is the greedy first step, but a sample is always 'bad' (its mass is spread over
    many tokens, say): only the greedy step leads to the answer 1."""

    def propose(self, prefixes, n, temperature=1.0):
        out = super().propose(prefixes, 2, temperature)
        first = "good\n" if temperature == 0 else "bad\n"
        return [[s for s in steps if s.text == first][:1] * (1 if temperature == 0 else n) if not p.steps else steps
                for p, steps in zip(prefixes, out)]


@pytest.mark.parametrize("algorithm", list(TREE_RULES))
def test_greedy_child_keeps_the_greedy_step_among_a_nodes_children(algorithm):
    plain = SearchConfig(algorithm=algorithm, simulations=6, width=2, greedy_child=False, expansion="step")
    with_greedy = dataclasses.replace(plain, greedy_child=True)
    assert not SearchConfig().greedy_child  # the default with rollouts (measured: mcts/config.py)
    assert (plain.first_children, with_greedy.first_children) == (2, 3)
    assert with_greedy.children_per_node == plain.children_per_node + 1
    a = TreeSearch(["bandit"], GreedyRightPolicy(), BanditScorer(), plain)
    b = TreeSearch(["bandit"], GreedyRightPolicy(), BanditScorer(), with_greedy)
    [ra], [rb] = a.run(), b.run()
    assert ra.answer == "2" and rb.answer == "1"
    first_steps = [n["step"] for n in b.to_json(0)["nodes"] if n["parent"] == 0]
    assert first_steps[0] == "good\n" and "bad\n" in first_steps  # greedy first, then the samples
    root_tokens = {"good\n": 5, "bad\n": 4}
    # the greedy decoding is charged: 5 tokens at the root beside the two samples of 'bad' (4 each)
    assert rb.tokens - ra.tokens >= root_tokens["good\n"]
    # greedy decoding has one step per prefix already: the option adds nothing there
    greedy_decoding = dataclasses.replace(with_greedy, temperature=0.0)
    assert greedy_decoding.first_children == 2
