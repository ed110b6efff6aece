"""Best-of-N answer choice by a trained PRM against majority vote, across policy strengths.

Every rule chooses among the same N sampled solutions per problem (`prm.eval.best_of_n`):
majority vote, PRM best-of-N by each step aggregate (min, last, mean, prod of the trace's step
values), the PRM-weighted vote by each, and with a PPRM Enhanced Borda Count; pass@N is the
ceiling. The policies are the scripted toy policy at several slip rates (its per-step error rate:
0.05 makes most of 16 samples right, 0.3 makes a right one rare) and the tiny transformer, on fresh
toy problems with 5-6 operations (the toy world's hard end). The tiny transformer policy is a row
with --tiny-policy.

Why a sweep: majority vote is strong whenever most samples are right, because the toy world's
wrong answers scatter; a PRM earns its keep where right samples are a minority. The table says
where each rule wins, on the same samples.

No rule is chosen on the samples it is scored on: each row also samples a development split
(--dev-problems, other problems, another seed), the step aggregate of "PRM best-of-N" is the one
that wins there, and the table reports it on the test split (--problems) only.

    python benchmarks/prm_best_of_n.py                       # tiny PRM and PPRM, 200 problems per row (~4 min)
    python benchmarks/prm_best_of_n.py --quick               # a smoke run
    python benchmarks/prm_best_of_n.py --prm DIR --pprm ''   # another PRM, no EBC
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

DEV_SEED_OFFSET = 1_000_003  # the development split's problems and sampling: never the test seed's
SHOWN = ("majority", "prm_best_min", "prm_best_mean", "prm_best_last", "prm_vote_mean", "prm_vote_min", "ebc")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prm", default="tiny", help="PRM folder, or 'tiny' (the toy world's, built on first use)")
    p.add_argument("--pprm", default="tiny", help="PPRM folder for EBC, 'tiny', or '' for none")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--slip-rates", type=_floats, default=[0.05, 0.1, 0.2, 0.3, 0.4],
                   help="base_eps of the scripted policy, one row each")
    p.add_argument("--tiny-policy", action=argparse.BooleanOptionalAction, default=False,
                   help="also a row for the tiny transformer policy (sampling 16 solutions of 200 problems with "
                   "it takes about 5 minutes of one CPU core; at 5-6 operations its right answers are coincidences: "
                   "pass@16 ~0.15, yet none of 2400 samples was a sound solution, so no selector has anything to find)")
    p.add_argument("--problems", type=int, default=200, help="test problems per row")
    p.add_argument("--dev-problems", type=int, default=100, help="development problems per row (other problems, "
                   "another seed): where the step aggregate of PRM best-of-N is chosen")
    p.add_argument("--min-ops", type=int, default=5)
    p.add_argument("--max-ops", type=int, default=6)
    p.add_argument("--seed", type=int, default=2027, help="seed of the test problems and the sampling (never one "
                   "of prm.toy.RESERVED_SEEDS: the toy PRM's design was chosen on 12345)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while scoring")
    p.add_argument("--quick", action="store_true", help="a small sweep for a smoke run")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    p.add_argument("--plot", default="prm_best_of_n.png", help="PNG output ('' for none)")
    return p


def _load(args):
    from prm.model import PRM
    from prm.pairwise import PPRM
    from prm.toy import ensure_toy_pprm, ensure_toy_prm

    prm_dir = ensure_toy_prm() if args.prm == "tiny" else args.prm
    pprm_dir = ensure_toy_pprm() if args.pprm == "tiny" else args.pprm
    prm = PRM.from_pretrained(str(prm_dir), device="cpu", num_threads=args.threads)
    pprm = PPRM.from_pretrained(str(pprm_dir), device="cpu", num_threads=args.threads) if pprm_dir else None
    return prm, pprm


def check_seeds(args) -> None:
    """The test and development seeds are not the one the toy PRM was designed on."""
    from prm.toy import check_report_seed

    check_report_seed(args.seed)
    check_report_seed(args.seed + DEV_SEED_OFFSET, "--seed + DEV_SEED_OFFSET")


def run(args) -> list[dict]:
    from prm.toy_traces import toy_problems
    from prm.eval import best_of_n, toy_policy

    prm, pprm = _load(args)
    problems = toy_problems(args.problems, args.seed, args.min_ops, args.max_ops, 10, 100)
    test_texts = {p["problem"] for p in problems}
    dev = [p for p in toy_problems(args.dev_problems, args.seed + DEV_SEED_OFFSET, args.min_ops, args.max_ops, 10, 100)
           if p["problem"] not in test_texts]
    settings = [("scripted", rate) for rate in args.slip_rates] + ([("tiny", None)] if args.tiny_policy else [])
    rows = []
    for name, rate in tqdm(settings, desc="policies", unit="policy"):
        chosen = choose_aggregate(best_of_n(prm, dev, toy_policy(name, args.seed + DEV_SEED_OFFSET, rate), n=args.n))
        result = best_of_n(prm, problems, toy_policy(name, args.seed, rate), n=args.n, pprm=pprm)
        rows.append({"policy": name if rate is None else f"scripted {rate:g}", "slip_rate": rate,
                     "ops": f"{args.min_ops}-{args.max_ops}", "dev_problems": len(dev), "chosen": chosen,
                     **result})
    return rows


def choose_aggregate(dev_result: dict) -> str:
    """The PRM best-of-N rule (step aggregate) that wins on the development split (first on ties)."""
    rules = [k for k in dev_result["accuracy"] if k.startswith("prm_best_")]
    return max(rules, key=lambda k: dev_result["accuracy"][k])


def table(rows: list[dict], n: int) -> str:
    rules = [r for r in (f"pass@{n}", *SHOWN) if any(r in row["accuracy"] for row in rows)]
    head = (f"{'policy':<14} " + " ".join(f"{r:>13}" for r in rules)
            + f" {'dev-chosen PRM':>15} {'- majority':>10}")
    lines = ["test split; the PRM's step aggregate is chosen on the development split", head, "-" * len(head)]
    for row in rows:
        acc = row["accuracy"]
        cells = " ".join(f"{acc[r]:>13.3f}" if r in acc else f"{'-':>13}" for r in rules)
        chosen = row["chosen"]
        lines.append(f"{row['policy']:<14} {cells} {chosen.removeprefix('prm_best_'):>6} {acc[chosen]:>8.3f} "
                     f"{acc[chosen] - acc['majority']:>+10.3f}")
    return "\n".join(lines)


def verdicts(rows: list[dict], n: int) -> list[str]:
    out = []
    for row in rows:
        acc = row["accuracy"]
        best = row["chosen"]
        word = "beats" if acc[best] > acc["majority"] else "does not beat"
        out.append(f"{row['policy']}, {row['ops']} operations: PRM best-of-{n} ({best}, chosen on the development "
                   f"split) {acc[best]:.3f} {word} "
                   f"majority {acc['majority']:.3f}; PRM-weighted vote (mean) {acc['prm_vote_mean']:.3f}")
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scripted = [r for r in rows if r["slip_rate"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for rule in SHOWN:
        pts = [(r["slip_rate"], r["accuracy"][rule]) for r in scripted if rule in r["accuracy"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=rule)
    ax.set_xlabel("scripted policy slip rate (base_eps)")
    ax.set_ylabel(f"accuracy ({rows[0]['ops']} operations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.problems, args.dev_problems, args.slip_rates = min(args.problems, 20), min(args.dev_problems, 10), [0.05, 0.3]
    try:
        check_seeds(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = run(args)
    print(table(rows, args.n))
    print("\n".join(verdicts(rows, args.n)))
    if args.json:
        for r in rows:
            print(json.dumps(r))
    if args.plot:
        try:
            plot(rows, args.plot)
        except ImportError:  # matplotlib comes with the bench extra
            print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        else:
            print(f"plot: {Path(args.plot).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
