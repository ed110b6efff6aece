"""The core the model backends share (ARCHITECTURE.md): one definition of how a policy over a
language model renders its prompts, ends a step, seeds its draws, and of the settings that say so.
The transformers backend (`hf_policy.HFPolicy`) and the vLLM one (`vllm_policy.VLLMPolicy`) both
build on it, so that the same config gives the same prompts, the same step boundaries and the same
`finished` flags through either (greedy steps equal token for token, up to float noise).

    PolicyGenerationConfig   the settings both backends' configs share (a frozen, keyword-only base
                             dataclass, validated): max_new_tokens, delimiter, chat_template,
                             system_prompt, top_k, top_p, min_p, seed, trust_remote_code,
                             answer_instruction, stop_tokens
    plain_prompt, ChatPrompt the two prompt layouts, pure Prefix -> str
    user_message             the problem as the user states it (with the answer instruction)
    resolve_prompt           the backends' choice of layout (and of special tokens)
    prompt_token_ids         prompts as token ids, as both backends tokenise them
    prompt_requests          which prefixes get a request (not a finished one, not one too long)
    finish_step              generated text + tokens + log-probabilities -> Step: the delimiter cut
                             and the `finished` rule
    request_seed             the seed of a policy's k-th draw since it was seeded
    token_id_list            an EOS/pad id setting (None, an id or ids) as a list
    stop_token_ids           the ids of `stop_tokens` in a tokenizer (ValueError for one it lacks)
    PolicyStats              the running totals both backends keep

This module imports neither torch nor vLLM.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Sequence

from mcts.grading import extract_answer
from mcts.policy.base import Prefix, SamplingTruncation, Step
from mcts.options import option

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["DEFAULT_DELIMITER", "DEFAULT_MAX_NEW_TOKENS", "REQUEST_SEED_MODULUS", "STOP_REASONS", "ChatPrompt",
           "PolicyGenerationConfig", "PolicyStats", "PromptFn", "finish_step", "plain_prompt", "prompt_requests",
           "prompt_token_ids", "request_seed", "resolve_prompt", "stop_token_ids", "token_id_list", "user_message"]

PromptFn = Callable[[Prefix], str]

DEFAULT_DELIMITER = "\n\n"
# What max_new_tokens left at None becomes when the model folder declares nothing for it.
DEFAULT_MAX_NEW_TOKENS = 256
# Why a step ended (`finish_step`).
STOP_REASONS = ("delimiter", "eos", "length")
# The default range of `request_seed`: below 2**31, as vLLM seeds a torch.Generator per request.
REQUEST_SEED_MODULUS = 2**31 - 1
_SEED_STRIDE = 1_000_003



def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyGenerationConfig:
    """The generation settings every model backend shares (`HFPolicyConfig` and `VLLMPolicyConfig`
    add their own). Keyword-only; validated on construction (ValueError naming the field)."""

    max_new_tokens: int | None = option(None,
        "most tokens one step may take; a step that reaches it without the delimiter is truncated "
        "(a dead end: finished); None: what the model folder declares in treesearch_policy.json, else 256")
    delimiter: str | None = option(None,
        "the step delimiter ('\\n\\n' for MATH-style models, '\\n' for the toy world); None: the one the "
        "model folder declares in treesearch_policy.json, else '\\n\\n'")
    chat_template: bool | None = option(None,
        "wrap the problem in the tokenizer's chat template; None: when the tokenizer has one")
    system_prompt: str | None = option(None,
        "system message of the chat template (None: none)")
    top_k: int = option(0, "top-k sampling; 0 turns it off")
    top_p: float = option(1.0, "nucleus sampling; 1 turns it off")
    min_p: float = option(0.0,
        "min-p sampling: keep tokens at least this fraction as likely as the most likely one; 0 turns it off")
    seed: int | None = option(0,
        "seed of the sampling: the same seed and sequence of calls give the same steps")
    trust_remote_code: bool = option(False,
        "let a model folder run its own Python code (the auto_map of its config.json): only for a "
        "folder you trust; off, such a folder is refused (a model folder cannot declare it)")
    answer_instruction: str | None = option(None,
        "said after the problem, on a line of its own, in the user's message (e.g. 'Please reason step by "
        "step, and put your final answer within \\boxed{}.'), for models told so in the user turn; None: nothing")
    stop_tokens: tuple[str, ...] | None = option(None,
        "tokens that end a step as EOS does, besides the model's own EOS ids (e.g. '<|im_end|>'); each must "
        "be one token of the tokenizer. None: none")

    def __post_init__(self):
        if self.max_new_tokens is not None and not _positive_int(self.max_new_tokens):
            raise ValueError(f"max_new_tokens must be None or an int >= 1, got {self.max_new_tokens!r}")
        if self.delimiter is not None and (not isinstance(self.delimiter, str) or not self.delimiter):
            raise ValueError(f"delimiter must be None or a non-empty string, got {self.delimiter!r}")
        if self.chat_template not in (None, True, False):
            raise ValueError(f"chat_template must be None, True or False, got {self.chat_template!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(f"system_prompt must be None or a string, got {self.system_prompt!r}")
        if self.answer_instruction is not None and (not isinstance(self.answer_instruction, str)
                                                    or not self.answer_instruction.strip()):
            raise ValueError(f"answer_instruction must be None or a non-empty string, got {self.answer_instruction!r}")
        if self.stop_tokens is not None:
            if (isinstance(self.stop_tokens, str) or not isinstance(self.stop_tokens, (list, tuple))
                    or not all(isinstance(t, str) and t for t in self.stop_tokens)):
                raise ValueError(f"stop_tokens must be None or a list of non-empty strings, got {self.stop_tokens!r}")
            object.__setattr__(self, "stop_tokens", tuple(self.stop_tokens))  # a folder's JSON gives a list
        self.truncation  # noqa: B018 - validates top_k, top_p, min_p
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"seed must be None or an int, got {self.seed!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"trust_remote_code must be True or False, got {self.trust_remote_code!r}")

    @property
    def truncation(self) -> SamplingTruncation:
        """The sampling truncation set here (top_p, top_k, min_p)."""
        return SamplingTruncation(top_p=self.top_p, top_k=self.top_k, min_p=self.min_p)


# ---------------------------------------------------------------------------------------------------
# Prompts: pure functions Prefix -> str, and their tokens


def user_message(problem: str, answer_instruction: str | None = None) -> str:
    """What the user says: the problem, then the answer instruction (if any) on a line of its own."""
    return problem if answer_instruction is None else f"{problem}\n{answer_instruction}"


def plain_prompt(prefix: Prefix, delimiter: str, answer_instruction: str | None = None) -> str:
    """The prompt of a model without a chat template (the toy world's): `problem + delimiter + steps`
    (the problem followed by its answer instruction, if any).

    Each step already ends with its delimiter, so the steps are joined as they are.
    """
    return user_message(prefix.problem, answer_instruction) + delimiter + "".join(prefix.steps)


class ChatPrompt:
    """Prefix -> prompt through the tokenizer's chat template.

    The problem (`user_message`: with the answer instruction, if any) is the user's message, after
    the system prompt if there is one, and the generation prompt is added; the template is rendered
    once per problem (an LRU cache: a problem appears in every prefix of its tree), and the steps
    so far follow it as they are, as the assistant's partial answer.
    """

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", system_prompt: str | None = None,
                 cache_size: int = 4096, answer_instruction: str | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("ChatPrompt: the tokenizer has no chat template; use plain_prompt")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.answer_instruction = answer_instruction
        self.cache_size = cache_size
        self._heads: OrderedDict[str, str] = OrderedDict()

    def head(self, problem: str) -> str:
        """The rendered template of a problem, up to where the assistant's answer starts."""
        head = self._heads.get(problem)
        if head is None:
            messages = [{"role": "user", "content": user_message(problem, self.answer_instruction)}]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            self._heads[problem] = head
            if len(self._heads) > self.cache_size:
                self._heads.popitem(last=False)
        else:
            self._heads.move_to_end(problem)
        return head

    def __call__(self, prefix: Prefix) -> str:
        return self.head(prefix.problem) + "".join(prefix.steps)


def resolve_prompt(tokenizer: "PreTrainedTokenizerBase", config: PolicyGenerationConfig,
                   prompt_fn: PromptFn | None = None, *, owner: str = "policy") -> tuple[PromptFn, bool]:
    """A backend's prompt: (prompt_fn, add_special_tokens).

    The chat template is used when `config.chat_template` says so, or, left at None, when the
    tokenizer has one (ValueError, naming `owner`, when it is asked for and there is none).
    `prompt_fn` (the caller's own) wins; else `ChatPrompt` with the config's system prompt, or
    `plain_prompt` with the config's delimiter (which must be resolved); both with its answer
    instruction. A rendered chat template
    carries its own BOS, so add_special_tokens is False then; a plain prompt gets the tokenizer's.
    """
    has_template = getattr(tokenizer, "chat_template", None) is not None
    use_chat = has_template if config.chat_template is None else config.chat_template
    if use_chat and not has_template:
        raise ValueError(f"{owner}: chat_template=True but the tokenizer has no chat template")
    if prompt_fn is None:
        if use_chat:
            prompt_fn = ChatPrompt(tokenizer, config.system_prompt, answer_instruction=config.answer_instruction)
        else:
            if config.delimiter is None:
                raise ValueError(f"{owner}: the delimiter must be resolved before the prompt")
            prompt_fn = functools.partial(plain_prompt, delimiter=config.delimiter,
                                          answer_instruction=config.answer_instruction)
    return prompt_fn, not use_chat


def prompt_token_ids(tokenizer: "PreTrainedTokenizerBase", prompt_fn: PromptFn, prefixes: Sequence[Prefix],
                     add_special_tokens: bool) -> list[list[int]]:
    """The prompt token ids of each prefix, [P][len], tokenised by the model's HF tokenizer."""
    texts = [prompt_fn(p) for p in prefixes]
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]


def prompt_requests(policy, prefixes: Sequence[Prefix]) -> list[tuple[int, list[int]]]:
    """The (prefix index, prompt ids) of every prefix `policy` (an `HFPolicy` or a `VLLMPolicy`:
    `prompt_ids`, `max_context`, `config.max_new_tokens`, `stats`) should generate for, in order.

    Left out: a prefix whose last step states a final answer, and one whose prompt plus
    `max_new_tokens` exceeds the policy's `max_context` (counted in `stats.too_long`). Raises
    ValueError for a prefix that renders to an empty prompt.
    """
    live = [i for i, p in enumerate(prefixes) if not (p.steps and extract_answer(p.steps[-1]) is not None)]
    out = []
    for i, prompt in zip(live, policy.prompt_ids([prefixes[i] for i in live])):
        if not prompt:
            raise ValueError(f"{type(policy).__name__}: prefix {i} renders to an empty prompt")
        if policy.max_context is not None and len(prompt) + policy.config.max_new_tokens > policy.max_context:
            policy.stats.too_long += 1
            continue
        out.append((i, list(prompt)))
    return out


# ---------------------------------------------------------------------------------------------------
# Steps and seeds


def finish_step(text: str, token_ids: Sequence[int], logprobs: Sequence[float] | float, reason: str,
                delimiter: str) -> tuple[Step, str]:
    """The `Step` of one generated sequence, and why it ended.

    Args:
        text: the decoded text of the kept tokens (special tokens skipped).
        token_ids: the kept tokens: those up to the one that completed the delimiter, or up to the
            EOS token (included), or all `max_new_tokens` (their count is the step's budget).
        logprobs: their log-probabilities under the model's untempered distribution, one per
            token, or already summed.
        reason: why the backend stopped: 'delimiter', 'eos' or 'length' (`STOP_REASONS`).
        delimiter: the step delimiter.

    Returns:
        (step, reason). The text is cut just after the first delimiter, which is kept. A 'length'
        sequence whose text holds the delimiter (it came with the last allowed token, or a stop
        check missed it) is a 'delimiter' step; a 'delimiter' one whose text lacks it (another stop
        string) ended the sequence: 'eos'. The step is `finished` unless it ended at the delimiter
        without stating a final answer (EOS and truncation are dead ends).
    """
    if reason not in STOP_REASONS:
        raise ValueError(f"reason must be one of {STOP_REASONS}, got {reason!r}")
    cut = text.find(delimiter)
    if cut >= 0:
        text = text[:cut + len(delimiter)]
        if reason == "length":
            reason = "delimiter"
    elif reason == "delimiter":
        reason = "eos"
    finished = reason != "delimiter" or extract_answer(text) is not None
    logprob = float(logprobs) if isinstance(logprobs, (int, float)) else float(sum(logprobs))
    return Step(text=text, logprob=logprob, num_tokens=len(token_ids), finished=finished), reason


def request_seed(seed: int | None, draw: int, modulus: int = REQUEST_SEED_MODULUS) -> int | None:
    """The seed of a policy's `draw`-th draw (a request, or a generate call; 0 first) since it was
    seeded with `seed`: `(seed * 1_000_003 + draw) % modulus`; None for an unseeded policy.

    The same seed and sequence of calls give the same seeds, so the same steps, whatever else is
    batched with them. `modulus` is the range of the generator seeded (the default suits vLLM's
    per-request generators; the transformers backend seeds torch's with 2**63).
    """
    if seed is None:
        return None
    return (seed * _SEED_STRIDE + draw) % modulus


def token_id_list(value) -> list[int]:
    """A token id setting (`eos_token_id` of a tokenizer or generation config: None, an id, or a
    list of ids) as a list of ints."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def stop_token_ids(tokenizer: "PreTrainedTokenizerBase", tokens: Sequence[str] | None) -> list[int]:
    """The ids of `tokens` (a config's `stop_tokens`) in `tokenizer`. Raises ValueError naming a
    token that is not one token of it (a stop token of another model family: the wrong preset)."""
    ids = []
    for token in tokens or ():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise ValueError(f"stop_tokens: {token!r} is not a token of this model's tokenizer")
        ids.append(int(token_id))
    return ids


@dataclasses.dataclass
class PolicyStats:
    """Running totals of one policy instance, for budget accounting (`HFPolicy.stats`).

    `generated_tokens` counts the kept tokens of every distinct generated step (the budget unit; a
    greedy step returned n times is generated, and counted, once); `decoded_tokens` counts every
    position decoded, padding of finished rows included (the compute actually spent).
    """

    calls: int = 0  # propose() calls
    generate_calls: int = 0  # model.generate() calls (chunks)
    prefixes: int = 0  # prefixes asked for
    sequences: int = 0  # sequences generated
    prompt_tokens: int = 0  # prompt tokens of the generated sequences
    generated_tokens: int = 0
    decoded_tokens: int = 0
    truncated: int = 0  # steps that reached max_new_tokens without the delimiter
    eos: int = 0  # steps ended by EOS
    too_long: int = 0  # prefixes skipped by the context guard (given [])

    def count_step(self, step: Step, reason: str) -> None:
        """Counts one distinct generated step and why it ended (`finish_step`'s reason)."""
        self.generated_tokens += step.num_tokens
        self.truncated += reason == "length"
        self.eos += reason == "eos"

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)
