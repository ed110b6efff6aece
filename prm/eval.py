"""Evaluating PRMs and PPRMs on toy problems and files, and `python -m prm.eval`.

The metrics themselves (step AUC, first-error and pairwise accuracy, `step_metrics`,
`pairwise_metrics`) are in `prm.metrics`. Here: `best_of_n` and `choose_among` (answer choice
among N sampled solutions: PRM best-of-N for each step aggregate, majority vote, PRM-weighted
vote, Enhanced Borda Count with a PPRM), `toy_eval` (a PRM and PPRM on fresh oracle-labelled toy
traces), and the command line.

Command lines:

    python -m prm.eval --data FILE --prm DIR                       a step-labelled file
    python -m prm.eval --prm DIR --toy N --seed S [--pprm DIR] --json
        N fresh toy traces from a toy policy, oracle-labelled: step_auc, first_error_acc (and
        pairwise_acc on the pairs of those traces that differ in outcome, with --pprm)
    python -m prm.eval --prm DIR --best-of-n 16 --problems 200 --min-ops 5 --max-ops 6 [--policy tiny]
        PRM best-of-N vs majority vote on fresh toy problems

Toy problems default to the toy world's default distribution (operands up to 10, every value
within 100, 1-6 operations; 5-6 for --best-of-n), the one the tiny models are trained on; seeds
other than the builds' (data_seed + i, `prm.toy.EVAL_SEED`) give held-out problems. `--prm tiny`
and `--pprm tiny` name the toy world's models (built on first use).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from mcts.answers import Candidate, aggregate_step_values, choose_answer
from mcts.envs.tiny_models import load_toy_policy
from mcts.grading import extract_answer, is_equivalent
from mcts.policy.base import Prefix
from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig
from prm.data import StepDataError, load_pair_dataset, pair_records, read_step_records
from prm.ebc import ebc_select
from prm.metrics import pairwise_metrics, step_metrics
from prm.adapters import PRM_FORMATS, detect_format, load_adapter
from prm.model import PRM, PRMLoadError
from prm.pairwise import PPRM
from prm.toy_traces import ToyDataConfig, rollout, toy_problems, toy_step_records

__all__ = ["best_of_n", "choose_among", "main", "make_parser", "toy_eval", "toy_policy"]

AGGREGATES = ("min", "last", "mean", "prod")


def best_of_n(prm: "PRM | None", problems: Sequence[Mapping], policy, *, n: int = 16, temperature: float = 1.0,
              pprm: "PPRM | None" = None, alpha: float = 0.5, max_steps: int = 14) -> dict:
    """Answer choice among `n` solutions per problem sampled from `policy` (`choose_among`).

    Args:
        prm: the PRM (None: only the votes).
        problems: [P] {"problem", "answer"}.
        policy: a `StepProposer` (the scripted toy policy, the tiny transformer).
        n: samples per problem.
        temperature: sampling temperature.
        pprm, alpha: for EBC.
        max_steps: a sample still going after this many steps is cut (no answer).

    Returns:
        {"problems", "n", "accuracy": {rule: fraction correct}, "seconds": {...}}.
    """
    started = time.perf_counter()
    traces = rollout(policy, [p["problem"] for p in problems], samples=n, temperature=temperature,
                     max_steps=max_steps)
    sampling = round(time.perf_counter() - started, 1)
    out = choose_among(prm, problems, traces, pprm=pprm, alpha=alpha)
    out["seconds"] = {"sampling": sampling, **out["seconds"]}
    return out


def choose_among(prm: "PRM | None", problems: Sequence[Mapping], traces: Sequence[tuple[str, Sequence[str]]], *,
                 pprm: "PPRM | None" = None, alpha: float = 0.5) -> dict:
    """Answer choice among given solutions of each problem, every rule on the same solutions.

    Rules: majority vote; pass@n (some solution is right: the ceiling); with a PRM, best-of-N by
    each step aggregate (min, last, mean, prod of the trace's step values; `mcts.answers`'
    `aggregate_step_values` and `choose_answer`) and the PRM-weighted vote by each; with a PPRM,
    Enhanced Borda Count (`prm.ebc.ebc_select`, local Q = the min aggregate).

    Args:
        prm: the PRM (None: only the votes).
        problems: [P] {"problem", "answer"}.
        traces: (problem, step texts) pairs, n per problem (`prm.toy_traces.rollout`'s output; saved
            samples can be scored by several PRMs).
        pprm, alpha: for EBC.

    Returns:
        {"problems", "n", "accuracy": {rule: fraction correct}, "seconds": {"scoring", "ebc"}}.
    """
    texts = [p["problem"] for p in problems]
    by_problem: dict[str, list[list[str]]] = {t: [] for t in texts}
    for problem, steps in traces:
        if problem in by_problem:
            by_problem[problem].append(list(steps))
    counts = {len(v) for v in by_problem.values()}
    if len(counts) > 1:
        raise ValueError(f"every problem needs the same number of solutions, got counts {sorted(counts)}")
    n = counts.pop() if counts else 0
    started = time.perf_counter()
    flat = [(p, s) for p in texts for s in by_problem[p]]
    values = prm.score_traces([Prefix(p, tuple(s)) for p, s in flat]) if prm is not None else [[] for _ in flat]
    score_seconds = time.perf_counter() - started
    it = iter(values)
    hits: dict[str, int] = {}
    ebc_seconds = 0.0
    for record in problems:
        problem, gold = record["problem"], str(record["answer"])
        samples = by_problem[problem]
        step_values = [next(it) for _ in samples]
        answers = [extract_answer(s[-1]) if s else None for s in samples]
        right = lambda c: c is not None and c.answer is not None and is_equivalent(c.answer, gold)  # noqa: E731
        plain = [Candidate(a, 0.0, tuple(s)) for a, s in zip(answers, samples)]
        outcome = {"majority": right(choose_answer(plain, "majority")[0]),
                   f"pass@{n}": any(a is not None and is_equivalent(a, gold) for a in answers)}
        if prm is not None:
            for how in AGGREGATES:
                cands = [Candidate(a, aggregate_step_values(v, how), tuple(s))
                         for a, v, s in zip(answers, step_values, samples)]
                outcome[f"prm_best_{how}"] = right(choose_answer(cands, "max_value")[0])
                outcome[f"prm_vote_{how}"] = right(choose_answer(cands, "weighted_vote")[0])
            if pprm is not None:
                cands = [Candidate(a, aggregate_step_values(v, "min"), tuple(s))
                         for a, v, s in zip(answers, step_values, samples)]
                t0 = time.perf_counter()
                outcome["ebc"] = right(ebc_select(problem, cands, pprm, alpha)[0])
                ebc_seconds += time.perf_counter() - t0
        for rule, ok in outcome.items():
            hits[rule] = hits.get(rule, 0) + bool(ok)
    return {"problems": len(problems), "n": n,
            "accuracy": {rule: hits[rule] / max(1, len(problems)) for rule in hits},
            "seconds": {"scoring": round(score_seconds, 1), "ebc": round(ebc_seconds, 1)}}


def toy_eval(prm: "PRM | None", *, traces: int, seed: int, policy: str = "scripted", slip_rate: float = 0.05,
             min_ops: int = 1, max_ops: int = 6, max_operand: int = 10, max_value: int | None = 100,
             samples: int = 4, temperature: float = 1.0, pprm: "PPRM | None" = None) -> dict:
    """A PRM (and PPRM) on fresh oracle-labelled toy traces.

    `ceil(traces / samples)` problems (seeded by `seed`, `min_ops`-`max_ops` operations, operands up
    to `max_operand`, every value within `max_value`: by default the toy world's default problems,
    `mcts.envs.toy_config.toy_problem_config`), `samples` traces each from the toy policy (the
    scripted one with `base_eps = slip_rate`, or the tiny transformer), cut to `traces`. Pairs for
    the PPRM: traces of one problem that differ in outcome.

    Returns:
        `step_metrics` fields, plus pairs/pairwise_acc with a PPRM, and the data's description.
    """
    config = ToyDataConfig(problems=max(1, math.ceil(traces / samples)), samples=samples, min_ops=min_ops,
                           max_ops=max_ops, max_operand=max_operand, max_value=max_value, slip_rates=(slip_rate,),
                           temperature=temperature, seed=seed)
    started = time.perf_counter()
    records = toy_step_records(config, toy_policy(policy, seed))[:traces]
    data_seconds = time.perf_counter() - started
    out: dict = {"policy": policy, "seed": seed, "ops": f"{min_ops}-{max_ops}"}
    if prm is not None:
        out.update(step_metrics(prm, records))
    else:
        out.update(traces=len(records))
    if pprm is not None:
        out.update(pairwise_metrics(pprm, pair_records(records, max_pairs_per_problem=4, seed=seed)))
    out["data_seconds"] = round(data_seconds, 1)
    return out


def toy_policy(name: str, seed: int, slip_rate: float | None = None):
    """None for the scripted policy at the configured slip rate (built by the data code), or the
    tiny transformer policy (built on first use)."""
    if name == "scripted":
        if slip_rate is None:
            return None
        return ScriptedPolicy(ToyPolicyConfig(base_eps=slip_rate), seed=seed)
    return load_toy_policy(seed=seed, device="cpu")


# ---------------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prm.eval",
                                     description="Evaluate a PRM (and a PPRM) on labelled steps or toy problems.")
    parser.add_argument("--prm", help="a PRM folder (python -m prm.train), or 'tiny': the toy world's (built on first use)")
    parser.add_argument("--prm-format", default="auto", choices=("auto", *PRM_FORMATS),
                        help="how the --prm folder is read: treesearch (this project's own) or an open reward "
                        "model's recipe (prm/adapters.py); auto: what the folder's files say")
    parser.add_argument("--pprm", help="a PPRM folder, for pairwise accuracy and EBC, or 'tiny'")
    parser.add_argument("--data", help="a step-labelled file (JSONL/Parquet, PRM800K, Math-Shepherd) "
                        "or, with only --pprm, a pair file")
    parser.add_argument("--toy", type=int, metavar="N", help="evaluate on N fresh oracle-labelled toy traces")
    parser.add_argument("--best-of-n", type=int, metavar="N", help="answer choice among N samples per problem "
                        "on --problems fresh toy problems")
    parser.add_argument("--problems", type=int, default=200, help="toy problems for --best-of-n")
    parser.add_argument("--policy", default="scripted", choices=("scripted", "tiny"),
                        help="toy policy that samples the traces")
    parser.add_argument("--slip-rate", type=float, default=0.05, help="base_eps of the scripted policy")
    parser.add_argument("--min-ops", type=int, default=None, help="fewest operations (default: 1; 5 for --best-of-n)")
    parser.add_argument("--max-ops", type=int, default=None, help="most operations (default: 6)")
    parser.add_argument("--max-operand", type=int, default=10, help="largest operand (default: the toy world's "
                        "default problems, which the tiny models are trained on)")
    parser.add_argument("--max-value", type=int, default=100, help="bound on every value a solution writes "
                        "(0: unbounded)")
    parser.add_argument("--samples", type=int, default=4, help="traces per problem for --toy")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--alpha", type=float, default=0.5, help="EBC weight of the Borda score")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the problems and the sampling")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads while scoring")
    parser.add_argument("--trust-remote-code", action="store_true", help="let transformers import and run the "
                        "Python files of a --prm/--pprm folder whose config names them (auto_map); off by default: "
                        "such a folder is refused and nothing of it runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


def _bad_flag(args: argparse.Namespace) -> str | None:
    """The first flag out of its range, as one line, before any model loads."""
    checks = [
        (args.toy is None or args.toy >= 1, f"--toy must be >= 1, got {args.toy}"),
        (args.best_of_n is None or args.best_of_n >= 1, f"--best-of-n must be >= 1, got {args.best_of_n}"),
        (args.problems >= 1, f"--problems must be >= 1, got {args.problems}"),
        (args.samples >= 1, f"--samples must be >= 1, got {args.samples}"),
        (0.0 <= args.slip_rate <= 0.5, f"--slip-rate must be in [0, 0.5], got {args.slip_rate}"),
        (args.temperature >= 0.0, f"--temperature must be >= 0, got {args.temperature}"),
        (0.0 <= args.alpha <= 1.0, f"--alpha must be in [0, 1], got {args.alpha}"),
        (args.min_ops is None or 1 <= args.min_ops <= 8, f"--min-ops must be in [1, 8], got {args.min_ops}"),
        (args.max_ops is None or 1 <= args.max_ops <= 8, f"--max-ops must be in [1, 8], got {args.max_ops}"),
        (args.min_ops is None or args.max_ops is None or args.min_ops <= args.max_ops,
         f"--min-ops {args.min_ops} is above --max-ops {args.max_ops}"),
        (args.max_operand >= 1, f"--max-operand must be >= 1, got {args.max_operand}"),
        (args.max_value >= 0, f"--max-value must be >= 0 (0: unbounded), got {args.max_value}"),
        (args.threads is None or args.threads >= 0, f"--threads must be >= 0, got {args.threads}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _load_prm(folder: str, prm_format: str, device: str | None, overrides: dict):
    """The --prm folder as this project's PRM or, by --prm-format (or detected), an open PRM's adapter."""
    fmt = detect_format(folder) if prm_format == "auto" and Path(folder).is_dir() else prm_format
    if fmt in ("auto", "treesearch"):
        return PRM.from_pretrained(folder, device=device, **overrides)
    options = {"trust_remote_code": overrides["trust_remote_code"]}
    if "num_threads" in overrides:
        options["num_threads"] = overrides["num_threads"]
    return load_adapter(folder, fmt, device=device, **options)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    modes = [m for m in ("data", "toy", "best_of_n") if getattr(args, m) is not None]
    if len(modes) != 1:
        parser.error("give exactly one of --data, --toy N, --best-of-n N")
    if args.prm is None and not (args.pprm and modes[0] in ("data", "toy")):
        parser.error("--prm is required (only --pprm with --data or --toy goes without it)")
    bad = _bad_flag(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    overrides = {"num_threads": args.threads} if args.threads else {}
    overrides["trust_remote_code"] = args.trust_remote_code
    if "tiny" in (args.prm, args.pprm):
        # Lazy: only `tiny` needs the toy builds, and prm.toy brings the whole training stack
        # (accelerate, transformers' Llama) into every `import prm.eval`.
        from prm.toy import ensure_toy_pprm, ensure_toy_prm

        args.prm = str(ensure_toy_prm()) if args.prm == "tiny" else args.prm
        args.pprm = str(ensure_toy_pprm()) if args.pprm == "tiny" else args.pprm
    try:
        prm = _load_prm(args.prm, args.prm_format, args.device, overrides) if args.prm else None
        pprm = PPRM.from_pretrained(args.pprm, device=args.device, **overrides) if args.pprm else None
    except (PRMLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.data is not None:
            if prm is not None:
                result = step_metrics(prm, read_step_records(args.data))
                if pprm is not None:
                    result.update(pairwise_metrics(pprm, pair_records(read_step_records(args.data))))
            else:
                result = pairwise_metrics(pprm, list(load_pair_dataset(args.data)))
        elif args.toy is not None:
            if args.toy < 1:
                parser.error(f"--toy must be >= 1, got {args.toy}")
            result = toy_eval(prm, traces=args.toy, seed=args.seed, policy=args.policy, slip_rate=args.slip_rate,
                              min_ops=args.min_ops or 1, max_ops=args.max_ops or 6, max_operand=args.max_operand,
                              max_value=args.max_value or None, samples=args.samples, temperature=args.temperature,
                              pprm=pprm)
        else:
            lo, hi = args.min_ops or 5, args.max_ops or 6
            problems = toy_problems(args.problems, args.seed, lo, hi, args.max_operand, args.max_value or None)
            policy = toy_policy(args.policy, args.seed, args.slip_rate)
            result = {"policy": args.policy, "ops": f"{lo}-{hi}", "seed": args.seed,
                      **best_of_n(prm, problems, policy, n=args.best_of_n, temperature=args.temperature,
                                  pprm=pprm, alpha=args.alpha)}
    except StepDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
