"""The toy arithmetic world (ARCHITECTURE.md): problems, solutions, oracle labels, an oracle PRM.

Everything here is checkable, which is what makes the world useful for testing the search:

    generate_problems(n, seed, config)   seeded integer expressions, `{"id", "problem", "answer"}`
    parse_expression / render / evaluate a tiny safe parser (no `eval`) and its canonical printer
    solution_steps(problem)              one reduction per step, then `The answer is \\boxed{58}.`
    parse_step(step)                     the expression a step writes, or its `FinalAnswer`
    label_steps(problem, steps, gold)    the oracle's 0/1 label of every step; `first_error`
    OraclePRM                            a `StepScorer` from the oracle, with seeded, stable noise

This module holds the problem generator, `OraclePRM` and the command line; the expressions live in
`mcts.envs.arith_expr` and the solutions, step reading and labels in `mcts.envs.arith_steps`, and
the names of both that the rest of the project uses are importable from here too.

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
import math
import os
import random
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mcts.files import write_jsonl_atomic
from mcts.envs.arith_expr import (
    OPERATORS,
    ArithParseError,
    BinOp,
    Expr,
    apply_op,
    count_ops,
    evaluate,
    first_non_toy,
    is_toy,
    max_abs,
    parse_expression,
    render,
)
from mcts.envs.arith_steps import (
    DELIMITER,
    FinalAnswer,
    answer_step,
    first_error,
    gold_int,
    label_steps,
    parse_step,
    reduce_once,
    reduction_step,
    replace_at,
    solution_steps,
    step_value,
)
from mcts.policy.base import Prefix, Step
from mcts.options import add_flags, flag_message, flag_values, option

__all__ = [
    "MAX_OPS",
    "ArithConfig",
    "OraclePRM",
    "generate_problem",
    "generate_problems",
    "main",
    "make_parser",
    "write_problems",
    # Kept importable from here, where the rest of the project reads them (and where
    # `benchmarks/scale_out.py` clears the caches of `parse_step` and `step_value`):
    "DELIMITER",
    "OPERATORS",
    "first_non_toy",
    "is_toy",
    "ArithParseError",
    "BinOp",
    "Expr",
    "FinalAnswer",
    "answer_step",
    "apply_op",
    "count_ops",
    "evaluate",
    "first_error",
    "label_steps",
    "parse_expression",
    "parse_step",
    "reduce_once",
    "reduction_step",
    "render",
    "replace_at",
    "solution_steps",
    "step_value",
]

MAX_OPS = 8


# ---------------------------------------------------------------------------------------------------
# Problem generation



@dataclasses.dataclass(frozen=True)
class ArithConfig:
    """The difficulty knobs of generated problems."""

    min_ops: int = option(1, "fewest operations per problem (1-8)")
    max_ops: int = option(4, "most operations per problem (1-8)")
    min_operand: int = option(1, "smallest operand (>= 0)")
    max_operand: int = option(20, "largest operand")
    operators: str = option(OPERATORS, "operators to draw from, a subset of '+-*'")
    parens: bool = option(True, "random expression trees (parentheses where their shape needs them); "
                                     "False: flat expressions read by precedence alone")
    max_value: int | None = option(None, "bound on |every intermediate value and the answer|; None: unbounded")
    max_attempts: int = option(1000, "draws per problem before giving up on `max_value`")

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
    return bound is None or max_abs(expr)[1] <= bound


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
    write_jsonl_atomic(path, records)
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

    noise: float = option(0.0,
        "'flip': probability that the score is flipped; 'gaussian': the standard deviation")
    kind: str = option("flip",
        "'flip' (symmetric label noise) or 'gaussian' (clean + N(0, noise^2), clipped to [0, 1])")
    seed: int = option(0, "seed of the noise")
    answers: Mapping[str, int | str] | None = option(None,
        "gold answer per problem text; None: a problem's gold is the value of its expression")

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
                self._gold[problem] = gold_int(self.answers[problem])
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
    add_flags(parser, ArithConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = ArithConfig(**flag_values(ArithConfig, args))
    except (TypeError, ValueError) as err:
        parser.error(flag_message(str(err), ArithConfig))
    path = write_problems(args.out, generate_problems(args.n, args.seed, config))
    print(f"wrote {args.n} problems to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
