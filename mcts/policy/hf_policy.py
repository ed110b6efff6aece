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

The prompts, the cut of a step at its delimiter, the `finished` rule, the per-draw seeds and the
settings shared with the vLLM backend come from `mcts.policy.generation` (re-exported here under
their old names); this module adds what is particular to transformers: left-padded batched
`generate`, a per-sequence stop at the delimiter, and the recording of untempered log-probabilities.

Loading is local only: `HFPolicy.from_pretrained(folder)` never reaches a hub, and never runs the
folder's own code unless `trust_remote_code=True` (`mcts.policy.remote_code`). A folder may declare
the settings its model was trained for (delimiter, chat template) in `treesearch_policy.json`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from mcts.policy.base import Prefix, SamplingTruncation, Step, check_propose_args
from mcts.policy.generation import (
    DEFAULT_DELIMITER,
    DEFAULT_MAX_NEW_TOKENS,
    ChatPrompt,
    PolicyGenerationConfig,
    PolicyStats,
    PromptFn,
    finish_step,
    plain_prompt,
    prompt_requests,
    prompt_token_ids,
    request_seed,
    resolve_prompt,
    stop_token_ids,
    token_id_list,
)
from mcts.policy.remote_code import check_remote_code
from mcts.policy.torch_utils import torch_threads
from mcts.options import option

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_DELIMITER", "DEFAULT_MAX_NEW_TOKENS", "POLICY_FILE", "ChatPrompt", "HFPolicy",
           "HFPolicyConfig", "PolicyStats", "PromptFn", "plain_prompt", "prompt_requests", "read_policy_defaults",
           "write_policy_defaults"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# A model folder may declare the policy settings it was trained for (delimiter, chat_template, ...):
# `from_pretrained` fills the config fields left at None from this file.
POLICY_FILE = "treesearch_policy.json"
# What batch_size left at None becomes when the model folder declares nothing for it.
DEFAULT_BATCH_SIZE = 32
# torch.manual_seed takes seeds below 2**64: the per-draw seeds of `request_seed` are kept below 2**63.
_TORCH_SEED_MODULUS = 2**63
# Settings a model folder may not declare for itself.
_UNDECLARABLE = ("trust_remote_code",)



@dataclasses.dataclass(frozen=True, kw_only=True)
class HFPolicyConfig(PolicyGenerationConfig):
    """How the transformers policy generates steps: the settings shared with the vLLM backend
    (`PolicyGenerationConfig`: max_new_tokens, delimiter, chat_template, system_prompt,
    top_k, top_p, min_p, seed, trust_remote_code, answer_instruction, stop_tokens), and those of
    transformers below. `seed` must be an int."""

    batch_size: int | None = option(None,
        "sequences (prompts x samples) per generate call; None: what the model folder declares, else 32")
    device: str = option("auto",
        "'auto' (CUDA when available; an in-memory model stays where it is), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = option("auto",
        "'auto' (bfloat16 on CUDA, else float32; an in-memory model keeps its own), 'float32', "
        "'bfloat16' or 'float16'")
    max_context: int | None = option(None,
        "most positions a prompt plus max_new_tokens may use; None: the model's max_position_embeddings")
    num_threads: int | None = option(None,
        "torch CPU threads while generating (restored after); None: leave torch's setting. Small "
        "models decode faster on 1 thread, and many threads on a busy CPU stall at every barrier")

    def __post_init__(self):
        super().__post_init__()
        if self.seed is None:
            raise ValueError("seed must be an int (the transformers backend always seeds its draws), got None")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if self.max_context is not None and self.max_context <= (self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS):
            raise ValueError(f"max_context must be None or > max_new_tokens, got max_context={self.max_context}, "
                             f"max_new_tokens={self.max_new_tokens}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or an int >= 1, got {self.num_threads!r}")


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
    known = {f.name for f in dataclasses.fields(HFPolicyConfig)} - set(_UNDECLARABLE)
    granted = sorted(set(declared) & set(_UNDECLARABLE)) if isinstance(declared, dict) else []
    if granted:
        raise ValueError(f"{path}: a model folder cannot declare {', '.join(granted)} for itself (the caller "
                         f"grants it: --trust-remote-code, trust_remote_code=True)")
    if not isinstance(declared, dict) or set(declared) - known:
        raise ValueError(f"{path}: expected a JSON object with fields of HFPolicyConfig {sorted(known)}, "
                         f"got {declared!r}")
    return declared


def write_policy_defaults(folder: str | Path, **settings) -> Path:
    """Declares policy settings (`HFPolicyConfig` fields, e.g. delimiter; not trust_remote_code) in a
    model folder."""
    known = {f.name for f in dataclasses.fields(HFPolicyConfig)} - set(_UNDECLARABLE)
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

        # A rendered chat template carries its own BOS; a plain prompt gets the tokenizer's.
        self.prompt_fn, self._add_special_tokens = resolve_prompt(tokenizer, config, prompt_fn, owner="HFPolicy")

        gen_config = model.generation_config
        self.eos_ids = sorted(set(token_id_list(gen_config.eos_token_id)) | set(token_id_list(tokenizer.eos_token_id))
                              | set(stop_token_ids(tokenizer, config.stop_tokens)))
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = token_id_list(gen_config.pad_token_id)[0] if gen_config.pad_token_id is not None else None
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
        The folder's own code (an `auto_map` in its config.json) runs only with
        `trust_remote_code=True` (in `config` or `overrides`).

        Args:
            path: a folder written by `save_pretrained` (config, weights, tokenizer).
            config: generation settings (default `HFPolicyConfig()`).
            prompt_fn: see `__init__`.
            **overrides: fields of `HFPolicyConfig` to replace, e.g. `delimiter="\\n"`.

        Returns:
            The policy. Raises FileNotFoundError when `path` is not a folder, `RemoteCodeError` (a
            ValueError) when it asks to run its own code and trust_remote_code is False, OSError
            when it holds no loadable causal LM and tokenizer; each names the folder.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"HFPolicy: model folder {str(folder)!r} does not exist or is not a folder")
        config = HFPolicyConfig() if config is None else config
        declared = {k: v for k, v in read_policy_defaults(folder).items() if getattr(config, k) is None}
        config = dataclasses.replace(config, **{**declared, **overrides})
        check_remote_code(folder, config.trust_remote_code)
        device = _resolve_device(config.device)
        dtype = _resolve_dtype(config.dtype, device)
        trust = config.trust_remote_code
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                                         trust_remote_code=trust)
        except Exception as err:  # transformers raises many kinds; say which folder failed, keep the cause
            raise OSError(f"HFPolicy: cannot load a causal LM and its tokenizer from {str(folder)!r}: "
                          f"{type(err).__name__}: {err}") from err
        config = dataclasses.replace(config, device=str(device), dtype={v: k for k, v in _DTYPES.items()}[dtype])
        return cls(model, tokenizer, config, prompt_fn=prompt_fn)

    # -----------------------------------------------------------------------------------------------

    def prompt_ids(self, prefixes: Sequence[Prefix]) -> list[list[int]]:
        """The prompt token ids of each prefix, [P][len]."""
        return prompt_token_ids(self.tokenizer, self.prompt_fn, prefixes, self._add_special_tokens)

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

        truncation = self.config.truncation.override(top_p=top_p, top_k=top_k, min_p=min_p)  # validated
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

    def _generation_kwargs(self, greedy: bool, temperature: float,
                           truncation: SamplingTruncation | None = None) -> dict:
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
            t = truncation or self.config.truncation
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=t.top_k, top_p=t.top_p,
                          min_p=t.min_p if t.min_p > 0 else None)
        return kwargs

    def _generate(self, prompts: list[list[int]], greedy: bool, temperature: float,
                  truncation: SamplingTruncation | None = None) -> list[Step]:
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
        seed = request_seed(self.config.seed, self._draws, _TORCH_SEED_MODULUS)
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
        """The step of one generated row: the kept tokens (up to the delimiter's stop, or EOS), then
        `finish_step` (the text cut after the first delimiter, the finished rule)."""
        limit = stop_at or len(row)
        eos_at = next((t for t in range(limit) if row[t] in eos), None)
        if eos_at is not None:  # the row ended itself before any delimiter
            kept, reason = eos_at + 1, "eos"
        elif stop_at:
            kept, reason = stop_at, "delimiter"
        else:
            kept, reason = len(row), "length"
        text = self.tokenizer.decode(row[:kept], skip_special_tokens=True)
        step, reason = finish_step(text, row[:kept], logprobs[:kept], reason, self.delimiter)
        self.stats.count_step(step, reason)
        return step
