"""`mcts report` and `selftrain report` without a browser: the figures, the trees as the page reads
them, the page's self-containment, and the one-line refusals of bad input.
(tests/test_report_browser.py opens the pages in headless Chromium.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcts.envs.arith_steps import label_step
from mcts.grading import is_equivalent
from mcts.problems import load_problems
from mcts.trees import TREE_FORMAT
from treesearch.report.page import json_block
from treesearch.report.runs import (Z_95, breakdown, comparison, load_run, problem_rows, summary, toy_operations,
                                    paired_difference, tree_view, wilson_interval)
from treesearch.results import tree_file_name

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "examples" / "toy_arith.jsonl"
MATH500 = ROOT / "data" / "math500.jsonl"


def _search(out: Path, *extra: str) -> None:
    from treesearch.cli import main

    assert main(["--problem-file", str(TOY), "--out", str(out), "--model", "scripted", *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a: 24 toy problems searched with trees (scripted policy, oracle scorer); b: a smaller search."""
    folder = tmp_path_factory.mktemp("runs")
    _search(folder / "a.jsonl", "--prm", "oracle", "--trees-out", str(folder / "trees"))
    _search(folder / "b.jsonl", "--prm", "oracle", "--simulations", "8")
    return folder


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcts.cli", "report", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


# ---------------------------------------------------------------------------------------------------
# Figures


@pytest.mark.parametrize("correct, n", [(0, 10), (10, 10), (23, 24), (7, 31), (1, 1)])
def test_wilson_bounds_solve_the_score_equation(correct, n):
    """Each bound p solves (p_hat - p)^2 = z^2 p (1 - p) / n, the low one below p_hat, the high one above."""
    low, high = wilson_interval(correct, n)
    p_hat = correct / n
    for p in (low, high):
        assert (p_hat - p) ** 2 == pytest.approx(Z_95 ** 2 * p * (1 - p) / n, abs=1e-12)
    assert 0.0 <= low <= p_hat <= high <= 1.0 and low < high
    assert wilson_interval(0, 0) is None


def test_summary_and_breakdown_count_the_records(runs):
    records = _records(runs / "a.jsonl")
    rows = problem_rows(load_run(runs / "a.jsonl", trees=runs / "trees"))
    s = summary(rows)
    assert s["problems"] == 24 and s["graded"] == 24 and s["correct"] == sum(r["correct"] for r in records)
    assert s["tokens"] == sum(r["tokens"] for r in records)
    assert s["ci"] == wilson_interval(s["correct"], 24)
    [by_ops] = breakdown(rows)
    assert by_ops["field"] == "operations"
    problems = {p.id: p.problem for p in load_problems(TOY)}
    expected: dict[int, list] = {}
    for r in records:
        expected.setdefault(toy_operations(problems[r["id"]]), []).append(r["correct"])
    assert [(g["value"], g["problems"], g["correct"]) for g in by_ops["rows"]] == [
        (k, len(v), sum(v)) for k, v in sorted(expected.items())]


def test_math500_breaks_down_by_level_and_subject(tmp_path):
    problems = load_problems(MATH500, limit=30)
    records = [{"id": p.id, "answer": p.answer if i % 3 else "nope", "gold": p.answer, "correct": bool(i % 3),
                "tokens": 10 * i, "simulations": 1, "value": 0.5, "trace": "", "problem_sha256": p.sha256}
               for i, p in enumerate(problems)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = problem_rows(load_run(tmp_path / "r.jsonl", problem_file=MATH500))
    groups = {g["field"]: g["rows"] for g in breakdown(rows)}
    assert set(groups) == {"level", "subject"}
    for field in ("level", "subject"):
        counts: dict = {}
        for p, r in zip(problems, records):
            counts.setdefault(p.meta[field], []).append(r["correct"])
        assert {g["value"]: (g["problems"], g["correct"]) for g in groups[field]} == {
            k: (len(v), sum(v)) for k, v in counts.items()}
    assert [g["value"] for g in groups["level"]] == sorted(g["value"] for g in groups["level"])


def test_comparison_lists_the_flips_both_ways(runs):
    a, b = _records(runs / "a.jsonl"), _records(runs / "b.jsonl")
    c = comparison(problem_rows(load_run(runs / "a.jsonl")), problem_rows(load_run(runs / "b.jsonl")), "b")
    b_by_id = {r["id"]: r for r in b}
    up = [r["id"] for r in a if not r["correct"] and b_by_id[r["id"]]["correct"]]
    down = [r["id"] for r in a if r["correct"] and not b_by_id[r["id"]]["correct"]]
    assert [f["id"] for f in c["wrong_to_right"]] == up and [f["id"] for f in c["right_to_wrong"]] == down
    assert c["shared"] == 24 and c["a"]["tokens"] == sum(r["tokens"] for r in a)
    assert c["b"]["tokens"] == sum(r["tokens"] for r in b)


# ---------------------------------------------------------------------------------------------------
# Trees as the page reads them


def test_chosen_path_spells_the_chosen_solution(runs):
    run = load_run(runs / "a.jsonl", trees=runs / "trees")
    whole = 0
    for record in run.records:
        view = tree_view(run.trees[record["id"]], record)
        steps = "".join(view["step"][i] for i in view["chosen"])
        assert record["trace"].startswith(steps)
        if view["chosen_whole"]:
            whole += 1
            end = view["chosen"][-1]
            assert steps == record["trace"] and view["terminal"][end] and view["answer"][end] == record["answer"]
    assert whole >= 20  # the scripted policy's chosen solutions are found in the tree, not completed after it


def test_answers_are_graded_and_toy_steps_labelled(runs):
    run = load_run(runs / "a.jsonl", trees=runs / "trees")
    labels = []
    for record in run.records:
        tree = run.trees[record["id"]]
        view = tree_view(tree, record)
        for i, node in enumerate(tree.nodes):
            if node.step is None:
                assert view["label"][i] is None
                continue
            assert view["label"][i] == label_step(node.step, record["gold"])
            labels.append(view["label"][i])
            if node.terminal and node.answer is not None:
                assert view["right"][i] == is_equivalent(node.answer, record["gold"])
    # every tree's steps were checked, right and wrong ones among them
    assert len(labels) > 2 * len(run.records) and set(labels) == {0, 1}


# ---------------------------------------------------------------------------------------------------
# The page and the command


def test_the_page_is_one_file_that_fetches_nothing(runs, tmp_path):
    out = tmp_path / "report.html"
    done = _report("--results", str(runs / "a.jsonl"), "--trees", str(runs / "trees"), "--compare",
                   str(runs / "b.jsonl"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    html = out.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""<(script|link|img|iframe)[^>]*\s(src|href)=["'](?!data:)""", html)
    assert not re.search(r"\burl\(", html) and "@import" not in html
    data = _page_data(html)
    assert [r["id"] for r in data["rows"]] == [r["id"] for r in _records(runs / "a.jsonl")]
    assert data["oracle"] is True and len(data["compare"]["other"]) == 24
    assert len(re.findall(r'<script type="application/json" id="tree-\d+">', html)) == 24
    assert "ORACLE: reads the gold answer" in html and "95% CI" in html and "by operations" in html


def test_a_scorer_that_is_not_the_oracle_is_not_flagged(tmp_path):
    _search(tmp_path / "g.jsonl", "--algorithm", "greedy")
    html_out = tmp_path / "g.html"
    assert _report("--results", str(tmp_path / "g.jsonl"), "--out", str(html_out)).returncode == 0
    html = html_out.read_text()
    assert "ORACLE" not in html and "none (the algorithm scores nothing)" in html
    assert _page_data(html)["oracle"] is False


def test_step_text_cannot_leave_its_data_block():
    hostile = "</script><script>window.pwned = 1</script><!-- <script>"
    block = json_block("tree-0", {"step": [None, hostile]})
    inner = block[len('<script type="application/json" id="tree-0">'):-len("</script>")]
    assert "<" not in inner and json.loads(inner)["step"][1] == hostile


def test_a_tree_of_another_format_is_refused(runs, tmp_path):
    trees = tmp_path / "trees"
    trees.mkdir()
    for path in (runs / "trees").iterdir():
        (trees / path.name).write_bytes(path.read_bytes())
    first = _records(runs / "a.jsonl")[3]["id"]
    path = trees / tree_file_name(first)
    tree = json.loads(path.read_text())
    path.write_text(json.dumps({**tree, "format": TREE_FORMAT + 1}))
    done = _report("--results", str(runs / "a.jsonl"), "--trees", str(trees), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2 and not (tmp_path / "r.html").exists()
    [line] = done.stderr.strip().splitlines()
    assert str(path) in line and "field 'format'" in line and f"reads tree format {TREE_FORMAT}" in line


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "bad-line", "no-trees-folder", "trees-of-others",
                                  "compare-shares-nothing", "out-folder", "out-is-input"])
def test_bad_input_is_one_line_naming_the_flag(runs, tmp_path, case):
    results, out = str(runs / "a.jsonl"), tmp_path / "r.html"
    args = {"missing": ["--results", str(tmp_path / "nope.jsonl")],
            "folder": ["--results", str(tmp_path)],
            "empty": ["--results", str(tmp_path / "empty.jsonl")],
            "bad-line": ["--results", str(tmp_path / "bad.jsonl")],
            "no-trees-folder": ["--results", results, "--trees", str(tmp_path / "nope")],
            "trees-of-others": ["--results", results, "--trees", str(tmp_path / "other-trees")],
            "compare-shares-nothing": ["--results", results, "--compare", str(tmp_path / "other.jsonl")],
            "out-folder": ["--results", results, "--out", str(tmp_path)],
            "out-is-input": ["--results", str(tmp_path / "copy.jsonl"), "--out", str(tmp_path / "copy.jsonl")]}[case]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "tokens": 1}\n{"id": \n')
    (tmp_path / "other-trees").mkdir()
    (tmp_path / "other.jsonl").write_text(json.dumps({"id": "elsewhere", "answer": None, "correct": None,
                                                      "tokens": 0}) + "\n")
    (tmp_path / "copy.jsonl").write_text((runs / "a.jsonl").read_text())
    done = _report(*args, *([] if "--out" in args else ["--out", str(out)]))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    flag = {"no-trees-folder": "--trees", "trees-of-others": "--trees", "compare-shares-nothing": "--compare",
            "out-folder": "--out", "out-is-input": "--out"}.get(case, "--results")
    assert line.startswith(f"error: {flag} "), line
    assert not out.exists()
    assert (tmp_path / "copy.jsonl").read_text() == (runs / "a.jsonl").read_text()


def test_mcts_command_keeps_info_and_forwards_from_mcts_cli(capsys):
    from treesearch.commands import main

    assert main(["info"]) == 0
    assert "tree backends available" in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "mcts.cli", "report", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--results" in done.stdout and "--compare" in done.stdout


# ---------------------------------------------------------------------------------------------------
# selftrain report


def _fake_run(folder: Path, runs: Path) -> None:
    """A run folder as `selftrain run` lays it out (selftrain.run), its search stage holding the records
    and trees of a real search."""
    from mcts.files import write_json_atomic, write_jsonl_atomic

    run = folder / "toy"
    write_json_atomic(run / "config.json", {"fingerprint": "x", "config": {"algorithm": "rest_mcts", "iterations": 2}})
    trees = {p.name: json.loads(p.read_text()) for p in (runs / "trees").iterdir()}
    records = [{**r, "problem": trees[tree_file_name(r["id"])]["problem"], "tree": trees[tree_file_name(r["id"])]}
               for r in _records(runs / "a.jsonl")]
    figures = [(0.25, None, 0.5, 0, 0, 0, 1.5), (0.5, 0.625, 0.75, 12, 30, 4000, 9.0),
               (0.625, 0.75, 0.8, 20, 44, 5000, 8.0)]
    for k, (greedy, search, auc, traces, values, tokens, seconds) in enumerate(figures):
        write_json_atomic(run / f"iter_{k}" / "metrics.json", {
            "iteration": k, "greedy_acc": greedy, "search_acc": search, "prm_auc": auc, "harvested_traces": traces,
            "harvested_values": values, "tokens": tokens, "seconds": seconds, "policy": "p", "prm": f"prm-{k}"})
        stages = {"evaluate": {"greedy_acc": greedy, "seconds": 1.0}}
        if k:
            stages = {"search": {"problems": 24, "tokens": tokens, "seconds": 3.25}, "harvest": {"sft_traces": traces,
                                                                                              "seconds": 0.5}, **stages}
            write_jsonl_atomic(run / f"iter_{k}" / "search" / "results.jsonl", records)
        write_json_atomic(run / f"iter_{k}" / "stages.json", stages)


def test_selftrain_report_plots_the_metrics_and_links_each_search(runs, tmp_path):
    from selftrain.cli import main

    _fake_run(tmp_path, runs)
    assert main(["report", "toy", "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    page = (tmp_path / "toy" / "report.html").read_text()
    for k in (1, 2):
        report = tmp_path / "toy" / f"iter_{k}" / "search" / "report.html"
        assert report.exists() and f'href="iter_{k}/search/report.html"' in page
        html = report.read_text()
        assert len(_page_data(html)["rows"]) == 24 and f"the PRM of iteration {k - 1}: prm-{k - 1}" in html
        assert len(re.findall(r'id="tree-\d+"', html)) == 24
    points = re.findall(r'data-series="([a-z_]+)" data-x="(\d+)" data-y="([0-9.]+)"', page)
    metrics = [json.loads((tmp_path / "toy" / f"iter_{k}" / "metrics.json").read_text()) for k in range(3)]
    expected = {(key, str(m["iteration"]), str(m[key])) for m in metrics for key in
                ("greedy_acc", "search_acc", "greedy_subset_acc", "prm_auc", "harvested_traces", "harvested_values",
                 "tokens", "seconds") if m.get(key) is not None}
    assert set(points) == expected
    assert "<td>search</td><td>3.25</td>" in page and "sft_traces 12" in page


def test_selftrain_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from selftrain.cli import main

    (tmp_path / "notarun").mkdir()
    assert main(["report", str(tmp_path / "notarun")]) == 2
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "not a selftrain run folder" in lines[0] and "no such run folder" in lines[1]


@pytest.mark.slow
def test_selftrain_report_of_a_real_run(tmp_path):
    """One quick iteration of ReST-MCTS* (the settings of tests/test_selftrain.py), then its report."""
    from mcts.envs.tiny_models import ensure_toy_policy

    policy = ensure_toy_policy(quick=True, progress=False)
    args = ["run", "--runs-dir", str(tmp_path), "--name", "small", "--iterations", "1", "--policy", str(policy),
            "--train-problems", "12", "--eval-problems", "12", "--threads", "1", "--no-progress",
            "--set", "eval_search_problems=4", "--set", "batch=6", "--set", "prm_eval_traces=24",
            "--set", "search.simulations=4", "--set", "search.width=2", "--set", "max_ops=1",
            "--set", "sft.epochs=2", "--set", "prm_train.epochs=1"]
    done = subprocess.run([sys.executable, "-m", "selftrain.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, "-m", "selftrain.cli", "report", str(tmp_path / "small"), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "small" / "report.html").read_text()
    stages = json.loads((tmp_path / "small" / "iter_1" / "stages.json").read_text())
    assert all(f"<td>{name}</td>" in page for name in stages)
    search = tmp_path / "small" / "iter_1" / "search" / "report.html"
    rows = _page_data(search.read_text())["rows"]
    assert [r["id"] for r in rows] == [r["id"] for r in _records(search.with_name("results.jsonl"))]


def test_paired_difference_resamples_problems_not_methods():
    reference = np.array([[1, 0] * 50], np.float64)  # one seed, right on half of 100 problems
    assert paired_difference(reference, reference, 500) == (0.0, 0.0, 0.0)
    better = np.ones((2, 100))  # two seeds, right everywhere
    diff, low, high = paired_difference(better, reference, 2000)
    assert diff == 0.5 and 0.39 < low < 0.5 < high < 0.61  # sd of the mean of 100 Bernoulli(0.5): 0.05
    # the same accuracies on disjoint problems: a difference of 0, with an interval that knows it is wide
    shifted = np.array([[0, 1] * 50], np.float64)
    diff, low, high = paired_difference(shifted, reference, 2000)
    assert diff == 0.0 and low < -0.15 and high > 0.15
