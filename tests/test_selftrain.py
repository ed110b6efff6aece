"""selftrain: configuration checks, harvesting from trees, the run folder, and a killed run that
resumes to the same figures as an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcts.files import write_json_atomic
from selftrain.config import ConfigError, RunConfig, fingerprint_of, load_config
from selftrain.harvest import Harvest, balance_by_length, harvest_tree, harvest_trees, read_harvest, write_harvest
from selftrain.rest_em import chain_tree
from selftrain.run import RunContext, RunError, summary_table

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# Configuration


def test_config_defaults_and_overrides():
    config = load_config(None, {"iterations": 2, "name": None}, ["search.simulations=8", "sft.lora=true"])
    assert config.iterations == 2 and config.name == "toy"
    assert config.search.simulations == 8 and config.search.width == 4  # the section's other defaults kept
    assert config.sft.lora is True
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field takes it as the number it means
    config = load_config(None, {}, ["sft.lr=1e-3", "prm_train.lr=2.5E-4"])
    assert config.sft.lr == 1e-3 and config.prm_train.lr == 2.5e-4
    with pytest.raises(ConfigError, match="sft.lr: expected a number, got str '1e-3x'"):
        load_config(None, {}, ["sft.lr=1e-3x"])


def test_config_unknown_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: a\nsearch:\n  simulations: 8\n  simulaton: 3\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:4: search\.simulaton: unknown key"):
        load_config(path)


def test_config_wrong_type_names_file_line_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("iterations: three\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:1: iterations: expected an integer, got str 'three'"):
        load_config(path)
    path.write_text("sft:\n  lora: 1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: sft\.lora: expected true or false"):
        load_config(path)


def test_config_refused_value_and_bad_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algorithm: alphazero\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:1: the run: algorithm='alphazero' is not one of"):
        load_config(path)
    path.write_text("search: [1, 2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, sets=["search.simulations"])
    path.write_text("name: a\nsft_balance: depth\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: the run: sft_balance must be 'none' or 'length'"):
        load_config(path)


def test_cli_rejects_a_bad_config_before_any_work(tmp_path, capsys):
    from selftrain.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(f"runs_dir: {tmp_path / 'runs'}\nprm_train:\n  epochs: -1\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "epochs must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------
# Harvest


def _node(i, parent, depth, step, terminal=False, answer=None):
    return {"id": i, "parent": parent, "depth": depth, "step": step, "terminal": terminal, "answer": answer}


TREE = {"format": 1, "problem": "1 + 2 * 3", "algorithm": "mcts_star", "nodes": [
    _node(0, -1, 0, None),
    _node(1, 0, 1, "2 * 3 = 6, so 1 + 6\n"),
    _node(2, 0, 1, "2 * 3 = 5, so 1 + 5\n"),
    _node(3, 1, 2, "1 + 6 = 7, so 7\n"),
    _node(4, 1, 2, "1 + 6 = 8, so 8\n"),
    _node(5, 3, 3, "The answer is \\boxed{7}.\n", True, "7"),
    _node(6, 4, 3, "The answer is \\boxed{8}.\n", True, "8"),
    _node(7, 2, 2, "The answer is \\boxed{6}.\n", True, "6"),
    _node(8, 2, 2, "1 + 5 = 6, so 6\n"),  # expanded, never finished: no outcome, no target
]}


def test_harvest_tree_infers_labels_values_and_pairs():
    h = harvest_tree(TREE, "7")
    assert [r["steps"][-1] for r in h.sft] == ["The answer is \\boxed{7}.\n"]
    by_end = {r["steps"][-1]: r for r in h.prm}
    assert len(h.prm) == 3  # the three finished solutions; the unfinished branch gives none
    right = by_end["The answer is \\boxed{7}.\n"]
    assert right["labels"] == [1.0, 1.0, 1.0] and right["outcome"] == 1.0
    assert right["values"] == pytest.approx([1 / 3, 2 / 3, 1.0])  # a correct trace climbs to 1
    wrong_late = by_end["The answer is \\boxed{8}.\n"]
    assert wrong_late["labels"] == [1.0, 0.0, 0.0]  # shares its first step with the correct solution
    assert wrong_late["values"][0] == pytest.approx(1 / 3) and wrong_late["values"][1] < 1 / 3
    wrong_early = by_end["The answer is \\boxed{6}.\n"]
    assert wrong_early["labels"] == [0.0, 0.0] and wrong_early["values"] == [0.0, 0.0]
    assert len(h.pairs) == 2 and all(p["chosen"] == right["steps"] for p in h.pairs)
    twice = harvest_trees([TREE, TREE], {TREE["problem"]: "7"})  # a problem drawn twice
    assert len(twice.sft) == 1 and len(twice.prm) == 6


def test_balance_by_length_repeats_rarer_lengths_up_to_a_cap():
    def trace(problem, n):
        return {"problem": problem, "steps": [f"s{i}\n" for i in range(n)]}

    traces = [trace(f"p{i}", 2) for i in range(9)] + [trace("q", 3), trace("r", 3), trace("long", 5)]
    out = balance_by_length(traces, max_repeat=8)
    lengths = [len(t["steps"]) for t in out]
    assert lengths.count(2) == 9  # the most common length stays as it is
    assert lengths.count(3) == 2 * 5  # ceil(9 / 2) copies of each
    assert lengths.count(5) == 8  # ceil(9 / 1) = 9, capped at 8
    assert [t["problem"] for t in out[:9]] == [f"p{i}" for i in range(9)]  # order kept, copies adjacent
    assert balance_by_length([]) == []
    assert balance_by_length(traces[:3]) == traces[:3]  # one length: unchanged
    with pytest.raises(ValueError, match="max_repeat"):
        balance_by_length(traces, max_repeat=0)


def test_harvest_without_gold_or_correct_answer():
    assert harvest_tree(TREE, None).counts()["prm_traces"] == 0
    h = harvest_tree(TREE, "9")
    assert not h.sft and not h.pairs and all(set(r["labels"]) == {0.0} for r in h.prm)


def test_chain_tree_harvest_labels_whole_samples():
    from mcts.policy.base import Prefix
    from mcts.traces import Trace

    good = Trace(0, Prefix("1 + 1", ("1 + 1 = 2, so 2\n", "The answer is \\boxed{2}.\n")), finished=True)
    bad = Trace(0, Prefix("1 + 1", ("1 + 1 = 3, so 3\n", "The answer is \\boxed{3}.\n")), finished=True)
    h = harvest_tree(chain_tree("1 + 1", [good, bad, good]), "2")
    assert len(h.sft) == 1  # duplicates dropped
    assert sorted(r["labels"] for r in h.prm) == [[0.0, 0.0], [1.0, 1.0]]


def test_write_and_read_harvest_round_trip(tmp_path):
    h = harvest_tree(TREE, "7")
    folder = write_harvest(h, tmp_path / "harvest", iteration=1)
    back = read_harvest(folder)
    assert back.sft == h.sft and back.pairs == h.pairs
    assert [v for r in back.prm for v in r["values"]] == pytest.approx([v for r in h.prm for v in r["values"]])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sft_traces"] == 1 and manifest["iteration"] == 1
    empty = read_harvest(write_harvest(Harvest(), tmp_path / "empty"))
    assert empty.sft == [] and empty.prm == [] and empty.pairs == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ---------------------------------------------------------------------------------------------------
# The run folder


def test_run_folder_of_another_config_is_refused_unless_forced(tmp_path):
    RunContext(RunConfig(runs_dir=str(tmp_path), train_problems=8, eval_problems=8, eval_search_problems=0))
    other = RunConfig(runs_dir=str(tmp_path), train_problems=8, eval_problems=8, eval_search_problems=0, seed=1)
    with pytest.raises(RunError, match="another configuration"):
        RunContext(other)
    RunContext(other, force=True)
    # runtime-only fields (iterations, executor) may change between attempts
    RunContext(RunConfig(runs_dir=str(tmp_path), train_problems=8, eval_problems=8, eval_search_problems=0,
                         seed=1, iterations=5))


def test_a_run_saved_before_a_field_existed_resumes(tmp_path):
    """A run folder written before `search.widen_unseen` existed holds a config without it, and a
    fingerprint over that config. The field's default keeps what the run did, so it resumes; a
    saved value that differs is still another configuration."""
    config = RunConfig(runs_dir=str(tmp_path), train_problems=8, eval_problems=8, eval_search_problems=0)
    folder = RunContext(config).folder
    saved = json.loads((folder / "config.json").read_text())["config"]
    del saved["search"]["widen_unseen"]
    write_json_atomic(folder / "config.json", {"fingerprint": fingerprint_of(saved), "config": saved})
    RunContext(config)  # resumes
    saved["search"]["c"] = 2.0
    write_json_atomic(folder / "config.json", {"fingerprint": fingerprint_of(saved), "config": saved})
    with pytest.raises(RunError, match="another configuration"):
        RunContext(config)


def test_train_and_held_out_problems_do_not_overlap(tmp_path):
    ctx = RunContext(RunConfig(runs_dir=str(tmp_path), train_problems=200, eval_problems=200, max_ops=1))
    assert not {p.problem for p in ctx.train} & {p.problem for p in ctx.eval}
    assert all(p.answer is not None for p in ctx.train)


def test_a_resumed_stage_counts_the_seconds_of_its_interrupted_attempt_once(tmp_path):
    ctx = RunContext(RunConfig(runs_dir=str(tmp_path), train_problems=8, eval_problems=8, eval_search_problems=4,
                               max_ops=1))
    folder = ctx.iter_dir(1) / "search"
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps({"seconds": 50.0}))  # what the killed attempt took

    def work(out):  # as the search does: its progress file carries the seconds of every attempt
        (out / "progress.json").write_text(json.dumps({"seconds": 50.0 + 0.01}))
        return {}

    info = ctx.stage(1, "search", work)
    assert 50.0 <= info["seconds"] < 51.0


def test_summary_table_lists_every_metric():
    table = summary_table([{"iteration": 0, "greedy_acc": 0.25, "search_acc": None, "prm_auc": 0.5,
                            "harvested_traces": 0, "harvested_values": 0, "tokens": 1234, "seconds": 3.5}])
    assert "greedy_acc" in table and "1,234" in table and "0.250" in table


# ---------------------------------------------------------------------------------------------------
# A killed run resumes to the same figures


def _small_config_args(runs_dir: Path, policy: Path) -> list[str]:
    return ["run", "--runs-dir", str(runs_dir), "--name", "small", "--iterations", "1", "--policy", str(policy),
            "--train-problems", "12", "--eval-problems", "12", "--threads", "1", "--no-progress",
            "--set", "eval_search_problems=4", "--set", "batch=6", "--set", "prm_eval_traces=24",
            "--set", "search.simulations=4", "--set", "search.width=2", "--set", "max_ops=1",
            "--set", "sft.epochs=2", "--set", "prm_train.epochs=1", "--set", "prm_train.save_every=2"]


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selftrain.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def _figures(folder: Path) -> dict:
    metrics = json.loads((folder / "iter_1" / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in ("seconds", "policy", "prm")}


def test_killed_run_resumes_to_the_same_figures(tmp_path):
    from mcts.envs.tiny_models import ensure_toy_policy

    policy = ensure_toy_policy(quick=True, progress=False)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("SELFTRAIN_CRASH_AT", None)
    whole = _run(_small_config_args(tmp_path / "a", policy), env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "greedy_acc" in whole.stdout and (tmp_path / "a" / "small" / "iter_1" / "metrics.json").exists()
    # the summary says how many held-out problems its accuracies stand on (12 drawn, less any training problem)
    sizes = _figures(tmp_path / "a" / "small")
    assert 0 < sizes["heldout_problems"] <= 12 and sizes["search_problems"] == min(4, sizes["heldout_problems"])
    assert f"greedy_acc: {sizes['heldout_problems']} held-out problems, one standard error about" in whole.stdout

    args = _small_config_args(tmp_path / "b", policy)
    # killed after the first of two search shards, then right after the policy's fine-tuning
    for point in ("iter_1/search/shard_0", "iter_1/policy"):
        killed = _run(args, {**env, "SELFTRAIN_CRASH_AT": point})
        assert killed.returncode == -9, (point, killed.stderr[-3000:])
        assert not (tmp_path / "b" / "small" / "iter_1" / "metrics.json").exists()
    stages = json.loads((tmp_path / "b" / "small" / "iter_1" / "stages.json").read_text())
    assert {"search", "harvest", "policy"} <= set(stages) and "prm" not in stages
    resumed = _run(args, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _figures(tmp_path / "b" / "small") == _figures(tmp_path / "a" / "small")
    a = [json.loads(x) for x in (tmp_path / "a/small/iter_1/search/results.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b/small/iter_1/search/results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["answer"], r["trace"]) for r in a] == [(r["id"], r["answer"], r["trace"]) for r in b]


def test_training_stage_runs_through_accelerate_launch(tmp_path, monkeypatch):
    """The path a multi-GPU machine takes (one process per GPU), forced here onto one CPU process."""
    from mcts.envs.tiny_models import ensure_toy_policy
    from prm.train import TrainConfig
    from selftrain.sft import SFTConfig
    from selftrain.train_stage import TrainJob, run_training

    policy = ensure_toy_policy(quick=True, progress=False)
    monkeypatch.setenv("TREESEARCH_TRAIN_LAUNCH", "accelerate")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    records = harvest_tree(TREE, "7").prm
    job = TrainJob("prm", str(policy), records, 0, target="labels", progress=False,
                   train=TrainConfig(epochs=1, batch_size=2, num_threads=1, device="cpu"))
    assert TrainJob.from_json(json.loads(json.dumps(job.to_json()))) == job  # what the launched processes read
    sft = TrainJob("sft", str(policy), [], 0, sft=SFTConfig())
    assert TrainJob.from_json(json.loads(json.dumps(sft.to_json()))) == sft
    with pytest.raises(ValueError, match="needs train"):
        TrainJob("prm", str(policy), records, 0, sft=SFTConfig())
    info = run_training(job, tmp_path / "prm")
    assert info["rows"] == 3 and info["steps"] >= 1 and info["processes"] == 1
    assert (tmp_path / "prm" / "prm_config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prm"]  # the job and info files are cleaned up


def test_step_checker_keeps_lucky_guesses_out_of_the_sft_data():
    from selftrain.rest_mcts import toy_steps_sound

    problem = "6 + 6"
    lucky = ["8 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]  # right answer, wrong step
    sound = ["6 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    assert toy_steps_sound(problem, sound) and not toy_steps_sound(problem, lucky)
    tree = {"format": 1, "problem": problem, "algorithm": "mcts_star", "nodes": [
        _node(0, -1, 0, None), _node(1, 0, 1, lucky[0]), _node(2, 1, 2, lucky[1], True, "12"),
        _node(3, 0, 1, sound[0]), _node(4, 3, 2, sound[1], True, "12")]}
    assert len(harvest_tree(tree, "12").sft) == 2
    assert [r["steps"] for r in harvest_tree(tree, "12", check_steps=toy_steps_sound).sft] == [sound]
    assert len(harvest_tree(tree, "12", check_steps=toy_steps_sound).prm) == 2  # the PRM still sees both


def test_best_only_keeps_the_verified_solution_the_prm_values_highest():
    problem = "6 + 6"
    lucky = ["8 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    sound = ["6 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    wrong = ["6 + 6 = 11, so 11\n", "The answer is \\boxed{11}.\n"]

    def tree(rewards):
        nodes = [_node(0, -1, 0, None), _node(1, 0, 1, lucky[0]), _node(2, 1, 2, lucky[1], True, "12"),
                 _node(3, 0, 1, sound[0]), _node(4, 3, 2, sound[1], True, "12"),
                 _node(5, 0, 1, wrong[0]), _node(6, 5, 2, wrong[1], True, "11")]
        for node, reward in zip(nodes, rewards):
            node["reward"] = reward
        return {"format": 1, "problem": problem, "algorithm": "mcts_star", "nodes": nodes}

    # the lucky path's lowest value (0.2) is below the sound path's (0.6), though its answer step is higher
    scored = tree([0.0, 0.2, 0.99, 0.9, 0.6, 0.95, 0.9])
    assert [r["steps"] for r in harvest_tree(scored, "12", best_only=True).sft] == [sound]
    assert len(harvest_tree(scored, "12").sft) == 2
    assert len(harvest_tree(scored, "12", best_only=True).prm) == 3  # the PRM data is not filtered
    unscored = tree([None] * 7)  # ReST-EM's samples: nothing to judge by, every verified one stays
    assert len(harvest_tree(unscored, "12", best_only=True).sft) == 2
    assert RunConfig().sft_select == "best"
    with pytest.raises(ConfigError, match="sft_select"):
        load_config(None, {}, ["sft_select=first"])


def test_harvest_by_ops_counts_sound_solutions_per_million_tokens(tmp_path):
    from selftrain.report import harvest_by_ops

    lucky = ["8 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    sound = ["6 + 6 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    (tmp_path / "config.json").write_text(json.dumps({"config": {"algorithm": "rest_mcts"}}))
    search = tmp_path / "iter_1" / "search"
    search.mkdir(parents=True)
    records = [{"problem": "6 + 6", "gold": "12", "tokens": 100}, {"problem": "3 * 3", "gold": "9", "tokens": 100},
               {"problem": "1 + 2 * 3", "gold": "7", "tokens": 300}]
    (search / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tree = harvest_tree(TREE, "7")  # one sound solution of a 2-operation problem; its 8 PRM labels are right
    wrong_label = {"problem": "6 + 6", "steps": sound, "labels": [0.0, 1.0], "values": [0.5, 1.0], "outcome": 1.0}
    write_harvest(Harvest(sft=[{"problem": "6 + 6", "steps": lucky}, {"problem": "6 + 6", "steps": sound}, *tree.sft],
                          prm=[*tree.prm, wrong_label]), tmp_path / "iter_1" / "harvest", iteration=1)
    one, two = harvest_by_ops(tmp_path)
    assert one == {"iteration": 1, "ops": 1, "problems": 2, "tokens": 200, "solved": 1, "solutions": 2, "sound": 1,
                   "solutions_per_mtok": 10_000.0, "sound_per_mtok": 5_000.0, "label_agreement": 0.5}
    assert (two["ops"], two["problems"], two["solutions"], two["sound"], two["label_agreement"]) == (2, 1, 1, 1, 1.0)
    (search / "results.jsonl").write_text(json.dumps({"problem": "What is 2 + 2?", "gold": "4", "tokens": 9}) + "\n")
    assert harvest_by_ops(tmp_path) == []  # not the toy world: no checker, no table


@pytest.mark.parametrize("sft_filter, toy, checks", [("auto", True, True), ("auto", False, False),
                                                      ("outcome", True, False), ("steps", True, True)])
def test_sft_filter_picks_the_step_checker(sft_filter, toy, checks):
    from types import SimpleNamespace

    from selftrain.rest_mcts import step_checker, toy_steps_sound

    ctx = SimpleNamespace(config=SimpleNamespace(sft_filter=sft_filter), toy=toy)
    assert step_checker(ctx) is (toy_steps_sound if checks else None)


def test_sft_filter_steps_needs_a_checker():
    from types import SimpleNamespace

    from selftrain.rest_mcts import step_checker

    with pytest.raises(ValueError, match="only the toy world has one"):
        step_checker(SimpleNamespace(config=SimpleNamespace(sft_filter="steps"), toy=False))


def test_every_loop_name_has_a_loop():
    from selftrain.config import ALGORITHMS
    from selftrain.loops import LOOPS

    # RunConfig validates names against ALGORITHMS; the loops import the config, not the other way.
    assert set(LOOPS) == set(ALGORITHMS)


def test_a_preset_is_checked_before_anything_runs(tmp_path):
    from selftrain.run import check_models

    check_models(RunConfig(preset="toy"))
    with pytest.raises(RunError, match="takes no preset but 'toy'"):
        check_models(RunConfig(preset="qwen2.5-math"))  # the toy policy writes no chat
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    check_models(RunConfig(policy=str(folder), preset="qwen2.5-math"))
    with pytest.raises(RunError, match="unknown preset 'nope'; the presets are"):
        check_models(RunConfig(policy=str(folder), preset="nope"))
