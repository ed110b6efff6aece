"""Training the toy policy: its traces, their tokens and labels, and the training loop.

    make_traces(start, count, config)    training traces of a build, deterministic (`Trace`)
    encode_trace(tokenizer, trace)       token ids and labels, loss on the trained steps only
    train_toy_model(config)              a model trained in memory (`mcts.policy.training.train_loop`)

Most traces are canonical solutions; a fraction is rolled out by the noisy `ScriptedPolicy`, whose
slips stay in context without loss. Every draw is seeded from the config and training runs on a
fixed thread count, so a build is reproducible bit for bit (`mcts.envs.tiny_models` saves it).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterator, Sequence

from mcts.envs.arith import generate_problem
from mcts.envs.arith_expr import render
from mcts.envs.arith_steps import DELIMITER, answer_step, reduce_once, reduction_step, solution_steps
from mcts.envs.toy_config import FULL_CONFIG, ToyTrainConfig
from mcts.envs.toy_tokenizer import build_char_tokenizer
from mcts.policy.base import Prefix

__all__ = ["IGNORE_INDEX", "Trace", "encode_trace", "make_traces", "train_toy_model"]

IGNORE_INDEX = -100


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


def _batches(tokenizer, config: ToyTrainConfig, pool_batches: int = 32) -> Iterator[dict]:
    """Endless {"input_ids", "labels"} batches, right-padded, of traces of similar lengths.

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
            yield {"input_ids": ids, "labels": labels}


# ---------------------------------------------------------------------------------------------------
# Training


def _llama_config(config: ToyTrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=config.max_positions,
        rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, use_cache=True)


def _lm_loss(model, batch):
    # no attention mask: the padding is on the right, where no trained position attends
    return model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss


def train_toy_model(config: ToyTrainConfig = FULL_CONFIG, *, progress: bool = True):
    """Trains a toy policy in memory, by the project's one training loop
    (`mcts.policy.training.train_loop`) on an endless stream of fresh traces.

    Args:
        config: the build's settings.
        progress: show a tqdm bar.

    Returns:
        (model in eval mode, tokenizer, info): info records the steps run, the seconds spent, the
        first and final loss (means of up to 20 steps) and the parameter count.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from mcts.policy.torch_utils import default_threads, torch_threads
    from mcts.policy.training import TrainConfig, train_loop

    tokenizer = build_char_tokenizer(config.max_positions)
    threads = config.num_threads or default_threads()
    with torch_threads(threads):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(_llama_config(config, tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    train = TrainConfig(batch_size=config.batch_size, lr=config.lr, min_lr_ratio=config.min_lr_ratio,
                        weight_decay=config.weight_decay, grad_clip=config.grad_clip, seed=config.seed,
                        num_threads=threads, device="cpu")
    # A stream has no end: `steps` bounds it (or, training for `seconds`, the speed of the first steps does).
    stream = lambda accelerator: (_batches(tokenizer, config), config.steps if config.seconds is None else 10**9)  # noqa: E731
    info = train_loop(model, train, stream, loss_fn=_lm_loss, warmup=lambda total: config.warmup_steps,
                      progress=progress, seconds=config.seconds, desc="training the toy policy")
    return model, tokenizer, {**info, "traces_seen": info["steps"] * config.batch_size}
