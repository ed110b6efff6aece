"""Evaluating PRMs and PPRMs, and `python -m prm.eval`.

Metrics (pure functions, no model):

    step_auc(scores, labels)                  ROC AUC of step scores against 0/1 step labels
    first_error_accuracy(values, labels)      how often the PRM finds the first wrong step
    pairwise_accuracy(probs)                  how often P(correct > wrong) is above 1/2

With models: `step_metrics` (a PRM on step records), `pairwise_metrics` (a PPRM on pairs), and
`best_of_n` (answer choice among N sampled solutions: PRM best-of-N for each step aggregate,
majority vote, PRM-weighted vote, Enhanced Borda Count with a PPRM).

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
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from prm.model import PRM
    from prm.pairwise import PPRM

__all__ = [
    "best_of_n", "choose_among", "first_error_accuracy", "main", "make_parser", "pairwise_accuracy", "pairwise_metrics",
    "predicted_first_error", "step_auc", "step_metrics", "toy_eval",
]

AGGREGATES = ("min", "last", "mean", "prod")


# ---------------------------------------------------------------------------------------------------
# Metrics


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def step_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC: the probability that a random positive step scores above a random negative one,
    ties counting 1/2 (the Mann-Whitney U statistic from average ranks).

    Args:
        scores: [S] step scores.
        labels: [S] 0/1 labels (1: correct step).

    Returns:
        AUC in [0, 1]; NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def predicted_first_error(values: Sequence[float], threshold: float = 0.5) -> int:
    """The index of the first step whose value is below `threshold`, or -1 when none is."""
    for i, v in enumerate(values):
        if v < threshold:
            return i
    return -1


def first_error_accuracy(values: Sequence[Sequence[float]], labels: Sequence[Sequence[int]],
                         threshold: float = 0.5) -> float:
    """First-error accuracy over traces.

    Per trace, the predicted first error is the first step whose value is < `threshold` (-1 when
    none), and the oracle's is the first step labelled 0 (-1 when none:
    `mcts.envs.arith.first_error`); the accuracy is the fraction of traces where the two are equal.
    A correct trace thus counts as a hit only when every step value is >= threshold, and a wrong
    one only when the PRM's first low value is exactly at the first wrong step.

    Args:
        values: [T][K_t] step values.
        labels: [T][K_t] 0/1 labels.
        threshold: the value below which a step is predicted wrong.

    Returns:
        Accuracy in [0, 1] (NaN for no traces).
    """
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} traces of values but {len(labels)} of labels")
    if not values:
        return math.nan
    hits = 0
    for v, y in zip(values, labels):
        truth = next((i for i, label in enumerate(y) if not label), -1)
        hits += predicted_first_error(v, threshold) == truth
    return hits / len(values)


def pairwise_accuracy(probs: Sequence[float]) -> float:
    """Fraction of pairs where P(correct > wrong) > 1/2; exactly 1/2 counts as half."""
    p = np.asarray(probs, dtype=np.float64)
    if p.size == 0:
        return math.nan
    return float(((p > 0.5) + 0.5 * (p == 0.5)).mean())


# ---------------------------------------------------------------------------------------------------
# With models


def step_metrics(prm: "PRM", records: Sequence[Mapping], threshold: float = 0.5) -> dict:
    """A PRM against the step labels of records (canonical, with "labels").

    Returns:
        {traces, steps, wrong_steps, step_auc, first_error_acc, step_acc (value >= threshold iff
        correct), outcome_auc (last step value against the last label), seconds}.
    """
    from mcts.policy.base import Prefix

    records = [r for r in records if "labels" in r]
    if not records:
        raise ValueError("no records with 'labels' to evaluate against")
    started = time.perf_counter()
    values = prm.score_traces([Prefix(r["problem"], tuple(r["steps"])) for r in records])
    seconds = time.perf_counter() - started
    labels = [list(r["labels"]) for r in records]
    flat_v = np.array([x for v in values for x in v])
    flat_y = np.array([x for y in labels for x in y])
    keep = ~np.isnan(flat_v)
    return {
        "traces": len(records),
        "steps": int(flat_y.size),
        "wrong_steps": int((flat_y == 0).sum()),
        "step_auc": step_auc(flat_v[keep], flat_y[keep]),
        "first_error_acc": first_error_accuracy(values, labels, threshold),
        "step_acc": float(((flat_v[keep] >= threshold) == (flat_y[keep] == 1)).mean()),
        "outcome_auc": step_auc([v[-1] for v in values], [y[-1] for y in labels]),
        "seconds": round(seconds, 2),
    }


def pairwise_metrics(pprm: "PPRM", pairs: Sequence[Mapping]) -> dict:
    """A PPRM on (problem, chosen, rejected) pairs: {pairs, pairwise_acc, one_order_acc}.

    pairwise_acc uses the symmetrised P(chosen > rejected); one_order_acc the raw reading with the
    chosen solution in position A and B alike (how much the averaging is needed).
    """
    if not pairs:
        return {"pairs": 0, "pairwise_acc": math.nan, "one_order_acc": math.nan}
    items = [(p["problem"], p["chosen"], p["rejected"]) for p in pairs]
    raw = pprm.compare(items + [(p, b, a) for p, a, b in items])
    n = len(items)
    sym = [(raw[i] + 1 - raw[n + i]) / 2 for i in range(n)]
    one = [raw[i] for i in range(n)] + [1 - raw[n + i] for i in range(n)]
    return {"pairs": n, "pairwise_acc": pairwise_accuracy(sym), "one_order_acc": pairwise_accuracy(one)}


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
    from prm.data import rollout

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
    each step aggregate (min, last, mean, prod of the trace's step values; `mcts.search`'s
    `aggregate_step_values` and `choose_answer`) and the PRM-weighted vote by each; with a PPRM,
    Enhanced Borda Count (`prm.ebc.ebc_select`, local Q = the min aggregate).

    Args:
        prm: the PRM (None: only the votes).
        problems: [P] {"problem", "answer"}.
        traces: (problem, step texts) pairs, n per problem (`prm.data.rollout`'s output; saved
            samples can be scored by several PRMs).
        pprm, alpha: for EBC.

    Returns:
        {"problems", "n", "accuracy": {rule: fraction correct}, "seconds": {"scoring", "ebc"}}.
    """
    from mcts.grading import extract_answer, is_equivalent
    from mcts.policy.base import Prefix
    from mcts.search import Candidate, aggregate_step_values, choose_answer

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
                from prm.ebc import ebc_select

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
    `mcts.envs.tiny_models.toy_problem_config`), `samples` traces each from the toy policy (the
    scripted one with `base_eps = slip_rate`, or the tiny transformer), cut to `traces`. Pairs for
    the PPRM: traces of one problem that differ in outcome.

    Returns:
        `step_metrics` fields, plus pairs/pairwise_acc with a PPRM, and the data's description.
    """
    from prm.data import ToyDataConfig, pair_records, toy_step_records

    config = ToyDataConfig(problems=max(1, math.ceil(traces / samples)), samples=samples, min_ops=min_ops,
                           max_ops=max_ops, max_operand=max_operand, max_value=max_value, slip_rates=(slip_rate,),
                           temperature=temperature, seed=seed)
    started = time.perf_counter()
    records = toy_step_records(config, _toy_policy(policy, seed))[:traces]
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


def _toy_policy(name: str, seed: int, slip_rate: float | None = None):
    """None for the scripted policy at the configured slip rate (built by the data code), or the
    tiny transformer policy (built on first use)."""
    if name == "scripted":
        if slip_rate is None:
            return None
        from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig

        return ScriptedPolicy(ToyPolicyConfig(base_eps=slip_rate), seed=seed)
    from mcts.envs.tiny_models import load_toy_policy

    return load_toy_policy(seed=seed, device="cpu")


# ---------------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prm.eval",
                                     description="Evaluate a PRM (and a PPRM) on labelled steps or toy problems.")
    parser.add_argument("--prm", help="a PRM folder (python -m prm.train), or 'tiny': the toy world's (built on first use)")
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


def main(argv: list[str] | None = None) -> int:
    from prm.data import StepDataError, load_pair_dataset, read_step_records
    from prm.model import PRM, PRMLoadError
    from prm.pairwise import PPRM

    parser = make_parser()
    args = parser.parse_args(argv)
    modes = [m for m in ("data", "toy", "best_of_n") if getattr(args, m) is not None]
    if len(modes) != 1:
        parser.error("give exactly one of --data, --toy N, --best-of-n N")
    if args.prm is None and not (args.pprm and modes[0] in ("data", "toy")):
        parser.error("--prm is required (only --pprm with --data or --toy goes without it)")
    overrides = {"num_threads": args.threads} if args.threads else {}
    if "tiny" in (args.prm, args.pprm):
        from prm.toy import ensure_toy_pprm, ensure_toy_prm

        args.prm = str(ensure_toy_prm()) if args.prm == "tiny" else args.prm
        args.pprm = str(ensure_toy_pprm()) if args.pprm == "tiny" else args.pprm
    try:
        prm = PRM.from_pretrained(args.prm, device=args.device, **overrides) if args.prm else None
        pprm = PPRM.from_pretrained(args.pprm, device=args.device, **overrides) if args.pprm else None
    except (PRMLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.data is not None:
            if prm is not None:
                result = step_metrics(prm, read_step_records(args.data))
                if pprm is not None:
                    from prm.data import pair_records

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
            from prm.data import toy_problems

            lo, hi = args.min_ops or 5, args.max_ops or 6
            problems = toy_problems(args.problems, args.seed, lo, hi, args.max_operand, args.max_value or None)
            policy = _toy_policy(args.policy, args.seed, args.slip_rate)
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
