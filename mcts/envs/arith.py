"""The toy arithmetic world (ARCHITECTURE.md): problems, solutions, oracle labels, an oracle PRM.

Everything here is checkable, which is what makes the world useful for testing the search:

    generate_problems(n, seed, config)   seeded integer expressions, `{"id", "problem", "answer"}`
    parse_expression / render / evaluate a tiny safe parser (no `eval`) and its canonical printer
    solution_steps(problem)              one reduction per step, then `The answer is \\boxed{58}.`
    parse_step(step)                     the expression a step writes, or its `FinalAnswer`
    label_steps(problem, steps, gold)    the oracle's 0/1 label of every step; `first_error`
    OraclePRM                            a `StepScorer` from the oracle, with seeded, stable noise

A problem is the bare expression, single spaces around binary operators: `(17 + 5) * 3 - 8`. A
solution reduces the leftmost innermost highest-precedence operation at each step and writes the
whole reduced expression, so that every step can be judged on its own:

    17 + 5 = 22, so 22 * 3 - 8
    22 * 3 = 66, so 66 - 8
    66 - 8 = 58, so 58
    The answer is \\boxed{58}.

Steps are separated by `DELIMITER` ("\\n"); a rendered step ends with it. Intermediate values may be
negative and are written as signed literals (`3 - 8 = -5, so 2 * -5`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from mcts.grading import extract_answer, normalize
from mcts.policy.base import Prefix, Step

__all__ = [
    "DELIMITER",
    "MAX_OPS",
    "OPERATORS",
    "ArithConfig",
    "ArithParseError",
    "BinOp",
    "Expr",
    "FinalAnswer",
    "OraclePRM",
    "Reduction",
    "answer_step",
    "apply_op",
    "evaluate",
    "first_error",
    "generate_problem",
    "generate_problems",
    "label_step",
    "label_steps",
    "main",
    "make_parser",
    "parse_expression",
    "parse_step",
    "reduce_once",
    "reduction_step",
    "render",
    "render_solution",
    "replace_at",
    "solution_steps",
    "step_value",
    "write_problems",
]

DELIMITER = "\n"
OPERATORS = "+-*"
MAX_OPS = 8
PRECEDENCE = {"+": 1, "-": 1, "*": 2}
# Parser limits: far above anything the world produces, low enough that no input recurses deeply.
MAX_PARSE_OPS = 64
MAX_PAREN_DEPTH = 32


# ---------------------------------------------------------------------------------------------------
# Expressions


@dataclasses.dataclass(frozen=True, slots=True)
class BinOp:
    """A binary operation node; literals are plain Python ints."""

    op: str  # one of OPERATORS
    left: "Expr"
    right: "Expr"


Expr = Union[int, BinOp]


class ArithParseError(ValueError):
    """Text that is not an expression of the toy world; the message says where it fails."""


def apply_op(op: str, a: int, b: int) -> int:
    """`a op b` for op in `OPERATORS`."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS!r}")


_TOKEN = re.compile(r"\s*(?:(\d+)|([-+*()]))")


def _tokenize(text: str) -> list[int | str]:
    tokens: list[int | str] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ArithParseError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos} in {text!r}")
        number, symbol = match.groups()
        tokens.append(int(number) if number is not None else symbol)
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent: expr := term (('+'|'-') term)*, term := factor ('*' factor)*,
    factor := INT | '-' INT | '(' expr ')'. Binary operators associate to the left."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.ops = 0
        self.depth = 0

    def fail(self, what: str) -> ArithParseError:
        got = self.tokens[self.pos] if self.pos < len(self.tokens) else "end of input"
        return ArithParseError(f"expected {what}, got {got!r} (token {self.pos}) in {self.text!r}")

    def peek(self) -> int | str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> Expr:
        if not self.tokens:
            raise ArithParseError(f"empty expression {self.text!r}")
        expr = self.expr()
        if self.pos != len(self.tokens):
            raise self.fail("an operator or the end")
        return expr

    def binary(self, left: Expr, op: str, right: Expr) -> BinOp:
        self.ops += 1
        if self.ops > MAX_PARSE_OPS:
            raise ArithParseError(f"more than {MAX_PARSE_OPS} operations in {self.text[:60]!r}...")
        return BinOp(op, left, right)

    def expr(self) -> Expr:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            node = self.binary(node, op, self.term())
        return node

    def term(self) -> Expr:
        node = self.factor()
        while self.peek() == "*":
            self.pos += 1
            node = self.binary(node, "*", self.factor())
        return node

    def factor(self) -> Expr:
        tok = self.peek()
        if isinstance(tok, int):
            self.pos += 1
            return tok
        if tok == "-" and isinstance(self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else None, int):
            self.pos += 2
            return -self.tokens[self.pos - 1]
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_PAREN_DEPTH:
                raise ArithParseError(f"parentheses nested deeper than {MAX_PAREN_DEPTH} in {self.text[:60]!r}")
            self.pos += 1
            node = self.expr()
            if self.peek() != ")":
                raise self.fail("')'")
            self.pos += 1
            self.depth -= 1
            return node
        raise self.fail("a number, '-number' or '('")


def parse_expression(text: str) -> Expr:
    """Parses an expression of the toy world.

    Integers, `+`, `-`, `*` (left-associative, `*` binds tighter), parentheses, and negative
    literals `-5` where an operand is expected (`3 - -5`, `2 * -5`); whitespace is free.

    Args:
        text: the expression.

    Returns:
        The expression tree (an int for a literal). Raises `ArithParseError` on anything else.
    """
    return _Parser(text).parse()


def evaluate(expr: Expr) -> int:
    """The integer value of an expression tree."""
    if isinstance(expr, int):
        return expr
    return apply_op(expr.op, evaluate(expr.left), evaluate(expr.right))


def _needs_parens(child: Expr, parent_op: str, is_right: bool) -> bool:
    # Same precedence on the right keeps the tree's shape: `a - (b - c)`, and `a + (b + c)` too.
    if isinstance(child, int):
        return False
    child_prec, parent_prec = PRECEDENCE[child.op], PRECEDENCE[parent_op]
    return child_prec < parent_prec or (is_right and child_prec == parent_prec)


def render(expr: Expr) -> str:
    """The canonical text of an expression: minimal parentheses, single spaces around operators.

    `parse_expression(render(e)) == e` for every tree, and `render(parse_expression(t)) == t` for
    every canonical text (problems and solution steps are canonical).
    """
    if isinstance(expr, int):
        return str(expr)
    left, right = render(expr.left), render(expr.right)
    if _needs_parens(expr.left, expr.op, False):
        left = f"({left})"
    if _needs_parens(expr.right, expr.op, True):
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def _max_abs(expr: Expr) -> tuple[int, int]:
    """(value, largest |value| of any node): the numbers a canonical solution writes."""
    if isinstance(expr, int):
        return expr, abs(expr)
    (a, ma), (b, mb) = _max_abs(expr.left), _max_abs(expr.right)
    value = apply_op(expr.op, a, b)
    return value, max(ma, mb, abs(value))


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
    _reducible(expr.left, depth + _needs_parens(expr.left, expr.op, False), (*path, 0), out)
    _reducible(expr.right, depth + _needs_parens(expr.right, expr.op, True), (*path, 1), out)


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


def _gold_int(gold: int | str) -> int:
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
    return int(step_value(step) == _gold_int(gold))


def label_steps(problem: str, steps: Sequence[str], gold: int | str | None = None) -> list[int]:
    """The oracle labels of a trace, one per step (each judged on its own).

    Args:
        problem: the expression text (gives the gold value when `gold` is None).
        steps: the step texts, with or without delimiters.
        gold: the gold answer (an int, or its text as `mcts.problems` stores it).

    Returns:
        0/1 per step.
    """
    g = evaluate(parse_expression(problem)) if gold is None else _gold_int(gold)
    return [label_step(s, g) for s in steps]


def first_error(labels: Sequence[int]) -> int:
    """The index of the first wrong step (label 0), or -1 when every step is correct."""
    for i, label in enumerate(labels):
        if not label:
            return i
    return -1


# ---------------------------------------------------------------------------------------------------
# Problem generation


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class ArithConfig:
    """The difficulty knobs of generated problems."""

    min_ops: int = dataclasses.field(default=1, metadata=_help("fewest operations per problem (1-8)"))
    max_ops: int = dataclasses.field(default=4, metadata=_help("most operations per problem (1-8)"))
    min_operand: int = dataclasses.field(default=1, metadata=_help("smallest operand (>= 0)"))
    max_operand: int = dataclasses.field(default=20, metadata=_help("largest operand"))
    operators: str = dataclasses.field(default=OPERATORS, metadata=_help("operators to draw from, a subset of '+-*'"))
    parens: bool = dataclasses.field(
        default=True, metadata=_help("random expression trees (parentheses where their shape needs them); "
                                     "False: flat expressions read by precedence alone"))
    max_value: int | None = dataclasses.field(
        default=None, metadata=_help("bound on |every intermediate value and the answer|; None: unbounded"))
    max_attempts: int = dataclasses.field(
        default=1000, metadata=_help("draws per problem before giving up on `max_value`"))

    def __post_init__(self):
        for name in ("min_ops", "max_ops", "min_operand", "max_operand", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not 1 <= self.min_ops <= self.max_ops <= MAX_OPS:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= {MAX_OPS}, "
                             f"got min_ops={self.min_ops}, max_ops={self.max_ops}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(f"need 0 <= min_operand <= max_operand, "
                             f"got min_operand={self.min_operand}, max_operand={self.max_operand}")
        if not self.operators or set(self.operators) - set(OPERATORS) or len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators must be distinct characters of {OPERATORS!r}, got {self.operators!r}")
        if self.max_value is not None and self.max_value < self.max_operand:
            raise ValueError(f"max_value must be None or >= max_operand, "
                             f"got max_value={self.max_value}, max_operand={self.max_operand}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


def _draw_int(rng: random.Random, lo: int, hi: int) -> int:
    # From `random()` alone: the one draw Python guarantees across versions for a given seed.
    return lo + min(int(rng.random() * (hi - lo + 1)), hi - lo)


def _random_tree(rng: random.Random, num_ops: int, config: ArithConfig) -> Expr:
    if num_ops == 0:
        return _draw_int(rng, config.min_operand, config.max_operand)
    left_ops = _draw_int(rng, 0, num_ops - 1)
    op = config.operators[_draw_int(rng, 0, len(config.operators) - 1)]
    return BinOp(op, _random_tree(rng, left_ops, config), _random_tree(rng, num_ops - 1 - left_ops, config))


def _random_flat(rng: random.Random, num_ops: int, config: ArithConfig) -> Expr:
    parts = [str(_draw_int(rng, config.min_operand, config.max_operand))]
    for _ in range(num_ops):
        parts += [config.operators[_draw_int(rng, 0, len(config.operators) - 1)],
                  str(_draw_int(rng, config.min_operand, config.max_operand))]
    return parse_expression(" ".join(parts))


def _within(expr: Expr, bound: int | None) -> bool:
    return bound is None or _max_abs(expr)[1] <= bound


def generate_problem(rng: random.Random, config: ArithConfig) -> Expr:
    """One random expression under `config` (drawn from `rng`)."""
    num_ops = _draw_int(rng, config.min_ops, config.max_ops)
    draw = _random_tree if config.parens else _random_flat
    for _ in range(config.max_attempts):
        expr = draw(rng, num_ops, config)
        if _within(expr, config.max_value):
            return expr
    raise ValueError(f"no problem with {num_ops} operations kept every value within max_value="
                     f"{config.max_value} in {config.max_attempts} draws; raise max_value or lower "
                     f"max_operand/max_ops, or drop '*' from operators")


def generate_problems(n: int, seed: int, config: ArithConfig | None = None) -> list[dict]:
    """Seeded problems of the toy world.

    Problem i depends only on (seed, i, config): a longer list extends a shorter one, and any
    Python version gives the same problems.

    Args:
        n: how many problems.
        seed: the seed.
        config: the difficulty knobs (default `ArithConfig()`).

    Returns:
        n records `{"id": "arith-<seed>-<i>", "problem": "(17 + 5) * 3 - 8", "answer": 58}`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = ArithConfig() if config is None else config
    records = []
    for i in range(n):
        expr = generate_problem(random.Random(f"arith:{seed}:{i}"), config)
        records.append({"id": f"arith-{seed}-{i}", "problem": render(expr), "answer": evaluate(expr)})
    return records


def write_problems(path: str | os.PathLike, records: Iterable[Mapping]) -> Path:
    """Writes records as JSONL, atomically: a temporary file beside `path`, then a rename.

    Args:
        path: the destination (its folder is created if missing).
        records: JSON-serialisable mappings, one per line.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------
# The oracle PRM


def _unit_hash(seed: int, parts: Sequence[str]) -> tuple[float, float]:
    """Two uniforms in [0, 1) from a keyed hash of `parts`: stable across calls and processes."""
    h = hashlib.blake2b(digest_size=16, key=str(seed).encode())
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    digest = h.digest()
    return int.from_bytes(digest[:8], "little") / 2**64, int.from_bytes(digest[8:], "little") / 2**64


@dataclasses.dataclass
class OraclePRM:
    """A `StepScorer` that knows the truth, optionally made noisy.

    The clean score of (prefix, step) is 1 when every step of prefix + step is labelled correct by
    the oracle, else 0: the probability that the path is still on the way to the gold answer.
    Noise is a function of (seed, problem, prefix steps, step text) only, so scoring one node twice
    gives the same value, whatever else was scored in between.
    """

    noise: float = dataclasses.field(default=0.0, metadata=_help(
        "'flip': probability that the score is flipped; 'gaussian': the standard deviation"))
    kind: str = dataclasses.field(default="flip", metadata=_help(
        "'flip' (symmetric label noise) or 'gaussian' (clean + N(0, noise^2), clipped to [0, 1])"))
    seed: int = dataclasses.field(default=0, metadata=_help("seed of the noise"))
    answers: Mapping[str, int | str] | None = dataclasses.field(default=None, metadata=_help(
        "gold answer per problem text; None: a problem's gold is the value of its expression"))

    def __post_init__(self):
        if self.kind not in ("flip", "gaussian"):
            raise ValueError(f"kind must be 'flip' or 'gaussian', got {self.kind!r}")
        if not math.isfinite(self.noise) or self.noise < 0 or (self.kind == "flip" and self.noise > 1):
            limit = "[0, 1]" if self.kind == "flip" else ">= 0"
            raise ValueError(f"noise must be {limit} for kind={self.kind!r}, got {self.noise}")
        self._gold: dict[str, int] = {}

    def gold(self, problem: str) -> int:
        """The gold value of a problem (from `answers`, else by evaluating the problem text)."""
        if problem not in self._gold:
            if self.answers is not None and problem in self.answers:
                self._gold[problem] = _gold_int(self.answers[problem])
            else:
                try:
                    self._gold[problem] = evaluate(parse_expression(problem))
                except ArithParseError as err:
                    raise ValueError(f"OraclePRM: {problem!r} is not a toy-world expression and has no "
                                     f"entry in `answers`") from err
        return self._gold[problem]

    def clean_score(self, prefix: Prefix, step: Step | str) -> float:
        """1.0 when every step of prefix + step is correct, else 0.0 (no noise)."""
        gold = self.gold(prefix.problem)
        text = step.text if isinstance(step, Step) else step
        ok = all(step_value(s) == gold for s in prefix.steps) and step_value(text) == gold
        return float(ok)

    def _noisy(self, clean: float, prefix: Prefix, text: str) -> float:
        if self.noise == 0:
            return clean
        u1, u2 = _unit_hash(self.seed, (prefix.problem, *prefix.steps, text))
        if self.kind == "flip":
            return 1.0 - clean if u1 < self.noise else clean
        z = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)  # Box-Muller
        return min(1.0, max(0.0, clean + self.noise * z))

    def score(self, prefixes: Sequence[Prefix], steps: Sequence[Step]) -> list[float]:
        """Scores the last step of each (prefix, step) pair.

        Args:
            prefixes: [P] prefixes.
            steps: [P] the step proposed after each prefix.

        Returns:
            [P] values in [0, 1].
        """
        if len(prefixes) != len(steps):
            raise ValueError(f"got {len(prefixes)} prefixes and {len(steps)} steps")
        return [self._noisy(self.clean_score(p, s), p, s.text) for p, s in zip(prefixes, steps)]


# ---------------------------------------------------------------------------------------------------
# Command line: python -m mcts.envs.arith --n 1000 --seed 0 --out data/arith.jsonl


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcts.envs.arith",
                                     description="Writes toy-world arithmetic problems as JSONL.")
    parser.add_argument("--n", type=int, required=True, help="number of problems")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--out", required=True, help="output JSONL file")
    for f in dataclasses.fields(ArithConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        elif f.name == "max_value":
            parser.add_argument(flag, type=int, default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = ArithConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ArithConfig)})
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    path = write_problems(args.out, generate_problems(args.n, args.seed, config))
    print(f"wrote {args.n} problems to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
