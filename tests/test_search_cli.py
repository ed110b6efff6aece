"""`python -m mcts.search` as a user runs it: output, resume, tree dumps, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcts.envs.arith import ArithConfig, generate_problems, write_problems
from treesearch.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
FAST = ["--model", "scripted", "--prm", "oracle", "--simulations", "8", "--width", "2"]


@pytest.fixture
def toy_file(tmp_path) -> Path:
    return write_problems(tmp_path / "toy.jsonl",
                          generate_problems(7, seed=11, config=ArithConfig(min_ops=2, max_ops=4)))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_search_writes_one_graded_line_per_problem(toy_file, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--batch", "3", *FAST]) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [f"arith-11-{i}" for i in range(7)]
    for r in records:
        assert set(r) >= {"id", "answer", "gold", "correct", "trace", "value", "tokens", "simulations", "seconds"}
        assert r["correct"] in (True, False) and r["tokens"] > 0
    assert sum(r["correct"] for r in records) >= 6
    summary = capsys.readouterr().out
    assert "accuracy" in summary and "tokens / problem" in summary and "problems / s" in summary
    assert not list(tmp_path.glob(".results.jsonl.*"))  # no temporary file left behind


def test_resume_searches_only_what_is_missing(toy_file, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    main(["--problem-file", str(toy_file), "--out", str(out), "--limit", "3", *FAST])
    first = read_jsonl(out)
    assert len(first) == 3
    capsys.readouterr()
    main(["--problem-file", str(toy_file), "--out", str(out), "--resume", *FAST])
    second = read_jsonl(out)
    assert second[:3] == first and len(second) == 7
    table = {k.strip(): v.strip() for k, v in (line.rsplit("  ", 1) for line in capsys.readouterr().out.splitlines()
                                                if "  " in line)}
    assert table["searched in this run"] == "4" and table["problems"] == "7"
    main(["--problem-file", str(toy_file), "--out", str(out), "--resume", *FAST])
    assert read_jsonl(out) == second


@pytest.mark.parametrize("algorithm", ["mcts_star", "beam", "self_consistency", "greedy"])
def test_every_algorithm_runs_from_the_command_line(toy_file, tmp_path, algorithm):
    out = tmp_path / f"{algorithm}.jsonl"
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--algorithm", algorithm, *FAST]) == 0
    assert {r["algorithm"] for r in read_jsonl(out)} == {algorithm}


def test_trees_out_dumps_every_tree(toy_file, tmp_path):
    trees = tmp_path / "trees"
    main(["--problem-file", str(toy_file), "--out", str(tmp_path / "r.jsonl"), "--trees-out", str(trees), *FAST])
    files = sorted(trees.glob("*.json"))
    assert len(files) == 7
    tree = json.loads(files[0].read_text())
    assert tree["id"] == "arith-11-0" and tree["nodes"][0]["id"] == 0


def test_rollout_trees_from_the_command_line_dump_and_read_back(toy_file, tmp_path):
    from mcts.trees import TreeRecord

    trees = tmp_path / "trees"
    assert main(["--problem-file", str(toy_file), "--out", str(tmp_path / "r.jsonl"), "--trees-out", str(trees),
                 "--expansion", "rollout", "--leaves-per-tree", "2", *FAST]) == 0
    for path in sorted(trees.glob("*.json")):
        record = TreeRecord.from_json(json.loads(path.read_text()), path.name)
        finished = [n for n in record.nodes if n.answer is not None]
        assert finished and all(n.visits >= 1 for n in finished)  # every rollout ended in a backed-up answer


def test_a_problem_without_gold_is_searched_and_not_graded(tmp_path):
    path = tmp_path / "nogold.jsonl"
    path.write_text(json.dumps({"problem": "3 + 4 * 2"}) + "\n")
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(path), "--out", str(out), *FAST]) == 0
    [record] = read_jsonl(out)
    assert record["correct"] is None and record["gold"] is None and record["answer"] == "11"


@pytest.mark.parametrize("content, expected", [
    ('{"problem": "1 + 2", "answer": 3}\n{"problem": "3 + 4"\n', r"bad.jsonl:2: malformed JSON"),
    ('{"problem": "1 + 2", "answer": 3}\n{"text": "3 + 4"}\n', r"bad.jsonl:2: field 'problem'"),
    ('', r"empty"),
])
def test_bad_problem_files_fail_cleanly(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(path), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert not out.exists() and not list(tmp_path.glob(".r.jsonl.*"))


def test_missing_file_and_bad_settings_fail_cleanly(tmp_path, capsys, toy_file):
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(tmp_path / "nope.jsonl"), "--out", str(out), *FAST]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--budget-tokens", "0", *FAST]) == 2
    assert "--budget-tokens" in capsys.readouterr().err
    assert main(["--problem-file", str(toy_file), "--out", str(out), *FAST, "--simulations", "0"]) == 2
    assert "--simulations" in capsys.readouterr().err
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--model", str(tmp_path / "no-model")]) == 2
    assert "no-model" in capsys.readouterr().err
    assert not out.exists()


def test_resume_from_a_corrupt_results_file_fails_cleanly(toy_file, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--limit", "1", *FAST]) == 0
    corrupt = out.read_text() + "not json\n"
    out.write_text(corrupt)
    capsys.readouterr()
    assert main(["--problem-file", str(toy_file), "--out", str(out), "--resume", *FAST]) == 2
    assert "r.jsonl:2" in capsys.readouterr().err
    assert out.read_text() == corrupt  # untouched


def test_the_oracle_refuses_real_maths(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code = main(["--problem-file", str(DATA / "math500.jsonl"), "--limit", "2", "--out", str(out), *FAST])
    assert code == 2 and "toy arithmetic world" in capsys.readouterr().err and not out.exists()


def test_module_entry_point_runs(toy_file, tmp_path):
    out = tmp_path / "r.jsonl"
    done = subprocess.run([sys.executable, "-m", "mcts.search", "--problem-file", str(toy_file), "--out", str(out),
                           "--limit", "2", *FAST], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(out)) == 2 and "accuracy" in done.stdout


def test_vllm_engine_flags_need_the_vllm_backend(tmp_path, capsys):
    from treesearch.cli import main
    from treesearch.loaders import load_proposer

    problems = tmp_path / "p.jsonl"
    problems.write_text('{"problem": "1 + 2", "answer": "3"}\n')
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(problems), "--model", "tiny", "--tensor-parallel-size", "2",
                 "--out", str(out)]) == 2
    assert "vLLM engine options need --backend vllm" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="need --backend vllm"):
        load_proposer("tiny", engine_options={"dtype": "float16"})
