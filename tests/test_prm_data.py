"""Step-labelled data: quality values, readers of the three formats, bad input, toy records, pairs."""

from __future__ import annotations

import json
import re
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prm.data import (  # noqa: E402
    StepDataError,
    load_pair_dataset,
    load_step_dataset,
    math_shepherd_record,
    pair_records,
    prm800k_record,
    read_step_records,
)
from prm.quality import quality_values, trace_quality_values  # noqa: E402
from prm.toy_traces import (  # noqa: E402
    ToyDataConfig,
    branch_traces,
    copy_slip,
    operand_slip,
    rollout,
    single_step_traces,
    toy_problems,
    toy_records,
    toy_step_records,
)


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD = {"problem": "2 + 3 * 4", "steps": ["3 * 4 = 12, so 2 + 12", "2 + 12 = 14, so 14", "The answer is \\boxed{14}."],
        "labels": [1, 1, 1]}


# ---------------------------------------------------------------------------------------------------
# Quality values (ReST-MCTS*, selftrain/harvest.py)


def test_quality_values_of_a_correct_trace_climb_to_one():
    # K = 4, m = 3, 2, 1, 0: V = 1/4, then 1/4 + (3/4)/3 = 1/2, then 1/2 + (1/2)/2 = 3/4, then 1
    assert quality_values([0, 0, 0, 0], [3, 2, 1, 0]) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert trace_quality_values([1, 1, 1, 1]) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert trace_quality_values([1]) == [1.0]


def test_quality_values_a_wrong_step_lowers_v_and_v_stays_non_negative():
    # V1 = 1/3; step 2 wrong, m = 1: w = -(1 - 1/3) / 2 = -1/3 -> V2 = 0; step 3 wrong, m = 0: V3 = max(0 - 1, 0) = 0
    assert quality_values([0, 1, 1], [2, 1, 0]) == pytest.approx([1 / 3, 0.0, 0.0])
    # V1 = 1/2, then wrong with m = 0: w = -(1/2) -> 0
    assert quality_values([0, 1], [1, 0]) == pytest.approx([0.5, 0.0])
    # a wrong first step: max(0 - 1/(m+1), 0) = 0
    assert quality_values([1, 0], [1, 0]) == pytest.approx([0.0, 1.0])
    # soft reward 1/2 leaves V unchanged (w = 0)
    assert quality_values([0, 0.5], [1, 0]) == pytest.approx([0.5, 0.5])
    values = quality_values([0, 1, 0, 1, 0], [4, 3, 2, 1, 0])
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[1] < values[0] and values[3] < values[2]


def test_quality_values_rejects_bad_input():
    with pytest.raises(ValueError, match="2 step rewards but 1"):
        quality_values([0, 0], [1])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        quality_values([2], [0])
    with pytest.raises(ValueError, match=">= 0"):
        quality_values([0], [-1])


# ---------------------------------------------------------------------------------------------------
# Readers


def test_reads_canonical_jsonl_and_parquet(tmp_path):
    soft = {"problem": "1 + 1", "steps": ["1 + 1 = 2, so 2"], "values": [0.5], "labels": [1], "answer": 2}
    path = write_lines(tmp_path / "d.jsonl", [{**GOOD, "values": [0.3, 0.6, 1.0], "answer": "14"}, "", soft])
    ds = load_step_dataset(path)
    assert ds.num_rows == 2
    assert set(ds.column_names) == {"problem", "steps", "labels", "values", "answer"}
    assert ds[1]["values"] == [0.5] and ds[1]["answer"] == "2"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD, GOOD]), tmp_path / "d.parquet")
    assert load_step_dataset(tmp_path / "d.parquet")["labels"] == [[1, 1, 1]] * 2


def test_reads_prm800k(tmp_path):
    line = {
        "question": {"problem": "What is 2 + 2?", "ground_truth_answer": "4"},
        "label": {"steps": [
            {"completions": [{"text": "2 + 2 = 4.", "rating": 1}], "chosen_completion": 0},
            {"completions": [{"text": "So 4.", "rating": 0}, {"text": "So 5.", "rating": -1}],
             "chosen_completion": 0},
            {"completions": [{"text": "Wrong: 5.", "rating": -1}, {"text": "Fine.", "rating": 1}],
             "chosen_completion": None, "human_completion": None},
            {"completions": [{"text": "never read", "rating": 1}], "chosen_completion": 0},
        ]},
    }
    record = prm800k_record(line)
    assert record == {"problem": "What is 2 + 2?", "steps": ["2 + 2 = 4.", "So 4.", "Wrong: 5."],
                      "labels": [1, 1, 0], "answer": "4"}
    assert prm800k_record(line, neutral=0)["labels"] == [1, 0, 0]
    human = json.loads(json.dumps(line))
    human["label"]["steps"][2]["human_completion"] = {"text": "Human step."}
    assert prm800k_record(human)["steps"] == ["2 + 2 = 4.", "So 4.", "Human step.", "never read"]
    path = write_lines(tmp_path / "prm800k.jsonl", [line, line])
    assert load_step_dataset(path)["labels"] == [[1, 1, 0]] * 2


def test_reads_math_shepherd(tmp_path):
    line = {"input": "Tom has 3 apples and buys 2. How many? Step 1: 3 + 2 = 5 ки\nStep 2: The answer is 6 ки",
            "label": "Tom has 3 apples and buys 2. How many? Step 1: 3 + 2 = 5 +\nStep 2: The answer is 6 -",
            "task": "GSM8K"}
    record = math_shepherd_record(line)
    assert record["problem"] == "Tom has 3 apples and buys 2. How many?"
    assert record["steps"] == ["Step 1: 3 + 2 = 5", "Step 2: The answer is 6"]
    assert record["labels"] == [1, 0]
    path = write_lines(tmp_path / "ms.jsonl", [line])
    assert load_step_dataset(path)[0]["labels"] == [1, 0]


BAD_CASES = [
    ({"question": "x", "steps": ["a"], "labels": [1]}, "problem", "missing"),
    ({"problem": "x", "step": ["a"], "labels": [1]}, "steps", "missing"),
    ({"problem": "x", "steps": [], "labels": []}, "steps", "non-empty"),
    ({"problem": "x", "steps": ["a", 3], "labels": [1, 1]}, "steps", "step 1 must be a string"),
    ({"problem": "x", "steps": ["a", "b"]}, "labels", "missing"),
    ({"problem": "x", "steps": ["a", "b"], "label": [1, 0]}, "labels", "missing"),
    ({"problem": "x", "steps": ["a", "b"], "labels": [1]}, "labels", "1 labels for 2 steps"),
    ({"problem": "x", "steps": ["a", "b"], "labels": [1, 2]}, "labels", "labels\\[1\\] = 2"),
    ({"problem": "x", "steps": ["a", "b"], "labels": [1, -1]}, "labels", "labels\\[1\\] = -1"),
    ({"problem": "x", "steps": ["a", "b"], "labels": [1, 0.5]}, "labels", "labels are 0 or 1"),
    ({"problem": "x", "steps": ["a"], "values": [1.5]}, "values", "values\\[0\\] = 1.5"),
    ({"problem": "x", "steps": ["a"], "values": [float("nan")]}, "values", "values\\[0\\]"),
    ({"problem": "x", "steps": ["a"], "values": ["0.5"]}, "values", "values\\[0\\]"),
    ({"problem": "", "steps": ["a"], "labels": [1]}, "problem", "non-empty"),
    ([1, 2], None, "expected a JSON object"),
]


@pytest.mark.parametrize("bad,field,message", BAD_CASES)
def test_bad_records_name_file_line_and_field(tmp_path, bad, field, message):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, "", bad])  # line 3 is the bad one
    with pytest.raises(StepDataError, match=message) as info:
        read_step_records(path, "steps")
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}:3:")
    if field:
        assert f"field {field!r}" in str(err)


def test_malformed_json_empty_and_missing_files(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [GOOD, '{"problem": "x", "steps": ["a"],'])
    with pytest.raises(StepDataError, match=r"m.jsonl:2: malformed JSON") as info:
        read_step_records(path)
    assert info.value.line == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(StepDataError, match="empty.jsonl: the file holds no records"):
        read_step_records(empty)
    with pytest.raises(StepDataError, match="no such file"):
        read_step_records(tmp_path / "absent.jsonl")


def test_records_must_carry_the_same_targets(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [GOOD, {**GOOD, "labels": None, "values": [0.1, 0.2, 0.3]}])
    with pytest.raises(StepDataError, match="labels"):
        read_step_records(path)
    soft = {k: v for k, v in GOOD.items() if k != "labels"} | {"values": [0.1, 0.2, 0.3]}
    path = write_lines(tmp_path / "mixed2.jsonl", [GOOD, soft])
    with pytest.raises(StepDataError, match=r"mixed2.jsonl:2: field '(labels|values)'.*same ones"):
        read_step_records(path)


def test_bad_prm800k_and_math_shepherd_lines(tmp_path):
    with pytest.raises(StepDataError, match="field 'question.problem'"):
        prm800k_record({"question": {}, "label": {"steps": []}}, "f.jsonl", 7)
    bad_rating = {"question": {"problem": "p"}, "label": {"steps": [
        {"completions": [{"text": "a", "rating": 5}], "chosen_completion": 0}]}}
    with pytest.raises(StepDataError, match=r"f.jsonl:7: field 'label.steps\[0\].completions.rating'"):
        prm800k_record(bad_rating, "f.jsonl", 7)
    with pytest.raises(StepDataError, match="field 'label': tag 1 is '\\?'"):
        math_shepherd_record({"input": "q Step 1: a ки", "label": "q Step 1: a ?"}, "f.jsonl", 1)
    with pytest.raises(StepDataError, match="field 'input': no step tag"):
        math_shepherd_record({"input": "q Step 1: a", "label": "q Step 1: a"}, "f.jsonl", 1)
    path = write_lines(tmp_path / "ms.jsonl", [{"input": "q Step 1: a ки", "label": "q Step 1: b +"}])
    with pytest.raises(StepDataError, match="ms.jsonl:1: field 'label': does not match"):
        read_step_records(path)


# ---------------------------------------------------------------------------------------------------
# The toy world and pairs


def test_toy_records_carry_oracle_labels_and_quality_values():
    records = toy_step_records(ToyDataConfig(problems=30, samples=2, slip_rates=(0.3,), max_ops=5, seed=3))
    assert len(records) == 60
    assert toy_step_records(ToyDataConfig(problems=30, samples=2, slip_rates=(0.3,), max_ops=5, seed=3)) == records
    from mcts.envs.arith import first_error, label_steps

    wrong = 0
    for r in records:
        assert r["labels"] == label_steps(r["problem"], r["steps"])
        assert r["values"] == trace_quality_values(r["labels"])
        assert r["first_error"] == first_error(r["labels"])
        wrong += r["labels"].count(0)
    assert wrong > 10  # slip rate 0.3: plenty of wrong steps
    correct = [r for r in records if r["first_error"] == -1]
    assert correct and all(r["values"][-1] == pytest.approx(1.0) for r in correct)


def test_rollout_with_the_scripted_policy_finishes_every_trace():
    from mcts.policy.toy import ScriptedPolicy

    traces = rollout(ScriptedPolicy(seed=0), ["1 + 2 * 3", "4 - 5"], samples=3)
    assert len(traces) == 6 and [t[0] for t in traces[:3]] == ["1 + 2 * 3"] * 3
    assert all("boxed" in steps[-1] for _, steps in traces)
    records = toy_records(traces)
    assert all(r["answer"] in ("7", "-1") for r in records)


def test_pair_records_pair_correct_with_wrong_traces(tmp_path):
    ok = {"problem": "p", "steps": ["a"], "labels": [1]}
    bad1 = {"problem": "p", "steps": ["b"], "labels": [0]}
    bad2 = {"problem": "p", "steps": ["c"], "labels": [1, 0][1:]}
    lone = {"problem": "q", "steps": ["d"], "labels": [1]}
    pairs = pair_records([ok, bad1, bad2, lone])
    assert pairs == [{"problem": "p", "chosen": ["a"], "rejected": ["b"]},
                     {"problem": "p", "chosen": ["a"], "rejected": ["c"]}]
    assert len(pair_records([ok, bad1, bad2], max_pairs_per_problem=1)) == 1
    path = write_lines(tmp_path / "pairs.jsonl", pairs)
    assert load_pair_dataset(path).num_rows == 2
    path = write_lines(tmp_path / "steps.jsonl", [ok, bad1])  # a step file is paired on reading
    assert load_pair_dataset(path)[0]["chosen"] == ["a"]
    path = write_lines(tmp_path / "badpairs.jsonl", [{"problem": "p", "chosen": ["a"]}])
    with pytest.raises(StepDataError, match="badpairs.jsonl:1: field 'rejected': missing"):
        load_pair_dataset(path)


def test_toy_data_defaults_to_the_toy_worlds_default_problems():
    from mcts.envs.arith import parse_expression
    from mcts.envs.toy_config import toy_problem_config

    config, default = ToyDataConfig(), toy_problem_config()
    assert (config.min_ops, config.max_ops, config.max_operand, config.max_value) == (
        default.min_ops, default.max_ops, default.max_operand, default.max_value)
    for p in toy_problems(50, 7):
        assert p["problem"] and abs(p["answer"]) <= 100 and parse_expression(p["problem"]) is not None


def test_copy_slip_changes_the_copied_expression_only():
    import random

    rng = random.Random(0)
    step = "4 * 2 = 8, so 3 + 8 - (6 - 1)\n"
    seen = set()
    for _ in range(60):
        slip = copy_slip(step, rng)
        assert slip.startswith("4 * 2 = 8, so ") and slip.endswith("\n") and slip != step
        seen.add(slip)
    assert len(seen) > 5
    assert copy_slip("The answer is \\boxed{3}.", rng) is None
    assert copy_slip("7 + 1 = 8, so 8", rng) != "7 + 1 = 8, so 8"


def test_copy_slip_can_take_a_number_the_step_writes():
    import random

    rng = random.Random(1)
    step = "2 + 7 = 9, so 7 + 3 - 9\n"
    written = {"2", "7", "9", "3"}
    slips = [copy_slip(step, rng, context_fraction=1.0) for _ in range(300)]
    numbers = [s for s in slips if s is not None and s.count(" ") == step.count(" ")]
    assert numbers and all(set(re.findall(r"\d+", s.split(", so ")[1])) <= written for s in numbers)
    assert "2 + 7 = 9, so 7 + 7 - 9\n" in slips


def test_operand_slip_miscopies_an_operand_and_stays_consistent():
    import random

    from mcts.envs.arith import apply_op, label_steps, parse_expression, parse_step, reduce_once

    rng = random.Random(0)
    for problem in ("3 - 7 + 6", "(5 + 7) * 6 + 3", "2 + 4 * 5 + 4 * 7", "8 - (1 - 2)"):
        expr = parse_expression(problem)
        red = reduce_once(expr)
        for _ in range(20):
            slip = operand_slip(expr, rng)
            head, rest = slip.rstrip("\n").split(", so ")
            a, op, b, _, r = head.split(" ")
            assert op == red.op and (int(a), int(b)) != (red.a, red.b) and (int(a) == red.a or int(b) == red.b)
            assert int(r) == apply_op(op, int(a), int(b))  # the arithmetic is right for what it copied
            assert parse_step(slip) is not None and rest.count(r) >= 1
            assert label_steps(problem, [slip]) in ([0], [1])
    assert operand_slip(parse_expression("7"), rng) is None
    tight = [operand_slip(parse_expression("3 * 4 + 1"), rng, max_value=13) for _ in range(50)]
    assert all(abs(int(s.split(" = ")[1].split(",")[0])) <= 13 for s in tight if s) and any(tight)


def test_branch_traces_keep_their_stream_without_copy_slips_and_make_them_when_asked():
    problems = [p["problem"] for p in toy_problems(300, 11, 1, 6)]
    plain = branch_traces(problems, seed=3)
    assert branch_traces(problems, seed=3, copy_context_fraction=0.5) == plain  # no new kinds: no new draws
    copies = branch_traces(problems, seed=3, wrong_fraction=1.0, operand_fraction=0.5, copy_fraction=1.0,
                           copy_context_fraction=0.5, continue_fraction=0.0)
    records = toy_records(copies)
    wrong = [r for r in records if r["first_error"] >= 0]
    assert len(wrong) > 0.9 * len(records)
    # an operand or copy slip keeps the step's arithmetic right: `a op b = r` holds, the expression does not
    # (answer steps have nothing to copy: they take the scripted policy's answer slips)
    reductions = [r["steps"][r["first_error"]] for r in wrong if ", so " in r["steps"][r["first_error"]]]
    kept = 0
    for step in reductions:
        a, op, b, _, res = step.split(", so ")[0].split(" ")
        kept += int(res) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    assert len(reductions) > 0.5 * len(wrong) and kept > 0.9 * len(reductions)


def test_isolated_facts_with_negated_operands():
    from mcts.envs.arith import BinOp, apply_op, parse_expression

    problems = [p["problem"] for p in toy_problems(600, 11)]
    plain = single_step_traces(problems, seed=3, isolate=True)
    assert single_step_traces(problems, seed=3, isolate=True, negate_fraction=0.0) == plain  # off: same data
    negated = single_step_traces(problems, seed=3, isolate=True, negate_fraction=1.0, max_value=100)

    def negative_operand(state):
        expr = parse_expression(state)
        return isinstance(expr, BinOp) and min(expr.left, expr.right) < 0

    assert sum(map(negative_operand, (s for s, _ in negated))) > 2 * sum(map(negative_operand, (s for s, _ in plain)))
    for record in toy_records(negated):
        expr = parse_expression(record["problem"])
        if isinstance(expr, BinOp):
            assert abs(apply_op(expr.op, expr.left, expr.right)) <= 100
            value = apply_op(expr.op, expr.left, expr.right)
            canonical = record["steps"][0] == f"{record['problem']} = {value}, so {value}\n"
            assert record["labels"] == [int(canonical)]  # the oracle agrees: only the canonical step is right


@pytest.mark.parametrize("isolate", [False, True])
def test_single_step_traces_balance_right_and_wrong_steps(isolate):
    from mcts.envs.arith import evaluate, parse_expression

    problems = [p["problem"] for p in toy_problems(400, 11)]
    traces = single_step_traces(problems, seed=3, isolate=isolate)
    assert traces == single_step_traces(problems, seed=3, isolate=isolate) and len(traces) == 400
    records = toy_records(traces)
    assert all(len(r["steps"]) == 1 for r in records)
    wrong = sum(r["labels"][0] == 0 for r in records)
    assert 150 < wrong < 250  # wrong_fraction 0.5
    answers = [r for r in records if "boxed" in r["steps"][0]]
    assert answers and any(r["labels"][0] == 0 for r in answers)  # answer slips too
    if isolate:  # the state is one operation (or a number, before the answer step)
        assert all(r["problem"].count(" ") in (0, 2) for r in records)
    for r in records[:50]:
        assert int(r["answer"]) == evaluate(parse_expression(r["problem"]))
