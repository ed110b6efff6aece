"""Smoke tests of benchmarks/tree_throughput.py on tiny settings: behaviour only, never timings."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from mcts.core import BYTES_PER_NODE, native

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tree_throughput.py"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None  # the plots are optional (not a test dependency)
KEYS = {"backend", "batch", "simulations", "actions", "sims_per_s", "bytes_per_node", "peak_mem_mb", "seconds",
        "ratio_vs_mctx", "skipped"}
TINY = ["--batch", "2", "--simulations", "4", "--actions", "4", "--repeats", "1", "--min-time", "0", "--no-mctx"]


def _script(name: str):
    """benchmarks/NAME.py loaded as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tree_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _host_backends() -> list[str]:
    return [b for b in native.available_backends() if b != "cuda"]


def _json_rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_rows_of_every_backend(bench, capsys):
    backends = _host_backends()
    assert bench.main([*TINY, "--json", "--backends", ",".join(backends)]) == 0
    captured = capsys.readouterr()
    rows = _json_rows(captured.out)
    assert [r["backend"] for r in rows] == backends
    for r in rows:
        assert KEYS <= r.keys()
        assert (r["batch"], r["simulations"], r["actions"]) == (2, 4, 4)
        assert r["skipped"] is None and r["sims_per_s"] > 0 and r["repeats"] >= 1
        assert r["bytes_per_node"] == BYTES_PER_NODE
        assert r["bytes_per_tree"] >= BYTES_PER_NODE * (1 + 4 * 4)
    assert "sims/s" in captured.err  # the table goes to stderr with --json


def test_capped_reference_is_reported_skipped(bench, capsys):
    argv = [*TINY, "--json", "--backends", "numpy", "--batch", "1,2", "--numpy-max-work", "20"]
    assert bench.main(argv) == 0
    rows = _json_rows(capsys.readouterr().out)
    assert [(r["batch"], r["skipped"] is None) for r in rows] == [(1, True), (2, False)]
    assert "capped" in rows[1]["skipped"] and rows[1]["sims_per_s"] is None


def test_table(bench, capsys):
    assert bench.main([*TINY, "--backends", "numpy", "--actions", "2,3"]) == 0
    out = capsys.readouterr().out
    assert "sims/s" in out and "cores" in out
    assert len([line for line in out.splitlines() if line.startswith("numpy")]) == 2


def test_search_quality_runs_every_algorithm_on_the_scripted_policy(capsys):
    module = _script("search_quality")
    assert module.main(["--policies", "scripted", "--prm", "oracle", "--ops", "2-3", "--problems", "4",
                        "--simulations", "4", "--samples", "2", "--beam-widths", "2", "--plot", "", "--json"]) == 0
    out = capsys.readouterr().out
    assert "problem set 0: the search defaults" in out  # a set that choices were made on says so
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {r["algorithm"] for r in rows} == {"greedy", "best_of_n", "self_consistency",
                                               "weighted_self_consistency", "beam", "mcts_star", "uct", "puct"}
    greedy = next(r for r in rows if r["algorithm"] == "greedy")
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["tokens_per_problem"] > 0
        # the paired difference from greedy, on the same problems
        assert r["vs_greedy"] == pytest.approx(r["accuracy"] - greedy["accuracy"])
        assert r["vs_greedy_low"] <= r["vs_greedy"] + 1e-12 and r["vs_greedy"] <= r["vs_greedy_high"] + 1e-12
        # a candidate right at every step states the right answer, so it is also counted by pass@k
        assert 0 <= r["solved_at_k"] <= r["pass_at_k"]


def test_solved_at_k_counts_a_right_answer_only_when_every_step_is_right():
    from mcts.answers import SearchResult

    module = _script("search_quality")
    problem = {"problem": "2 * 3 + 4", "answer": 10}
    right = ["2 * 3 = 6, so 6 + 4\n", "6 + 4 = 10\n", "The answer is \\boxed{10}.\n"]
    lucky = ["2 * 3 = 5, so 5 + 4\n", "5 + 4 = 10\n", "The answer is \\boxed{10}.\n"]  # a slip, then another

    def result(*traces):
        return SearchResult(answer="10", trace="", value=1.0, tokens=1, simulations=1, policy_calls=1,
                            scorer_calls=1, seconds=0.0, num_candidates=len(traces), candidate_answers=["10"],
                            candidates=[{"answer": "10", "value": 1.0, "steps": t} for t in traces])

    assert module.solved_by(result(right, lucky), problem)
    assert not module.solved_by(result(lucky), problem) and not module.solved_by(result(), problem)


def test_search_quality_tree_variants_may_change_any_field(capsys):
    module = _script("search_quality")
    assert module.main(["--policies", "scripted", "--prm", "oracle", "--ops", "2-2", "--problems", "3",
                        "--simulations", "4", "--algorithms", "mcts_star", "--tree-variant", "wide:width=3,leaf_value=max",
                        "--plot", "", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["algorithm"] for r in rows] == ["mcts_star", "mcts_star (wide)"]
    assert all(r["vs_greedy"] is None for r in rows)  # no greedy run, nothing to pair with


def test_search_quality_pairs_every_row_against_a_named_run(capsys):
    module = _script("search_quality")
    argv = ["--policies", "scripted", "--prm", "oracle", "--ops", "2-3", "--problems", "6", "--simulations", "4",
            "--samples", "4", "--algorithms", "greedy,best_of_n,mcts_star", "--plot", "", "--json"]
    assert module.main([*argv, "--versus", "best_of_n:N=4"]) == 0
    out = capsys.readouterr().out
    assert "vs best_of_n:N=4 (paired)" in out
    rows = {r["algorithm"]: r for r in map(json.loads, filter(lambda line: line.startswith("{"), out.splitlines()))}
    assert rows["best_of_n"]["vs_reference"] is None
    for name in ("greedy", "mcts_star"):
        r = rows[name]
        assert r["vs_reference"] == pytest.approx(r["accuracy"] - rows["best_of_n"]["accuracy"])
        assert r["vs_reference_low"] <= r["vs_reference"] + 1e-12 <= r["vs_reference_high"] + 2e-12
    assert rows["mcts_star"]["simulations_per_problem"] <= 4 and rows["greedy"]["simulations_per_problem"] == 1
    with pytest.raises(SystemExit, match="'best_of_n:N=16' is not a run of this invocation"):
        module.main([*argv, "--versus", "best_of_n:N=16"])


def test_search_quality_temperature_reaches_every_sampled_algorithm(capsys):
    module = _script("search_quality")
    args = module.make_parser().parse_args(["--algorithms", "greedy,best_of_n,beam,mcts_star", "--temperature", "0.7",
                                            "--simulations", "4", "--samples", "2", "--beam-widths", "2",
                                            "--tree-variant", "g:greedy_child=true"])
    temps = {name: config.temperature for name, _, config in module._settings(args)}
    assert temps == {"greedy": 1.0, "best_of_n": 0.7, "beam": 0.7, "mcts_star": 0.7, "mcts_star (g)": 0.7}
    assert module.main(["--policies", "scripted", "--prm", "oracle", "--ops", "2-2", "--problems", "3",
                        "--simulations", "4", "--samples", "2", "--algorithms", "greedy,best_of_n",
                        "--temperature", "0.5", "--plot", "", "--json"]) == 0
    out = capsys.readouterr().out
    assert "sampling temperature: 0.5" in out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["temperature"] for r in rows] == [1.0, 0.5]


def test_prm_best_of_n_sweep_on_a_random_prm(tmp_path, random_llama, capsys):
    from prm.model import PRM

    random_llama(512, 1, tmp_path / "backbone")
    PRM.from_backbone(tmp_path / "backbone", device="cpu", seed=0).save_pretrained(tmp_path / "prm")
    module = _script("prm_best_of_n")
    png = tmp_path / "p.png" if HAVE_MATPLOTLIB else None
    argv = ["--prm", str(tmp_path / "prm"), "--pprm", "", "--n", "4", "--problems", "3", "--dev-problems", "3",
            "--slip-rates", "0,0.3", "--min-ops", "2", "--max-ops", "3", "--plot", str(png or ""), "--json"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["policy"] for r in rows] == ["scripted 0", "scripted 0.3"]
    for r in rows:
        assert r["problems"] == 3 and r["n"] == 4
        assert {"majority", "pass@4", "prm_best_min", "prm_vote_mean"} <= r["accuracy"].keys()
        assert "ebc" not in r["accuracy"]
    # a slip-free scripted policy writes the canonical solution every time: every rule is right
    assert all(v == 1.0 for v in rows[0]["accuracy"].values())
    assert "PRM best-of-4" in out and "chosen on the development split" in out
    # the aggregate is chosen on problems that the reported accuracy does not use
    assert all(r["chosen"].startswith("prm_best_") and r["dev_problems"] >= 1 for r in rows)
    assert png is None or png.stat().st_size > 0


def test_prm_benchmarks_never_report_on_the_seed_the_toy_prm_was_designed_on(capsys):
    """The toy PRM's design was chosen on DESIGN_SEED's problems: the benchmarks' default seeds
    differ from it, and a reserved seed is refused with one line."""
    from prm import toy

    module = _script("prm_best_of_n")
    args = module.make_parser().parse_args([])
    used = {args.seed, args.seed + module.DEV_SEED_OFFSET}
    assert not used & set(toy.RESERVED_SEEDS.values()), used
    for seed in toy.RESERVED_SEEDS.values():
        assert module.main(["--seed", str(seed), "--plot", ""]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"--seed {seed} is the seed of" in err
    # search_quality draws its problems from seeds 1000 * a + b (a-b operations) of each problem set
    sq = _script("search_quality")
    draws = {sq.problem_draw_seed(a, b, s) for a in range(1, 9) for b in range(a, 9) for s in range(10)}
    assert not draws & set(toy.RESERVED_SEEDS.values())
    assert len(draws) == 36 * 10  # no two problem sets share a draw


def test_search_quality_problem_sets_hold_different_problems(capsys):
    module = _script("search_quality")

    def problems(*extra):
        args = module.make_parser().parse_args(["--problems", "8", "--per-ops", *extra])
        return [p["problem"] for p in module._problems(1, 4, args)]

    assert problems() == problems("--problem-seed", "0")
    assert len(set(problems()) & set(problems("--problem-seed", "1"))) <= 2  # 1-op problems may repeat by chance
    assert module.main(["--problem-seed", "-1", "--plot", ""]) == 2
    assert "--problem-seed must be >= 0" in capsys.readouterr().err
    assert module.main(["--policies", "scripted", "--prm", "oracle", "--ops", "2-2", "--problems", "2",
                        "--algorithms", "greedy", "--problem-seed", "3", "--plot", "", "--json"]) == 0
    out = capsys.readouterr().out
    assert "problem set: 3" in out
    assert [json.loads(x)["problem_seed"] for x in out.splitlines() if x.startswith("{")] == [3]


def test_selftrain_curve_quick_run_prints_a_row_per_iteration(tmp_path, capsys):
    module = _script("selftrain_curve")
    png = tmp_path / "curve.png" if HAVE_MATPLOTLIB else None
    argv = ["--loops", "rest_mcts", "--iterations", "1", "--quick", "--runs-dir", str(tmp_path / "runs"),
            "--plot", str(png or ""), "--json", "--no-progress", "--set", "threads=1"]
    assert module.main(argv) == 0

    def printed() -> tuple[list[dict], list[dict]]:
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        return [r for r in lines if "table" not in r], [r for r in lines if r.get("table") == "harvest"]

    rows, harvest = printed()
    assert [(r["loop"], r["iteration"]) for r in rows] == [("rest_mcts", 0), ("rest_mcts", 1)]
    assert all(0 <= r["greedy_acc"] <= 1 and r["prm_auc"] is not None for r in rows)
    assert (tmp_path / "runs" / "rest_mcts" / "iter_1" / "metrics.json").exists()
    assert png is None or png.stat().st_size > 0
    # the harvest of iteration 1, split by operations: the quick run's 16 one-operation problems
    assert [(r["iteration"], r["ops"], r["problems"]) for r in harvest] == [(1, 1, 16)]
    assert harvest[0]["sound"] <= harvest[0]["solved"] <= harvest[0]["solutions"] and harvest[0]["tokens"] > 0
    # a finished run folder is read back, nothing run again
    assert module.main(["--runs", str(tmp_path / "runs" / "rest_mcts"), "--json", "--plot", "", "--heldout", "0"]) == 0
    assert printed() == (rows, harvest)
    assert module.main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "not a selftrain run folder" in capsys.readouterr().err

    # --heldout: the same run relabelled as ReST-EM has the same held-out accuracy, so every paired
    # difference is exactly 0; the fresh problems are none of the run's training problems
    twin = tmp_path / "runs" / "rest_em"
    shutil.copytree(tmp_path / "runs" / "rest_mcts", twin)
    saved = json.loads((twin / "config.json").read_text())
    saved["config"]["algorithm"] = "rest_em"
    # as a run saved before these search fields existed: the run's own defaults fill them, not SearchConfig's
    for key in ("expansion", "logprob_weight", "arm_gate", "widen_unseen"):
        del saved["config"]["search"][key]
    (twin / "config.json").write_text(json.dumps(saved))
    runs = f"{tmp_path / 'runs' / 'rest_mcts'},{twin}"
    original, _ = module.run_config(tmp_path / "runs" / "rest_mcts")
    assert module.run_config(twin)[0].search == original.search
    assert (original.search.expansion, original.search.logprob_weight) == ("step", 0.0)
    assert (original.search.arm_gate, original.search.widen_unseen) == ("gated", None)
    paired_png = tmp_path / "paired.png" if HAVE_MATPLOTLIB else None
    assert module.main(["--runs", runs, "--heldout", "6", "--heldout-ops", "1-2", "--heldout-search", "2", "--json",
                        "--plot", str(paired_png or ""), "--no-progress"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    heldout = [r for r in lines if r.get("table") == "heldout"]
    searched = [r for r in lines if r.get("table") == "heldout_search"]
    # each iteration's own search on the first 2 problems per number of operations, against greedy there
    assert [(r["loop"], r["iteration"], r["ops"], r["problems"]) for r in searched] == [
        (loop, k, o, n) for loop in ("rest_mcts", "rest_em") for k in (0, 1) for o, n in (("1", 2), ("2", 2), ("all", 4))]
    assert all(r["versus"] == "greedy" and r["diff_low"] <= r["diff"] <= r["diff_high"] for r in searched)
    assert [r["accuracy"] for r in searched[:6]] == [r["accuracy"] for r in searched[6:]]  # the twin searches alike
    mine = [r for r in heldout if r["loop"] == "rest_mcts"]
    assert [(r["iteration"], r["ops"]) for r in mine] == [(k, o) for k in (0, 1) for o in ("1", "2", "all")]
    assert all(r["diff"] == r["diff_low"] == r["diff_high"] == 0.0 and r["versus"] == "rest_em" for r in mine)
    assert [r["accuracy"] for r in mine] == [r["accuracy"] for r in heldout if r["loop"] == "rest_em"]
    assert all(r["low"] <= r["accuracy"] <= r["high"] for r in heldout)
    assert [r["problems"] for r in mine[:3]] == [6, 6, 12]
    assert paired_png is None or paired_png.stat().st_size > 0
    trained = module.training_problems(tmp_path / "runs" / "rest_mcts")
    fresh = module.heldout_problems(6, range(1, 3), trained)
    searched = tmp_path / "runs" / "rest_mcts" / "iter_1" / "search" / "results.jsonl"
    assert trained == {json.loads(line)["problem"] for line in searched.read_text().splitlines()}
    assert len(fresh) == 12 and not trained & {p["problem"] for p in fresh}
    assert fresh[:3] == module.heldout_problems(3, range(1, 2), trained)  # a larger N extends a smaller one
    assert module.main(["--runs", runs, "--heldout", "6", "--heldout-ops", "3-1"]) == 2
    assert "--heldout-ops must be LO-HI" in capsys.readouterr().err
    assert module.main(["--runs", runs, "--heldout", "0", "--heldout-search", "2", "--plot", ""]) == 2
    assert "give --heldout N > 0" in capsys.readouterr().err
    metrics = twin / "iter_1" / "metrics.json"
    moved = dict(json.loads(metrics.read_text()), policy=str(tmp_path / "gone"))
    metrics.write_text(json.dumps(moved))
    assert module.main(["--runs", runs, "--heldout", "6", "--plot", "", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{metrics}: its policy folder {tmp_path / 'gone'} is missing" in err


def test_prm_throughput_incremental_reads_each_token_once(capsys):
    module = _script("prm_throughput")
    assert module.main(["--quick", "--depths", "1,6", "--problems", "2", "--width", "2", "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [(r["depth"], r["mode"]) for r in rows] == [(d, m) for d in (1, 6) for m in module.MODES]
    for r in rows:
        assert r["steps"] == 2 * 2 * r["depth"] and r["steps_per_s"] > 0
        if r["mode"] == "full":  # the path's prefixes again and again
            assert r["read_per_unique"] > (1.5 if r["depth"] == 6 else 1.0)
        else:  # the head once, every step once
            assert r["tokens_read"] == r["unique_tokens"]
    assert "read/unique" in captured.err
