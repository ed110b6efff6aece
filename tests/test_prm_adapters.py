"""PRM adapters (prm.adapters, prm.recipes) on tiny random models of the real families, built here.

Each family gets a byte-level BPE tokenizer trained in the test on a small math corpus with the
family's pre-tokenizer pattern (Qwen2's, Llama 3's) and its special tokens, so BPE merges happen as
in the real tokenizers. Each adapter's scores are compared with the family's published recipe,
written below with plain transformers on the recipe's whole string:

- math_shepherd (Llama): the model card's `question step ки\\nstep ки`, softmax over "+"/"-" at the tag;
- qwen_prm (Qwen2 + Linear-ReLU-Linear `score`, Qwen2ForProcessRewardModel's layout and auto_map):
  the model card's chat template with `<extra_0>` and `make_step_rewards`;
- rlhflow (Llama, a Llama-3-style chat template): search-and-learn's one conversation per step, the
  logits at position -3;
- value_head (Qwen2 + `v_head.summary` in model.safetensors, Skywork-o1-Open-PRM's layout): its
  `prepare_input` and a sigmoid at the step tokens;
- generative (the Qwen2 chat model): the verification prompt, P(True)/(P(True)+P(False)).

The builders are imported by tests/test_math_path.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mcts.policy.base import Prefix, Step

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = QWEN_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_POLICY_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nPlease reason step by step, "
                        "and put your final answer within \\boxed{}.<|im_end|>\n{% endif %}" + QWEN_TEMPLATE)
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CORPUS = [
    "What is $\\frac{1}{2} + 3$? First, $\\frac{1}{2} = 0.5$. Then 0.5 + 3 = 3.5. The answer is $\\boxed{3.5}$.",
    "Step 1: 2x = 10 ки\nStep 2: x = 5 ки\nThe answer is 5 ки", "+ - + - ки ки Is step 1 correct? True False",
    "Problem: compute the sum.\n\nWe have that $r = \\sqrt{0^2 + 3^2} = 3.$ Answer: True\nAnswer: False\n",
    "Let $x$ be the number of apples. Then the total is 12, so the answer is \\boxed{12}.\n\n",
] * 20
UNTAGGED = [c for c in CORPUS if "ки" not in c]  # the other families' tokenizers do not hold Math-Shepherd's tag
MATH_PROBLEMS = [
    ("What is $1 + 1$?", ["We add one and one.\n\n", "$1 + 1 = 2$.\n\n", "The answer is $\\boxed{2}$."]),
    ("Find x if 3x = 12.", ["Divide both sides by 3: x = 4\n\n", "So $x = 4$, \\boxed{4}"]),
]


def bpe_tokenizer(pattern: str, specials: list[str], *, bos: str | None, eos: str, pad: str,
                  chat_template: str | None = None, regex: bool = True, vocab_size: int = 420,
                  corpus: list[str] = UNTAGGED):
    """A byte-level BPE trained on `corpus` (merges as real tokenizers have them); BOS added when given."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level])
                         if regex else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                  clean_up_tokenization_spaces=False)
    if chat_template is not None:
        out.chat_template = chat_template
    return out


def qwen_tokenizer(chat_template: str = QWEN_TEMPLATE):
    return bpe_tokenizer(QWEN_PATTERN, QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                         chat_template=chat_template)


def llama_tokenizer(chat: bool = False, **kw):
    if chat:
        return bpe_tokenizer(LLAMA3_PATTERN, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>",
                             pad="<|end_of_text|>", chat_template=LLAMA3_TEMPLATE, **kw)
    return bpe_tokenizer(LLAMA3_PATTERN, ["<s>", "</s>", "<unk>"], bos="<s>", eos="</s>", pad="<unk>", **kw)


def tiny_config(kind: str, tok, **overrides):
    from transformers import LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    params = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return cls(**{**params, **overrides})


def save_causal_lm(folder: Path, kind: str, tok, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_math_shepherd(folder: Path) -> Path:
    return save_causal_lm(folder, "llama", llama_tokenizer(corpus=CORPUS))


def build_rlhflow(folder: Path) -> Path:
    return save_causal_lm(folder, "llama", llama_tokenizer(chat=True), seed=1)


def build_generative(folder: Path) -> Path:
    return save_causal_lm(folder, "qwen2", qwen_tokenizer(QWEN_POLICY_TEMPLATE), seed=2)


def build_qwen_prm(folder: Path, hidden: int = 32) -> Path:
    """Qwen2.5-Math-PRM's layout: Qwen2 weights under model.*, the score MLP under score.0/score.2, and
    a config naming Qwen2ForProcessRewardModel through auto_map (code that is not shipped, not needed)."""
    from safetensors.torch import save_file
    from transformers import Qwen2Model

    tok = qwen_tokenizer()
    config = tiny_config("qwen2", tok, hidden_size=hidden, intermediate_size=2 * hidden)
    torch.manual_seed(3)
    model = Qwen2Model(config)
    score = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"score.{k}": v.contiguous() for k, v in score.state_dict().items()})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    record = config.to_dict()
    record.update(architectures=["Qwen2ForProcessRewardModel"],
                  auto_map={"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"})
    (folder / "config.json").write_text(json.dumps(record), encoding="utf-8")
    tok.save_pretrained(folder)
    return folder


def build_value_head(folder: Path) -> Path:
    """Skywork-o1-Open-PRM's layout: a Qwen2 causal LM with v_head.summary.{weight,bias} in its weights."""
    from safetensors.torch import load_file, save_file

    tok = qwen_tokenizer()
    save_causal_lm(folder, "qwen2", tok, seed=4)
    tensors = load_file(str(folder / "model.safetensors"))
    torch.manual_seed(5)
    tensors["v_head.summary.weight"] = torch.randn(1, 32) * 0.5
    tensors["v_head.summary.bias"] = torch.randn(1)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


BUILDERS = {"math_shepherd": build_math_shepherd, "qwen_prm": build_qwen_prm, "rlhflow": build_rlhflow,
            "value_head": build_value_head, "generative": build_generative}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm-families")
    return {fmt: build(root / fmt) for fmt, build in BUILDERS.items()}


# ---------------------------------------------------------------------------------------------------
# The published recipes, on the whole string, with plain transformers


def _ids(tok, text, special=False):
    return tok(text, add_special_tokens=special)["input_ids"]


@torch.no_grad()
def recipe_math_shepherd(folder, problem, steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    candidate_tokens = [_ids(tok, "+")[-1], _ids(tok, "-")[-1]]
    step_tag_id = _ids(tok, " ки")[-1]  # the tag after its space (this byte-level BPE has no "▁ки")
    output = "\n".join(s.strip() + " ки" for s in steps)
    input_id = torch.tensor([tok.encode(f"{problem} {output}")])
    logits = model(input_id).logits[:, :, candidate_tokens]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_id == step_tag_id].tolist()


@torch.no_grad()
def recipe_qwen_prm(folder, problem, steps):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tok = AutoTokenizer.from_pretrained(folder)
    model = Qwen2Model.from_pretrained(folder, config=Qwen2Config.from_pretrained(folder)).eval()
    state = load_file(str(Path(folder) / "model.safetensors"))
    hidden = model.config.hidden_size
    score = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    score.load_state_dict({k[len("score."):]: v for k, v in state.items() if k.startswith("score.")})
    messages = [{"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
                {"role": "user", "content": problem},
                {"role": "assistant", "content": "<extra_0>".join(s.strip() for s in steps) + "<extra_0>"}]
    conversation_str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = torch.tensor([tok.encode(conversation_str)])
    logits = score(model(input_ids=input_ids).last_hidden_state)
    step_sep_id = tok.encode("<extra_0>")[0]
    token_masks = input_ids == step_sep_id
    probabilities = torch.softmax(logits, dim=-1) * token_masks.unsqueeze(-1)  # make_step_rewards
    sample = probabilities[0]
    return sample[sample != 0].view(-1, 2)[:, 1].tolist()


@torch.no_grad()
def recipe_rlhflow(folder, problem, steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    candidate_tokens = [_ids(tok, "+")[-1], _ids(tok, "-")[-1]]
    conversation, out = [], []
    for k, step in enumerate(s.strip() for s in steps):
        text = problem + " " + step if k == 0 else step
        conversation += [{"content": text, "role": "user"}, {"content": "+", "role": "assistant"}]
        rendered = tok.apply_chat_template(conversation, tokenize=False)
        input_ids = torch.tensor([_ids(tok, rendered)])
        logits = model(input_ids).logits[:, -3, candidate_tokens]  # "\n\n", "+", "<|eot_id|>"
        out.append(logits.softmax(dim=-1)[0, 0].item())
    return out


@torch.no_grad()
def recipe_value_head(folder, problem, steps):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    state = load_file(str(Path(folder) / "model.safetensors"))
    # Skywork-o1-Open-PRM's prepare_input, with step_token "\n" and the response's steps
    prompt_ids = tok.encode((tok.bos_token or "") + problem + "\n")
    step_token_id = tok.encode("\n")[-1]
    input_ids, flags = list(prompt_ids), [0] * len(prompt_ids)
    for step in steps:
        step_ids = tok.encode(step.strip()) + [step_token_id]
        input_ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    hidden = model(input_ids=torch.tensor([input_ids])).last_hidden_state[0]
    values = hidden @ state["v_head.summary.weight"].T + state["v_head.summary.bias"]
    return torch.sigmoid(values[torch.tensor(flags, dtype=torch.bool), 0]).tolist()


@torch.no_grad()
def recipe_generative(folder, problem, steps):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prm.recipes import GENERATIVE_ANSWER, GENERATIVE_HEAD, GENERATIVE_QUESTION

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = _ids(tok, "Answer:")
    true_id, false_id = _ids(tok, "Answer: True")[len(base)], _ids(tok, "Answer: False")[len(base)]
    text, out = GENERATIVE_HEAD.format(problem=problem), []
    for k, step in enumerate(steps):
        text += GENERATIVE_QUESTION.format(n=k + 1, step=step.strip())
        logits = model(torch.tensor([_ids(tok, text, special=True)])).logits[0, -1]
        p = torch.softmax(logits.float(), dim=-1)
        out.append((p[true_id] / (p[true_id] + p[false_id])).item())
        text += GENERATIVE_ANSWER
    return out


RECIPE_FNS = {"math_shepherd": recipe_math_shepherd, "qwen_prm": recipe_qwen_prm, "rlhflow": recipe_rlhflow,
              "value_head": recipe_value_head, "generative": recipe_generative}
TRACES = [*MATH_PROBLEMS, ("Compute 7 - 4. ", ["  7 - 4 = 3\n", "-3 is wrong; it is 3.", "Answer: \\boxed{3}"])]


# ---------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_adapter_matches_the_published_recipe(folders, fmt):
    from treesearch.loaders import load_scorer

    scorer = load_scorer(str(folders[fmt]), prm_format=fmt, device="cpu")
    got = scorer.score_traces([Prefix(p, tuple(s)) for p, s in TRACES])
    for (problem, steps), values in zip(TRACES, got):
        want = RECIPE_FNS[fmt](folders[fmt], problem, steps)
        assert len(want) == len(steps)
        assert values == pytest.approx(want, abs=1e-5), (fmt, problem)
        assert all(0.0 <= v <= 1.0 for v in values)
    # the recipes' scores are not all alike: a reading at the wrong position would show
    flat = [v for values in got for v in values]
    assert max(flat) - min(flat) > 1e-4


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_score_reads_the_last_step_as_score_traces_does(folders, fmt):
    from prm.adapters import load_adapter

    scorer = load_adapter(folders[fmt], fmt, device="cpu", batch_size=2)
    problem, steps = TRACES[0]
    traces = scorer.score_traces([Prefix(problem, tuple(steps))])[0]
    pairs = [(Prefix(problem, tuple(steps[:k])), Step(steps[k])) for k in range(len(steps))]
    singles = scorer.score([p for p, _ in pairs], [s for _, s in pairs])
    assert singles == pytest.approx(traces, abs=1e-5)
    assert scorer.score_outcomes([Prefix(problem, tuple(steps))]) == pytest.approx(traces[-1:], abs=1e-5)


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_pieces_extend_and_equal_the_whole_string(folders, fmt):
    """The piece contract: a prefix's ids are a prefix of its extension's, and (where the recipe
    tokenises a whole string) equal to the recipe's ids."""
    from prm.adapters import load_adapter

    scorer = load_adapter(folders[fmt], fmt, device="cpu")
    problem, steps = TRACES[2]
    full, reads = scorer.encode(problem, steps)
    for k in range(len(steps)):
        ids, part = scorer.encode(problem, steps[:k])
        assert full[:len(ids)] == ids and reads[:k] == part
    whole = scorer.recipe.whole_ids(problem, steps)
    if whole is not None:
        assert whole[:len(full)] == full


def test_the_edge_lists_the_formats_of_prm_adapters():
    from prm.adapters import PRM_FORMATS
    from treesearch.loaders import PRM_FORMAT_CHOICES

    assert PRM_FORMAT_CHOICES == ("auto", *PRM_FORMATS)


def test_auto_detection(folders):
    from prm.adapters import detect_format
    from prm.model import PRMLoadError
    from prm.toy import ensure_toy_prm

    for fmt in ("math_shepherd", "qwen_prm", "value_head"):
        assert detect_format(folders[fmt]) == fmt
    assert detect_format(ensure_toy_prm(progress=False)) == "treesearch"
    for fmt in ("rlhflow", "generative"):  # plain causal LMs: they must be named
        with pytest.raises(PRMLoadError, match="--prm-format"):
            detect_format(folders[fmt])


def test_load_scorer_auto_and_its_errors(folders, tmp_path):
    from prm.adapters import AdapterPRM
    from treesearch.loaders import load_scorer

    assert isinstance(load_scorer(str(folders["qwen_prm"]), device="cpu"), AdapterPRM)
    with pytest.raises(OSError, match="--prm-format"):
        load_scorer(str(folders["rlhflow"]), device="cpu")
    with pytest.raises(ValueError, match="prm_format 'nope' is not one of"):
        load_scorer(str(folders["rlhflow"]), prm_format="nope")
    with pytest.raises(ValueError, match="--prm-format qwen_prm reads a folder"):
        load_scorer("tiny", prm_format="qwen_prm")
    with pytest.raises(OSError, match="does not exist"):
        load_scorer(str(tmp_path / "missing"), prm_format="math_shepherd")
    with pytest.raises(ValueError, match="--prm-format math_shepherd needs --prm-backend hf"):
        load_scorer(str(folders["math_shepherd"]), prm_backend="vllm")
    with pytest.raises(ValueError, match="prm_backend='tpu' is not one of"):
        load_scorer(str(folders["math_shepherd"]), prm_backend="tpu")


def test_qwen_prm_needs_no_remote_code_but_others_are_refused(folders, tmp_path):
    import shutil

    from prm.adapters import load_adapter
    from prm.model import PRMLoadError

    load_adapter(folders["qwen_prm"], "qwen_prm", device="cpu")  # its config's auto_map is not needed
    copy = shutil.copytree(folders["math_shepherd"], tmp_path / "coded")
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(PRMLoadError, match="--trust-remote-code"):
        load_adapter(copy, "math_shepherd")
    tok_config = json.loads((folders["qwen_prm"] / "tokenizer_config.json").read_text())
    coded_tok = shutil.copytree(folders["qwen_prm"], tmp_path / "coded-tok")
    tok_config["auto_map"] = {"AutoTokenizer": ["tokenization_x.X", None]}
    (coded_tok / "tokenizer_config.json").write_text(json.dumps(tok_config))
    with pytest.raises(PRMLoadError, match="tokenizer_config.json.*--trust-remote-code"):
        load_adapter(coded_tok, "qwen_prm")


def test_a_tokenizer_that_merges_across_steps_is_refused(tmp_path):
    """Without the pre-tokenizer's split, BPE merges the tag with the newline after it ("ки\\n"):
    piece-wise ids would not be the recipe's, and the loader says so."""
    from prm.adapters import load_adapter
    from prm.model import PRMLoadError

    tok = llama_tokenizer(regex=False, corpus=["Step 1: x = 2 ки\nStep 2: so 2 ки\n"] * 50)
    assert len(_ids(tok, " ки\nStep")) < len(_ids(tok, " ки")) + len(_ids(tok, "\nStep"))
    folder = save_causal_lm(tmp_path / "merging", "llama", tok)
    with pytest.raises(PRMLoadError, match="merges tokens across step boundaries"):
        load_adapter(folder, "math_shepherd")


def test_wrong_folders_name_what_is_missing(folders, tmp_path):
    import shutil

    from prm.adapters import load_adapter
    from prm.model import PRMLoadError

    with pytest.raises(PRMLoadError, match="value_head.*no value head"):
        load_adapter(folders["generative"], "value_head")
    with pytest.raises(PRMLoadError, match="qwen_prm.*<extra_0>"):
        load_adapter(folders["rlhflow"], "qwen_prm")
    with pytest.raises(PRMLoadError, match="qwen_prm.*chat template"):
        load_adapter(folders["math_shepherd"], "qwen_prm")
    with pytest.raises(PRMLoadError, match="rlhflow.*chat template"):
        load_adapter(folders["math_shepherd"], "rlhflow")
    bad = shutil.copytree(folders["math_shepherd"], tmp_path / "capped")
    config = json.loads((bad / "config.json").read_text())
    config["final_logit_softcapping"] = 30.0
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(PRMLoadError, match="soft-capped"):
        load_adapter(bad, "math_shepherd")


def test_adapter_config_is_checked(folders):
    from prm.adapters import load_adapter

    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        load_adapter(folders["math_shepherd"], "math_shepherd", batch_size=0)


def test_max_length_cuts_the_start_and_reads_nan_for_lost_steps(folders):
    from prm.adapters import load_adapter

    full = load_adapter(folders["value_head"], "value_head", device="cpu")
    problem, steps = TRACES[0]
    ids, reads = full.encode(problem, steps)
    keep = len(ids) - reads[0] - 1  # the first step's read position falls off, the others stay
    short = load_adapter(folders["value_head"], "value_head", device="cpu", max_length=keep)
    got = short.score_traces([Prefix(problem, tuple(steps))])[0]
    assert math.isnan(got[0]) and all(not math.isnan(v) for v in got[1:])


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_incremental_scoring_reads_each_token_once_and_equals_a_full_reading(folders, fmt):
    """Every adapter reads through the KV cache by default (prm/kv_cache.py): a tree grown round by
    round scores as a full rereading does, at every depth, while reading only the new steps' tokens."""
    import random

    from prm.adapters import load_adapter

    incremental = load_adapter(folders[fmt], fmt, device="cpu", batch_size=3)
    full = load_adapter(folders[fmt], fmt, device="cpu", batch_size=3, incremental=False)
    assert incremental.kv_cache is not None and full.kv_cache is None
    rng = random.Random(0)
    pool = ["Add them: 3 + 4 = 7.", "So the total is 7.", "Then 7 * 2 = 14.", "Check: 14 / 2 = 7.",
            "Hence x = 5.", "Wrong: 3 + 4 = 8.", "The answer is \\boxed{14}."]
    problem = MATH_PROBLEMS[0][0]
    frontier = [()]
    for depth in range(1, 9):
        prefixes = [Prefix(problem, s) for s in frontier for _ in range(2)]
        steps = [Step(rng.choice(pool)) for _ in prefixes]
        before = incremental.kv_cache.stats.tokens_read
        got = incremental.score(prefixes, steps)
        read = incremental.kv_cache.stats.tokens_read - before
        assert got == pytest.approx(full.score(prefixes, steps), abs=1e-5), depth
        new_tokens = sum(len(incremental.piece_ids(s.text, depth - 1)[0]) for s in steps)
        heads = len(incremental.head_ids(problem)) if depth == 1 else 0
        assert read <= new_tokens + heads, (depth, read, new_tokens)  # never the prefix again
        frontier = [(*p.steps, s.text) for p, s in zip(prefixes, steps)][:3]
