"""Evaluating a step policy on the toy world: solving problems step by step, and its accuracy.

    solve / greedy_solve(policy, problems)   batched step-by-step solutions, sampled or greedy
    evaluate_toy_policy(policy)              greedy accuracy, pass@k and T=1 step rates by number
                                             of operations, on fresh problems
    format_table(rows)                       those rows as a text table

Any `StepProposer` works (the toy policy, the scripted policy); `mcts.envs.tiny_models` records
these figures after a build and prints them from `python -m mcts.envs.tiny_models evaluate`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from mcts.envs.arith import ArithConfig, generate_problems
from mcts.envs.arith_steps import DELIMITER, FinalAnswer, label_step, parse_step, solution_steps
from mcts.envs.toy_config import toy_problem_config
from mcts.policy.base import Prefix

__all__ = ["evaluate_toy_policy", "format_table", "greedy_solve", "solve"]


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
        sampled_parse_rate, temperature}.
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
               "sampled_parse_rate": None, "temperature": temperature}
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
    # rows made before the temperature was recorded were sampled at T=1
    t = next((r["temperature"] for r in rows if r.get("temperature") is not None), 1.0)
    lines = [f"ops  problems  greedy acc  {f'pass@{k}' if k else 'pass@k':>8}  {f'T={t:g} step correct':>16}  "
             f"{f'T={t:g} parse rate':>14}"]
    for r in rows:
        lines.append(f"{r['ops']:>3}  {r['problems']:>8}  {cell(r['greedy_accuracy'], 10)}  "
                     f"{cell(r.get('pass_at_k'), 8)}  {cell(r['sampled_step_correct'], 16)}  "
                     f"{cell(r['sampled_parse_rate'], 14)}")
    return "\n".join(lines)
