"""The toy world's step-labelled traces: sampled from a toy policy or cut from canonical solutions,
labelled by the oracle (`mcts.envs.arith.label_steps`), as canonical records (`prm.data`).

    rollout(policy, problems)        traces of any `StepProposer`, one batched `propose` per depth
    toy_records(traces)              oracle labels, quality values, the gold answer and the first error
    toy_problems(n, seed)            the toy world's default problems (`mcts.envs.arith.generate_problems`)
    ToyDataConfig, toy_step_records  traces of the scripted policy at each slip rate (or of any policy)
    branch_traces                    canonical solutions that turn into a slip at a random step
    operand_slip                     an operand of the step's operation miscopied, the rest consistent with it
    single_step_traces               one step from a state of a canonical solution (or one operation)
    copy_slip                        a near miss in the copied part of a step (what a small model writes)
    solution_states(problems)        the problems and their canonical states: what traces from them start at

The toy PRM's builds (`prm.toy`) mix these; the evaluations (`prm.eval`) sample fresh ones.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Iterable, Mapping, Sequence

from mcts.envs.arith import (DELIMITER, ArithConfig, BinOp, apply_op, evaluate, first_error, generate_problems,
                             label_steps, parse_expression, parse_step, reduce_once, reduction_step, render,
                             solution_steps)
from mcts.envs.arith_steps import replace_at
from mcts.policy.base import Prefix, StepProposer
from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig
from prm.quality import trace_quality_values

__all__ = ["ToyDataConfig", "branch_traces", "copy_slip", "operand_slip", "rollout", "single_step_traces", "solution_states",
           "toy_problems", "toy_records", "toy_step_records"]


def rollout(policy: StepProposer, problems: Sequence[str], *, samples: int = 1, temperature: float = 1.0,
            max_steps: int = 12) -> list[tuple[str, list[str]]]:
    """Samples `samples` traces per problem, one batched `propose` per depth for all of them.

    Args:
        policy: any `StepProposer` (the scripted toy policy, an `HFPolicy`).
        problems: [P] problem texts.
        samples: traces per problem.
        temperature: sampling temperature.
        max_steps: a trace still going after this many steps is cut.

    Returns:
        [P * samples] (problem, step texts), problem-major; traces without any step are dropped.
    """
    traces = [(p, []) for p in problems for _ in range(samples)]
    live = list(range(len(traces)))
    for _ in range(max_steps):
        if not live:
            break
        proposals = policy.propose([Prefix(traces[i][0], tuple(traces[i][1])) for i in live], 1, temperature)
        still = []
        for i, steps in zip(live, proposals):
            if not steps:
                continue
            traces[i][1].append(steps[0].text)
            if not steps[0].finished:
                still.append(i)
        live = still
    return [t for t in traces if t[1]]


def toy_records(traces: Iterable[tuple[str, Sequence[str]]], golds: Mapping[str, int] | None = None) -> list[dict]:
    """Oracle-labelled canonical records of toy traces: labels from `label_steps`, values from
    `trace_quality_values`, the gold answer, and `first_error`."""
    out = []
    for problem, steps in traces:
        gold = golds[problem] if golds is not None and problem in golds else evaluate(parse_expression(problem))
        labels = label_steps(problem, steps, gold)
        out.append({"problem": problem, "steps": list(steps), "labels": labels,
                    "values": trace_quality_values(labels), "answer": str(gold),
                    "first_error": first_error(labels)})
    return out


@dataclasses.dataclass(frozen=True)
class ToyDataConfig:
    """Which toy traces a dataset holds: problems, the scripted policy's slip rates, samples."""

    problems: int = dataclasses.field(default=1000, metadata={"help": "problems"})
    samples: int = dataclasses.field(default=2, metadata={"help": "traces per problem and slip rate"})
    min_ops: int = dataclasses.field(default=1, metadata={"help": "fewest operations"})
    max_ops: int = dataclasses.field(default=6, metadata={"help": "most operations"})
    max_operand: int = dataclasses.field(default=10, metadata={"help": "largest operand"})
    max_value: int | None = dataclasses.field(default=100, metadata={
        "help": "bound on |every value a canonical solution writes| (None: unbounded); the defaults are "
                "the toy world's default problems (`mcts.envs.toy_config.toy_problem_config`)"})
    slip_rates: tuple[float, ...] = dataclasses.field(default=(0.05,), metadata={
        "help": "base_eps of the scripted policy; one set of traces per rate"})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "sampling temperature"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the problems and the sampling"})

    def __post_init__(self):
        if self.problems < 1 or self.samples < 1:
            raise ValueError(f"problems and samples must be >= 1, got {self.problems}, {self.samples}")
        if not 1 <= self.min_ops <= self.max_ops <= 8:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 8, got {self.min_ops}, {self.max_ops}")
        if not self.slip_rates or any(not 0 <= r <= 0.5 for r in self.slip_rates):
            raise ValueError(f"slip_rates must be rates in [0, 0.5], got {self.slip_rates}")


def toy_problems(n: int, seed: int, min_ops: int = 1, max_ops: int = 6, max_operand: int = 10,
                 max_value: int | None = 100) -> list[dict]:
    """`n` toy problems (`mcts.envs.arith.generate_problems`); the defaults are the toy world's
    default problems (operands up to 10, every value within 100, 1-6 operations)."""
    return generate_problems(n, seed, ArithConfig(min_ops=min_ops, max_ops=max_ops, max_operand=max_operand,
                                                  max_value=max_value))


def toy_step_records(config: ToyDataConfig, policy: StepProposer | None = None) -> list[dict]:
    """Oracle-labelled traces: `config.samples` per problem from the scripted policy at each slip
    rate, or from `policy` when given (then `slip_rates` is ignored)."""
    problems = toy_problems(config.problems, config.seed, config.min_ops, config.max_ops, config.max_operand,
                            config.max_value)
    texts = [p["problem"] for p in problems]
    golds = {p["problem"]: p["answer"] for p in problems}
    records = []
    if policy is not None:
        records += toy_records(rollout(policy, texts, samples=config.samples, temperature=config.temperature), golds)
    else:
        for i, rate in enumerate(config.slip_rates):
            scripted = ScriptedPolicy(ToyPolicyConfig(base_eps=rate), seed=config.seed * 1009 + i)
            records += toy_records(rollout(scripted, texts, samples=config.samples,
                                           temperature=config.temperature), golds)
    return records


def _draw(options: Sequence[tuple], rng: random.Random):
    """One of (step, probability) `options`, drawn by their probabilities (one `rng.random()`)."""
    u, acc = rng.random() * sum(p for _, p in options), 0.0
    for step, p in options:
        acc += p
        if u < acc:
            return step
    return options[-1][0]


def branch_traces(problems: Sequence[str], *, seed: int = 0, wrong_fraction: float = 0.5,
                  continue_fraction: float = 0.5, slip_rate: float = 0.15, copy_fraction: float = 0.0,
                  operand_fraction: float = 0.0, copy_context_fraction: float = 0.0,
                  max_value: int | None = 100) -> list[tuple[str, list[str]]]:
    """Traces that branch off the canonical solution at a random step: a balanced first-error signal.

    Per problem: k uniform in [0, K), the first k canonical steps, then step k + 1, which is the
    canonical one or (with probability `wrong_fraction`) a slip: with probability `operand_fraction`
    an operand slip (`operand_slip`), else with probability `copy_fraction` a copy slip
    (`copy_slip`, with `copy_context_fraction`), else (and where the step has nothing of that kind
    to change, as the answer step) one of the scripted policy's slips at that state (drawn by their
    probabilities). With both fractions 0 (STAGE1_BUILD and every build before it) no draw is added, so the traces stay
    as they were. With probability `continue_fraction` the trace is then rolled out to its end by
    the scripted policy (base_eps `slip_rate`), so that the steps after a first error are seen too;
    else it ends at the branch step (short sequences: cheap to train on).

    Returns:
        [P] (problem, step texts).
    """
    rng = random.Random(f"branch:{seed}")
    distribution = ScriptedPolicy(ToyPolicyConfig(base_eps=0.5, max_eps=0.5, answer_eps=0.2))
    traces, go_on = [], []
    for problem in problems:
        canonical = [s + DELIMITER for s in solution_steps(problem)]
        k = rng.randrange(len(canonical))
        steps = canonical[:k]
        options = distribution.distribution(Prefix(problem, tuple(steps)))
        slips = options[1:]
        if slips and rng.random() < wrong_fraction:
            # no draw for the kind unless asked: builds without copy or operand slips keep their stream
            u = rng.random() if copy_fraction or operand_fraction else 1.0
            copied = (operand_slip(parse_expression(problem) if k == 0 else parse_step(canonical[k - 1]), rng, max_value)
                      if u < operand_fraction else
                      copy_slip(canonical[k], rng, copy_context_fraction) if u < operand_fraction + (1 - operand_fraction) * copy_fraction
                      else None)
            if copied is not None:
                steps.append(copied)
                finished = False
            else:
                pick = _draw(slips, rng)
                steps.append(pick.text)
                finished = pick.finished
        else:
            steps.append(canonical[k])
            finished = k == len(canonical) - 1
        traces.append((problem, steps))
        go_on.append(not finished and rng.random() < continue_fraction)
    cont = [i for i, g in enumerate(go_on) if g]
    if cont:
        policy = ScriptedPolicy(ToyPolicyConfig(base_eps=slip_rate), seed=seed)
        live = cont
        while live:
            proposals = policy.propose([Prefix(traces[i][0], tuple(traces[i][1])) for i in live], 1)
            still = []
            for i, steps in zip(live, proposals):
                if steps:
                    traces[i][1].append(steps[0].text)
                    if not steps[0].finished and len(traces[i][1]) < 16:
                        still.append(i)
            live = still
    return traces


_OPERATOR_TOKENS = ("+", "-", "*")


def copy_slip(step: str, rng: random.Random, context_fraction: float = 0.0) -> str | None:
    """A near miss in the copied part of a reduction step: what a model that copies long expressions
    badly writes (the scripted policy never does).

    The step's arithmetic (`a op b = r`) is kept; in the expression after ", so ", one number is
    changed by a few or one operator replaced, or one operation (`op number`) dropped. With
    probability `context_fraction` a changed number becomes another number the step writes (an
    operand of its operation, its result, or a neighbour: `2 + 7 = 9, so 7 + 7 - 9` for `7 + 3 -
    9`), which is how the tiny transformer miscopies most often.

    Args:
        step: a reduction step `a op b = r, so EXPR` (with or without its delimiter).
        rng: the random source.
        context_fraction: how often a changed number is taken from the step itself.

    Returns:
        The changed step (with the step's delimiter, if it had one), or None when the step writes
        no expression with something to change.
    """
    body = step[:-len(DELIMITER)] if step.endswith(DELIMITER) else step
    head, sep, rhs = body.rpartition(", so ")
    if not sep:
        return None
    tokens = rhs.split(" ")
    numbers = [i for i, t in enumerate(tokens) if re.search(r"\d", t)]
    operators = [i for i, t in enumerate(tokens) if t in _OPERATOR_TOKENS]
    droppable = [i for i in operators if i + 1 < len(tokens) and re.fullmatch(r"-?\d+", tokens[i + 1])]
    kinds = [k for k, ok in (("number", numbers), ("operator", operators), ("drop", droppable)) if ok]
    if not kinds:
        return None
    kind = rng.choice(kinds)
    if kind == "number":
        i = rng.choice(numbers)
        match = re.search(r"\d+", tokens[i])
        others = sorted({int(n) for n in re.findall(r"\d+", body)} - {int(match.group())})
        if context_fraction and others and rng.random() < context_fraction:  # no draw unless asked
            value = rng.choice(others)
        else:
            value = int(match.group()) + rng.choice((-3, -2, -1, 1, 2, 3))
        tokens[i] = tokens[i][:match.start()] + str(abs(value)) + tokens[i][match.end():]
    elif kind == "operator":
        i = rng.choice(operators)
        tokens[i] = rng.choice([o for o in _OPERATOR_TOKENS if o != tokens[i]])
    else:
        i = rng.choice(droppable)
        del tokens[i:i + 2]
    out = f"{head}, so {' '.join(tokens)}"
    if out == body:
        return None
    return out + (DELIMITER if step.endswith(DELIMITER) else "")


def operand_slip(expr, rng: random.Random, max_value: int | None = 100) -> str | None:
    """A reduction step of `expr` that miscopies one operand of its operation and is consistent
    with that: `3 - 7 + 6` reduced as `3 - 6 = -3, so -3 + 6`. Its arithmetic is right, so only
    comparing the step with the expression it reduces shows the error (the tiny policy's commonest
    first error, which the slips above never make).

    The operand becomes another number of the expression (half the time, where there is one) or
    changes by a few; a draw whose result leaves the range (|r| > max_value) is drawn again.

    Args:
        expr: the expression reduced (a parsed toy expression).
        rng: the random source.
        max_value: bound on |the step's result| (the toy world's default 100; None: unbounded).

    Returns:
        The step with its delimiter, or None when `expr` is a number or no draw fits.
    """
    red = reduce_once(expr)
    if red is None:
        return None
    numbers = [int(t) for t in re.findall(r"\d+", render(expr))]
    for _ in range(10):
        side = rng.randrange(2)
        old = (red.a, red.b)[side]
        others = [n for n in numbers if n != abs(old)]
        if others and rng.random() < 0.5:
            new = rng.choice(others) * (-1 if old < 0 else 1)
        else:
            new = old + rng.choice((-3, -2, -1, 1, 2, 3))
        a, b = (new, red.b) if side == 0 else (red.a, new)
        result = apply_op(red.op, a, b)
        if max_value is None or abs(result) <= max_value:
            return reduction_step(a, red.op, b, result, replace_at(expr, red.path, result)) + DELIMITER
    return None


def single_step_traces(problems: Sequence[str], *, seed: int = 0, wrong_fraction: float = 0.5,
                       copy_fraction: float = 0.3, isolate: bool = False, negate_fraction: float = 0.0,
                       max_value: int | None = 100) -> list[tuple[str, list[str]]]:
    """One-step traces from the states of canonical solutions: short, and every one a first-error
    example (the cheapest signal for learning to check one step).

    Per problem: k uniform over its canonical steps; the state before step k (the problem, or the
    expression the canonical step k - 1 writes, itself a toy problem of the same value) becomes
    the trace's problem, and its step is the canonical next step or (with probability
    `wrong_fraction`) a slip: a copy slip (`copy_slip`, with probability `copy_fraction`, where
    the step has something to copy) or one of the scripted policy's slips at that state (off by a
    few, swapped digits, wrong operator; answer slips at the last step), drawn by their
    probabilities.

    With `isolate`, the state is the operation alone (`a op b`), and with probability
    `negate_fraction` one or both of its operands change sign first (where the result stays within
    `max_value`): arithmetic on negative numbers (`3 - -1`, `-11 * 4`) is where a small checker
    slips most, and solutions meet it less often than they need it.

    Returns:
        [P] (state, [step]).
    """
    rng = random.Random(f"single-step:{seed}")
    distribution = ScriptedPolicy(ToyPolicyConfig(base_eps=0.5, max_eps=0.5, answer_eps=0.5))
    traces = []
    for problem in problems:
        canonical = [s + DELIMITER for s in solution_steps(problem)]
        k = rng.randrange(len(canonical))
        state = problem if k == 0 else render(parse_step(canonical[k - 1]))
        step = canonical[k]
        if isolate:  # the operation alone: `a op b` (an arithmetic fact to check), or the answer
            red = reduce_once(parse_expression(state))
            if red is not None:
                a, b = red.a, red.b
                if negate_fraction and rng.random() < negate_fraction:
                    sign_a, sign_b = rng.choice(((-1, 1), (1, -1), (-1, -1)))
                    value = apply_op(red.op, sign_a * a, sign_b * b)
                    if max_value is None or abs(value) <= max_value:
                        a, b = sign_a * a, sign_b * b
                result = apply_op(red.op, a, b)
                state = render(BinOp(red.op, a, b))
                step = reduction_step(a, red.op, b, result, result) + DELIMITER
        if rng.random() < wrong_fraction:
            slip = copy_slip(step, rng) if rng.random() < copy_fraction else None
            if slip is None:
                slips = distribution.distribution(Prefix(state, ()))[1:]
                if slips:
                    slip = _draw(slips, rng).text
            step = slip or step
        traces.append((state, [step]))
    return traces


def solution_states(problems: Sequence[str]) -> set[str]:
    """The problems, every state of their canonical solutions and every operation in those: the
    problem texts that traces drawn from `problems` can start from (`single_step_traces`' states)."""
    states: set[str] = set()
    for problem in problems:
        expr = parse_expression(problem)
        states.add(render(expr))
        while (red := reduce_once(expr)) is not None:
            states.add(f"{red.a} {red.op} {red.b}")
            expr = red.after
            states.add(render(expr))
    return states
