"""The toy world's tiny transformer policy: the embedded default policy of the search CLI.

A small Llama-architecture causal LM (0.37M parameters) with a character-level tokenizer, trained
on traces of `mcts.envs.arith` problems and saved with `save_pretrained`, so that it runs through
the same transformers backend (`HFPolicy`) as real models. The full build ships inside the package
(`mcts/envs/models/toy-policy`, weights stored as float16, about 1 MB): nothing trains on first use.

    ensure_toy_policy()        the model folder: the shipped one (a cache build for --quick or when
                               the shipped folder is missing or stale)
    load_toy_policy()          that folder as an `HFPolicy` with the toy world's settings
    toy_problem_config()       the problems it is trained for: draw search problems from it
    python -m mcts.envs.tiny_models build --ship          rebuild the shipped folder (about 10 minutes, one core)
    python -m mcts.envs.tiny_models build [--out DIR] [--quick] [--steps N] [--seconds N]
    python -m mcts.envs.tiny_models check [DIR]           a folder's files against their recorded sha256
    python -m mcts.envs.tiny_models evaluate [--model DIR] [--n 100] [--pass-k 16]

Training data: problem + "\\n" + canonical solution steps + EOS, with 1-6 operations on operands up to
10, every value a solution writes within 100 (arithmetic facts are what a small model can learn
from few traces, and there are few enough of these; short problems are drawn more often). A
fraction of the traces is rolled out by the toy world's noisy `ScriptedPolicy` instead: its slips
stay in the text, as context, but carry no loss, so the model learns to go on from the wrong states
a search reaches without being taught to slip. The loss is on solution tokens only. The full build
is competent but fallible (see the table at `FULL_CONFIG`): greedy, it solves every one-operation
problem, three in four with two operations, one in five with three and almost none with four,
while sampled at T=1 it holds right solutions its greedy path misses (pass@16 0.66 against greedy
0.49 over 1-4 operations): searching with it pays.

Every build records, in `toy_policy.json`, its full config, the code version, the torch version,
the training figures, the accuracy measured on the saved weights, and the sha256 of every other
file. Training runs on one thread with fixed seeds, so a rebuild with the same torch on the same
kind of CPU gives the same files bit for bit (the test suite checks that on the quick build, and
that the shipped folder matches its record and the code's `FULL_CONFIG`). A build is atomic: it
trains into a temporary folder beside the destination and renames it into place; a file lock keeps
two processes from training the same folder at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from mcts.envs.arith import (
    DELIMITER,
    ArithConfig,
    FinalAnswer,
    answer_step,
    generate_problem,
    generate_problems,
    label_step,
    parse_step,
    reduce_once,
    reduction_step,
    render,
    solution_steps,
)
from mcts.policy.base import Prefix

if TYPE_CHECKING:
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

__all__ = [
    "CHARACTERS",
    "FORMAT_VERSION",
    "FULL_CONFIG",
    "INFO_FILE",
    "QUICK_CONFIG",
    "SHIPPED_DIR",
    "SPECIAL_TOKENS",
    "ToyTrainConfig",
    "Trace",
    "build_char_tokenizer",
    "build_toy_policy",
    "check_folder",
    "code_version",
    "default_cache_dir",
    "encode_trace",
    "ensure_toy_policy",
    "evaluate_toy_policy",
    "folder_hashes",
    "format_table",
    "greedy_solve",
    "load_toy_policy",
    "main",
    "make_parser",
    "make_traces",
    "shipped_toy_policy",
    "solve",
    "toy_policy_config",
    "toy_problem_config",
    "train_config_of",
    "train_toy_model",
]

FORMAT_VERSION = 3  # 1: the first draft (192 wide, operands to 25), never a finished build; 2: 1600 steps, built
# on first use (greedy 0.96 / 0.50 / 0.04 / 0.00 at 1-4 operations)
INFO_FILE = "toy_policy.json"
# The full build, shipped in the package (`python -m mcts.envs.tiny_models build --ship` writes it).
SHIPPED_DIR = Path(__file__).resolve().parent / "models" / "toy-policy"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0, 1, 2, 3
# Newline and printable ASCII: every character the toy world writes, and then some.
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))
IGNORE_INDEX = -100
SHIP_PASS_K = 16  # the shipped build's record holds pass@16 at T=1 beside its greedy accuracy
EVAL_SEED = 777  # problems of the accuracy recorded after a build: seeds EVAL_SEED + k, k operations


def _help(text: str) -> dict:
    return {"help": text}


# ---------------------------------------------------------------------------------------------------
# Tokenizer


def build_char_tokenizer(model_max_length: int = 1024):
    """A character-level tokenizer over `CHARACTERS`, as a `transformers.PreTrainedTokenizerFast`.

    One token per character (a BPE without merges), `<bos>` prepended by the post-processor when
    special tokens are added, no normalisation, and a decoder that fuses the characters back:
    decoding reproduces any text of `CHARACTERS` exactly, spaces and newlines included. Other
    characters become `<unk>` (dropped when special tokens are skipped).
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        clean_up_tokenization_spaces=False, model_max_length=model_max_length)


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class ToyTrainConfig:
    """The architecture, data and optimisation of a toy policy build."""

    hidden_size: int = dataclasses.field(default=96, metadata=_help("model width"))
    num_layers: int = dataclasses.field(default=3, metadata=_help("transformer blocks"))
    num_heads: int = dataclasses.field(default=3, metadata=_help("attention heads (hidden_size must divide)"))
    intermediate_size: int = dataclasses.field(default=288, metadata=_help("MLP width"))
    max_positions: int = dataclasses.field(default=1024, metadata=_help("context length"))
    steps: int = dataclasses.field(default=3000, metadata=_help("optimizer steps (when seconds is None)"))
    seconds: float | None = dataclasses.field(default=None, metadata=_help(
        "train for about this many seconds instead of `steps`: the step count is set from the speed "
        "of the first steps (machine-dependent)"))
    batch_size: int = dataclasses.field(default=32, metadata=_help("traces per step"))
    lr: float = dataclasses.field(default=5e-3, metadata=_help("peak learning rate (AdamW)"))
    min_lr_ratio: float = dataclasses.field(default=0.1, metadata=_help("final LR as a fraction of the peak"))
    warmup_steps: int = dataclasses.field(default=100, metadata=_help("linear warmup steps, then cosine decay"))
    weight_decay: float = dataclasses.field(default=0.01, metadata=_help("AdamW weight decay on matrices"))
    grad_clip: float = dataclasses.field(default=1.0, metadata=_help("gradient norm clip"))
    min_ops: int = dataclasses.field(default=1, metadata=_help("fewest operations of a training problem"))
    max_ops: int = dataclasses.field(default=6, metadata=_help("most operations of a training problem"))
    max_operand: int = dataclasses.field(default=10, metadata=_help("largest operand of a training problem"))
    max_value: int | None = dataclasses.field(default=100, metadata=_help(
        "bound on |every intermediate value| of a training problem (ArithConfig.max_value); None: unbounded"))
    ops_weights: tuple[float, ...] | None = dataclasses.field(default=(4, 3, 2, 1, 1, 1), metadata=_help(
        "relative frequency of each number of operations min_ops..max_ops; None: uniform"))
    distinct_traces: int | None = dataclasses.field(default=None, metadata=_help(
        "train on only the first this many traces, over and over (a deliberately data-starved policy, "
        "the starting point of self-training); None: a fresh trace every time"))
    noisy_fraction: float = dataclasses.field(default=0.25, metadata=_help(
        "fraction of traces rolled out by the noisy scripted policy (slips in context, no loss on them)"))
    slip_rate: float = dataclasses.field(default=0.15, metadata=_help(
        "base_eps of that scripted policy (its slip rate on one-digit + and -)"))
    data_seed: int = dataclasses.field(default=1234, metadata=_help("seed of the training problems and slips"))
    seed: int = dataclasses.field(default=0, metadata=_help("seed of the initialisation and batch order"))
    num_threads: int | None = dataclasses.field(default=1, metadata=_help(
        "torch threads while training (the result depends on it: a fixed count makes a build "
        "reproducible bit for bit); None: `default_threads()` (the CPUs not kept busy by others)"))
    eval_per_ops: int = dataclasses.field(default=100, metadata=_help(
        "problems per number of operations (1-6) for the accuracy recorded after training; 0: skip"))
    eval_samples: int = dataclasses.field(default=0, metadata=_help(
        "samples per prefix for the recorded T=1 step rates; 0: greedy accuracy only (faster)"))

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
                     "steps", "batch_size", "min_ops", "max_ops", "max_operand"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads must divide hidden_size, got hidden_size={self.hidden_size}, "
                             f"num_heads={self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"the head size hidden_size / num_heads must be even (rotary embeddings), got "
                             f"{self.hidden_size} / {self.num_heads}")
        if not self.min_ops <= self.max_ops <= 8:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 8, got {self.min_ops}, {self.max_ops}")
        if self.distinct_traces is not None and self.distinct_traces < 1:
            raise ValueError(f"distinct_traces must be None or >= 1, got {self.distinct_traces}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"seconds must be None or > 0, got {self.seconds}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.warmup_steps >= 0 and self.grad_clip > 0):
            raise ValueError(f"need lr > 0, 0 <= min_lr_ratio <= 1, warmup_steps >= 0, grad_clip > 0; got "
                             f"lr={self.lr}, min_lr_ratio={self.min_lr_ratio}, warmup_steps={self.warmup_steps}, "
                             f"grad_clip={self.grad_clip}")
        if not 0 <= self.noisy_fraction <= 1 or not 0 <= self.slip_rate <= 0.5:
            raise ValueError(f"need 0 <= noisy_fraction <= 1 and 0 <= slip_rate <= 0.5, got "
                             f"{self.noisy_fraction}, {self.slip_rate}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be None or >= 1, got {self.num_threads}")
        if self.ops_weights is not None and (
                len(self.ops_weights) != self.max_ops - self.min_ops + 1
                or any(not (math.isfinite(w) and w >= 0) for w in self.ops_weights) or sum(self.ops_weights) <= 0):
            raise ValueError(f"ops_weights must give one non-negative weight per number of operations "
                             f"{self.min_ops}..{self.max_ops}, with a positive sum; got {self.ops_weights!r}")
        if self.eval_per_ops < 0 or self.eval_samples < 0:
            raise ValueError(f"eval_per_ops and eval_samples must be >= 0, got {self.eval_per_ops}, "
                             f"{self.eval_samples}")

    def arith(self, ops: int | None = None) -> ArithConfig:
        """The problem config of training problems (with exactly `ops` operations when given)."""
        lo, hi = (self.min_ops, self.max_ops) if ops is None else (ops, ops)
        return ArithConfig(min_ops=lo, max_ops=hi, max_operand=self.max_operand, max_value=self.max_value)


# 0.37M parameters, 3000 steps of 32 traces on one thread (a fixed thread count keeps the build
# reproducible bit for bit). Arithmetic facts, not the format, are what takes steps: every operand
# pair is learnt as a fact, so operands go up to 10 and every value a solution writes stays within
# 100. Training length is what sets competence; measured on 100 fresh problems per number of
# operations (seed EVAL_SEED), greedy accuracy at 1/2/3/4 operations and, in brackets, the mean
# over 1-4 of greedy and of pass@16 at T=1:
#     1600 steps (format 2, 150 s)     0.96 0.50 0.04 0.00   (0.375; pass@32 0.64 on other problems)
#     3000 steps (this build, 540 s)   1.00 0.76 0.18 0.03   (0.49; 0.66)
#     4500 steps                       1.00 0.96 0.73 0.49   (0.80; 0.90 on 60 per number)
#     8000 steps                       1.00 1.00 0.91 0.65   (0.89; 0.95)
#     3500 steps, ops weights 2,2,2,2,1,1   1.00 0.98 0.79 0.56   (0.83)
#     0.17M parameters (64 wide), 7000 steps    1.00 1.00 0.95 0.65   (0.90)
# Longer training makes the policy right more often and its mistakes surer: pass@16 - greedy falls
# from 0.17 at 3000 steps to 0.10 at 4500 and 0.06 at 8000. 3000 steps is the most competent build
# whose samples still hold many right solutions its greedy path misses.
FULL_CONFIG = ToyTrainConfig()  # the shipped build (SHIPPED_DIR)
# Seconds on 2 cores: learns the step format, little arithmetic (for tests).
QUICK_CONFIG = ToyTrainConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=512,
                              steps=250, batch_size=16, lr=1e-2, warmup_steps=25, max_ops=2, ops_weights=None,
                              eval_per_ops=0)


def toy_problem_config(ops: int | None = None, config: ToyTrainConfig | None = None) -> ArithConfig:
    """The problems the toy policy is trained on (operand range, value bound), with `ops` operations
    when given, else its whole 1-6 range: draw the problems of a search with it from here.

    Args:
        ops: exactly this many operations (any of 1-8; beyond the training range the policy is weaker).
        config: the build's config (default `FULL_CONFIG`).
    """
    config = FULL_CONFIG if config is None else config
    arith = config.arith()
    return arith if ops is None else dataclasses.replace(arith, min_ops=ops, max_ops=ops)


# Declared in the model folder (`HFPolicy.from_pretrained` reads them): any loader gets them right.
TOY_POLICY_DEFAULTS = {"delimiter": DELIMITER, "chat_template": False, "num_threads": 1, "max_new_tokens": 160,
                       "batch_size": 128}


def toy_policy_config(**overrides) -> "HFPolicyConfig":
    """The `HFPolicyConfig` of the toy policy: delimiter '\\n', no chat template, one thread (its
    matrices are too small to share), steps up to 160 characters (the longest canonical step of a
    6-operation problem is about 60)."""
    from mcts.policy.hf_policy import HFPolicyConfig

    settings = dict(TOY_POLICY_DEFAULTS)
    settings.update(overrides)
    return HFPolicyConfig(**settings)


# ---------------------------------------------------------------------------------------------------
# Training data


@dataclasses.dataclass(frozen=True)
class Trace:
    """A training trace: the problem, its steps (each ending with the delimiter), and whether each
    step carries loss (False for the scripted policy's slips)."""

    problem: str
    steps: tuple[str, ...]
    trained: tuple[bool, ...]


def _canonical_next(expr) -> str:
    red = reduce_once(expr)
    if red is None:
        return answer_step(expr) + DELIMITER
    return reduction_step(red.a, red.op, red.b, red.result, red.after) + DELIMITER


def _noisy_traces(problems: Sequence[str], slip_rate: float, seed: int) -> list[Trace]:
    """Rollouts of the noisy scripted policy at temperature 1; a step is trained iff it is the
    canonical reduction of the expression it follows (right or wrong, that expression)."""
    from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig, current_expression

    policy = ScriptedPolicy(ToyPolicyConfig(base_eps=slip_rate), seed=seed)
    traces: dict[int, tuple[list[str], list[bool]]] = {i: ([], []) for i in range(len(problems))}
    live = list(range(len(problems)))
    while live:
        prefixes = [Prefix(problems[i], tuple(traces[i][0])) for i in live]
        proposals = policy.propose(prefixes, 1)
        still = []
        for i, prefix, steps in zip(live, prefixes, proposals):
            if not steps:
                continue
            step = steps[0]
            traces[i][0].append(step.text)
            traces[i][1].append(step.text == _canonical_next(current_expression(prefix)))
            if not step.finished:
                still.append(i)
        live = still
    return [Trace(problems[i], tuple(s), tuple(t)) for i, (s, t) in traces.items()]


def make_traces(start: int, count: int, config: ToyTrainConfig) -> list[Trace]:
    """Training traces `start .. start + count - 1` of a build, deterministic.

    Problem i, and whether the noisy scripted policy rolls it out, depend on (i, config) only; the
    slips of those rollouts on the block too (one scripted policy seeded by its start).
    """
    counts = range(config.min_ops, config.max_ops + 1)
    ariths = {k: config.arith(k) for k in counts}
    problems, noisy = [], []
    for i in range(start, start + count):
        rng = random.Random(f"toy-train:{config.data_seed}:{i}")
        k = rng.choices(counts, weights=config.ops_weights)[0]  # (drawn with random() alone)
        problems.append(render(generate_problem(rng, ariths[k])))
        noisy.append(rng.random() < config.noisy_fraction)
    rolled = iter(_noisy_traces([p for p, z in zip(problems, noisy) if z], config.slip_rate,
                                seed=config.data_seed * 1_000_003 + start))
    traces = []
    for problem, z in zip(problems, noisy):
        if z:
            traces.append(next(rolled))
        else:
            steps = tuple(s + DELIMITER for s in solution_steps(problem))
            traces.append(Trace(problem, steps, (True,) * len(steps)))
    return traces


def encode_trace(tokenizer, trace: Trace) -> tuple[list[int], list[int]]:
    """Token ids and labels of a trace: `<bos> problem \\n step... <eos>`.

    Labels are IGNORE_INDEX (-100) on `<bos>`, the problem line and untrained steps, and the token
    ids elsewhere (the trained steps and `<eos>`, which is trained when the last step is). The
    model shifts labels itself.
    """
    pieces = [trace.problem + DELIMITER, *trace.steps]
    encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id, *encoded[0]]
    labels = [IGNORE_INDEX] * len(ids)
    for step_ids, trained in zip(encoded[1:], trace.trained):
        ids.extend(step_ids)
        labels.extend(step_ids if trained else [IGNORE_INDEX] * len(step_ids))
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id if trace.trained and trace.trained[-1] else IGNORE_INDEX)
    return ids, labels


def _batches(tokenizer, config: ToyTrainConfig, pool_batches: int = 32) -> Iterator[tuple]:
    """Endless (input_ids, labels) batches, right-padded, of traces of similar lengths.

    Traces come in pools of `pool_batches` batches: each pool is sorted by length, cut into
    batches, and the batches shuffled (seeded), so that padding stays small.
    """
    import torch

    rng = random.Random(f"toy-batches:{config.seed}")
    pool = config.batch_size * pool_batches
    start = 0
    distinct = ([encode_trace(tokenizer, t) for t in make_traces(0, config.distinct_traces, config)]
                if config.distinct_traces is not None else None)
    while True:
        if distinct is not None:  # draw from the same few traces again and again
            examples = [distinct[rng.randrange(len(distinct))] for _ in range(pool)]
        else:
            examples = [encode_trace(tokenizer, t) for t in make_traces(start, pool, config)]
            start += pool
        examples.sort(key=lambda e: len(e[0]))
        chunks = [examples[i:i + config.batch_size] for i in range(0, pool, config.batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            width = min(max(len(ids) for ids, _ in chunk), config.max_positions)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            for r, (i, l) in enumerate(chunk):
                ids[r, :min(len(i), width)] = torch.tensor(i[:width])
                labels[r, :min(len(l), width)] = torch.tensor(l[:width])
            yield ids, labels


# ---------------------------------------------------------------------------------------------------
# Training


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Training threads: the CPUs this process may use, less those other processes keep busy (the
    1-minute load average). OpenMP threads that outnumber the free cores stall at every barrier:
    on a busy 2-core machine 2 threads train 5 times slower than 1."""
    cpus = _cpu_count()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0.0
    return max(1, min(cpus, cpus - int(busy)))


def _llama_config(config: ToyTrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=config.max_positions,
        rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, use_cache=True)


def train_toy_model(config: ToyTrainConfig = FULL_CONFIG, *, progress: bool = True):
    """Trains a toy policy in memory.

    Args:
        config: the build's settings.
        progress: show a tqdm bar.

    Returns:
        (model in eval mode, tokenizer, info): info records the steps run, the seconds spent, the
        final loss (mean of the last 20 steps) and the parameter count.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_char_tokenizer(config.max_positions)
    from mcts.policy.hf_policy import torch_threads

    threads = config.num_threads or default_threads()
    with torch_threads(threads):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(_llama_config(config, tokenizer))
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=config.lr, betas=(0.9, 0.95), eps=1e-8)
        total = [config.steps]  # set from the measured speed when training for `seconds`
        calibrate_at = min(10, config.warmup_steps) if config.seconds else None

        def lr_factor(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / config.warmup_steps
            progress_ = min(1.0, (step - config.warmup_steps) / max(1, total[0] - config.warmup_steps))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress_))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        batches = _batches(tokenizer, config)
        model.train()
        losses: list[float] = []
        started = time.perf_counter()
        bar = tqdm(total=total[0], desc="training the toy policy", unit="step", disable=not progress,
                   dynamic_ncols=True)
        step = 0
        while step < total[0]:
            ids, labels = next(batches)
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if calibrate_at is not None and step == calibrate_at:
                per_step = (time.perf_counter() - started) / step
                total[0] = max(step + 1, config.warmup_steps + 1, int(config.seconds / per_step))
                bar.total = total[0]
                bar.refresh()
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        bar.close()
        seconds = time.perf_counter() - started
        model.eval()
    info = {
        "steps": step,
        "train_seconds": round(seconds, 1),
        "threads": threads,
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "traces_seen": step * config.batch_size,
    }
    return model, tokenizer, info


# ---------------------------------------------------------------------------------------------------
# Evaluation


def solve(policy, problems: Sequence[str], *, samples: int = 1, temperature: float = 0.0,
          max_steps: int = 12) -> list[list[list[str]]]:
    """Step-by-step solutions, `samples` per problem: one batched `propose` per depth until every
    trace finishes.

    Args:
        policy: a `StepProposer`.
        problems: [P] problem texts.
        samples: traces per problem.
        temperature: the policy's sampling temperature; 0 is greedy (then one trace per problem is
            enough: the others repeat it).
        max_steps: a trace still going after this many steps is cut.

    Returns:
        [P][samples] lists of step texts.
    """
    traces: list[list[str]] = [[] for _ in range(len(problems) * samples)]
    live = list(range(len(traces)))
    for _ in range(max_steps):
        if not live:
            break
        prefixes = [Prefix(problems[i // samples], tuple(traces[i])) for i in live]
        proposals = policy.propose(prefixes, 1, temperature)  # the contract: temperature 0 is greedy
        still = []
        for i, steps in zip(live, proposals):
            if not steps:
                continue
            traces[i].append(steps[0].text)
            if not steps[0].finished:
                still.append(i)
        live = still
    return [traces[p * samples:(p + 1) * samples] for p in range(len(problems))]


def greedy_solve(policy, problems: Sequence[str], max_steps: int = 12) -> list[list[str]]:
    """Greedy step-by-step solutions ([P] lists of step texts; see `solve`)."""
    return [runs[0] for runs in solve(policy, problems, max_steps=max_steps)]


def _answers(trace: Sequence[str], gold: int) -> bool:
    parsed = parse_step(trace[-1]) if trace else None
    return isinstance(parsed, FinalAnswer) and parsed.value == gold


def evaluate_toy_policy(policy, *, per_ops: int = 100, ops: Sequence[int] = range(1, 7), seed: int = 777,
                        problems: ArithConfig | None = None, samples: int = 4,
                        temperature: float = 1.0, pass_k: int = 0) -> list[dict]:
    """Accuracy of a policy on fresh toy problems, by number of operations.

    Per number of operations k, on `per_ops` problems drawn by `generate_problems` with seed
    `seed + k` from `problems` (default `toy_problem_config()`, the policy's training
    distribution) with exactly k operations:
    - greedy_accuracy: greedy step-by-step solutions whose final answer is the gold value;
    - pass_at_k: with `pass_k` > 0, the fraction of problems of which at least one of `pass_k`
      solutions sampled at `temperature` ends at the gold value (what a perfect selector over
      that many samples would reach); `pass_k` is recorded beside it;
    - sampled_step_correct: from every prefix of the canonical solution (all correct), `samples`
      steps at `temperature`; the fraction the oracle labels correct (how often a search that
      samples a next step gets it right);
    - sampled_parse_rate: the fraction of those steps `parse_step` can read.
    With `samples=0` the two sampled rates are None, and with `pass_k=0` pass_at_k is None (faster).

    Returns:
        One dict per k: {ops, problems, greedy_accuracy, pass_k, pass_at_k, sampled_step_correct,
        sampled_parse_rate}.
    """
    base = toy_problem_config() if problems is None else problems
    rows = []
    for k in ops:
        records = generate_problems(per_ops, seed + k, dataclasses.replace(base, min_ops=k, max_ops=k))
        texts = [r["problem"] for r in records]
        golds = [r["answer"] for r in records]
        greedy = greedy_solve(policy, texts, max_steps=k + 4)
        row = {"ops": k, "problems": len(texts),
               "greedy_accuracy": sum(map(_answers, greedy, golds)) / max(1, len(texts)),
               "pass_k": pass_k or None, "pass_at_k": None, "sampled_step_correct": None,
               "sampled_parse_rate": None}
        if pass_k:
            runs = solve(policy, texts, samples=pass_k, temperature=temperature, max_steps=k + 4)
            hits = [any(_answers(trace, gold) for trace in traces) for traces, gold in zip(runs, golds)]
            row["pass_at_k"] = sum(hits) / max(1, len(texts))
        if samples:
            prefixes, gold_of = [], []
            for problem, gold in zip(texts, golds):
                steps = [s + DELIMITER for s in solution_steps(problem)]
                for depth in range(len(steps)):
                    prefixes.append(Prefix(problem, tuple(steps[:depth])))
                    gold_of.append(gold)
            proposals = policy.propose(prefixes, samples, temperature)
            labels = [label_step(s.text, g) for steps, g in zip(proposals, gold_of) for s in steps]
            readable = [parse_step(s.text) is not None for steps in proposals for s in steps]
            row["sampled_step_correct"] = sum(labels) / max(1, len(labels))
            row["sampled_parse_rate"] = sum(readable) / max(1, len(readable))
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The rows of `evaluate_toy_policy` as a text table."""

    def cell(value, width):
        return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"

    k = next((r.get("pass_k") for r in rows if r.get("pass_k")), None)
    lines = [f"ops  problems  greedy acc  {f'pass@{k}' if k else 'pass@k':>8}  T=1 step correct  T=1 parse rate"]
    for r in rows:
        lines.append(f"{r['ops']:>3}  {r['problems']:>8}  {cell(r['greedy_accuracy'], 10)}  "
                     f"{cell(r.get('pass_at_k'), 8)}  {cell(r['sampled_step_correct'], 16)}  "
                     f"{cell(r['sampled_parse_rate'], 14)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Building, caching, loading


def default_cache_dir(quick: bool = False, root: str | os.PathLike | None = None) -> Path:
    """Where the toy policy lives: `<root>/toy-policy-v<FORMAT_VERSION>` (`toy-policy-quick-v...`
    for the quick build), root being `$TREESEARCH_CACHE` or `~/.cache/treesearch`."""
    if root is None:
        root = os.environ.get("TREESEARCH_CACHE") or Path.home() / ".cache" / "treesearch"
    name = f"toy-policy-quick-v{FORMAT_VERSION}" if quick else f"toy-policy-v{FORMAT_VERSION}"
    return Path(root).expanduser() / name


def _read_info(folder: Path) -> dict | None:
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format_version") == FORMAT_VERSION else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file of a model folder but its record (`toy_policy.json`), by name."""
    folder = Path(folder)
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != INFO_FILE}


def code_version() -> str:
    """The package version and, in a git checkout, the commit (with '+dirty' for local changes)."""
    from importlib import metadata

    try:
        version = metadata.version("treesearch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+git.{commit}{'.dirty' if dirty else ''}"


def build_toy_policy(out: str | os.PathLike, config: ToyTrainConfig = FULL_CONFIG, *, progress: bool = True,
                     replace: bool = False, storage_dtype: str = "float32", pass_k: int = 0) -> Path:
    """Trains a toy policy and saves it (model, tokenizer, `toy_policy.json`) into `out`, atomically.

    Training happens in a temporary folder beside `out`, renamed into place at the end: an
    interrupted build leaves no half model. When `out` already exists it is kept (the other
    build's result wins) unless `replace`. The record `toy_policy.json` holds the build config,
    the code version, the training figures, the accuracy measured on the saved weights (loaded
    back as float32) and the sha256 of every other file of the folder.

    Args:
        storage_dtype: the weights' dtype on disk ('float32' or 'float16': half the size; loading
            on CPU restores float32).
        pass_k: also record pass@k of `pass_k` samples at T=1 (0: greedy accuracy only).

    Returns:
        `out`.
    """
    import torch

    from mcts.policy.hf_policy import HFPolicy, write_policy_defaults

    if storage_dtype not in ("float32", "float16"):
        raise ValueError(f"storage_dtype must be 'float32' or 'float16', got {storage_dtype!r}")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model, tokenizer, info = train_toy_model(config, progress=progress)
        model.to(getattr(torch, storage_dtype)).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_policy_defaults(tmp, **TOY_POLICY_DEFAULTS)
        accuracy = []
        if config.eval_per_ops:
            started = time.perf_counter()
            policy = HFPolicy.from_pretrained(tmp, toy_policy_config(device="cpu", dtype="float32"))
            accuracy = evaluate_toy_policy(policy, per_ops=config.eval_per_ops, seed=EVAL_SEED,
                                           problems=config.arith(), samples=config.eval_samples, pass_k=pass_k)
            info["eval_seconds"] = round(time.perf_counter() - started, 1)
        record = {
            "format_version": FORMAT_VERSION,
            "kind": "treesearch toy-world policy",
            "train_config": dataclasses.asdict(config),
            "data_seed": config.data_seed,
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "storage_dtype": storage_dtype,
            "training": info,
            "accuracy": accuracy,
            "eval": {"seed": EVAL_SEED, "problems": dataclasses.asdict(config.arith()),
                     "samples": config.eval_samples, "pass_k": pass_k, "temperature": 1.0} if accuracy else None,
            "files": folder_hashes(tmp),
        }
        (tmp / INFO_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "model")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)
            except OSError:
                if not out.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another build finished first: keep it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_folder(folder: str | os.PathLike, config: ToyTrainConfig | None = None) -> list[str]:
    """What is wrong with a toy policy folder (empty: nothing): a missing or foreign record, files
    whose sha256 differs from the recorded one, files missing or not recorded, and, with
    `config`, a recorded build config other than `config`."""
    folder = Path(folder)
    info = _read_info(folder)
    if info is None:
        return [f"{folder / INFO_FILE}: no toy policy record of format version {FORMAT_VERSION}"]
    problems = []
    recorded, actual = info.get("files") or {}, folder_hashes(folder)
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            problems.append(f"{folder / name}: recorded but missing")
        elif name not in recorded:
            problems.append(f"{folder / name}: not in the record")
        elif recorded[name] != actual[name]:
            problems.append(f"{folder / name}: sha256 {actual[name][:12]} is not the recorded {recorded[name][:12]}")
    if config is not None and info.get("train_config") != json.loads(json.dumps(dataclasses.asdict(config))):
        problems.append(f"{folder / INFO_FILE}: the recorded train_config is not the code's build config")
    return problems


def shipped_toy_policy() -> Path | None:
    """The toy policy that ships inside the package (`mcts/envs/models/toy-policy`), when it is
    there, intact, and built with `FULL_CONFIG`; else None (then `ensure_toy_policy` builds one)."""
    return None if check_folder(SHIPPED_DIR, FULL_CONFIG) else SHIPPED_DIR


def ensure_toy_policy(cache_dir: str | os.PathLike | None = None, *, quick: bool = False,
                      progress: bool = True) -> Path:
    """The toy policy's folder, built on first use.

    Args:
        cache_dir: the cache root (default `$TREESEARCH_CACHE` or `~/.cache/treesearch`); the model
            is its `toy-policy-v<version>` (or `toy-policy-quick-v<version>`) folder.
        quick: the quick variant (a much smaller model trained for seconds: for tests).
        progress: show the training progress bar.

    Returns:
        The folder, ready for `HFPolicy.from_pretrained`: the one shipped in the package
        (`shipped_toy_policy`) unless `quick`, else the cache's. Two processes asking at once build
        it once (a file lock); a folder in the way that is not a toy policy of this version is an error.
    """
    from filelock import FileLock

    if not quick and (shipped := shipped_toy_policy()) is not None:
        return shipped
    folder = default_cache_dir(quick, cache_dir)
    if _read_info(folder) is not None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if _read_info(folder) is not None:
            return folder
        if folder.exists():
            raise RuntimeError(f"{folder} exists but holds no toy policy of format version {FORMAT_VERSION} "
                               f"(no valid {INFO_FILE}); delete it or choose another cache_dir")
        config = QUICK_CONFIG if quick else FULL_CONFIG
        what = ("the quick toy policy (seconds)" if quick
                else "the toy-world policy (once; about 10 minutes of one CPU core)")
        print(f"treesearch: building {what} into {folder}", file=sys.stderr, flush=True)
        build_toy_policy(folder, config, progress=progress)
    return folder


def load_toy_policy(cache_dir: str | os.PathLike | None = None, *, quick: bool = False, progress: bool = True,
                    model_dir: str | os.PathLike | None = None, **overrides) -> "HFPolicy":
    """The toy policy as an `HFPolicy` (building it on first use).

    Args:
        cache_dir, quick, progress: see `ensure_toy_policy`.
        model_dir: a model folder to load instead of the cached build.
        **overrides: `HFPolicyConfig` fields (device, batch_size, max_new_tokens, seed, ...).
    """
    from mcts.policy.hf_policy import HFPolicy

    folder = Path(model_dir) if model_dir is not None else ensure_toy_policy(cache_dir, quick=quick, progress=progress)
    return HFPolicy.from_pretrained(folder, toy_policy_config(**overrides))


# ---------------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcts.envs.tiny_models",
                                     description="Builds and evaluates the toy world's tiny transformer policy.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train the toy policy and save it")
    build.add_argument("--out", help="model folder (default: the cache folder ensure_toy_policy uses)")
    build.add_argument("--quick", action="store_true", help="the quick variant (seconds; for tests)")
    build.add_argument("--ship", action="store_true", help=(
        f"the full build into the package ({SHIPPED_DIR}), weights stored as float16, pass@{SHIP_PASS_K} "
        "recorded: what the repository ships (about 12 minutes of one core)"))
    build.add_argument("--seconds", type=float, help="train for about this many seconds instead of a fixed step count")
    build.add_argument("--steps", type=int, help="optimizer steps (overrides the config's)")
    build.add_argument("--threads", type=int, help="torch threads (default: the CPUs this process may use)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = sub.add_parser("check", help="check a folder's files against the sha256 its record holds")
    check.add_argument("folder", nargs="?", help=f"model folder (default: the shipped one, {SHIPPED_DIR})")
    ev = sub.add_parser("evaluate", help="greedy accuracy by number of operations on fresh problems")
    ev.add_argument("--model", help="model folder (default: the cached build, built if missing)")
    ev.add_argument("--quick", action="store_true", help="evaluate the quick build")
    ev.add_argument("--n", type=int, default=100, help="problems per number of operations")
    ev.add_argument("--max-ops", type=int, default=6, help="largest number of operations")
    ev.add_argument("--max-operand", type=int, help="largest operand (default: the model's training problems')")
    ev.add_argument("--max-value", type=int,
                    help="bound on intermediate values (default: the model's training problems')")
    ev.add_argument("--samples", type=int, default=4, help="samples per prefix for the T=1 step rates")
    ev.add_argument("--pass-k", type=int, default=16,
                    help="whole solutions sampled per problem at T=1 for pass@k (0: skip)")
    ev.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the problems")
    ev.add_argument("--batch-size", type=int, default=128, help="sequences per generate call")
    ev.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def _build(args: argparse.Namespace) -> int:
    config = QUICK_CONFIG if args.quick else FULL_CONFIG
    changes = {k: v for k, v in (("seconds", args.seconds), ("steps", args.steps), ("num_threads", args.threads))
               if v is not None}
    if args.ship and (args.quick or args.out or changes):
        print("error: --ship builds FULL_CONFIG into the package; it takes no --quick, --out, --seconds, "
              "--steps or --threads", file=sys.stderr)
        return 2
    config = dataclasses.replace(config, **changes)
    from filelock import FileLock

    out = SHIPPED_DIR if args.ship else (Path(args.out) if args.out else default_cache_dir(args.quick)).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"treesearch: building the toy policy into {out}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with FileLock(str(out.parent / f".{out.name}.lock")):  # the lock `ensure_toy_policy` takes
        build_toy_policy(out, config, progress=not args.no_progress, replace=True,
                         storage_dtype="float16" if args.ship else "float32", pass_k=SHIP_PASS_K if args.ship else 0)
    record = _read_info(out) or {}
    training = record.get("training", {})
    print(f"built in {time.perf_counter() - started:.0f} s (training {training.get('train_seconds')} s, "
          f"{training.get('steps')} steps, {training.get('parameters')} parameters, "
          f"final loss {training.get('final_loss')})")
    if record.get("accuracy"):
        print(format_table(record["accuracy"]))
    return 0


def train_config_of(folder: str | os.PathLike) -> ToyTrainConfig | None:
    """The `ToyTrainConfig` a toy policy folder was built with (None: not a toy policy folder)."""
    info = _read_info(Path(folder))
    if info is None:
        return None
    known = {f.name for f in dataclasses.fields(ToyTrainConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in info["train_config"].items() if k in known}
    return ToyTrainConfig(**fields)


def _evaluate(args: argparse.Namespace) -> int:
    folder = Path(args.model) if args.model else ensure_toy_policy(quick=args.quick)
    problems = (train_config_of(folder) or FULL_CONFIG).arith()
    if args.max_operand is not None:
        problems = dataclasses.replace(problems, max_operand=args.max_operand)
    if args.max_value is not None:
        problems = dataclasses.replace(problems, max_value=args.max_value)
    policy = load_toy_policy(model_dir=folder, batch_size=args.batch_size, device="cpu")
    started = time.perf_counter()
    rows = evaluate_toy_policy(policy, per_ops=args.n, ops=range(1, args.max_ops + 1), seed=args.seed,
                               problems=problems, samples=args.samples, pass_k=args.pass_k)
    print(f"{folder}: operands {problems.min_operand}-{problems.max_operand}, "
          f"|values| <= {problems.max_value}, {args.n} problems per number of operations")
    print(format_table(rows))
    print(f"({time.perf_counter() - started:.0f} s, {policy.stats.generated_tokens} tokens generated)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def _check(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else SHIPPED_DIR
    problems = check_folder(folder, None if args.folder else FULL_CONFIG)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{folder}: every file matches its recorded sha256")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return {"build": _build, "check": _check, "evaluate": _evaluate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
