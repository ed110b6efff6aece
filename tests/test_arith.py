"""The toy arithmetic world: generator, parser, canonical solutions, oracle labels, oracle PRM and
the scripted policy. Statistical checks are seeded and allow 4-5 standard errors."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from mcts.envs import arith, arith_expr, arith_steps
from mcts.envs.arith import ArithConfig, OraclePRM, generate_problems, write_problems
from mcts.envs.arith_expr import ArithParseError, BinOp, evaluate, parse_expression, render
from mcts.envs.arith_steps import (
    DELIMITER,
    FinalAnswer,
    first_error,
    label_step,
    label_steps,
    parse_step,
    render_solution,
    solution_steps,
    step_value,
)
from mcts.grading import extract_answer, grade
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer
from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig, current_expression
from mcts.problems import load_problems

HARD = ArithConfig(min_ops=1, max_ops=8, max_operand=99)


def _ops(expr) -> list[BinOp]:
    return [] if isinstance(expr, int) else [expr, *_ops(expr.left), *_ops(expr.right)]


def _literals(expr) -> list[int]:
    return [expr] if isinstance(expr, int) else _literals(expr.left) + _literals(expr.right)


def _node_values(expr) -> list[int]:
    return [evaluate(expr)] + ([] if isinstance(expr, int) else _node_values(expr.left) + _node_values(expr.right))


def _random_tree(rng: random.Random, ops: int):
    """Any tree, negative literals included (which problems never have but reductions do)."""
    if ops == 0:
        return rng.randint(-30, 30)
    k = rng.randint(0, ops - 1)
    return BinOp(rng.choice("+-*"), _random_tree(rng, k), _random_tree(rng, ops - 1 - k))


# ---------------------------------------------------------------------------------------------------
# Generator


def test_generator_is_deterministic_and_prefix_stable():
    a = generate_problems(200, seed=3, config=HARD)
    assert a == generate_problems(200, seed=3, config=HARD)
    assert generate_problems(50, seed=3, config=HARD) == a[:50]
    assert [r["problem"] for r in generate_problems(200, seed=4, config=HARD)] != [r["problem"] for r in a]
    assert len({r["id"] for r in a}) == 200
    for r in a:
        assert set(r) == {"id", "problem", "answer"}
        assert type(r["answer"]) is int and r["answer"] == evaluate(parse_expression(r["problem"]))


def test_generator_first_problems_are_pinned():
    # Guards the "same problems on any Python version" promise against accidental changes.
    got = [(r["problem"], r["answer"]) for r in generate_problems(3, seed=0)]
    assert got == [("8 * 20 - (3 + 4)", 153), ("(18 - 4) * 5", 70), ("1 + 6", 7)]


@pytest.mark.parametrize("config", [
    ArithConfig(min_ops=1, max_ops=1, max_operand=9),
    ArithConfig(min_ops=3, max_ops=5, min_operand=10, max_operand=99),
    ArithConfig(min_ops=8, max_ops=8, max_operand=5, operators="+-"),
    ArithConfig(min_ops=2, max_ops=6, max_operand=50, operators="*+", parens=False),
    ArithConfig(min_ops=4, max_ops=8, max_operand=30, max_value=500),
])
def test_difficulty_knobs(config):
    records = generate_problems(400, seed=11, config=config)
    num_ops, operands = Counter(), set()
    for r in records:
        expr = parse_expression(r["problem"])
        ops = _ops(expr)
        num_ops[len(ops)] += 1
        operands.update(_literals(expr))
        assert {o.op for o in ops} <= set(config.operators)
        if not config.parens:
            assert "(" not in r["problem"]
        if config.max_value is not None:
            assert max(abs(v) for v in _node_values(expr)) <= config.max_value
    assert set(num_ops) == set(range(config.min_ops, config.max_ops + 1))  # every count, none outside
    assert min(operands) >= config.min_operand and max(operands) <= config.max_operand
    assert {config.min_operand, config.max_operand} <= operands  # both ends reachable
    if config.parens and config.min_ops >= 2 and len(config.operators) == 3:
        assert any("(" in r["problem"] for r in records)


def test_more_operations_and_bigger_operands_make_harder_problems():
    def mean_len(config):
        return sum(len(r["problem"]) for r in generate_problems(300, 0, config)) / 300

    assert mean_len(ArithConfig(min_ops=1, max_ops=2)) < mean_len(ArithConfig(min_ops=6, max_ops=8))
    assert mean_len(ArithConfig(max_operand=9)) < mean_len(ArithConfig(max_operand=999))


@pytest.mark.parametrize("kwargs, message", [
    ({"min_ops": 0}, "min_ops=0"),
    ({"max_ops": 9}, "max_ops=9"),
    ({"min_ops": 5, "max_ops": 3}, "min_ops=5, max_ops=3"),
    ({"min_operand": -1}, "min_operand=-1"),
    ({"min_operand": 30, "max_operand": 20}, "min_operand=30, max_operand=20"),
    ({"operators": "+/"}, "'+/'"),
    ({"operators": ""}, "''"),
    ({"operators": "++"}, "'++'"),
    ({"max_value": 5, "max_operand": 20}, "max_value=5"),
    ({"max_attempts": 0}, "max_attempts"),
])
def test_config_rejects_bad_values_with_the_values_in_the_message(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        ArithConfig(**kwargs)


def test_config_rejects_non_integers():
    with pytest.raises(TypeError, match="max_ops"):
        ArithConfig(max_ops=2.5)


def test_unsatisfiable_max_value_fails_clearly():
    config = ArithConfig(min_ops=8, max_ops=8, min_operand=50, max_operand=99, operators="*",
                         max_value=100, max_attempts=5)
    with pytest.raises(ValueError, match="max_value=100"):
        generate_problems(1, 0, config)


def test_write_problems_round_trips_through_the_problem_loader(tmp_path):
    records = generate_problems(20, seed=1)
    path = write_problems(tmp_path / "sub" / "arith.jsonl", records)
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    loaded = load_problems(path)
    assert [(p.id, p.problem, p.answer) for p in loaded] == [(r["id"], r["problem"], str(r["answer"])) for r in records]
    assert sorted(x.name for x in path.parent.iterdir()) == ["arith.jsonl"]  # no temporary left


def test_write_problems_is_atomic_on_failure(tmp_path):
    path = write_problems(tmp_path / "arith.jsonl", generate_problems(3, seed=0))
    before = path.read_text()
    with pytest.raises(TypeError):
        write_problems(path, [{"id": "x", "problem": "1 + 1", "answer": object()}])
    assert path.read_text() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["arith.jsonl"]


# ---------------------------------------------------------------------------------------------------
# Parser


@pytest.mark.parametrize("text, value", [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("10 - 3 - 2", 5), ("10 - (3 - 2)", 9), ("2 * 3 * 4", 24),
    ("2 * -5", -10), ("3 - -5", 8), ("-10 - -8", -2), ("-7", -7), ("((4))", 4), ("  1+2 *3 ", 7),
])
def test_parser_precedence_and_associativity(text, value):
    assert evaluate(parse_expression(text)) == value


@pytest.mark.parametrize("text", [
    "", "   ", "1 +", "(1 + 2", "1 + 2)", "1 / 2", "--5", "-(3)", "2 ** 3", "1 2", "__import__('os')",
    "1e3", "(" * 40 + "1" + ")" * 40, " + ".join(["1"] * 70),
])
def test_parser_rejects_what_is_not_an_expression(text):
    with pytest.raises(ArithParseError):
        parse_expression(text)


def test_parser_round_trips_problems_and_every_step():
    for r in generate_problems(300, seed=5, config=HARD):
        assert render(parse_expression(r["problem"])) == r["problem"]
        for step in solution_steps(r["problem"])[:-1]:
            rhs = step.split(", so ")[1]
            assert render(parse_expression(rhs)) == rhs


def test_parser_round_trips_random_trees():
    rng = random.Random(0)
    for _ in range(2000):
        tree = _random_tree(rng, rng.randint(0, 8))
        text = render(tree)
        assert parse_expression(text) == tree
        assert evaluate(tree) == eval(text)  # Python as an independent oracle


def test_count_ops_is_the_number_of_operations_a_problem_was_drawn_with():
    for n in range(1, 6):
        config = ArithConfig(min_ops=n, max_ops=n, max_operand=30)
        assert {arith.count_ops(r["problem"]) for r in generate_problems(50, seed=n, config=config)} == {n}
    assert arith.count_ops("7") == 0 and arith.count_ops("-3 * (2 - -4)") == 2
    assert arith.count_ops(parse_expression("(1 + 2) * (3 - 4)")) == 3


# ---------------------------------------------------------------------------------------------------
# Canonical solutions and the oracle labeller


def test_canonical_solution_of_the_design_example():
    assert solution_steps("(17 + 5) * 3 - 8") == [
        "17 + 5 = 22, so 22 * 3 - 8",
        "22 * 3 = 66, so 66 - 8",
        "66 - 8 = 58, so 58",
        "The answer is \\boxed{58}.",
    ]
    assert render_solution(["a", "b\n"]) == "a\nb\n" and DELIMITER == "\n"


@pytest.mark.parametrize("problem, first", [
    ("2 + 3 + 4 * 5", "4 * 5 = 20, so 2 + 3 + 20"),  # precedence before left to right
    ("2 * 3 + 4 * 5", "2 * 3 = 6, so 6 + 4 * 5"),  # leftmost among equals
    ("(2 + 3) * 4 + 5 * 6", "2 + 3 = 5, so 5 * 4 + 5 * 6"),  # parentheses first
    ("2 * (3 - (4 + 1)) + 6 * 7", "4 + 1 = 5, so 2 * (3 - 5) + 6 * 7"),  # innermost first
    ("2 * (3 - 8)", "3 - 8 = -5, so 2 * -5"),  # negative intermediate values
])
def test_reduction_order(problem, first):
    assert solution_steps(problem)[0] == first


def test_canonical_solutions_are_all_correct_and_grade_correct():
    for r in generate_problems(300, seed=7, config=HARD):
        steps = solution_steps(r["problem"])
        assert len(steps) == len(_ops(parse_expression(r["problem"]))) + 1
        assert label_steps(r["problem"], steps, r["answer"]) == [1] * len(steps)
        assert label_steps(r["problem"], steps) == [1] * len(steps)  # gold from the problem itself
        assert label_steps(r["problem"], steps, str(r["answer"])) == [1] * len(steps)  # as problems.py stores it
        assert first_error([1] * len(steps)) == -1
        text = render_solution(steps)
        assert steps[-1] == f"The answer is \\boxed{{{r['answer']}}}."
        assert extract_answer(text) == str(r["answer"])
        assert grade(text, str(r["answer"])) is True


def test_parse_step_reads_expressions_answers_and_nothing_else():
    assert parse_step("17 + 5 = 22, so 22 * 3 - 8\n") == parse_expression("22 * 3 - 8")
    assert parse_step("66 - 8 = 58, so 58") == 58
    assert parse_step("22 * 3 - 8") == parse_expression("22 * 3 - 8")
    assert parse_step("The answer is \\boxed{58}.\n") == FinalAnswer(58, "58")
    assert parse_step("The answer is \\boxed{-1,234}.").value == -1234
    assert parse_step("The answer is 58.").value == 58
    assert parse_step("The answer is \\boxed{x + 1}.").value is None
    assert parse_step("I am not sure what to do") is None
    assert step_value("3 - 8 = -5, so 2 * -5") == -10


def test_labels_judge_what_each_step_writes():
    gold = 58
    assert label_step("17 + 5 = 22, so 22 * 3 - 8", gold) == 1
    assert label_step("17 + 5 = 23, so 23 * 3 - 8", gold) == 0
    assert label_step("17 + 5 = 23, so 22 * 3 - 8", gold) == 1  # a wrong remark, a right expression
    assert label_step("The answer is \\boxed{59}.", gold) == 0
    assert label_step("gibberish", gold) == 0
    assert first_error([1, 1, 0, 1, 0]) == 2 and first_error([]) == -1


def test_slips_are_labelled_wrong_from_the_first_error_on():
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.2, answer_eps=0.0), seed=0)
    rng = random.Random(1)
    checked = 0
    for r in generate_problems(200, seed=9, config=HARD):
        steps = solution_steps(r["problem"])
        k = rng.randrange(len(steps) - 1)  # a reduction step
        prefix = Prefix(r["problem"], tuple(s + DELIMITER for s in steps[:k]))
        slips = [s for s, _ in policy.distribution(prefix)[1:] if step_value(s.text) != r["answer"]]
        trace = [*prefix.steps, slips[0].text]
        while True:  # the greedy policy carries on from the wrong expression
            (nxt,) = policy.propose([Prefix(r["problem"], tuple(trace))], n=1, greedy=True)[0]
            trace.append(nxt.text)
            if nxt.finished:
                break
        labels = label_steps(r["problem"], trace, r["answer"])
        assert first_error(labels) == k
        assert labels == [1] * k + [0] * (len(trace) - k)
        assert grade(render_solution(trace), str(r["answer"])) is False
        checked += 1
    assert checked == 200


# ---------------------------------------------------------------------------------------------------
# Oracle PRM


def _scored_pairs(num: int, seed: int = 0) -> tuple[list[Prefix], list[Step]]:
    """(prefix, step) pairs of canonical and slipped traces, half of them on a correct path."""
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.08), seed=seed)
    prefixes, steps = [], []
    for r in generate_problems(num, seed=seed, config=HARD):
        prefix = Prefix(r["problem"])
        while True:
            (step,) = policy.propose([prefix], n=1)[0]
            prefixes.append(prefix)
            steps.append(step)
            if step.finished:
                break
            prefix = prefix.extend(step.text)
    return prefixes, steps


def test_oracle_prm_clean_scores_are_path_correctness():
    prm = OraclePRM()
    assert isinstance(prm, StepScorer)
    prefixes, steps = _scored_pairs(100)
    scores = prm.score(prefixes, steps)
    for p, s, v in zip(prefixes, steps, scores):
        labels = label_steps(p.problem, [*p.steps, s.text])
        assert v == float(all(labels))
    assert 0.2 < sum(scores) / len(scores) < 0.8  # both kinds are present


def test_oracle_prm_uses_given_answers():
    prm = OraclePRM(answers={"What is 2 + 2?": "4"})
    assert prm.score([Prefix("What is 2 + 2?")], [Step("2 + 2 = 4, so 4")]) == [1.0]
    assert prm.score([Prefix("What is 2 + 2?")], [Step("2 + 2 = 5, so 5")]) == [0.0]
    with pytest.raises(ValueError, match="not a toy-world expression"):
        OraclePRM().score([Prefix("What is 2 + 2?")], [Step("4")])


@pytest.mark.parametrize("kind, noise", [("flip", 0.2), ("gaussian", 0.3)])
def test_oracle_prm_is_stable(kind, noise):
    prefixes, steps = _scored_pairs(40)
    prm = OraclePRM(noise=noise, kind=kind, seed=5)
    first = prm.score(prefixes, steps)
    assert prm.score(prefixes, steps) == first
    assert prm.score(prefixes[::-1], steps[::-1]) == first[::-1]  # independent of batch and order
    assert [prm.score([p], [s])[0] for p, s in zip(prefixes, steps)] == first
    assert OraclePRM(noise=noise, kind=kind, seed=5).score(prefixes, steps) == first  # a fresh instance
    assert OraclePRM(noise=noise, kind=kind, seed=6).score(prefixes, steps) != first
    assert all(0.0 <= v <= 1.0 for v in first)


def test_oracle_prm_flip_rate_matches_noise():
    prefixes, steps = _scored_pairs(600)
    clean = OraclePRM().score(prefixes, steps)
    for noise in (0.1, 0.3):
        noisy = OraclePRM(noise=noise, seed=1).score(prefixes, steps)
        flips = [abs(a - b) for a, b in zip(clean, noisy)]
        assert set(flips) <= {0.0, 1.0}
        n = len(flips)
        assert abs(sum(flips) / n - noise) < 4.5 * math.sqrt(noise * (1 - noise) / n), (n, sum(flips) / n)
        for label in (0.0, 1.0):  # symmetric: the same rate on both labels
            sub = [f for f, c in zip(flips, clean) if c == label]
            assert abs(sum(sub) / len(sub) - noise) < 4.5 * math.sqrt(noise * (1 - noise) / len(sub))


def test_oracle_prm_gaussian_noise_has_the_configured_spread():
    prefixes, steps = _scored_pairs(600)
    clean = OraclePRM().score(prefixes, steps)
    sigma = 0.1
    noisy = OraclePRM(noise=sigma, kind="gaussian", seed=2).score(prefixes, steps)
    # Clipping to [0, 1] keeps half of each side's noise: the moved half is |N(0, sigma^2)|.
    moved = [abs(a - b) for a, b in zip(clean, noisy) if a != b]
    n = len(clean)
    assert abs(len(moved) / n - 0.5) < 4.5 * math.sqrt(0.25 / n)
    mean_abs = sum(moved) / len(moved)
    assert abs(mean_abs - sigma * math.sqrt(2 / math.pi)) < 4.5 * sigma * 0.6 / math.sqrt(len(moved))
    rms = math.sqrt(sum(m * m for m in moved) / len(moved))
    assert abs(rms - sigma) < 0.1 * sigma


@pytest.mark.parametrize("kwargs", [{"noise": -0.1}, {"noise": 1.5}, {"noise": float("nan")}, {"kind": "uniform"}])
def test_oracle_prm_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        OraclePRM(**kwargs)


# ---------------------------------------------------------------------------------------------------
# The module split


# What code outside mcts/envs imports from `mcts.envs.arith`, though it lives in the modules below it.
MOVED = {arith_expr: ("OPERATORS", "ArithParseError", "BinOp", "Expr", "apply_op", "evaluate", "parse_expression",
                      "render"),
         arith_steps: ("DELIMITER", "FinalAnswer", "answer_step", "first_error", "label_steps", "parse_step",
                       "reduce_once", "reduction_step", "replace_at", "solution_steps", "step_value")}


def test_moved_names_are_the_same_objects_in_arith():
    for owner, names in MOVED.items():
        for name in names:
            assert getattr(arith, name) is getattr(owner, name), name
            assert name in arith.__all__, name


def test_arith_still_holds_the_step_caches():
    # benchmarks/scale_out.py empties every cache it finds in vars(arith) between repeats
    caches = {name for name, value in vars(arith).items() if callable(getattr(value, "cache_clear", None))}
    assert caches == {"parse_step", "step_value"}


# ---------------------------------------------------------------------------------------------------
# Scripted policy


def test_policy_implements_the_protocol_and_step_fields():
    policy = ScriptedPolicy(seed=0)
    assert isinstance(policy, StepProposer) and policy.delimiter == "\n"
    prefix = Prefix("(17 + 5) * 3 - 8")
    dist = policy.distribution(prefix)
    assert dist[0][0].text == "17 + 5 = 22, so 22 * 3 - 8\n"
    assert math.isclose(sum(p for _, p in dist), 1.0)
    assert len({s.text for s, _ in dist}) == len(dist)
    for step, p in dist:
        assert math.isclose(step.logprob, math.log(p))
        assert step.num_tokens == len(step.text) and step.text.endswith(DELIMITER)
        assert not step.finished
    done = Prefix("1 + 2", ("1 + 2 = 3, so 3\n",))
    (final,) = policy.propose([done], n=1, greedy=True)[0]
    assert final.text == "The answer is \\boxed{3}.\n" and final.finished
    assert policy.propose([done.extend(final.text)], n=3) == [[]]


def test_error_rate_grows_with_operand_size_and_multiplication():
    c = ToyPolicyConfig(base_eps=0.04, digit_factor=0.5, mul_factor=2.0, max_eps=0.5)
    assert c.error_rate("+", 3, 4) == pytest.approx(0.04)
    assert c.error_rate("+", 3, 4) < c.error_rate("+", 13, 4) < c.error_rate("+", 13, 44) < c.error_rate("+", 130, 44)
    assert c.error_rate("*", 3, 4) == pytest.approx(2 * c.error_rate("+", 3, 4))
    assert c.error_rate("*", 10**8, 10**8) == 0.5  # capped
    policy = ScriptedPolicy(c)
    assert policy.error_rate(Prefix("13 * 12 + 1")) == pytest.approx(c.error_rate("*", 13, 12))


def test_correct_step_rate_matches_one_minus_eps():
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.05), seed=3)
    prefix = Prefix("17 * 5 + 3")  # eps = 0.05 * 1.5 * 2 = 0.15
    eps = policy.error_rate(prefix)
    assert eps == pytest.approx(0.15)
    n = 20000
    samples = policy.propose([prefix], n=n)[0]
    canonical = solution_steps(prefix.problem)[0] + DELIMITER
    rate = sum(s.text == canonical for s in samples) / n
    assert abs(rate - (1 - eps)) < 4.5 * math.sqrt(eps * (1 - eps) / n)
    # every sampled text is as frequent as its log-probability says
    counts = Counter(s.text for s in samples)
    for step, p in policy.distribution(prefix):
        assert abs(counts[step.text] / n - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_correct_step_rate_across_many_states():
    policy = ScriptedPolicy(seed=4)
    prefixes, expected = [], 0.0
    for r in generate_problems(400, seed=2, config=HARD):
        steps = solution_steps(r["problem"])
        for k in range(len(steps) - 1):
            prefix = Prefix(r["problem"], tuple(s + DELIMITER for s in steps[:k]))
            prefixes.append(prefix)
            expected += 1 - policy.error_rate(prefix)
    samples = policy.propose(prefixes, n=8)
    hits = sum(s.text == solution_steps(p.problem)[p.depth] + DELIMITER
               for p, row in zip(prefixes, samples) for s in row)
    total = 8 * len(prefixes)
    expected /= len(prefixes)
    assert abs(hits / total - expected) < 4.5 * math.sqrt(expected * (1 - expected) / total)


def test_slips_are_plausible():
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.3), seed=0)
    texts = {s.text.rstrip() for s, _ in policy.distribution(Prefix("(13 * 12) - 8"))[1:]}
    assert "13 * 12 = 157, so 157 - 8" in texts  # off by one
    assert "13 * 12 = 165, so 165 - 8" in texts  # swapped digits
    assert "13 * 12 = 516, so 516 - 8" in texts  # the other adjacent pair
    assert "13 * 12 = 651, so 651 - 8" not in texts  # only adjacent digits swap
    assert "13 + 12 = 25, so 25 - 8" in texts  # wrong operator
    assert all(step_value(t) != 148 for t in texts)  # every slip changes the value here


def test_policy_is_deterministic_under_its_seed():
    prefixes = [Prefix(r["problem"]) for r in generate_problems(50, seed=0)]
    a = ScriptedPolicy(ToyPolicyConfig(base_eps=0.3), seed=7)
    b = ScriptedPolicy(ToyPolicyConfig(base_eps=0.3), seed=7)
    assert a.propose(prefixes, n=4) == b.propose(prefixes, n=4)
    assert a.propose(prefixes, n=4) == b.propose(prefixes, n=4)  # the sequence of calls, too
    c = ScriptedPolicy(ToyPolicyConfig(base_eps=0.3), seed=8)
    assert c.propose(prefixes, n=4) != ScriptedPolicy(ToyPolicyConfig(base_eps=0.3), seed=7).propose(prefixes, n=4)


@pytest.mark.parametrize("how", [{"greedy": True}, {"temperature": 0.0}])
def test_greedy_follows_the_canonical_solution(how):
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.2, answer_eps=0.1), seed=0)
    for r in generate_problems(200, seed=13, config=HARD):
        prefix = Prefix(r["problem"])
        while True:
            row = policy.propose([prefix], n=3, **how)[0]
            assert len({s.text for s in row}) == 1
            prefix = prefix.extend(row[0].text)
            if row[0].finished:
                break
        assert [s.rstrip(DELIMITER) for s in prefix.steps] == solution_steps(r["problem"])
        assert row[0].logprob == pytest.approx(math.log(1 - policy.error_rate(Prefix(r["problem"], prefix.steps[:-1]))))


def test_temperature_sharpens_and_flattens_slips():
    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.1), seed=0)
    prefix = Prefix("17 * 5 + 3")
    p_correct = {t: policy.distribution(prefix, temperature=t)[0][1] for t in (0.25, 0.5, 1.0, 2.0, 100.0)}
    assert p_correct[0.25] > p_correct[0.5] > p_correct[1.0] > p_correct[2.0] > p_correct[100.0]
    assert p_correct[0.25] > 0.999
    assert p_correct[100.0] == pytest.approx(1 / len(policy.distribution(prefix)), rel=0.1)
    for t in (0.5, 2.0):
        dist = policy.distribution(prefix, temperature=t)
        assert math.isclose(sum(p for _, p in dist), 1.0)
        assert all(math.isclose(s.logprob, math.log(p)) for s, p in dist)
    with pytest.raises(ValueError):
        policy.propose([prefix], n=1, temperature=-1.0)


def test_errors_propagate():
    policy = ScriptedPolicy(seed=0)
    wrong = Prefix("(17 + 5) * 3 - 8", ("17 + 5 = 23, so 23 * 3 - 8\n",))
    assert render(current_expression(wrong)) == "23 * 3 - 8"
    row = policy.propose([wrong], n=50)[0]
    assert all(s.text.startswith("23 ") and s.text.endswith(" - 8\n") for s in row)
    (greedy,) = policy.propose([wrong], n=1, greedy=True)[0]
    assert greedy.text == "23 * 3 = 69, so 69 - 8\n"
    assert label_step(greedy.text, 58) == 0
    # an unreadable step is passed over: the policy goes on from the last expression it can read
    assert render(current_expression(wrong.extend("hmm, let me think\n"))) == "23 * 3 - 8"


def test_policy_handles_batches_with_finished_prefixes():
    policy = ScriptedPolicy(seed=0)
    done = Prefix("1 + 1", ("1 + 1 = 2, so 2\n", "The answer is \\boxed{2}.\n"))
    rows = policy.propose([Prefix("1 + 1"), done, Prefix("2 * 3")], n=5)
    assert [len(r) for r in rows] == [5, 0, 5]
    with pytest.raises(ValueError, match="n must be"):
        policy.propose([Prefix("1 + 1")], n=0)
    with pytest.raises(ValueError, match="not a toy-world expression"):
        policy.propose([Prefix("What is 1 + 1?")], n=1)


@pytest.mark.parametrize("kwargs", [
    {"base_eps": 1.5}, {"max_eps": -0.1}, {"digit_factor": -1.0}, {"off_by": ()}, {"off_by": (0, 1)},
    {"slip_weights": (0.0, 1.0, 1.0)}, {"slip_weights": (1.0, -1.0, 1.0)}, {"slip_weights": (1.0, 1.0)},
])
def test_policy_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ToyPolicyConfig(**kwargs)
