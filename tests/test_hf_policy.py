"""HFPolicy: the transformers StepProposer, on tiny local Llamas built in memory (no downloads).

Two models share the toy world's character tokenizer:
- a "bigram" Llama whose blocks are switched off (zero output projections), so that the next token
  depends only on the current one through a hand-written table: every step it writes is known in
  advance (chains of different lengths, EOS, a never-ending chain, a final answer);
- a randomly initialised Llama with decisive logits, for the batching parity checks.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mcts.envs.toy_tokenizer import build_char_tokenizer  # noqa: E402
from mcts.policy.base import Prefix, Step, StepProposer  # noqa: E402
from mcts.policy.hf_policy import ChatPrompt, HFPolicy, HFPolicyConfig, plain_prompt  # noqa: E402

# The bigram table: next character of each character (everything else writes the delimiter).
CHAINS = {
    "A": "B", "B": "C", "C": "\n",  # "A" -> step "BC\n"
    **{str(d): str(d + 1) for d in range(1, 9)}, "9": "\n",  # "1" -> step "23456789\n"
    "K": "\\", "\\": "b", "b": "o", "o": "x", "x": "e", "e": "d", "d": " ", " ": "0", "0": "\n",  # "\boxed 0"
    "Z": "Z",  # never ends: truncated at max_new_tokens
}
EOS_AFTER = "E"  # "E" -> EOS
MARGIN = 10.0  # logit of the table's next token over every other


def last_char_prompt(prefix: Prefix) -> str:
    """The bigram model's prompt: only the last character matters, so no delimiter is appended."""
    return prefix.problem + "".join(prefix.steps)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer(model_max_length=64)


@pytest.fixture(scope="session")
def bigram_model(tokenizer):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    hidden = 128
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        emb = torch.zeros(vocab, hidden)
        emb[torch.arange(vocab), torch.arange(vocab)] = 1.0  # one-hot tokens
        model.model.embed_tokens.weight.copy_(emb)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        # RMSNorm turns a one-hot vector into sqrt(hidden) * one-hot.
        head = torch.zeros(vocab, hidden)
        ids = tokenizer.convert_tokens_to_ids
        newline = ids("\n")
        for t in range(vocab):
            head[newline, t] = MARGIN
        for a, b in CHAINS.items():
            head[newline, ids(a)] = 0.0
            head[ids(b), ids(a)] = MARGIN
        head[newline, ids(EOS_AFTER)] = 0.0
        head[tokenizer.eos_token_id, ids(EOS_AFTER)] = MARGIN
        for special in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id):
            head[special, :] = -3 * MARGIN  # never written: step texts then hold every token drawn
        model.lm_head.weight.copy_(head / math.sqrt(hidden))
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model.eval()


@pytest.fixture(scope="session")
def random_model(tokenizer):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    # A head with a bias that keeps <pad>, <bos> and <unk> out of every draw: a step's text then
    # holds every token drawn, and its log-probability can be recomputed from the text alone.
    head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[[tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]] = -1e4
    model.lm_head = head
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model.eval()


def bigram_policy(model, tokenizer, **overrides) -> HFPolicy:
    config = HFPolicyConfig(**{"delimiter": "\n", "max_new_tokens": 12, "batch_size": 8, "device": "cpu",
                               "num_threads": 1, **overrides})
    return HFPolicy(model, tokenizer, config, prompt_fn=last_char_prompt)


def random_policy(model, tokenizer, **overrides) -> HFPolicy:
    config = HFPolicyConfig(**{"delimiter": "\n", "max_new_tokens": 10, "batch_size": 16, "device": "cpu",
                               "num_threads": 1, **overrides})
    return HFPolicy(model, tokenizer, config)


def teacher_forced_logprob(model, tokenizer, policy: HFPolicy, prefix: Prefix, step: Step, eos: bool) -> float:
    """Sum of log_softmax(raw logits) of the step's tokens, by one unpadded forward pass."""
    prompt = policy.prompt_ids([prefix])[0]
    generated = tokenizer(step.text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
    return float(sum(logprobs[len(prompt) + t - 1, tok] for t, tok in enumerate(generated)))


# ---------------------------------------------------------------------------------------------------
# Configuration and prompts


def test_config_validation():
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFPolicyConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="delimiter"):
        HFPolicyConfig(delimiter="")
    with pytest.raises(ValueError, match="dtype"):
        HFPolicyConfig(dtype="float64")
    with pytest.raises(ValueError, match="max_context"):
        HFPolicyConfig(max_new_tokens=32, max_context=16)
    with pytest.raises(ValueError, match="top_p"):
        HFPolicyConfig(top_p=0.0)
    with pytest.raises(ValueError, match="device"):
        HFPolicyConfig(device="tpu")


def test_plain_prompt_joins_steps_as_they_are():
    prefix = Prefix("2 + 3 * 4", ("3 * 4 = 12, so 2 + 12\n",))
    assert plain_prompt(prefix, "\n") == "2 + 3 * 4\n3 * 4 = 12, so 2 + 12\n"
    assert plain_prompt(Prefix("7"), "\n\n") == "7\n\n"


def test_chat_prompt_renders_template_once_per_problem():
    tok = build_char_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    calls = []
    original = tok.apply_chat_template

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    tok.apply_chat_template = counting
    prompt = ChatPrompt(tok, system_prompt="be brief")
    p0 = Prefix("1 + 2")
    assert prompt(p0) == "<system>be brief\n<user>1 + 2\n<assistant>"
    assert prompt(p0.extend("1 + 2 = 3, so 3\n")) == "<system>be brief\n<user>1 + 2\n<assistant>1 + 2 = 3, so 3\n"
    assert len(calls) == 1  # the second prefix of the same problem reused the rendered head


def test_policy_uses_chat_template_when_the_tokenizer_has_one(random_model):
    tok = build_char_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}:{% endif %}")
    policy = HFPolicy(random_model, tok, HFPolicyConfig(delimiter="\n", device="cpu"))
    assert isinstance(policy.prompt_fn, ChatPrompt)
    # the template carries its own special tokens: none are added
    assert policy.prompt_ids([Prefix("12", ("a\n",))])[0] == tok("12:a\n", add_special_tokens=False)["input_ids"]
    plain = HFPolicy(random_model, tok, HFPolicyConfig(delimiter="\n", device="cpu", chat_template=False))
    assert plain.prompt_ids([Prefix("12")])[0] == tok("12\n")["input_ids"]  # with <bos>


# ---------------------------------------------------------------------------------------------------
# The contract


def test_satisfies_protocol(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer)
    assert isinstance(policy, StepProposer)
    assert policy.delimiter == "\n"


def test_steps_stop_at_the_delimiter_per_sequence(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer)
    prefixes = [Prefix("A"), Prefix("xx1"), Prefix("q"), Prefix("K")]
    out = policy.propose(prefixes, 1, greedy=True)
    # One batch, steps of 3, 9, 1 and 10 tokens: each row stopped at its own delimiter, and the
    # others went on after the short ones had stopped.
    assert [s[0].text for s in out] == ["BC\n", "23456789\n", "\n", "\\boxed 0\n"]
    assert [s[0].num_tokens for s in out] == [3, 9, 1, 9]
    assert policy.stats.generate_calls == 1
    assert [s[0].finished for s in out] == [False, False, False, True]  # the last states an answer


def test_eos_and_truncation_finish_the_step(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer, max_new_tokens=6)
    eos, trunc, normal = (s[0] for s in policy.propose([Prefix("E"), Prefix("Z"), Prefix("A")], 1, greedy=True))
    assert (eos.text, eos.num_tokens, eos.finished) == ("", 1, True)
    assert trunc.text == "ZZZZZZ" and trunc.num_tokens == 6 and trunc.finished
    assert normal.text == "BC\n" and not normal.finished
    assert policy.stats.eos == 1 and policy.stats.truncated == 1


def test_n_steps_per_prefix_with_valid_fields(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer)
    prefixes = [Prefix("A"), Prefix("1"), Prefix("E"), Prefix("Z"), Prefix("K")]
    out = policy.propose(prefixes, 3, temperature=1.0)
    assert len(out) == len(prefixes)
    for prefix, steps in zip(prefixes, out):
        assert len(steps) == 3
        for step in steps:
            assert step.text.endswith("\n") or step.finished
            assert math.isfinite(step.logprob) and step.logprob <= 0
            ends_with_eos = step.finished and not step.text.endswith("\n") and step.num_tokens > len(step.text)
            expected = len(tokenizer(step.text, add_special_tokens=False)["input_ids"]) + ends_with_eos
            assert step.num_tokens == expected
            assert step.logprob == pytest.approx(
                teacher_forced_logprob(bigram_model, tokenizer, policy, prefix, step, ends_with_eos), abs=1e-4)


def test_logprob_is_untempered(random_model, tokenizer):
    policy = random_policy(random_model, tokenizer, max_new_tokens=6)
    prefixes = [Prefix("3 * 4"), Prefix("17 + 5", ("17 + 5 = 22, so 22\n",))]
    for temperature in (0.5, 2.0):
        for prefix, steps in zip(prefixes, policy.propose(prefixes, 2, temperature)):
            for step in steps:
                eos = step.finished and step.num_tokens > len(step.text)
                assert step.logprob == pytest.approx(
                    teacher_forced_logprob(random_model, tokenizer, policy, prefix, step, eos), abs=1e-4)


def test_greedy_is_deterministic_and_batch_independent(random_model, tokenizer):
    policy = random_policy(random_model, tokenizer)
    prefixes = [Prefix("1 + 2"), Prefix("(17 + 5) * 3 - 8", ("17 + 5 = 22, so 22 * 3 - 8\n",)),
                Prefix("4"), Prefix("12 * 12 - 3 * (4 + 5)"), Prefix("9 - 2")]
    batched = policy.propose(prefixes, 2, greedy=True)
    assert policy.propose(prefixes, 2, greedy=True) == batched
    assert policy.propose(prefixes, 2, temperature=0) == batched
    for prefix, steps in zip(prefixes, batched):
        assert len(steps) == 2 and steps[0] == steps[1]
        alone = policy.propose([prefix], 1, greedy=True)[0][0]  # no padding at all
        assert alone.text == steps[0].text
        assert alone.num_tokens == steps[0].num_tokens
        assert alone.logprob == pytest.approx(steps[0].logprob, abs=1e-4)
    # Chunks of one sequence give the same again.
    one_by_one = random_policy(random_model, tokenizer, batch_size=1).propose(prefixes, 1, greedy=True)
    assert [s[0].text for s in one_by_one] == [s[0].text for s in batched]


def test_sampling_is_seeded(random_model, tokenizer):
    prefixes = [Prefix("1 + 2"), Prefix("3 * 4 - 5")]
    a = random_policy(random_model, tokenizer, seed=7)
    b = random_policy(random_model, tokenizer, seed=7)
    first = a.propose(prefixes, 4, 1.5)
    assert b.propose(prefixes, 4, 1.5) == first
    assert a.propose(prefixes, 4, 1.5) != first  # the next call draws afresh
    state = torch.random.get_rng_state()
    a.propose(prefixes, 2, 1.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


def test_results_map_back_to_their_prefixes(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer, batch_size=3)
    prefixes = [Prefix("A" * k) if k % 2 else Prefix("1" * k) for k in range(1, 8)]  # lengths interleaved
    out = policy.propose(prefixes, 2, greedy=True)
    assert [steps[0].text for steps in out] == ["BC\n" if k % 2 else "23456789\n" for k in range(1, 8)]


def test_finished_prefix_and_too_long_prefix_get_no_steps(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer, max_new_tokens=12)  # the model has 64 positions
    done = Prefix("K", ("\\boxed 0\n",))
    too_long = Prefix("A" * 60)
    fits = Prefix("A" * 40)
    out = policy.propose([done, too_long, fits, Prefix("1")], 2, 1.0)
    assert out[0] == [] and out[1] == []
    assert len(out[2]) == 2 and len(out[3]) == 2
    assert policy.stats.too_long == 1


def test_stats_count_tokens_and_calls(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer)
    out = policy.propose([Prefix("A"), Prefix("1")], 3, greedy=True)
    stats = policy.stats
    assert stats.calls == 1 and stats.prefixes == 2
    assert stats.sequences == 2  # greedy: one sequence per prefix, returned 3 times
    assert stats.generated_tokens == out[0][0].num_tokens + out[1][0].num_tokens
    assert stats.decoded_tokens >= stats.generated_tokens
    stats.reset()
    assert policy.stats.calls == 0


def test_bad_arguments(bigram_model, tokenizer):
    policy = bigram_policy(bigram_model, tokenizer)
    with pytest.raises(ValueError, match="n must be"):
        policy.propose([Prefix("A")], 0)
    with pytest.raises(ValueError, match="temperature"):
        policy.propose([Prefix("A")], 1, temperature=-1.0)
    assert policy.propose([], 3) == []


# ---------------------------------------------------------------------------------------------------
# Loading from a folder


@pytest.fixture(scope="session")
def saved_bigram(bigram_model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bigram")
    bigram_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_from_pretrained_round_trip(saved_bigram, bigram_model, tokenizer):
    loaded = HFPolicy.from_pretrained(saved_bigram, delimiter="\n", max_new_tokens=12, device="cpu",
                                      prompt_fn=last_char_prompt)
    assert loaded.config.device == "cpu" and loaded.config.dtype == "float32"
    prefixes = [Prefix("A"), Prefix("1"), Prefix("K")]
    assert loaded.propose(prefixes, 1, greedy=True) == bigram_policy(bigram_model, tokenizer).propose(
        prefixes, 1, greedy=True)


def test_from_pretrained_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        HFPolicy.from_pretrained(missing)


def test_from_pretrained_invalid_folder_names_it(tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{ this is not json")
    with pytest.raises(OSError, match="not-a-model"):
        HFPolicy.from_pretrained(bad)
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(OSError, match="empty-folder"):
        HFPolicy.from_pretrained(empty)


def test_folder_declares_its_policy_settings(bigram_model, tokenizer, tmp_path):
    from mcts.policy.hf_policy import POLICY_FILE, read_policy_defaults, write_policy_defaults

    folder = tmp_path / "declared"
    bigram_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert HFPolicy.from_pretrained(folder, device="cpu").delimiter == "\n\n"  # nothing declared
    write_policy_defaults(folder, delimiter="\n", chat_template=False, num_threads=1)
    assert read_policy_defaults(folder) == {"delimiter": "\n", "chat_template": False, "num_threads": 1}
    policy = HFPolicy.from_pretrained(folder, HFPolicyConfig(seed=3), device="cpu")
    assert (policy.delimiter, policy.config.num_threads, policy.config.seed) == ("\n", 1, 3)
    assert HFPolicy.from_pretrained(folder, HFPolicyConfig(delimiter="\n\n")).delimiter == "\n\n"  # set: kept
    assert HFPolicy.from_pretrained(folder, delimiter="##").delimiter == "##"  # overrides win
    plain = HFPolicy.from_pretrained(folder, device="cpu").config
    assert (plain.max_new_tokens, plain.batch_size) == (256, 32)  # not declared: the generic defaults
    write_policy_defaults(folder, delimiter="\n", max_new_tokens=40, batch_size=7)
    declared = HFPolicy.from_pretrained(folder, device="cpu").config
    assert (declared.max_new_tokens, declared.batch_size) == (40, 7)
    assert HFPolicy.from_pretrained(folder, HFPolicyConfig(batch_size=5), device="cpu").config.batch_size == 5
    (folder / POLICY_FILE).write_text('{"delimiter": "\\n", "colour": "red"}')
    with pytest.raises(ValueError, match=POLICY_FILE):
        HFPolicy.from_pretrained(folder)


def test_per_call_truncation_overrides_the_config(random_model, tokenizer):
    policy = random_policy(random_model, tokenizer, top_p=0.5)
    prefixes = [Prefix("1 + 2"), Prefix("3 * 4 - 5")]
    greedy = policy.propose(prefixes, 1, greedy=True)
    top1 = policy.propose(prefixes, 3, temperature=1.5, top_k=1)  # one candidate per token: the argmax
    assert [[s.text for s in steps] for steps in top1] == [[g[0].text] * 3 for g in greedy]
    assert policy._generation_kwargs(False, 1.0, policy.config.truncation)["top_p"] == 0.5
    with pytest.raises(ValueError, match="top_p"):
        policy.propose(prefixes, 1, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="min_p"):
        policy.propose(prefixes, 1, temperature=1.0, min_p=2.0)


def test_trust_remote_code_is_the_callers_choice(saved_bigram):
    assert HFPolicyConfig().trust_remote_code is False
    with pytest.raises(ValueError, match="trust_remote_code"):
        HFPolicyConfig(trust_remote_code=1)
    # a folder without code of its own loads either way
    policy = HFPolicy.from_pretrained(saved_bigram, device="cpu", trust_remote_code=True)
    assert policy.config.trust_remote_code is True
    assert HFPolicy.from_pretrained(saved_bigram, device="cpu").config.trust_remote_code is False


def test_config_overrides_are_validated(saved_bigram):
    with pytest.raises(ValueError, match="batch_size"):
        HFPolicy.from_pretrained(saved_bigram, batch_size=0)
    assert dataclasses.replace(HFPolicyConfig(), delimiter="\n").delimiter == "\n"
