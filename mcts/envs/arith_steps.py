"""The toy world's steps: canonical solutions, reading a step, and the oracle's step labels.

    reduce_once(expr)                    the next reduction of the canonical solution (`Reduction`)
    solution_steps(problem)              one reduction per step, then `The answer is \\boxed{58}.`
    reduction_step / answer_step         the text of one step (the scripted policy's slips too)
    parse_step(step)                     the expression a step writes, or its `FinalAnswer`
    step_value / label_step(s)           the value a step claims; the oracle's 0/1 label of each step
    first_error(labels)                  the first wrong step

A solution reduces the leftmost innermost highest-precedence operation at each step and writes the
whole reduced expression, so that every step can be judged on its own. Steps are separated by
`DELIMITER` ("\\n"); a rendered step ends with it. Expressions are `mcts.envs.arith_expr`'s.
"""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from typing import Sequence

from mcts.envs.arith_expr import (
    PRECEDENCE,
    ArithParseError,
    BinOp,
    Expr,
    apply_op,
    evaluate,
    needs_parens,
    parse_expression,
    render,
)
from mcts.grading import extract_answer, normalize

__all__ = [
    "DELIMITER",
    "FinalAnswer",
    "Reduction",
    "answer_step",
    "first_error",
    "gold_int",
    "label_step",
    "label_steps",
    "parse_step",
    "reduce_once",
    "reduction_step",
    "render_solution",
    "replace_at",
    "solution_steps",
    "step_value",
]

DELIMITER = "\n"


# ---------------------------------------------------------------------------------------------------
# Reductions and solutions


@dataclasses.dataclass(frozen=True)
class Reduction:
    """One step of a canonical solution: `a op b = result`, at `path` in `before`.

    path: the way from the root to the reduced node, 0 = left, 1 = right.
    after: `before` with that node replaced by `result`.
    """

    a: int
    op: str
    b: int
    result: int
    path: tuple[int, ...]
    before: Expr
    after: Expr


def _reducible(expr: Expr, depth: int, path: tuple[int, ...], out: list) -> None:
    """Appends (paren depth, precedence, path) of every operation whose operands are both numbers,
    left to right."""
    if isinstance(expr, int):
        return
    if isinstance(expr.left, int) and isinstance(expr.right, int):
        out.append((depth, PRECEDENCE[expr.op], path))
        return
    _reducible(expr.left, depth + needs_parens(expr.left, expr.op, False), (*path, 0), out)
    _reducible(expr.right, depth + needs_parens(expr.right, expr.op, True), (*path, 1), out)


def _node_at(expr: Expr, path: tuple[int, ...]) -> Expr:
    for side in path:
        expr = expr.right if side else expr.left  # type: ignore[union-attr]
    return expr


def replace_at(expr: Expr, path: tuple[int, ...], value: Expr) -> Expr:
    """`expr` with the node at `path` (0 = left, 1 = right) replaced by `value`."""
    if not path:
        return value
    assert isinstance(expr, BinOp), "path leads through a literal"
    if path[0] == 0:
        return BinOp(expr.op, replace_at(expr.left, path[1:], value), expr.right)
    return BinOp(expr.op, expr.left, replace_at(expr.right, path[1:], value))


def reduce_once(expr: Expr) -> Reduction | None:
    """The next reduction of the canonical solution, or None when `expr` is a number.

    Among the operations whose operands are both numbers, the one inside the most parentheses
    (innermost), then of the highest precedence (`*` before `+`/`-`), then the leftmost.

    Args:
        expr: the current expression.

    Returns:
        The `Reduction`, whose `after` is the expression the step writes.
    """
    if isinstance(expr, int):
        return None
    candidates: list = []
    _reducible(expr, 0, (), candidates)
    best = candidates[0]
    for cand in candidates[1:]:  # strictly greater keeps the leftmost among ties
        if cand[:2] > best[:2]:
            best = cand
    path = best[2]
    node = _node_at(expr, path)
    result = apply_op(node.op, node.left, node.right)
    return Reduction(node.left, node.op, node.right, result, path, expr, replace_at(expr, path, result))


def reduction_step(a: int, op: str, b: int, result: int, after: Expr) -> str:
    """The text of a reduction step, without delimiter: `17 + 5 = 22, so 22 * 3 - 8`.

    `result` and `after` need not be right: the scripted policy writes its slips with this too.
    """
    return f"{a} {op} {b} = {result}, so {render(after)}"


def answer_step(value: int | str) -> str:
    """The final step, without delimiter: `The answer is \\boxed{58}.` (what `mcts.grading` reads)."""
    return f"The answer is \\boxed{{{value}}}."


def solution_steps(problem: str) -> list[str]:
    """The canonical step-by-step solution of a problem.

    Args:
        problem: the expression text.

    Returns:
        One reduction step per operation, then the final-answer step; texts without the delimiter
        (`render_solution` joins them).
    """
    expr = parse_expression(problem)
    steps = []
    while (red := reduce_once(expr)) is not None:
        steps.append(reduction_step(red.a, red.op, red.b, red.result, red.after))
        expr = red.after
    steps.append(answer_step(expr))
    return steps


def render_solution(steps: Sequence[str]) -> str:
    """Steps as one text, each ending with `DELIMITER` (a step that already does is kept)."""
    return "".join(s if s.endswith(DELIMITER) else s + DELIMITER for s in steps)


# ---------------------------------------------------------------------------------------------------
# Reading steps and the oracle labeller


@dataclasses.dataclass(frozen=True)
class FinalAnswer:
    """A final-answer step. value: the stated integer, or None when it is not an integer."""

    value: int | None
    text: str


_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_ANSWER_MARK = re.compile(r"\\boxed|\\fbox|\banswer\s+is\b", re.IGNORECASE)
_SO = re.compile(r",\s*so\s+", re.IGNORECASE)


def _integer_answer(answer: str | None) -> int | None:
    if answer is None:
        return None
    s = normalize(answer)  # the grader's spelling: drops $, spaces, \text{}, a trailing period
    return int(s.replace(",", "")) if _INTEGER.fullmatch(s) else None


@lru_cache(maxsize=1 << 16)
def parse_step(step: str) -> Expr | FinalAnswer | None:
    """What a step says: the expression it writes, or its final answer.

    A step with `\\boxed{}` or "the answer is" is a `FinalAnswer` (read as `mcts.grading` reads it).
    Otherwise the expression is what follows the last ", so " (`17 + 5 = 22, so 22 * 3 - 8`), else
    what follows the last "=", else the whole step. A trailing delimiter is ignored.

    Args:
        step: one step's text.

    Returns:
        The expression tree (an int when fully reduced), a `FinalAnswer`, or None when the step
        writes nothing the world can read.
    """
    text = step.strip()
    if _ANSWER_MARK.search(text):
        answer = extract_answer(text)
        return FinalAnswer(_integer_answer(answer), answer or "")
    parts = _SO.split(text)
    rhs = parts[-1] if len(parts) > 1 else text.rsplit("=", 1)[-1]
    try:
        return parse_expression(rhs)
    except ArithParseError:
        return None


@lru_cache(maxsize=1 << 16)
def step_value(step: str) -> int | None:
    """The value a step claims for the problem: its expression's value or its final answer."""
    parsed = parse_step(step)
    if parsed is None:
        return None
    if isinstance(parsed, FinalAnswer):
        return parsed.value
    return evaluate(parsed)


def gold_int(gold: int | str) -> int:
    """A gold answer as an int: an int, or its text as `mcts.problems` stores it (ValueError when
    it is not an integer)."""
    if isinstance(gold, int) and not isinstance(gold, bool):
        return gold
    value = _integer_answer(str(gold))
    if value is None:
        raise ValueError(f"gold answer {gold!r} is not an integer")
    return value


def label_step(step: str, gold: int | str) -> int:
    """The oracle label of one step: 1 iff its expression (or boxed answer) has the gold value.

    Only what the step writes is judged: `17 + 5 = 23, so 22 * 3 - 8` is correct (the expression is
    right, the remark is not); a step that cannot be read is wrong.
    """
    return int(step_value(step) == gold_int(gold))


def label_steps(problem: str, steps: Sequence[str], gold: int | str | None = None) -> list[int]:
    """The oracle labels of a trace, one per step (each judged on its own).

    Args:
        problem: the expression text (gives the gold value when `gold` is None).
        steps: the step texts, with or without delimiters.
        gold: the gold answer (an int, or its text as `mcts.problems` stores it).

    Returns:
        0/1 per step.
    """
    g = evaluate(parse_expression(problem)) if gold is None else gold_int(gold)
    return [label_step(s, g) for s in steps]


def first_error(labels: Sequence[int]) -> int:
    """The index of the first wrong step (label 0), or -1 when every step is correct."""
    for i, label in enumerate(labels):
        if not label:
            return i
    return -1
