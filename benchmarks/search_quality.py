"""Accuracy against generated-token budget, every algorithm side by side, on the toy world.

For each policy (the scripted noisy policy and the tiny transformer) and each difficulty (number of
operations), the same generated problems are searched by every algorithm at several budgets:

    tree search (mcts_star, uct, puct)          simulations per tree in --simulations
    best_of_n, self_consistency, weighted SC    sampled solutions per problem in --samples
    beam                                        beam width in --beam-widths
    greedy                                      one solution

Every run reports its accuracy and the tokens the policy actually generated per problem, so the
methods are compared on the budget they really spent. The scorer is the toy world's oracle PRM with
label noise (--oracle-noise), or a trained PRM folder (--prm). The table goes to stdout (and JSON
lines with --json); the plot (one panel per policy and difficulty, accuracy against tokens on a
log axis) to --plot.

    python benchmarks/search_quality.py                 # full sweep (tens of minutes on 2 cores)
    python benchmarks/search_quality.py --quick         # a few minutes

A note on the scripted policy: its correct step is always its most likely one, so its greedy
solution is always right; it is there to test the search logic, and its interesting comparison is
between the sampling methods. The tiny transformer makes systematic mistakes, as real models do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from mcts.envs.arith import ArithConfig, generate_problems
from mcts.grading import is_equivalent
from mcts.search import TREE_RULES, SearchConfig, load_proposer, load_scorer, run_algorithm

SAMPLING = ("best_of_n", "self_consistency", "weighted_self_consistency")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="scripted,tiny", help="comma list: scripted, tiny, or model folders")
    p.add_argument("--ops", default="1-2,3-4,5-6", help="difficulties: comma list of min-max operations")
    p.add_argument("--max-operand", type=int, default=10,
                   help="largest operand (the tiny transformer is trained on operands up to 10)")
    p.add_argument("--max-value", type=int, default=100,
                   help="bound on every value a solution writes (the tiny transformer's training bound)")
    p.add_argument("--problems", type=int, default=40, help="problems per difficulty")
    p.add_argument("--algorithms", default="greedy,best_of_n,self_consistency,weighted_self_consistency,beam,"
                   "mcts_star,uct,puct")
    p.add_argument("--simulations", type=_ints, default=[4, 8, 16, 32], help="tree search budgets")
    p.add_argument("--samples", type=_ints, default=[2, 4, 8, 16], help="sampling baselines' N")
    p.add_argument("--beam-widths", type=_ints, default=[2, 4])
    p.add_argument("--width", type=int, default=4, help="steps sampled per expanded leaf")
    p.add_argument("--prm", default="oracle", help="'oracle' or a trained PRM folder")
    p.add_argument("--oracle-noise", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64, help="problems searched together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small sweep for a smoke run")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    p.add_argument("--plot", default="search_quality.png", help="PNG output ('' for none)")
    return p


def _settings(args) -> list[tuple[str, str, SearchConfig]]:
    """(algorithm, budget label, config) for every run of one policy and difficulty."""
    out = []
    for algorithm in args.algorithms.split(","):
        if algorithm == "greedy":
            out.append((algorithm, "1", SearchConfig(algorithm=algorithm)))
        elif algorithm in SAMPLING:
            out += [(algorithm, f"N={n}", SearchConfig(algorithm=algorithm, simulations=n, width=min(n, 8)))
                    for n in args.samples]
        elif algorithm == "beam":
            out += [(algorithm, f"k={k}", SearchConfig(algorithm=algorithm, width=k)) for k in args.beam_widths]
        elif algorithm in TREE_RULES:
            out += [(algorithm, f"sims={s}", SearchConfig(algorithm=algorithm, simulations=s, width=args.width))
                    for s in args.simulations]
        else:
            raise SystemExit(f"unknown algorithm {algorithm!r}")
    return out


def run(args) -> list[dict]:
    rows = []
    difficulties = [tuple(int(x) for x in d.split("-")) for d in args.ops.split(",")]
    settings = _settings(args)
    policies = args.policies.split(",")
    bar = tqdm(total=len(policies) * len(difficulties) * len(settings), desc="search quality", unit="run",
               file=sys.stderr)
    for policy_name in policies:
        for lo, hi in difficulties:
            problems = generate_problems(args.problems, seed=args.seed + 1000 * lo + hi,
                                         config=ArithConfig(min_ops=lo, max_ops=hi, max_operand=args.max_operand,
                                                                max_value=args.max_value))
            texts = [p["problem"] for p in problems]
            golds = {p["problem"]: str(p["answer"]) for p in problems}
            for algorithm, budget, config in settings:
                # fresh models per run, so every run sees the same random streams
                proposer = load_proposer(policy_name, problems=texts, seed=args.seed)
                scorer = load_scorer(args.prm, problems=texts, golds=golds, oracle_noise=args.oracle_noise,
                                     seed=args.seed)
                start = time.perf_counter()
                results = []
                for i in range(0, len(texts), args.batch):
                    results += run_algorithm(texts[i:i + args.batch], proposer, scorer, config)
                seconds = time.perf_counter() - start
                correct = [is_equivalent(r.answer, str(p["answer"])) for r, p in zip(results, problems)]
                rows.append({
                    "policy": policy_name, "ops": f"{lo}-{hi}", "algorithm": algorithm, "budget": budget,
                    "accuracy": sum(correct) / len(correct),
                    "tokens_per_problem": sum(r.tokens for r in results) / len(results),
                    "policy_calls_per_problem": sum(r.policy_calls for r in results) / len(results),
                    "seconds": seconds,
                })
                bar.update()
    bar.close()
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'policy':<10} {'ops':<5} {'algorithm':<26} {'budget':<8} {'accuracy':>8} {'tokens/problem':>15} {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['policy'][:10]:<10} {r['ops']:<5} {r['algorithm']:<26} {r['budget']:<8} "
                     f"{r['accuracy']:>8.3f} {r['tokens_per_problem']:>15.1f} {r['seconds']:>8.1f}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["policy"], r["ops"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (policy, ops) in zip(axes[0], panels):
        for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
            pts = sorted((r["tokens_per_problem"], r["accuracy"]) for r in rows
                         if (r["policy"], r["ops"], r["algorithm"]) == (policy, ops, algorithm))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=algorithm)
        ax.set_xscale("log")
        ax.set_title(f"{policy}, {ops} operations")
        ax.set_xlabel("generated tokens per problem")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.problems, args.ops = min(args.problems, 16), "1-2,3-4"
        args.simulations, args.samples, args.beam_widths = [4, 16], [4, 16], [4]
    rows = run(args)
    print(table(rows))
    if args.json:
        for r in rows:
            print(json.dumps(r))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {Path(args.plot).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
