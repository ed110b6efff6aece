"""The toy world's tiny policy: tokenizer, training data, build/cache plumbing and a quick build."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")

from mcts.envs import tiny_models as tm  # noqa: E402
from mcts.envs.arith import generate_problems  # noqa: E402
from mcts.envs.arith_steps import DELIMITER, parse_step, solution_steps  # noqa: E402
from mcts.envs.toy_config import FULL_CONFIG, QUICK_CONFIG, ToyTrainConfig, toy_problem_config  # noqa: E402
from mcts.envs.toy_eval import evaluate_toy_policy, format_table, greedy_solve, solve  # noqa: E402
from mcts.envs.toy_tokenizer import CHARACTERS, SPECIAL_TOKENS, build_char_tokenizer  # noqa: E402
from mcts.envs.toy_training import IGNORE_INDEX, Trace, encode_trace, make_traces  # noqa: E402
from mcts.policy.base import Prefix  # noqa: E402
from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig  # noqa: E402

TEXTS = [
    "(17 + 5) * 3 - 8\n17 + 5 = 22, so 22 * 3 - 8\n",
    "The answer is \\boxed{58}.\n",
    "3 - -5 = 8, so 2 * 8\n",
    "  two  spaces , before . and after \n\n\nnewlines ",
    "",
    " ",
    "\n",
    "{}[]()<>!?#$%&'\"`~^_|;:@=+-*/\\",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


# ---------------------------------------------------------------------------------------------------
# Tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_exactly(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text
    with_bos = tokenizer(text)["input_ids"]
    assert with_bos == [tokenizer.bos_token_id, *ids]
    assert tokenizer.decode(with_bos + [tokenizer.eos_token_id], skip_special_tokens=True) == text


def test_tokenizer_special_tokens_and_save_load(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    specials = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert specials == (0, 1, 2, 3)
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(CHARACTERS)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for text in TEXTS:
        ids = loaded(text)["input_ids"]
        assert ids == tokenizer(text)["input_ids"]
        assert loaded.decode(ids, skip_special_tokens=True) == text
    assert loaded.decode(loaded("é", add_special_tokens=False)["input_ids"]) == "<unk>"  # outside the alphabet


# ---------------------------------------------------------------------------------------------------
# Training data


def test_make_traces_is_deterministic_and_canonical():
    config = dataclasses.replace(QUICK_CONFIG, noisy_fraction=0.0, max_ops=4)
    traces = make_traces(0, 40, config)
    assert traces == make_traces(0, 40, config)
    assert make_traces(10, 5, config) == traces[10:15]  # trace i depends on i only
    for trace in traces:
        assert list(trace.steps) == [s + DELIMITER for s in solution_steps(trace.problem)]
        assert all(trace.trained)


def test_noisy_traces_keep_slips_in_context_without_loss():
    config = dataclasses.replace(QUICK_CONFIG, noisy_fraction=1.0, slip_rate=0.5, max_ops=4)
    traces = make_traces(0, 60, config)
    slips = [t for t in traces if not all(t.trained)]
    assert slips, "a slip rate of 0.5 slips somewhere in 60 traces"
    for trace in traces:
        assert len(trace.steps) == len(trace.trained)
        assert all(s.endswith(DELIMITER) for s in trace.steps)
        assert all(parse_step(s) is not None for s in trace.steps)
        assert trace.trained[-1]  # the final answer copies the value: never a slip


def test_encode_trace_masks_problem_and_slips(tokenizer):
    trace = Trace("1 + 2 * 3", ("2 * 3 = 7, so 1 + 7\n", "1 + 7 = 8, so 8\n", "The answer is \\boxed{8}.\n"),
                  (False, True, True))
    ids, labels = encode_trace(tokenizer, trace)
    text = trace.problem + "\n" + "".join(trace.steps)
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
    assert len(labels) == len(ids)
    head = 1 + len(trace.problem) + 1 + len(trace.steps[0])  # <bos>, problem line, the slip
    assert labels[:head] == [IGNORE_INDEX] * head
    assert labels[head:] == ids[head:]  # the trained steps and <eos>


def test_problem_config_matches_training():
    config = toy_problem_config()
    assert (config.min_ops, config.max_ops) == (FULL_CONFIG.min_ops, FULL_CONFIG.max_ops)
    assert (config.max_operand, config.max_value) == (FULL_CONFIG.max_operand, FULL_CONFIG.max_value)
    three = toy_problem_config(3)
    assert (three.min_ops, three.max_ops, three.max_operand) == (3, 3, FULL_CONFIG.max_operand)
    for record in generate_problems(20, 0, three):
        assert all(abs(v) <= FULL_CONFIG.max_value for v in _values(record["problem"]))


def _values(problem: str) -> list[int]:
    """Every number the canonical solution writes."""
    import re

    return [int(x) for step in solution_steps(problem) for x in re.findall(r"-?\d+", step)]


def test_ops_weights_shape_the_mix():
    config = dataclasses.replace(FULL_CONFIG, noisy_fraction=0.0, ops_weights=(1, 0, 0, 0, 0, 3))
    counts = [t.problem.count(" ") // 2 for t in make_traces(0, 200, config)]  # spaces around each operator
    assert set(counts) == {1, 6}
    assert 100 < counts.count(6) < 190


def test_train_config_validation():
    with pytest.raises(ValueError, match="num_heads"):
        ToyTrainConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="steps"):
        ToyTrainConfig(steps=0)
    with pytest.raises(ValueError, match="seconds"):
        ToyTrainConfig(seconds=-1.0)
    with pytest.raises(ValueError, match="noisy_fraction"):
        ToyTrainConfig(noisy_fraction=1.5)
    with pytest.raises(ValueError, match="ops_weights"):
        ToyTrainConfig(max_ops=3, ops_weights=(1, 1))


# ---------------------------------------------------------------------------------------------------
# Evaluation (with the scripted policy: no model needed)


def test_evaluation_of_a_perfect_policy():
    perfect = ScriptedPolicy(ToyPolicyConfig(base_eps=0.0), seed=0)
    rows = evaluate_toy_policy(perfect, per_ops=8, ops=(1, 3), samples=2)
    assert [r["ops"] for r in rows] == [1, 3]
    for row in rows:
        assert row["problems"] == 8
        assert row["greedy_accuracy"] == 1.0
        assert row["sampled_step_correct"] == 1.0
        assert row["sampled_parse_rate"] == 1.0
    assert "greedy acc" in format_table(rows)


def test_evaluation_of_a_noisy_policy_is_imperfect():
    noisy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.5, max_eps=0.5), seed=0)
    (row,) = evaluate_toy_policy(noisy, per_ops=30, ops=(4,), samples=2)
    assert row["greedy_accuracy"] == 1.0  # greedy takes the likeliest step: the correct one
    assert 0.3 < row["sampled_step_correct"] < 0.9


def test_pass_at_k_counts_problems_with_one_right_sample():
    perfect = ScriptedPolicy(ToyPolicyConfig(base_eps=0.0), seed=0)
    (row,) = evaluate_toy_policy(perfect, per_ops=6, ops=(2,), samples=0, pass_k=3)
    assert (row["pass_k"], row["pass_at_k"]) == (3, 1.0)
    noisy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.4, max_eps=0.4), seed=0)
    one, many = (evaluate_toy_policy(noisy, per_ops=40, ops=(4,), samples=0, pass_k=k)[0] for k in (1, 16))
    assert one["greedy_accuracy"] == 1.0  # its likeliest step is always right
    assert one["pass_at_k"] < 0.5 < many["pass_at_k"]  # samples slip; some of 16 get through
    assert "pass@16" in format_table([many])


def test_solve_draws_samples_per_problem():
    noisy = ScriptedPolicy(ToyPolicyConfig(base_eps=0.4, max_eps=0.4), seed=0)
    problems = [r["problem"] for r in generate_problems(3, 5)]
    runs = solve(noisy, problems, samples=4, temperature=1.0)
    assert [len(r) for r in runs] == [4, 4, 4]
    assert any(len({tuple(t) for t in r}) > 1 for r in runs)  # the samples differ


def test_greedy_solve_stops_at_the_answer():
    perfect = ScriptedPolicy(ToyPolicyConfig(base_eps=0.0), seed=0)
    problems = [r["problem"] for r in generate_problems(5, 3)]
    traces = greedy_solve(perfect, problems)
    for problem, trace in zip(problems, traces):
        assert trace == [s + DELIMITER for s in solution_steps(problem)]


# ---------------------------------------------------------------------------------------------------
# Cache folders and atomic builds


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TREESEARCH_CACHE", str(tmp_path))
    assert tm.default_cache_dir() == tmp_path / f"toy-policy-v{tm.FORMAT_VERSION}"
    assert tm.default_cache_dir(quick=True) == tmp_path / f"toy-policy-quick-v{tm.FORMAT_VERSION}"
    monkeypatch.delenv("TREESEARCH_CACHE")
    assert tm.default_cache_dir().parent.name == "treesearch"


def test_interrupted_build_leaves_nothing(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tm, "train_toy_model", boom)
    with pytest.raises(KeyboardInterrupt):
        tm.build_toy_policy(tmp_path / "model", QUICK_CONFIG, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_folder_in_the_way_is_an_error(tmp_path):
    folder = tm.default_cache_dir(quick=True, root=tmp_path)
    folder.mkdir(parents=True)
    (folder / "something.txt").write_text("not a model")
    with pytest.raises(RuntimeError, match=str(folder)):
        tm.ensure_toy_policy(tmp_path, quick=True, progress=False)


def test_check_folder_finds_changed_missing_and_extra_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"weights")
    (folder / "b.json").write_text("{}")
    record = {"format_version": tm.FORMAT_VERSION, "train_config": dataclasses.asdict(QUICK_CONFIG),
              "files": tm.folder_hashes(folder)}
    (folder / tm.INFO_FILE).write_text(json.dumps(record))
    assert tm.check_folder(folder, QUICK_CONFIG) == []
    assert tm.check_folder(folder, FULL_CONFIG) == [f"{folder / tm.INFO_FILE}: the recorded train_config "
                                                    f"is not the code's build config"]
    (folder / "a.bin").write_bytes(b"weightz")
    (folder / "b.json").unlink()
    (folder / "c.txt").write_text("new")
    problems = tm.check_folder(folder)
    assert [p.split(": ")[0] for p in problems] == [str(folder / n) for n in ("a.bin", "b.json", "c.txt")]
    assert "sha256" in problems[0] and "missing" in problems[1] and "not in the record" in problems[2]
    assert tm.main(["check", str(folder)]) == 1
    assert "no toy policy record" in tm.check_folder(tmp_path)[0]


def test_cli_parser():
    args = tm.make_parser().parse_args(["build", "--quick", "--seconds", "30", "--out", "x"])
    assert (args.command, args.quick, args.seconds, args.out) == ("build", True, 30.0, "x")
    args = tm.make_parser().parse_args(["evaluate", "--n", "10"])
    assert (args.command, args.n, args.model) == ("evaluate", 10, None)


def test_cli_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "mcts.envs.tiny_models", "check"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "every file matches its recorded sha256" in done.stdout


# ---------------------------------------------------------------------------------------------------
# A quick build, end to end


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return root, tm.ensure_toy_policy(root, quick=True, progress=False)


@pytest.mark.slow
def test_quick_build_saves_a_loadable_policy(quick_build):
    root, folder = quick_build
    assert folder == tm.default_cache_dir(quick=True, root=root)
    info = json.loads((folder / tm.INFO_FILE).read_text())
    assert info["format_version"] == tm.FORMAT_VERSION
    assert tm.train_config_of(folder) == QUICK_CONFIG
    assert info["data_seed"] == QUICK_CONFIG.data_seed
    assert info["training"]["steps"] == QUICK_CONFIG.steps
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # no temporary folder left
    # A second call finds it and builds nothing.
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert tm.ensure_toy_policy(root, quick=True, progress=False) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_the_build_is_reproducible_bit_for_bit(quick_build, tmp_path):
    _, folder = quick_build
    again = tm.build_toy_policy(tmp_path / "again", QUICK_CONFIG, progress=False)
    assert tm.folder_hashes(again) == tm.folder_hashes(folder)
    assert json.loads((folder / tm.INFO_FILE).read_text())["files"] == tm.folder_hashes(folder)


@pytest.mark.slow
def test_quick_policy_writes_steps_that_parse(quick_build):
    root, _ = quick_build
    policy = tm.load_toy_policy(root, quick=True, device="cpu")
    assert policy.delimiter == "\n"
    problems = [r["problem"] for r in generate_problems(24, 11)]
    greedy = policy.propose([Prefix(p) for p in problems], 1, greedy=True)
    sampled = policy.propose([Prefix(p) for p in problems], 2, temperature=1.0)
    steps = [s for group in greedy + sampled for s in group]
    assert len(steps) == 3 * len(problems)
    readable = sum(parse_step(s.text) is not None for s in steps)
    assert readable >= 0.6 * len(steps), f"only {readable}/{len(steps)} steps parse"
    assert all(s.num_tokens > 0 and s.logprob <= 0 for s in steps)


# ---------------------------------------------------------------------------------------------------
# The policy that ships in the package


def test_the_shipped_policy_is_the_full_build_intact():
    assert tm.check_folder(tm.SHIPPED_DIR, FULL_CONFIG) == []
    assert tm.shipped_toy_policy() == tm.SHIPPED_DIR
    assert tm.ensure_toy_policy(progress=False) == tm.SHIPPED_DIR  # nothing to train
    assert tm.main(["check"]) == 0
    size = sum(p.stat().st_size for p in tm.SHIPPED_DIR.iterdir())
    assert size < 4 * 2 ** 20


def test_the_shipped_policy_is_competent_but_fallible():
    """Read from its record, on fresh 1-4 operation problems: greedy accuracy within 0.45-0.75, and
    sampled solutions that its greedy path misses: pass@16 at T=1 at least 0.2 above greedy, as #16
    asks. The build records 0.5225 and 0.7775 (see `FULL_CONFIG`)."""
    info = json.loads((tm.SHIPPED_DIR / tm.INFO_FILE).read_text())
    rows = {r["ops"]: r for r in info["accuracy"]}
    greedy = sum(rows[k]["greedy_accuracy"] for k in range(1, 5)) / 4
    passed = sum(rows[k]["pass_at_k"] for k in range(1, 5)) / 4
    assert info["eval"]["pass_k"] == 16 and info["storage_dtype"] == "float16"
    assert 0.45 <= greedy <= 0.75 and passed >= greedy + 0.2, (greedy, passed)


@pytest.mark.slow
def test_the_shipped_policy_still_measures_what_its_record_says():
    info = json.loads((tm.SHIPPED_DIR / tm.INFO_FILE).read_text())
    policy = tm.load_toy_policy(device="cpu")
    assert next(policy.model.parameters()).dtype.is_floating_point
    assert str(next(policy.model.parameters()).dtype) == "torch.float32"  # float16 on disk, float32 here
    rows = evaluate_toy_policy(policy, per_ops=info["train_config"]["eval_per_ops"], ops=range(1, 5),
                               seed=tm.EVAL_SEED, problems=FULL_CONFIG.arith(), samples=0)
    recorded = {r["ops"]: r["greedy_accuracy"] for r in info["accuracy"]}
    for row in rows:  # greedy decoding: equal up to float rounding across CPUs
        assert abs(row["greedy_accuracy"] - recorded[row["ops"]]) <= 0.03, (row, recorded[row["ops"]])


def test_mcts_toy_is_the_one_door_to_the_toy_models(tmp_path, capsys):
    """`mcts toy build|check policy|prm|pprm` routes to each model's build; the shipped folders check clean."""
    from treesearch.commands import main

    for model in ("policy", "prm", "pprm"):
        assert main(["toy", "check", model]) == 0
    assert "every file matches" in capsys.readouterr().out
    out = tmp_path / "policy"
    assert main(["toy", "build", "policy", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert (out / "model.safetensors").exists()
    assert main(["toy", "check", "prm", str(out)]) == 1  # a policy folder is no toy PRM
    assert main(["toy", "evaluate", "prm"]) == 2
