"""The AlphaLLM and LLaMA-Berry loops: their pure parts (importance widths, state merge, the toy
imaginer and the agreement filter, SR-MCTS critique and rewrite, the EBC answer), their searches on
the scripted toy policy with the oracle PRM, and one tiny run of each loop end to end."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest

from mcts.envs.arith import ArithConfig, OraclePRM, generate_problems, solution_steps
from mcts.grading import extract_answer
from mcts.policy.base import Prefix, Step
from mcts.policy.toy import ScriptedPolicy
from mcts.config import SearchConfig
from mcts.traces import Counters
from selftrain.alphallm import (
    CriticTrio, EtaMCTS, ToyImaginer, consistent_problems, edit_distance, importance, is_toy, majority_answer,
    merge_near_duplicates, node_width, normalized_edit_distance, perturb_expression,
)
from selftrain.config import AlphaLLMConfig, BerryConfig
from selftrain.harvest import harvest_tree
from selftrain.llama_berry import (
    DUMMY_STEP, PRMCritic, SRMCTS, Solution, critique_index, trace_step_values,
)

PROBLEMS = [p for p in generate_problems(6, 3, ArithConfig(max_ops=3, max_operand=9, max_value=100))]
TEXTS = [p["problem"] for p in PROBLEMS]
GOLDS = {p["problem"]: str(p["answer"]) for p in PROBLEMS}


# ---------------------------------------------------------------------------------------------------
# eta-MCTS: widths and merge


def test_importance_and_width_clip():
    assert importance([0.2, 0.9, 0.5], 0.5) == pytest.approx(0.4)
    assert importance([], 0.7) == 0.0
    assert node_width(0.4, 2, 6, 10.0) == 4  # floor(10 * 0.4)
    assert node_width(0.0, 2, 6, 10.0) == 2  # clipped up to min_width
    assert node_width(0.99, 2, 6, 10.0) == 6  # clipped down to max_width
    assert node_width(0.25, 1, 8, 10.0) == 2  # floor, not round
    assert node_width(math.nan, 2, 6, 10.0) == 6


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    assert normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert normalized_edit_distance("", "") == 0.0


def test_merge_near_duplicates():
    a = Step("3 + 4 = 7, so 7 * 2 - 10 + 100\n", logprob=math.log(0.5), num_tokens=30)
    a_space = Step("3 + 4 = 7, so 7 * 2 - 10 + 100 \n", logprob=math.log(0.2), num_tokens=31)  # 1/32 apart
    slip = Step("3 + 4 = 8, so 8 * 2 - 10 + 100\n", logprob=math.log(0.1), num_tokens=30)  # 2/30 apart
    merged = merge_near_duplicates([a, a_space, slip, a], 0.05)
    assert [s.text for s in merged] == [a.text, slip.text]  # identical texts are one; the slip stays apart
    assert merged[0].logprob == pytest.approx(math.log(0.7))  # the merged node carries both texts' mass
    assert merged[1] == slip
    # the likeliest text of a group represents it, even when it came second
    assert merge_near_duplicates([a_space, a], 0.05)[0].text == a.text
    # steps stating different answers are never merged, however close
    x, y = Step("The answer is \\boxed{12}.\n"), Step("The answer is \\boxed{13}.\n")
    assert len(merge_near_duplicates([x, y], 0.5)) == 2
    # threshold 0: only identical texts
    assert len(merge_near_duplicates([a, a_space, a], 0.0)) == 2


class ConstantScorer:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def score(self, prefixes, steps):
        self.calls += 1
        return [self.value] * len(prefixes)


def test_critic_trio_weights_and_orm_on_finished_steps_only():
    prm, value, orm = ConstantScorer(0.2), ConstantScorer(0.6), ConstantScorer(1.0)
    trio = CriticTrio(prm, value, orm, prm_weight=0.4, value_weight=0.4, orm_weight=0.2)
    steps = [Step("1 + 1 = 2, so 2\n"), Step("The answer is \\boxed{2}.\n", finished=True)]
    got = trio.score([Prefix("1 + 1")] * 2, steps)
    assert got[0] == pytest.approx((0.4 * 0.2 + 0.4 * 0.6) / 0.8)
    assert got[1] == pytest.approx(0.4 * 0.2 + 0.4 * 0.6 + 0.2 * 1.0)
    assert orm.calls == 1
    assert CriticTrio(prm).score([Prefix("1 + 1")], steps[1:]) == pytest.approx([0.2])  # the PRM alone
    with pytest.raises(ValueError):
        CriticTrio(None, None, orm)


def test_eta_mcts_widths_merge_and_answers():
    eta = AlphaLLMConfig(min_width=2, max_width=5, width_scale=10.0, merge_threshold=0.05, rollout_depth=1)
    prm = OraclePRM(answers=GOLDS)
    search = EtaMCTS(TEXTS, ScriptedPolicy(seed=0), CriticTrio(prm),
                     SearchConfig(algorithm="mcts_star", simulations=10, temperature=1.5), eta)
    results = search.run()
    assert sum(r.answer == GOLDS[t] for r, t in zip(results, TEXTS)) >= 5
    assert search.widths and all(eta.min_width <= w <= eta.max_width for *_, w in search.widths)
    assert any(w > eta.min_width for *_, w in search.widths)  # an important node got more children
    for b in range(len(TEXTS)):
        tree = search.to_json(b)
        assert tree["algorithm"] == "eta_mcts"
        width = {w["node"]: w["children"] for w in tree["widths"]}
        kids: dict[int, list[str]] = {}
        for n in tree["nodes"][1:]:
            kids.setdefault(n["parent"], []).append(n["step"])
        for parent, texts in kids.items():
            assert len(texts) <= width[parent]
            for i, s in enumerate(texts):  # no two siblings are near-duplicates of one answer
                for t in texts[i + 1:]:
                    assert s != t
                    assert extract_answer(s) != extract_answer(t) or normalized_edit_distance(s, t) >= 0.05
        # the tree is harvestable: its verified solutions reach the gold
        assert all(extract_answer(r["steps"][-1]) == GOLDS[TEXTS[b]] for r in harvest_tree(tree, GOLDS[TEXTS[b]]).sft)


# ---------------------------------------------------------------------------------------------------
# Imagination


def _shape(text: str) -> str:
    return re.sub(r"\d+", "N", text)


def test_toy_imaginer_keeps_shape_and_bounds():
    bounds = ArithConfig(max_ops=6, max_operand=10, max_value=100)
    seeds = ["(3 + 4) * 2 - 10", "7 - 2 * (1 + 9)", "5 * 6", "8 + 1 - 2 * 3 + 4"]
    imaginer = ToyImaginer(bounds, seed=1)
    made = imaginer.imagine(seeds, 12)
    assert made == ToyImaginer(bounds, seed=1).imagine(seeds, 12)  # deterministic under its seed
    assert made != ToyImaginer(bounds, seed=2).imagine(seeds, 12)
    for i, text in enumerate(made):
        seed = seeds[i % len(seeds)]
        assert text is not None and text != seed
        assert _shape(text) == _shape(seed)  # same operators and parentheses, new operands
        operands = [int(x) for x in re.findall(r"\d+", text)]
        assert all(bounds.min_operand <= x <= bounds.max_operand for x in operands)
        steps = solution_steps(text)
        values = [int(x) for s in steps for x in re.findall(r"-?\d+", s)]
        assert max(abs(v) for v in values) <= bounds.max_value  # every value a solution writes
    # a seed that cannot change within its bounds gives None, not the seed
    assert perturb_expression("1 + 1", random.Random(0), ArithConfig(min_operand=1, max_operand=1)) is None
    assert is_toy(seeds) and not is_toy(["What is the capital of France?"])


def test_majority_answer_counts_unanswered_samples():
    assert majority_answer(["3", "3", None, "4"]) == ("3", 0.5)
    assert majority_answer(["4", "3", "3", "4"]) == ("4", 0.5)  # ties: the first seen
    assert majority_answer([None, None]) == (None, 0.0)
    assert majority_answer(["7", "7."]) == ("7", 1.0)  # one answer, two spellings


class AnswerProposer:
    """Answers each problem at once: '1 + 1' always 2, '2 + 2' with 4, 5, 6, 7 in turn."""

    delimiter = "\n"

    def __init__(self):
        self.turn = 0

    def reseed(self, seed):
        self.turn = 0

    def propose(self, prefixes, n, temperature=1.0):
        out = []
        for p in prefixes:
            if p.problem == "1 + 1":
                answer = 2
            else:
                answer = 4 + self.turn % 4
                self.turn += 1
            out.append([Step(f"The answer is \\boxed{{{answer}}}.\n", num_tokens=5, finished=True)] * n)
        return out


def test_agreement_filter_keeps_consistent_problems_with_their_majority():
    counters = Counters.zeros(2)
    kept = consistent_problems(["1 + 1", "2 + 2"], AnswerProposer(), samples=4, min_agreement=0.5, max_depth=4,
                               temperature=1.0, counters=counters)
    assert kept == [{"problem": "1 + 1", "pseudo_gold": "2", "agreement": 1.0}]
    assert counters.tokens.sum() == 8 * 5
    loose = consistent_problems(["2 + 2"], AnswerProposer(), samples=4, min_agreement=0.25, max_depth=4,
                                temperature=1.0, counters=Counters.zeros(1))
    assert loose == [{"problem": "2 + 2", "pseudo_gold": "4", "agreement": 0.25}]


# ---------------------------------------------------------------------------------------------------
# SR-MCTS


def test_critique_index():
    assert critique_index([0.9, 0.3, 0.8]) == 1  # the first step below the threshold
    assert critique_index([0.9, 0.4, 0.2]) == 1
    assert critique_index([0.9, 0.8, 0.7]) == 2  # none below: the lowest
    assert critique_index([0.6, 0.6]) == 0  # the first of equals
    assert critique_index([0.9, math.nan, 0.8]) == 1
    assert critique_index([]) == 0
    assert critique_index([0.7, 0.6], threshold=0.65) == 1


def test_prm_critique_then_rewrite_on_the_scripted_policy():
    problem = "(3 + 4) * 2 - 10"
    good = [s + "\n" for s in solution_steps(problem)]
    wrong = (good[0], "7 * 2 = 15, so 15 - 10\n", "15 - 10 = 5, so 5\n", "The answer is \\boxed{5}.\n")
    prm = OraclePRM(answers={problem: "4"})
    values = trace_step_values(prm, [Prefix(problem, wrong)])[0]
    assert values == [1.0, 0.0, 0.0, 0.0]
    critic = PRMCritic(ScriptedPolicy(seed=0), temperature=0.0, max_depth=8)
    solution = Solution(wrong, True, values, values[-1])
    dummy = Solution((DUMMY_STEP,), False, [], 0.0, dummy=True)
    (fixed,), (fresh,) = critic.refine([(0, problem, solution), (1, problem, dummy)], 1, Counters.zeros(2))
    assert fixed.critique == 1 and fixed.steps[0] == wrong[0]  # the steps before the blamed one are kept
    assert fixed.steps == tuple(good) and fixed.finished  # greedy regeneration repairs the solution
    assert fresh.critique == 0 and fresh.steps == tuple(good)  # the dummy is rewritten from scratch


def test_sr_mcts_tree_and_answers_on_the_scripted_policy():
    config = BerryConfig(rollouts=5, initial_solutions=2, rewrites=2)
    policy = ScriptedPolicy(seed=0)
    search = SRMCTS(TEXTS, policy, OraclePRM(answers=GOLDS), PRMCritic(policy, max_depth=8), config, max_depth=8)
    results = search.run()
    f = search.forest
    assert (f.num_nodes == 1 + 3 + 5 * 2).all()  # the root's 2 + dummy, then 2 rewrites per round
    assert (search.simulations == 6).all() and (f.visits[:, 0] == 6).all()
    for b in range(len(TEXTS)):
        root_kids = [search.nodes[b][int(k)] for k in f.children(b, 0)]
        assert [s.dummy for s in root_kids] == [False, False, True]
        assert all(s.critique is not None for s in search.nodes[b][4:])  # every later node is a rewrite
    # with the oracle as PRM, the highest-Q solution (no PPRM) is right nearly everywhere
    assert sum(r.answer == GOLDS[t] for r, t in zip(results, TEXTS)) >= 5
    assert all(r.tokens > 0 and r.num_candidates >= 1 for r in results)
    tree = search.to_json(0)
    assert len(tree["solutions"]) == 1 + 2 + 5 * 2 and sum(s["dummy"] for s in tree["solutions"]) == 1
    harvested = harvest_tree(tree, GOLDS[TEXTS[0]])
    assert harvested.sft and all(r["outcome"] in (0.0, 1.0) for r in harvested.prm)


class PreferAnswer:
    """A PPRM stand-in that prefers solutions stating `answer` over all others."""

    def __init__(self, answer):
        self.answer, self.calls = answer, 0

    def preference_probs(self, problem, solutions):
        self.calls += 1
        good = [extract_answer(s[-1]) == self.answer for s in solutions]
        n = len(solutions)
        p = np.full((n, n), 0.5)
        for i in range(n):
            for j in range(n):
                if good[i] != good[j]:
                    p[i, j] = 1.0 if good[i] else 0.0
        return p


def test_ebc_chooses_the_answer_the_pprm_prefers():
    policy = ScriptedPolicy(seed=3)
    search = SRMCTS(TEXTS, policy, OraclePRM(answers=GOLDS), PRMCritic(policy, temperature=2.0, max_depth=8),
                    BerryConfig(rollouts=4, initial_solutions=3, ebc_candidates=6, alpha=1.0), temperature=2.0,
                    max_depth=8)
    search.run()
    checked = 0
    for b in range(len(TEXTS)):
        pool = search.candidates(b)
        assert len(pool) <= 6 and len({c.steps for _, c in pool}) == len(pool)
        assert [c.value for _, c in pool] == sorted((c.value for _, c in pool), reverse=True)
        if len({c.answer for _, c in pool}) < 2:
            continue
        worst = pool[-1][1].answer  # the lowest-Q candidate's answer
        search.pprm = PreferAnswer(worst)
        search.config = BerryConfig(alpha=1.0, ebc_candidates=6)  # Borda alone
        assert search.result(b).answer == worst
        search.config = BerryConfig(alpha=0.0, ebc_candidates=6)  # local Q alone
        assert search.result(b).answer == pool[0][1].answer
        checked += 1
    assert checked >= 1


# ---------------------------------------------------------------------------------------------------
# End to end: one tiny iteration of each loop


def _tiny_config(tmp_path, algorithm, policy):
    from selftrain.config import load_config

    sets = ["eval_search_problems=2", "batch=4", "prm_eval_traces=8", "max_ops=1", "threads=1",
            "search.simulations=3", "search.width=2", "search.max_depth=6", "sft.epochs=1", "prm_train.epochs=1",
            "alphallm.imagined_problems=4", "alphallm.consistency_samples=2", "alphallm.max_width=3",
            "alphallm.rollout_depth=1", "llama_berry.rollouts=3", "llama_berry.initial_solutions=3"]
    return load_config(None, {"runs_dir": str(tmp_path), "name": algorithm, "algorithm": algorithm,
                              "iterations": 1, "policy": str(policy), "train_problems": 4, "eval_problems": 4}, sets)


@pytest.mark.parametrize("algorithm", ["alphallm", "llama_berry"])
def test_loop_runs_end_to_end_and_resumes_without_redoing_work(tmp_path, algorithm):
    from mcts.envs.tiny_models import ensure_toy_policy
    from selftrain.loops import execute
    from selftrain.run import METRIC_KEYS

    config = _tiny_config(tmp_path, algorithm, ensure_toy_policy(quick=True, progress=False))
    rows = execute(config, progress=False)
    folder = tmp_path / algorithm
    metrics = json.loads((folder / "iter_1" / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics) and metrics["iteration"] == 1
    assert metrics["search_acc"] is not None and metrics["tokens"] > 0
    stages = json.loads((folder / "iter_1" / "stages.json").read_text())
    own = {"alphallm": {"imagine", "search", "harvest", "value", "orm", "critics"},
           "llama_berry": {"search", "harvest", "pprm", "critics"}}[algorithm]
    assert own | {"policy", "prm", "models", "evaluate"} <= set(stages)
    # what was harvested was trained on (whether anything was depends on the quick policy's samples)
    harvest = stages["harvest"]
    assert stages["policy"].get("traces", 0) == harvest["sft_traces"]
    if algorithm == "llama_berry":
        assert stages["pprm"].get("rows", 0) == 2 * harvest["pairs"]  # each pair in both orders
    else:
        assert stages["value"]["rows"] == stages["orm"]["rows"] == harvest["prm_traces"]
        kept = [json.loads(x) for x in (folder / "iter_1" / "imagine" / "problems.jsonl").read_text().splitlines()]
        assert len(kept) == stages["imagine"]["kept"] and all("pseudo_gold" in r for r in kept)
    tree = json.loads((folder / "iter_1" / "search" / "results.jsonl").read_text().splitlines()[0])["tree"]
    assert tree["algorithm"] == {"alphallm": "eta_mcts", "llama_berry": "sr_mcts"}[algorithm]
    # started again, the finished run redoes nothing and reports the same figures
    before = (folder / "iter_1" / "stages.json").read_text()
    again = execute(config, progress=False)
    assert (folder / "iter_1" / "stages.json").read_text() == before
    assert json.dumps(again) == json.dumps(rows)  # (prm_auc may be NaN: too few labels of one kind)
