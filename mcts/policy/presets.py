"""Presets: how the common policy families are prompted, written once, in one table.

A preset fills the prompt and step settings of a policy (`PolicyGenerationConfig`, shared by the
transformers and vLLM backends) the way its model family was published to be used:

    PolicyPreset             one family's settings: system prompt, answer instruction (the "put
                             your final answer within \\boxed{}" the family expects, where it
                             expects it), step delimiter, stop tokens, chat template, and the
                             source of the recipe
    PRESETS                  the table, by name (`PRESET_NAMES` in order)
    get_preset(name)         the preset of a name; ValueError naming the known ones
    preset_fields(name, **explicit)
                             the config fields of a preset, with every explicit setting that is
                             not None put over them: explicit settings win

`python -m mcts.search --preset NAME` takes one; its `--delimiter` (and any other explicit setting)
still wins, and a model folder's `treesearch_policy.json` only fills what neither sets. Sampling
advice of a family (DeepSeek-R1's temperature 0.6) is a search setting (`--temperature`), so a
preset does not carry it; the notes column says where one exists.
"""

from __future__ import annotations

import dataclasses

from mcts.options import option, require
from mcts.policy.generation import PolicyGenerationConfig

__all__ = ["BOXED_INSTRUCTION", "PRESETS", "PRESET_NAMES", "PolicyPreset", "get_preset", "preset_fields"]

# The answer format of every MATH-style recipe below (Qwen2.5-Math's system prompt, DeepSeek-R1's
# advice for the user turn); the grader reads the last \boxed{}.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# search-and-learn's system prompt for Llama-3.x-Instruct on MATH (`sal.config.Config.system_prompt`),
# Meta's MATH prompt of the Llama 3 evaluations.
LLAMA_MATH_SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\nUse this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem.")

QWEN_DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# The fields of `PolicyGenerationConfig` a preset sets.
_POLICY_FIELDS = ("system_prompt", "answer_instruction", "delimiter", "stop_tokens", "chat_template")


@dataclasses.dataclass(frozen=True)
class PolicyPreset:
    """How one model family is prompted and where its steps end. Checked on construction: its
    policy fields must make a valid `PolicyGenerationConfig`."""

    name: str = option(help="what --preset calls it")
    models: str = option(help="the checkpoints it is for")
    system_prompt: str | None = option(None, "the system message (None: none, or the template's default)")
    answer_instruction: str | None = option(None, "said after the problem in the user's message (None: nothing)")
    delimiter: str = option("\n\n", "the step delimiter")
    stop_tokens: tuple[str, ...] = option((), "special tokens that end the answer besides the model's EOS")
    chat_template: bool = option(True, "render the prompt with the tokenizer's chat template")
    source: str = option("", "where the recipe is published, and what is this table's own choice")

    def __post_init__(self):
        require(isinstance(self.name, str) and self.name == self.name.strip().lower() and bool(self.name),
                f"PolicyPreset: name must be a lower-case non-empty string, got {self.name!r}")
        require(bool(self.models) and bool(self.source), f"preset {self.name}: models and source must be given")
        require(isinstance(self.stop_tokens, tuple), f"preset {self.name}: stop_tokens must be a tuple")
        try:
            PolicyGenerationConfig(**self.fields())
        except ValueError as err:
            raise ValueError(f"preset {self.name}: {err}") from None

    def fields(self) -> dict:
        """The `PolicyGenerationConfig` fields this preset sets (stop_tokens None when it has none)."""
        out = {name: getattr(self, name) for name in _POLICY_FIELDS}
        out["stop_tokens"] = out["stop_tokens"] or None
        return out


PRESETS: dict[str, PolicyPreset] = {p.name: p for p in (
    PolicyPreset(
        name="qwen2.5-math", models="Qwen2.5-Math-1.5B/7B/72B-Instruct",
        system_prompt=BOXED_INSTRUCTION, stop_tokens=("<|im_end|>", "<|endoftext|>"),
        source="Qwen2.5-Math model card and evaluation (prompt 'qwen25-math-cot'): this system prompt, the "
               "problem as the user turn, ChatML; EOS <|im_end|> and <|endoftext|> (generation_config.json)"),
    PolicyPreset(
        name="qwen2.5-instruct", models="Qwen2.5-0.5B...72B-Instruct (general chat models)",
        system_prompt=QWEN_DEFAULT_SYSTEM_PROMPT, answer_instruction=BOXED_INSTRUCTION,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        source="the system prompt is the one Qwen2.5's chat template adds when none is given; the boxed "
               "instruction in the user turn is this table's choice (Qwen's math evaluation puts it in the "
               "system prompt for its math models: --preset qwen2.5-math)"),
    PolicyPreset(
        name="llama-3.1-instruct", models="Llama-3.1-8B/70B-Instruct, Llama-3.2-1B/3B-Instruct",
        system_prompt=LLAMA_MATH_SYSTEM_PROMPT, stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
        source="search-and-learn's MATH system prompt for Llama-3.2-Instruct (from Meta's Llama 3 MATH "
               "evaluation prompt), steps at blank lines ('## Step k:' blocks); EOS <|eot_id|> and "
               "<|end_of_text|>"),
    PolicyPreset(
        name="deepseek-r1-distill", models="DeepSeek-R1-Distill-Qwen-1.5B/7B/14B/32B, -Llama-8B/70B",
        answer_instruction=BOXED_INSTRUCTION, stop_tokens=("<｜end▁of▁sentence｜>",),
        source="DeepSeek-R1 usage recommendations: no system prompt, every instruction in the user turn, "
               "for maths this boxed directive; temperature 0.5-0.7 (0.6) and top-p 0.95 are search "
               "settings (--temperature, --top-p); EOS <｜end▁of▁sentence｜>"),
    PolicyPreset(
        name="mistral-instruct", models="Mistral-7B-Instruct-v0.1/v0.2/v0.3, Mixtral-8x7B-Instruct",
        answer_instruction=BOXED_INSTRUCTION, stop_tokens=("</s>",),
        source="Mistral publishes no maths recipe: this table's choice is the boxed instruction in the "
               "user turn, because the v0.1/v0.2 chat templates refuse a system message; EOS </s>"),
    PolicyPreset(
        name="toy", models="the toy world's tiny policy (--model tiny) and any model trained on its traces",
        delimiter="\n", chat_template=False,
        source="this project's toy world: problem, '\\n', then one reduction per line "
               "(mcts/envs/models/toy-policy/treesearch_policy.json declares the same delimiter)"),
)}
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> PolicyPreset:
    """The preset called `name`. Raises ValueError, listing the presets, for an unknown name."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESET_NAMES)}")
    return preset


def preset_fields(name: str | None, **explicit) -> dict:
    """`PolicyGenerationConfig` (or `HFPolicyConfig` / `VLLMPolicyConfig`) keyword arguments: the
    preset's fields (none when `name` is None), then every `explicit` setting that is not None
    over them, so that a flag the user gives always wins over the preset."""
    fields = {} if name is None else get_preset(name).fields()
    return {**fields, **{k: v for k, v in explicit.items() if v is not None}}
