"""A `StepProposer` over any local transformers causal LM (ARCHITECTURE.md).

One `propose` call renders every prefix into a prompt, tokenises them all, and runs `generate` over
chunks of `batch_size` sequences (prompts x samples), left-padded. Each sequence stops on its own
at the step delimiter (a per-sequence stopping criterion: the rest of the batch goes on), at EOS,
or at `max_new_tokens`; its text is then cut just after the first delimiter, which is kept, as
vLLM's `include_stop_str_in_output` does:

    prompt  = "2 + 3 * 4\\n"                 (the toy world: problem + delimiter + steps)
    output  = "3 * 4 = 12, so 2 + 12\\n"     Step(text, logprob, num_tokens, finished)

`Step.logprob` is the sum of the log-probabilities of the kept tokens under the model's untempered
distribution (log_softmax of the raw logits), whatever the sampling temperature, so that priors
built from it mean the same at every temperature. Prompts are made by a pure function
`Prefix -> str` (`plain_prompt`, `ChatPrompt`, or the caller's own).

Loading is local only: `HFPolicy.from_pretrained(folder)` never reaches a hub. A folder may declare
the settings its model was trained for (delimiter, chat template) in `treesearch_policy.json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from mcts.grading import extract_answer
from mcts.policy.base import Prefix, Step, check_propose_args
from mcts.policy.torch_utils import torch_threads

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_DELIMITER", "DEFAULT_MAX_NEW_TOKENS", "POLICY_FILE", "ChatPrompt", "HFPolicy",
           "HFPolicyConfig", "PolicyStats", "PromptFn", "plain_prompt", "prompt_requests", "read_policy_defaults",
           "write_policy_defaults"]

PromptFn = Callable[[Prefix], str]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_DELIMITER = "\n\n"
# A model folder may declare the policy settings it was trained for (delimiter, chat_template, ...):
# `from_pretrained` fills the config fields left at None from this file.
POLICY_FILE = "treesearch_policy.json"
# What a field left at None becomes when the model folder declares nothing for it.
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_BATCH_SIZE = 32


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class HFPolicyConfig:
    """How the transformers policy generates steps."""

    max_new_tokens: int | None = dataclasses.field(default=None, metadata=_help(
        "most tokens one step may take; a step that reaches it without the delimiter is truncated "
        "(a dead end: finished); None: what the model folder declares in treesearch_policy.json, else 256"))
    batch_size: int | None = dataclasses.field(default=None, metadata=_help(
        "sequences (prompts x samples) per generate call; None: what the model folder declares, else 32"))
    delimiter: str | None = dataclasses.field(default=None, metadata=_help(
        "the step delimiter ('\\n\\n' for MATH-style models, '\\n' for the toy world); None: the one the "
        "model folder declares in treesearch_policy.json, else '\\n\\n'"))
    device: str = dataclasses.field(default="auto", metadata=_help(
        "'auto' (CUDA when available; an in-memory model stays where it is), 'cpu', 'cuda', 'cuda:1', ..."))
    dtype: str = dataclasses.field(default="auto", metadata=_help(
        "'auto' (bfloat16 on CUDA, else float32; an in-memory model keeps its own), 'float32', "
        "'bfloat16' or 'float16'"))
    chat_template: bool | None = dataclasses.field(default=None, metadata=_help(
        "wrap the problem in the tokenizer's chat template; None: when the tokenizer has one"))
    system_prompt: str | None = dataclasses.field(default=None, metadata=_help(
        "system message of the chat template (None: none)"))
    max_context: int | None = dataclasses.field(default=None, metadata=_help(
        "most positions a prompt plus max_new_tokens may use; None: the model's max_position_embeddings"))
    top_k: int = dataclasses.field(default=0, metadata=_help("top-k sampling; 0 turns it off"))
    top_p: float = dataclasses.field(default=1.0, metadata=_help("nucleus sampling; 1 turns it off"))
    min_p: float = dataclasses.field(default=0.0, metadata=_help(
        "min-p sampling: keep tokens at least this fraction as likely as the most likely one; 0 turns it off"))
    seed: int = dataclasses.field(default=0, metadata=_help(
        "seed of the sampling: the same seed and sequence of calls give the same steps"))
    num_threads: int | None = dataclasses.field(default=None, metadata=_help(
        "torch CPU threads while generating (restored after); None: leave torch's setting. Small "
        "models decode faster on 1 thread, and many threads on a busy CPU stall at every barrier"))

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        if self.delimiter is not None and (not isinstance(self.delimiter, str) or not self.delimiter):
            raise ValueError(f"delimiter must be None or a non-empty string, got {self.delimiter!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if self.max_context is not None and self.max_context <= (self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS):
            raise ValueError(f"max_context must be None or > max_new_tokens, got max_context={self.max_context}, "
                             f"max_new_tokens={self.max_new_tokens}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0: off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or an int >= 1, got {self.num_threads!r}")


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

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)


# ---------------------------------------------------------------------------------------------------
# Prompts: pure functions Prefix -> str


def plain_prompt(prefix: Prefix, delimiter: str) -> str:
    """The prompt of a model without a chat template (the toy world's): `problem + delimiter + steps`.

    Each step already ends with its delimiter, so the steps are joined as they are.
    """
    return prefix.problem + delimiter + "".join(prefix.steps)


class ChatPrompt:
    """Prefix -> prompt through the tokenizer's chat template.

    The problem is the user's message and the generation prompt is added; the template is rendered
    once per problem (an LRU cache: a problem appears in every prefix of its tree), and the steps
    so far follow it as they are, as the assistant's partial answer.
    """

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", system_prompt: str | None = None,
                 cache_size: int = 4096):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("ChatPrompt: the tokenizer has no chat template; use plain_prompt")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.cache_size = cache_size
        self._heads: OrderedDict[str, str] = OrderedDict()

    def head(self, problem: str) -> str:
        """The rendered template of a problem, up to where the assistant's answer starts."""
        head = self._heads.get(problem)
        if head is None:
            messages = [{"role": "user", "content": problem}]
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


# ---------------------------------------------------------------------------------------------------
# Generation hooks


class _LogprobRecorder:
    """A logits processor that records log_softmax(raw logits)[chosen token] for every row.

    It runs before the sampling warpers (temperature, top-k, top-p, which `generate` appends after
    the user's processors) and the policy switches every other processor off, so the scores it sees
    are the model's raw logits. The token drawn at step t is only known at step t + 1 (or from the
    final sequences), so one [B, V] distribution is held at a time.
    """

    def __init__(self):
        self.logprobs: list[torch.Tensor] = []  # [B] per generated token
        self._last: torch.Tensor | None = None  # [B, V] log-probabilities of the latest step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._last is not None:
            self.logprobs.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """[B, T] log-probabilities of the generated tokens [B, T]."""
        steps = generated.shape[1]
        lps = self.logprobs[:steps]
        if len(lps) < steps and self._last is not None:
            lps.append(self._last.gather(1, generated[:, len(lps):len(lps) + 1]).squeeze(1))
        if not lps:
            return torch.zeros(generated.shape, dtype=torch.float32, device=generated.device)
        return torch.stack(lps, dim=1)


class _DelimiterStop:
    """A per-sequence stopping criterion: a row stops once its generated text holds the delimiter.

    Only rows whose latest token can end the delimiter (precomputed over the vocabulary) are
    decoded, and only their last few generated tokens, so the check stays cheap on big batches.
    `stop_at[r]` is the number of generated tokens of row r when it stopped (0: it did not).
    """

    def __init__(self, tokenizer, delimiter: str, can_end: torch.Tensor, prompt_len: int, batch: int):
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.can_end = can_end  # bool [V]
        self.prompt_len = prompt_len
        self.window = 2 * len(delimiter) + 4  # tokens: enough for a delimiter split over several
        self.done = torch.zeros(batch, dtype=torch.bool, device=can_end.device)
        self.stop_at = [0] * batch

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_len
        last = input_ids[:, -1].clamp(0, self.can_end.shape[0] - 1)
        candidates = self.can_end[last] & ~self.done
        if bool(candidates.any()):
            rows = candidates.nonzero().flatten().tolist()
            start = input_ids.shape[1] - min(generated, self.window)
            windows = input_ids[rows, start:].tolist()
            for row, window in zip(rows, windows):
                if self.delimiter in self.tokenizer.decode(window, skip_special_tokens=True):
                    self.done[row] = True
                    self.stop_at[row] = generated
        return self.done.clone()


# ---------------------------------------------------------------------------------------------------
# The policy


def prompt_requests(policy, prefixes: Sequence[Prefix]) -> list[tuple[int, list[int]]]:
    """The (prefix index, prompt ids) of every prefix `policy` (an `HFPolicy` or a `VLLMPolicy`)
    should generate for, in order.

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


def read_policy_defaults(folder: str | Path) -> dict:
    """The `HFPolicyConfig` settings a model folder declares in its `POLICY_FILE` ({} without one).

    Raises ValueError, naming the file, when it is not a JSON object of config fields.
    """
    path = Path(folder) / POLICY_FILE
    if not path.is_file():
        return {}
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    known = {f.name for f in dataclasses.fields(HFPolicyConfig)}
    if not isinstance(declared, dict) or set(declared) - known:
        raise ValueError(f"{path}: expected a JSON object with fields of HFPolicyConfig {sorted(known)}, "
                         f"got {declared!r}")
    return declared


def write_policy_defaults(folder: str | Path, **settings) -> Path:
    """Declares policy settings (`HFPolicyConfig` fields, e.g. delimiter) in a model folder."""
    known = {f.name for f in dataclasses.fields(HFPolicyConfig)}
    if set(settings) - known:
        raise ValueError(f"unknown HFPolicyConfig fields {sorted(set(settings) - known)}")
    HFPolicyConfig(**settings)  # validated
    path = Path(folder) / POLICY_FILE
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class HFPolicy:
    """A batched `StepProposer` over a transformers causal LM, on CPU or GPU.

    Attributes:
        model, tokenizer: the model (in eval mode) and its tokenizer.
        config: the `HFPolicyConfig`.
        delimiter: the step delimiter (the `StepProposer` protocol's).
        prompt_fn: Prefix -> prompt text.
        stats: `PolicyStats`, running totals (tokens, calls) for budget accounting.
    """

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                 config: HFPolicyConfig | None = None, *, prompt_fn: PromptFn | None = None):
        """Args:
            model: a causal LM (`AutoModelForCausalLM`-like, with `generate`).
            tokenizer: its tokenizer.
            config: generation settings (default `HFPolicyConfig()`); `device`/`dtype` 'auto' keep
                the model where and as it is; delimiter None means `DEFAULT_DELIMITER`.
            prompt_fn: Prefix -> prompt; default `ChatPrompt` when the tokenizer has a chat template
                (and `config.chat_template` is not False), else `plain_prompt`.
        """
        config = HFPolicyConfig() if config is None else config
        fallbacks = {"delimiter": DEFAULT_DELIMITER, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
                     "batch_size": DEFAULT_BATCH_SIZE}
        config = dataclasses.replace(config, **{k: v for k, v in fallbacks.items() if getattr(config, k) is None})
        self.config = config
        self.delimiter = config.delimiter
        if self.config.device != "auto":
            model = model.to(_resolve_device(self.config.device))
        if self.config.dtype != "auto":
            model = model.to(_DTYPES[self.config.dtype])
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device

        has_template = getattr(tokenizer, "chat_template", None) is not None
        use_chat = has_template if self.config.chat_template is None else self.config.chat_template
        if use_chat and not has_template:
            raise ValueError("HFPolicy: chat_template=True but the tokenizer has no chat template")
        if prompt_fn is None:
            if use_chat:
                prompt_fn = ChatPrompt(tokenizer, self.config.system_prompt)
            else:
                delimiter = self.config.delimiter
                prompt_fn = lambda prefix: plain_prompt(prefix, delimiter)  # noqa: E731
        self.prompt_fn = prompt_fn
        # A rendered chat template carries its own BOS; a plain prompt gets the tokenizer's.
        self._add_special_tokens = not use_chat

        gen_config = model.generation_config
        self.eos_ids = sorted(set(_as_list(gen_config.eos_token_id)) | set(_as_list(tokenizer.eos_token_id)))
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = _as_list(gen_config.pad_token_id)[0] if gen_config.pad_token_id is not None else None
        if pad is None:
            pad = self.eos_ids[0] if self.eos_ids else 0
        self.pad_id = int(pad)
        self.max_context = self.config.max_context or getattr(model.config, "max_position_embeddings", None)
        self.stats = PolicyStats()
        self._draws = 0
        self._can_end: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, config: HFPolicyConfig | None = None, *,
                        prompt_fn: PromptFn | None = None, **overrides) -> "HFPolicy":
        """Loads a model and its tokenizer from a local folder (never from a hub).

        Settings: `config`'s fields left at None are filled from the folder's `POLICY_FILE` when it
        has one (the toy policy declares its '\\n' delimiter there), then `overrides` win.

        Args:
            path: a folder written by `save_pretrained` (config, weights, tokenizer).
            config: generation settings (default `HFPolicyConfig()`).
            prompt_fn: see `__init__`.
            **overrides: fields of `HFPolicyConfig` to replace, e.g. `delimiter="\\n"`.

        Returns:
            The policy. Raises FileNotFoundError when `path` is not a folder, OSError when the
            folder holds no loadable causal LM and tokenizer; both name the folder.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"HFPolicy: model folder {str(folder)!r} does not exist or is not a folder")
        config = HFPolicyConfig() if config is None else config
        declared = {k: v for k, v in read_policy_defaults(folder).items() if getattr(config, k) is None}
        config = dataclasses.replace(config, **{**declared, **overrides})
        device = _resolve_device(config.device)
        dtype = _resolve_dtype(config.dtype, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
        except Exception as err:  # transformers raises many kinds; say which folder failed, keep the cause
            raise OSError(f"HFPolicy: cannot load a causal LM and its tokenizer from {str(folder)!r}: "
                          f"{type(err).__name__}: {err}") from err
        config = dataclasses.replace(config, device=str(device), dtype={v: k for k, v in _DTYPES.items()}[dtype])
        return cls(model, tokenizer, config, prompt_fn=prompt_fn)

    # -----------------------------------------------------------------------------------------------

    def prompt_ids(self, prefixes: Sequence[Prefix]) -> list[list[int]]:
        """The prompt token ids of each prefix, [P][len]."""
        texts = [self.prompt_fn(p) for p in prefixes]
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=self._add_special_tokens)["input_ids"]

    def reseed(self, seed: int) -> None:
        """Restarts the sampling from `seed`: the next calls draw as those of a fresh policy built
        with `config.seed = seed` (the counter of draws starts again at 0)."""
        self.config = dataclasses.replace(self.config, seed=seed)
        self._draws = 0

    def propose(self, prefixes: Sequence[Prefix], n: int, temperature: float = 1.0, *,
                greedy: bool = False, top_p: float | None = None, top_k: int | None = None,
                min_p: float | None = None) -> list[list[Step]]:
        """Generates `n` next steps for every prefix, batched across all of them.

        Args:
            prefixes: [P] partial solutions.
            n: samples per prefix (>= 1).
            temperature: >= 0; 0 means greedy.
            greedy: greedy decoding (one sequence per prefix, its step returned `n` times).
            top_p, top_k, min_p: sampling truncation of this call; None: the config's.

        Returns:
            [P][n] steps. A prefix whose last step states a final answer, or whose prompt plus
            `max_new_tokens` would exceed the model's context, gets an empty list.
        """
        check_propose_args(n, temperature)
        greedy = greedy or temperature == 0
        self.stats.calls += 1
        self.stats.prefixes += len(prefixes)
        out: list[list[Step]] = [[] for _ in prefixes]

        truncation = dataclasses.replace(self.config, **{k: v for k, v in (
            ("top_p", top_p), ("top_k", top_k), ("min_p", min_p)) if v is not None})  # validates them
        copies = 1 if greedy else n
        # (prefix index, prompt ids), one per sequence
        rows = [request for request in prompt_requests(self, prefixes) for _ in range(copies)]
        # Longest first, so that each chunk holds prompts of similar lengths (little padding).
        rows.sort(key=lambda row: -len(row[1]))

        size = self.config.batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            steps = self._generate([prompt for _, prompt in chunk], greedy, temperature, truncation)
            for (i, _), step in zip(chunk, steps):
                out[i].append(step)
        if greedy and n > 1:
            out = [steps * n for steps in out]
        return out

    # -----------------------------------------------------------------------------------------------

    def _delimiter_end_mask(self, vocab_size: int) -> torch.Tensor:
        """bool [V]: tokens whose text can end the delimiter (holds its last character, or is a
        partial character of a byte-level vocabulary)."""
        if self._can_end is None or self._can_end.shape[0] != vocab_size:
            known = min(vocab_size, len(self.tokenizer))
            texts = self.tokenizer.batch_decode([[t] for t in range(known)], skip_special_tokens=True)
            last = self.delimiter[-1]
            mask = [last in text or "\ufffd" in text for text in texts] + [False] * (vocab_size - known)
            self._can_end = torch.tensor(mask, dtype=torch.bool, device=self.device)
        return self._can_end

    def _generation_kwargs(self, greedy: bool, temperature: float, truncation: HFPolicyConfig | None = None) -> dict:
        # Every sampling knob is set explicitly: values left unset would be filled from the
        # model's own generation_config (a repetition penalty there would bend the logprobs).
        # (Greedy decoding applies no warpers: temperature, top-k and top-p are left out.)
        kwargs = dict(max_new_tokens=self.config.max_new_tokens, num_beams=1, num_return_sequences=1,
                      repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
                      renormalize_logits=False, pad_token_id=self.pad_id,
                      eos_token_id=self.eos_ids or None, use_cache=True, return_dict_in_generate=False)
        if greedy:
            kwargs.update(do_sample=False)
        else:
            t = truncation or self.config
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=t.top_k, top_p=t.top_p,
                          min_p=t.min_p if t.min_p > 0 else None)
        return kwargs

    def _generate(self, prompts: list[list[int]], greedy: bool, temperature: float,
                  truncation: HFPolicyConfig | None = None) -> list[Step]:
        """One `generate` call over left-padded prompts; one Step per prompt."""
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for r, prompt in enumerate(prompts):
            input_ids[r, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[r, width - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)

        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        recorder = _LogprobRecorder()
        stop = _DelimiterStop(self.tokenizer, self.delimiter, self._delimiter_end_mask(vocab_size), width, batch)
        gen_config = GenerationConfig(**self._generation_kwargs(greedy, temperature, truncation))
        seed = (self.config.seed * 1_000_003 + self._draws) % (2**63)
        self._draws += 1
        # The draws use torch's global generators, forked so that the caller's state is left as it was.
        cuda = []
        if self.device.type == "cuda":
            cuda = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda), torch_threads(self.config.num_threads):
            torch.manual_seed(seed)
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_config,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=StoppingCriteriaList([stop]))
            generated = sequences[:, width:]
            logprobs = recorder.finish(generated).float().cpu().tolist()
        tokens = generated.cpu().tolist()

        self.stats.generate_calls += 1
        self.stats.sequences += batch
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        self.stats.decoded_tokens += batch * generated.shape[1]
        eos = set(self.eos_ids)
        return [self._read_step(row, lps, stop.stop_at[r], eos) for r, (row, lps) in enumerate(zip(tokens, logprobs))]

    def _read_step(self, row: list[int], logprobs: list[float], stop_at: int, eos: set[int]) -> Step:
        """The step of one generated row: kept tokens, text cut after the first delimiter."""
        limit = stop_at or len(row)
        eos_at = next((t for t in range(limit) if row[t] in eos), None)
        if eos_at is not None:  # the row ended itself before any delimiter
            kept, reason = eos_at + 1, "eos"
        elif stop_at:
            kept, reason = stop_at, "delimiter"
        else:
            kept, reason = len(row), "length"
        text = self.tokenizer.decode(row[:kept], skip_special_tokens=True)
        cut = text.find(self.delimiter)
        if cut >= 0:
            text = text[:cut + len(self.delimiter)]
            if reason == "length":  # the criterion missed it (a tokenizer that decodes oddly)
                reason = "delimiter"
        self.stats.generated_tokens += kept
        self.stats.truncated += reason == "length"
        self.stats.eos += reason == "eos"
        finished = reason != "delimiter" or extract_answer(text) is not None
        return Step(text=text, logprob=float(sum(logprobs[:kept])), num_tokens=kept, finished=finished)
