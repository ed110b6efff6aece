"""Policy presets (mcts/policy/presets.py): the table's fields, and a tiny Qwen2 chat model
searched with `--preset`, built here (no downloads).

The model is a "bigram" Qwen2 (random attention weights, its blocks' outputs switched off, so the
next token depends only on the current one) over a byte-level BPE tokenizer like Qwen's, with
Qwen's special tokens, the `\\n\\n` token of Qwen's vocabulary and Qwen2.5's ChatML template,
loaded back from its folder by the Qwen2 tokenizer class. What it writes is known in advance:
after a newline it writes "AB" and then the `\\n\\n` token, so a step ends at the first `\\n\\n`
only when the delimiter is `\\n\\n`; after "Q" it writes `<|im_end|>`, which ends a step only as a
stop token, since the tokenizer's EOS is `<|endoftext|>` (as in Qwen's base checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mcts.policy.base import Prefix
from mcts.policy.generation import PolicyGenerationConfig
from mcts.policy.presets import BOXED_INSTRUCTION, PRESET_NAMES, PRESETS, PolicyPreset, get_preset, preset_fields

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_makes_valid_configs_of_both_backends(name):
    from mcts.policy.hf_policy import HFPolicyConfig
    from mcts.policy.vllm_policy import VLLMPolicyConfig

    preset = get_preset(name)
    assert preset.name == name
    hf = HFPolicyConfig(**preset_fields(name, seed=0))
    vllm = VLLMPolicyConfig(**preset_fields(name))
    for config in (hf, vllm):
        assert config.delimiter == preset.delimiter and config.chat_template == preset.chat_template
        assert config.system_prompt == preset.system_prompt
        assert config.answer_instruction == preset.answer_instruction
        assert config.stop_tokens == (preset.stop_tokens or None)


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n != "toy"])
def test_chat_presets_ask_for_a_boxed_answer_and_stop_at_their_end_of_turn(name):
    preset = get_preset(name)
    said = (preset.system_prompt or "") + (preset.answer_instruction or "")
    assert "\\boxed{" in said  # the grader reads the last \boxed{}
    assert preset.chat_template and preset.delimiter == "\n\n" and preset.stop_tokens


def test_the_table_holds_the_families_the_issue_names():
    assert {"qwen2.5-math", "llama-3.1-instruct", "qwen2.5-instruct", "deepseek-r1-distill", "mistral-instruct",
            "toy"} <= set(PRESETS)
    qwen = get_preset("qwen2.5-math")
    assert qwen.system_prompt == BOXED_INSTRUCTION and qwen.answer_instruction is None
    assert qwen.stop_tokens == ("<|im_end|>", "<|endoftext|>")
    assert get_preset("deepseek-r1-distill").system_prompt is None  # DeepSeek: no system prompt
    assert get_preset("toy").delimiter == "\n" and not get_preset("toy").chat_template


def test_explicit_settings_win_over_the_preset():
    fields = preset_fields("qwen2.5-math", delimiter="\n", system_prompt=None, seed=3)
    assert fields["delimiter"] == "\n" and fields["seed"] == 3
    assert fields["system_prompt"] == BOXED_INSTRUCTION  # None is "not given", not "none"
    assert preset_fields(None, delimiter="\n", max_new_tokens=None) == {"delimiter": "\n"}


def test_unknown_preset_names_every_preset():
    with pytest.raises(ValueError) as err:
        get_preset("qwen-2.5-math")
    message = str(err.value)
    assert "qwen-2.5-math" in message and all(name in message for name in PRESET_NAMES)


def test_a_bad_preset_is_refused_naming_it():
    with pytest.raises(ValueError, match="preset broken: delimiter"):
        PolicyPreset(name="broken", models="none", delimiter="", source="a test")
    with pytest.raises(ValueError, match="name must be"):
        PolicyPreset(name="Upper", models="none", source="a test")


def test_generation_config_checks_the_new_fields():
    assert PolicyGenerationConfig(stop_tokens=["<|im_end|>"]).stop_tokens == ("<|im_end|>",)  # JSON gives lists
    for bad in ({"stop_tokens": "<|im_end|>"}, {"stop_tokens": [""]}, {"answer_instruction": " "},
                {"answer_instruction": 3}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PolicyGenerationConfig(**bad)


def test_cli_refuses_an_unknown_preset_in_one_line(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "2 + 3", "answer": "5"}) + "\n")
    run = subprocess.run([sys.executable, "-m", "mcts.search", "--problem-file", str(problems), "--out",
                          str(tmp_path / "out.jsonl"), "--model", "scripted", "--prm", "oracle",
                          "--preset", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --preset: unknown preset 'nope'")
    assert all(name in lines[0] for name in PRESET_NAMES)
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------------------------------------
# A tiny Qwen2 chat model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Qwen2.5's ChatML template (tools left out): its own default system prompt when none is given.
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
# The bigram table: after a newline (the template's last token) or a blank line, "AB" and a blank line.
CHAINS = {"\n": "A", "\n\n": "A", "A": "B", "B": "\n\n", "Q": "<|im_end|>", "<|im_end|>": "A"}
MARGIN = 10.0


def build_qwen_tokenizer():
    """A byte-level BPE as Qwen's (its pre-tokenizer, bytes as characters), whose only merge makes
    `\n\n` one token, as in Qwen's vocabulary; Qwen's special tokens; the ChatML template."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    vocab["ĊĊ"] = len(vocab)  # Ċ is the newline byte
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[("Ċ", "Ċ")], unk_token=None, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def token_id(tokenizer, text: str) -> int:
    [only] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return only


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory) -> Path:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_qwen_tokenizer()
    vocab, hidden = len(tokenizer), 272  # one dimension per token: 256 bytes, the blank line, 3 specials
    assert vocab <= hidden
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    def ids(text: str) -> int:
        return token_id(tokenizer, text)

    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))  # one-hot tokens
        for layer in model.model.layers:  # blocks off: the residual stream is the current token
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, hidden)
        head[ids("\n\n"), :vocab] = MARGIN  # anything else: a blank line
        for a, b in CHAINS.items():
            head[ids("\n\n"), ids(a)] = 0.0
            head[ids(b), ids(a)] = MARGIN
        model.lm_head.weight.copy_(head / math.sqrt(hidden))  # RMSNorm scales a one-hot by sqrt(hidden)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    folder = tmp_path_factory.mktemp("tiny-qwen2-chat")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_policy(folder: Path, preset: str | None, **explicit):
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    fields = preset_fields(preset, seed=0, device="cpu", max_new_tokens=8, num_threads=1, **explicit)
    return HFPolicy.from_pretrained(folder, HFPolicyConfig(**fields))


def rendered(policy, prefix: Prefix) -> str:
    return policy.tokenizer.decode(policy.prompt_ids([prefix])[0])


def test_qwen_preset_renders_its_system_prompt_and_cuts_steps_at_blank_lines(qwen_folder):
    problem = "What is 2 + 3?"
    policy = load_policy(qwen_folder, "qwen2.5-math")
    assert rendered(policy, Prefix(problem, ())) == (
        f"<|im_start|>system\n{BOXED_INSTRUCTION}<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n"
        "<|im_start|>assistant\n")
    [[step]] = policy.propose([Prefix(problem, ())], n=1, temperature=0.0)
    assert step.text == "AB\n\n" and not step.finished and step.num_tokens == 3
    [[second]] = policy.propose([Prefix(problem, (step.text,))], n=1, temperature=0.0)
    assert second.text == "AB\n\n"
    # Without the preset the template's own system prompt is rendered, and nothing is said of \boxed{}.
    plain = load_policy(qwen_folder, None)
    assert "You are Qwen" in rendered(plain, Prefix(problem, ())) and "boxed" not in rendered(plain, Prefix(problem, ()))


def test_answer_instruction_goes_into_the_user_turn(qwen_folder):
    policy = load_policy(qwen_folder, "qwen2.5-instruct")
    text = rendered(policy, Prefix("What is 2 + 3?", ()))
    assert f"<|im_start|>user\nWhat is 2 + 3?\n{BOXED_INSTRUCTION}<|im_end|>" in text
    assert "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud." in text


def test_preset_stop_tokens_end_a_step(qwen_folder):
    prefix = Prefix("What is 2 + 3?", ("Q",))  # the model writes <|im_end|> after "Q"
    [[step]] = load_policy(qwen_folder, "qwen2.5-math").propose([prefix], n=1, temperature=0.0)
    assert step.finished and step.text == "" and step.num_tokens == 1  # the end of the assistant's turn
    # The tokenizer's EOS is <|endoftext|>: without the preset's stop tokens the turn's end is skipped over.
    [[step]] = load_policy(qwen_folder, None).propose([prefix], n=1, temperature=0.0)
    assert not step.finished and step.text == "AB\n\n"


def test_explicit_delimiter_wins_over_the_preset(qwen_folder):
    policy = load_policy(qwen_folder, "qwen2.5-math", delimiter="\n")
    [[step]] = policy.propose([Prefix("What is 2 + 3?", ())], n=1, temperature=0.0)
    assert step.text == "AB\n" and BOXED_INSTRUCTION in rendered(policy, Prefix("x", ()))


def test_a_preset_of_another_family_is_refused_naming_its_stop_token(qwen_folder):
    with pytest.raises(ValueError, match="stop_tokens: '<\\|eot_id\\|>' is not a token"):
        load_policy(qwen_folder, "llama-3.1-instruct")


def test_toy_preset_on_a_chat_model_uses_the_plain_prompt(qwen_folder):
    policy = load_policy(qwen_folder, "toy")
    assert rendered(policy, Prefix("2 + 3", ("x\n",))) == "2 + 3\nx\n"
    [[step]] = policy.propose([Prefix("2 + 3", ())], n=1, temperature=0.0)
    assert step.text == "AB\n"


def test_vllm_backend_takes_the_same_preset(qwen_folder):
    # The engine is not started (vLLM may be absent): the prompt and the stop ids are the policy's own.
    from transformers import AutoTokenizer

    from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig

    tokenizer = AutoTokenizer.from_pretrained(qwen_folder, local_files_only=True)
    policy = VLLMPolicy(object(), tokenizer, VLLMPolicyConfig(**preset_fields("qwen2.5-math")))
    hf = load_policy(qwen_folder, "qwen2.5-math")
    prefix = Prefix("What is 2 + 3?", ("AB\n\n",))
    assert policy.prompt_ids([prefix]) == hf.prompt_ids([prefix])
    assert policy.delimiter == "\n\n"
    assert set(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])) <= set(policy.eos_ids)
    assert set(policy.eos_ids) == set(hf.eos_ids)
    with pytest.raises(ValueError, match="stop_tokens: '<\\|eot_id\\|>'"):
        VLLMPolicy(object(), tokenizer, VLLMPolicyConfig(**preset_fields("llama-3.1-instruct")))


def _search(qwen_folder: Path, tmp_path: Path, *flags: str) -> list[dict]:
    from treesearch.cli import main

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n"
                                for p, a in (("What is 2 + 3?", "5"), ("What is $\\frac{1}{2}$ of 8?", "4"))))
    out = tmp_path / "results.jsonl"
    assert main(["--problem-file", str(problems), "--out", str(out), "--overwrite", "--model", str(qwen_folder),
                 "--algorithm", "greedy", "--max-depth", "2", "--max-new-tokens", "8", "--device", "cpu",
                 *flags]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_search_cli_with_preset(qwen_folder, tmp_path, monkeypatch):
    from mcts.policy import generation

    heads = []
    original = generation.ChatPrompt.head

    def recording_head(self, problem):
        heads.append(original(self, problem))
        return heads[-1]

    monkeypatch.setattr(generation.ChatPrompt, "head", recording_head)
    records = _search(qwen_folder, tmp_path, "--preset", "qwen2.5-math")
    assert [r["trace"] for r in records] == ["AB\n\nAB\n\n"] * 2  # two steps, each cut at its blank line
    assert heads and all(h.startswith(f"<|im_start|>system\n{BOXED_INSTRUCTION}<|im_end|>\n") for h in heads)
    assert {h.split("<|im_start|>user\n")[1].split("<|im_end|>")[0] for h in heads} == {
        "What is 2 + 3?", "What is $\\frac{1}{2}$ of 8?"}
    # --delimiter wins over the preset; --preset toy renders no template at all.
    assert [r["trace"] for r in _search(qwen_folder, tmp_path, "--preset", "qwen2.5-math", "--delimiter", "\\n")] \
        == ["AB\nAB\n"] * 2
    heads.clear()
    assert [r["trace"] for r in _search(qwen_folder, tmp_path, "--preset", "toy")] == ["AB\nAB\n"] * 2
    assert heads == []


def test_presets_are_dataclass_fields_of_the_config():
    names = {f.name for f in dataclasses.fields(PolicyGenerationConfig)}
    for preset in PRESETS.values():
        assert set(preset.fields()) <= names
