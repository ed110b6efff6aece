"""The toy world's expressions: the grammar, a tiny safe parser (no `eval`), evaluation, the printer.

    BinOp, Expr                     the expression tree (a literal is a plain int)
    parse_expression(text)          text to tree, `ArithParseError` on anything else
    evaluate(expr) / apply_op       the integer value of a tree / of one operation
    count_ops(expr)                 its binary operations (a problem's difficulty)
    render(expr)                    the canonical text: minimal parentheses, single spaces
    needs_parens / max_abs          where `render` puts parentheses; the largest value a tree holds

The grammar: integers, `+`, `-`, `*` (left-associative, `*` binds tighter), parentheses, and
negative literals `-5` where an operand is expected. Solutions and step labels are built on this in
`mcts.envs.arith_steps`, problems and the oracle PRM in `mcts.envs.arith`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence, Union

__all__ = [
    "MAX_PARSE_OPS",
    "MAX_PAREN_DEPTH",
    "OPERATORS",
    "PRECEDENCE",
    "ArithParseError",
    "BinOp",
    "Expr",
    "apply_op",
    "count_ops",
    "first_non_toy",
    "is_toy",
    "evaluate",
    "max_abs",
    "needs_parens",
    "parse_expression",
    "render",
]

OPERATORS = "+-*"
PRECEDENCE = {"+": 1, "-": 1, "*": 2}
# Parser limits: far above anything the world produces, low enough that no input recurses deeply.
MAX_PARSE_OPS = 64
MAX_PAREN_DEPTH = 32



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


def first_non_toy(problems: Sequence[str]) -> str | None:
    """The first text that is not a toy-world expression, None when every one is: the one test of
    "is this the toy world?" that the loaders, the scripted policy and the loops share."""
    for text in problems:
        try:
            parse_expression(text)
        except ArithParseError:
            return text
    return None


def is_toy(problems: Sequence[str]) -> bool:
    """Whether there are problems and every one is a toy-world expression."""
    return bool(problems) and first_non_toy(problems) is None


def evaluate(expr: Expr) -> int:
    """The integer value of an expression tree."""
    if isinstance(expr, int):
        return expr
    return apply_op(expr.op, evaluate(expr.left), evaluate(expr.right))


def count_ops(expr: Expr | str) -> int:
    """The binary operations of an expression (a problem's difficulty), from its tree or its text."""
    if isinstance(expr, str):
        expr = parse_expression(expr)
    return 0 if isinstance(expr, int) else 1 + count_ops(expr.left) + count_ops(expr.right)


def needs_parens(child: Expr, parent_op: str, is_right: bool) -> bool:
    """Whether `render` writes `child`, the left (or, with `is_right`, right) operand of
    `parent_op`, in parentheses."""
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
    if needs_parens(expr.left, expr.op, False):
        left = f"({left})"
    if needs_parens(expr.right, expr.op, True):
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def max_abs(expr: Expr) -> tuple[int, int]:
    """(value, largest |value| of any node): the numbers a canonical solution writes."""
    if isinstance(expr, int):
        return expr, abs(expr)
    (a, ma), (b, mb) = max_abs(expr.left), max_abs(expr.right)
    value = apply_op(expr.op, a, b)
    return value, max(ma, mb, abs(value))
