"""Accuracy against generated-token budget, every algorithm side by side, on the toy world.

For each policy (the scripted noisy policy and the tiny transformer) and each difficulty (number of
operations), the same generated problems are searched by every algorithm at several budgets:

    tree search (mcts_star, uct, puct)          simulations per tree in --simulations
    best_of_n, self_consistency, weighted SC    sampled solutions per problem in --samples
    beam                                        beam width in --beam-widths
    greedy                                      one solution

Every run is repeated over --seeds (the policy's sampling and the oracle's noise) and reports:
accuracy with a 95% confidence interval (bootstrap over problems, the seeds averaged inside each
resample), tokens the policy actually generated per problem (the budget really spent), finished
candidates per problem, and pass@k: the share of problems where some finished candidate states the
gold answer, the ceiling a perfect answer selector would reach, and solved@k: the share where some
finished candidate is right at every step (the oracle's labels, `mcts.envs.arith_steps.label_steps`),
the ceiling of a selector that judges the steps, as a PRM does: pass@k also counts right answers
reached through a wrong step. Where greedy is among the
algorithms, every row also gives its difference from greedy on the same problems, with a paired
bootstrap interval (the comparison the intervals of two separate accuracies blur). The scorer is the toy world's
trained PRM shipped in the package (--prm tiny, the default), a trained PRM folder, or, for tests
of the search logic, the oracle PRM with label noise (--prm oracle --oracle-noise; it reads the gold
answer, and the table says so). The table goes to stdout (and JSON lines with --json); the plot (one
panel per policy and difficulty, accuracy against tokens on a log axis) to --plot.

    python benchmarks/search_quality.py --policies tiny --ops 1-4 --per-ops --problems 80 \
        --algorithms greedy,best_of_n,self_consistency,mcts_star --simulations 32 --samples 32 --seeds 0,1,2
    python benchmarks/search_quality.py ... --prm oracle     # the search logic under an exact-but-noisy scorer
    python benchmarks/search_quality.py                 # full sweep (tens of minutes on 2 cores)
    python benchmarks/search_quality.py --quick         # a few minutes

A note on the scripted policy: its correct step is always its most likely one, so its greedy
solution is always right; it is there to test the search logic, and its interesting comparison is
between the sampling methods. The tiny transformer makes systematic mistakes, as real models do.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

from tqdm import tqdm

from mcts.envs.arith import ArithConfig, count_ops, generate_problems
from mcts.envs.arith_steps import label_steps
from mcts.grading import is_equivalent
from mcts.algorithms import run_algorithm
from mcts.config import SearchConfig, TREE_RULES
from treesearch.cli import scorer_label
from treesearch.loaders import load_proposer, load_scorer
from treesearch.report.runs import bootstrap_ci, paired_difference

SAMPLING = ("best_of_n", "self_consistency", "weighted_self_consistency")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


PROBLEM_SET_STRIDE = 100_000  # apart from every 1000 * a + b of set 0, and from prm.toy's reserved seeds
# Problem sets that choices were made on: figures on them flatter what was chosen, so the table says so.
CHOSEN_ON = {0: "the search defaults (greedy child, leaf value, widening) were first measured on it",
             1: "the development set: the toy PRM's second stage (prm.toy FULL_BUILD) was chosen on it, "
                "and the shipped policy's ops weights, the rollout expansion and the logprob weight "
                "were tried on it"}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="scripted,tiny", help="comma list: scripted, tiny, or model folders")
    p.add_argument("--ops", default="1-2,3-4,5-6", help="difficulties: comma list of min-max operations")
    p.add_argument("--max-operand", type=int, default=10,
                   help="largest operand (the tiny transformer is trained on operands up to 10)")
    p.add_argument("--max-value", type=int, default=100,
                   help="bound on every value a solution writes (the tiny transformer's training bound)")
    p.add_argument("--problems", type=int, default=40, help="problems per difficulty (with --per-ops: per "
                   "difficulty, spread evenly over its numbers of operations)")
    p.add_argument("--per-ops", action="store_true", help="draw each number of operations of a difficulty "
                   "separately (equal shares) and add a column of accuracy per number of operations")
    p.add_argument("--algorithms", default="greedy,best_of_n,self_consistency,weighted_self_consistency,beam,"
                   "mcts_star,uct,puct")
    p.add_argument("--simulations", type=_ints, default=[4, 8, 16, 32], help="tree search budgets")
    p.add_argument("--samples", type=_ints, default=[2, 4, 8, 16], help="sampling baselines' N")
    p.add_argument("--beam-widths", type=_ints, default=[2, 4])
    p.add_argument("--width", type=int, default=4, help="steps sampled per expanded leaf")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of every algorithm but greedy (SearchConfig.temperature)")
    p.add_argument("--logprob-weight", type=float, default=SearchConfig().logprob_weight,
                   help="answer choice of every algorithm that values its solutions: the value plus this weight "
                        "times the policy's mean token log-probability (SearchConfig.logprob_weight)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a SearchConfig field for every algorithm but greedy, e.g. the step tree's defaults "
                        "before the rollout tree: --set expansion=step --set greedy_child=true --set "
                        "candidate_value=q (a tree variant's own fields win; repeatable)")
    p.add_argument("--tree-variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="also run every tree algorithm with these SearchConfig fields changed, labelled NAME, "
                        "e.g. 'fixed:max_children=4,revisit_terminals=true' (repeatable)")
    p.add_argument("--versus", default="", metavar="ALGORITHM:BUDGET",
                   help="also pair every row against this run of the same invocation, e.g. 'best_of_n:N=16' "
                        "(paired 95%% CI over the same problems and seeds; a tree variant is 'mcts_star (NAME):sims=32')")
    p.add_argument("--prm", default="tiny", help="'tiny' (the shipped toy PRM), a trained PRM folder, or 'oracle' "
                   "(reads the gold answer: for tests of the search logic)")
    p.add_argument("--oracle-noise", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64, help="problems searched together")
    p.add_argument("--seeds", type=_ints, default=[0], help="comma list: every run is repeated per seed")
    p.add_argument("--problem-seed", type=int, default=0,
                   help="which problems are drawn (--seeds vary only the sampling): 0 is the set the README's "
                        "tables report; choose settings on another one, then report them on 0")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the confidence interval")
    p.add_argument("--quick", action="store_true", help="a small sweep for a smoke run")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    p.add_argument("--plot", default="search_quality.png", help="PNG output ('' for none)")
    return p


def _variant(text: str) -> tuple[str, dict]:
    """'NAME:key=value,...' -> (NAME, SearchConfig fields), values read as JSON where they parse."""
    name, _, body = text.partition(":")
    fields = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            fields[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[key.strip()] = value
    return name, fields


def _settings(args) -> list[tuple[str, str, SearchConfig]]:
    """(algorithm, budget label, config) for every run of one policy and difficulty."""
    out = []
    t = {"temperature": args.temperature, "logprob_weight": args.logprob_weight,
         **{k: v for item in args.set for k, v in _variant(f"set:{item}")[1].items()}}
    for algorithm in args.algorithms.split(","):
        if algorithm == "greedy":
            out.append((algorithm, "1", SearchConfig(algorithm=algorithm)))
        elif algorithm in SAMPLING:
            out += [(algorithm, f"N={n}", SearchConfig(algorithm=algorithm, simulations=n, width=min(n, 8), **t))
                    for n in args.samples]
        elif algorithm == "beam":
            out += [(algorithm, f"k={k}", SearchConfig(algorithm=algorithm, width=k, **t)) for k in args.beam_widths]
        elif algorithm in TREE_RULES:
            out += [(algorithm, f"sims={s}", SearchConfig(algorithm=algorithm, simulations=s, width=args.width, **t))
                    for s in args.simulations]
            for name, fields in map(_variant, args.tree_variant):
                out += [(f"{algorithm} ({name})", f"sims={s}",
                         SearchConfig(algorithm=algorithm, simulations=s, **{"width": args.width, **t, **fields}))
                        for s in args.simulations]
        else:
            raise SystemExit(f"unknown algorithm {algorithm!r}")
    return out


def problem_draw_seed(min_ops: int, max_ops: int, problem_seed: int) -> int:
    """The generator seed of the a-b operation problems of one problem set (set 0 keeps the draws
    the README's tables were measured on)."""
    return 1000 * min_ops + max_ops + PROBLEM_SET_STRIDE * problem_seed


def _problems(lo: int, hi: int, args) -> list[dict]:
    def draw(n: int, a: int, b: int) -> list[dict]:
        config = ArithConfig(min_ops=a, max_ops=b, max_operand=args.max_operand, max_value=args.max_value)
        return [dict(p, ops=count_ops(p["problem"]))
                for p in generate_problems(n, problem_draw_seed(a, b, args.problem_seed), config)]

    if not args.per_ops:
        return draw(args.problems, lo, hi)
    ops = range(lo, hi + 1)
    return [p for k in ops for p in draw(args.problems // len(ops), k, k)]


def run(args) -> list[dict]:
    rows = []
    difficulties = [tuple(int(x) for x in d.split("-")) if "-" in d else (int(d), int(d)) for d in args.ops.split(",")]
    settings = _settings(args)
    policies = args.policies.split(",")
    labels = [run_label(algorithm, budget) for algorithm, budget, _ in settings]
    if args.versus and args.versus not in labels:  # before any run, not after them all
        raise SystemExit(f"search_quality: --versus {args.versus!r} is not a run of this invocation "
                         f"(its runs: {', '.join(labels)})")
    bar = tqdm(total=len(policies) * len(difficulties) * len(settings) * len(args.seeds), desc="search quality",
               unit="run", file=sys.stderr)
    for policy_name in policies:
        for lo, hi in difficulties:
            problems = _problems(lo, hi, args)
            texts = [p["problem"] for p in problems]
            golds = {p["problem"]: str(p["answer"]) for p in problems}
            greedy = None  # its hits, once run: the reference of the paired differences
            hits_of: dict[str, np.ndarray] = {}  # 'algorithm:budget' -> hits, for --versus
            for algorithm, budget, config in sorted(settings, key=lambda s: s[0] != "greedy"):
                correct, found, solved, tokens, candidates, simulations, seconds = [], [], [], [], [], [], 0.0
                for seed in args.seeds:
                    # fresh models per run, so every run sees the same random streams
                    proposer = load_proposer(policy_name, problems=texts, seed=seed)
                    scorer = load_scorer(args.prm, problems=texts, golds=golds, oracle_noise=args.oracle_noise,
                                         seed=seed)
                    start = time.perf_counter()
                    results = []
                    for i in range(0, len(texts), args.batch):
                        results += run_algorithm(texts[i:i + args.batch], proposer, scorer, config)
                    seconds += time.perf_counter() - start
                    correct.append([is_equivalent(r.answer, str(p["answer"])) for r, p in zip(results, problems)])
                    found.append([any(is_equivalent(a, str(p["answer"])) for a in r.candidate_answers)
                                  for r, p in zip(results, problems)])
                    solved.append([solved_by(r, p) for r, p in zip(results, problems)])
                    tokens += [r.tokens for r in results]
                    candidates += [r.num_candidates for r in results]
                    simulations += [r.simulations for r in results]
                    bar.update()
                hits = np.array(correct, np.float64)
                low, high = bootstrap_ci(hits, args.bootstrap)
                greedy = hits if algorithm == "greedy" else greedy
                diff = paired_difference(hits, greedy, args.bootstrap) if greedy is not None else (None,) * 3
                hits_of[run_label(algorithm, budget)] = hits
                by_ops = collections.defaultdict(list)
                for j, p in enumerate(problems):
                    by_ops[p["ops"]].append(hits[:, j].mean())
                rows.append({
                    "policy": policy_name, "ops": f"{lo}-{hi}", "algorithm": algorithm, "budget": budget,
                    "scorer": scorer_label(args.prm, args.oracle_noise),
                    "seeds": len(args.seeds), "problem_seed": args.problem_seed, "problems": len(problems),
                    "temperature": config.temperature, "logprob_weight": config.logprob_weight,
                    "accuracy": float(hits.mean()), "ci_low": low, "ci_high": high,
                    "vs_greedy": diff[0], "vs_greedy_low": diff[1], "vs_greedy_high": diff[2],
                    "accuracy_by_ops": {str(k): float(np.mean(v)) for k, v in sorted(by_ops.items())},
                    "pass_at_k": float(np.mean(found)),
                    "solved_at_k": float(np.mean(solved)),
                    "tokens_per_problem": float(np.mean(tokens)),
                    "candidates_per_problem": float(np.mean(candidates)),
                    "simulations_per_problem": float(np.mean(simulations)),
                    "seconds": seconds,
                })
            if args.versus:
                _pair_against(rows[-len(settings):], hits_of, args.versus, args.bootstrap)
    bar.close()
    return rows


def solved_by(result, problem: dict) -> bool:
    """Whether some finished candidate of `result` is right at every step, by the toy world's oracle
    labels (a candidate with a right answer after a wrong step does not count)."""
    return any(c["steps"] and all(label_steps(problem["problem"], c["steps"], problem["answer"]))
               for c in result.candidates)


def run_label(algorithm: str, budget: str) -> str:
    """How --versus names a run: 'best_of_n:N=16', 'mcts_star (NAME):sims=32'."""
    return f"{algorithm}:{budget}"


def _pair_against(rows: list[dict], hits_of: dict[str, np.ndarray], versus: str, resamples: int) -> None:
    """Adds to each row its paired accuracy difference against the run labelled `versus`."""
    for r in rows:
        label = run_label(r["algorithm"], r["budget"])
        diff = paired_difference(hits_of[label], hits_of[versus], resamples) if label != versus else (None,) * 3
        r.update(versus=versus, vs_reference=diff[0], vs_reference_low=diff[1], vs_reference_high=diff[2])


def table(rows: list[dict]) -> str:
    scorers = sorted({r["scorer"] for r in rows})
    head = (f"{'policy':<10} {'ops':<5} {'algorithm':<26} {'budget':<8} {'accuracy':>8} {'95% CI':>13} "
            f"{'by ops':<24} {'vs greedy (paired 95% CI)':<27} {'pass@k':>6} {'solved@k':>8} {'tokens/problem':>14} "
            f"{'cands/problem':>13} {'sims':>5} {'seconds':>8}")
    versus = rows[0].get("versus") if rows else None
    if versus:
        head += f" {'vs ' + versus + ' (paired)':<27}"
    temperatures = sorted({r["temperature"] for r in rows if r["algorithm"] != "greedy"})
    lines = [f"scorer: {', '.join(scorers)}; seeds: {rows[0]['seeds'] if rows else 0}; "
             f"problem set: {rows[0]['problem_seed'] if rows else 0}; sampling temperature: "
             f"{', '.join(f'{t:g}' for t in temperatures) or '-'}"]
    weights = sorted({r.get("logprob_weight", 0.0) for r in rows})
    lines[0] += f"; answer choice: value + {', '.join(f'{w:g}' for w in weights)} x mean token log-probability"
    problem_set = rows[0]["problem_seed"] if rows else 0
    if problem_set in CHOSEN_ON:
        lines.append(f"problem set {problem_set}: {CHOSEN_ON[problem_set]}; problem set 2 is held out from both")
    lines += [head, "-" * len(head)]
    for r in rows:
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        by = " ".join(f"{v:.2f}" for v in r["accuracy_by_ops"].values()) if len(r["accuracy_by_ops"]) > 1 else ""
        vs = ("" if r["vs_greedy"] is None or r["algorithm"] == "greedy" else
              f"{r['vs_greedy']:+.3f} [{r['vs_greedy_low']:+.3f}, {r['vs_greedy_high']:+.3f}]")
        line = (f"{r['policy'][:10]:<10} {r['ops']:<5} {r['algorithm']:<26} {r['budget']:<8} "
                f"{r['accuracy']:>8.3f} {ci:>13} {by:<24} {vs:<27} "
                f"{r['pass_at_k']:>6.3f} {r['solved_at_k']:>8.3f} {r['tokens_per_problem']:>14.1f} {r['candidates_per_problem']:>13.1f} "
                f"{r['simulations_per_problem']:>5.1f} {r['seconds']:>8.1f}")
        if versus:
            line += ("" if r["vs_reference"] is None else
                     f" {r['vs_reference']:+.3f} [{r['vs_reference_low']:+.3f}, {r['vs_reference_high']:+.3f}]")
        lines.append(line)
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
    if args.problem_seed < 0:
        print(f"search_quality: --problem-seed must be >= 0, got {args.problem_seed}", file=sys.stderr)
        return 2
    if args.quick:
        args.problems, args.ops, args.seeds = min(args.problems, 16), "1-2,3-4", args.seeds[:1]
        args.simulations, args.samples, args.beam_widths = [4, 16], [4, 16], [4]
    rows = run(args)
    print(table(rows))
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
