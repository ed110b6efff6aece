"""Self-training curves: held-out greedy and search accuracy per iteration for every loop, side by
side from the same starting models, with ReST-EM (rejection sampling, no search) at the same
generated tokens as the no-search baseline.

Each loop is a `selftrain run` (its own run folder under --runs-dir, so a stopped benchmark resumes
where it was); the table has one row per loop and iteration (greedy_acc, search_acc, prm_auc,
harvested traces and values, tokens, seconds) and the plot one panel per accuracy. A second table
splits each iteration's harvest by the training problems' number of operations: tokens, verified
solutions, the sound ones (those the toy world's step checker accepts) per million tokens, and how
often the harvested PRM labels agree with the oracle's. The checker and the oracle labels read the
gold answer; that table is a diagnostic of why one loop learns more than another, and says so.

The runs' own held-out sets are small (the toy world has about 300 one-operation problems, and
the training draw holds every one of them), so a difference of a few points between two loops
is within one standard error. `--heldout N` re-evaluates every iteration's policy greedily on N
fresh problems per number of operations, none of them any run's training problem, and pairs
each loop with the `--versus` loop of the same seed: the accuracy difference on the same
problems, with a 95% bootstrap interval over problems, per run seed and pooled over the seeds.
The fresh problems leave out the training problems of every run listed, so listing other runs can
change them (every loop and seed in one invocation is measured on the same ones).
`--heldout-search M` also runs each iteration's own search (the run's search config, that
iteration's policy and PRM) on the first M of those problems per number of operations, paired
against the same policy's greedy decoding there.

    python benchmarks/selftrain_curve.py                          # every loop, 3 iterations (long)
    python benchmarks/selftrain_curve.py --loops rest_mcts,rest_em --iterations 3
    python benchmarks/selftrain_curve.py --quick                  # tiny sizes, a smoke run
    python benchmarks/selftrain_curve.py --runs runs/a,runs/b     # tables of finished run folders
    python benchmarks/selftrain_curve.py --runs s0/rest_mcts,s0/rest_em,s1/rest_mcts,s1/rest_em --heldout 1000
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from mcts.envs.arith import generate_problems, is_toy
from mcts.envs.toy_config import toy_problem_config
from mcts.grading import is_equivalent
from selftrain.config import ALGORITHMS, ConfigError, RunConfig, load_config
from selftrain.loops import execute
from selftrain.report import harvest_by_ops, run_metrics
from selftrain.run import METRIC_KEYS
from treesearch.report.runs import ReportError, bootstrap_ci, paired_difference

QUICK = ["train_problems=16", "eval_problems=16", "eval_search_problems=4", "prm_eval_traces=24", "batch=8",
         "search.simulations=4", "search.width=2", "max_ops=1", "weak_steps=60", "weak_traces=50",
         "sft.epochs=1", "prm_train.epochs=1", "alphallm.imagined_problems=8", "llama_berry.rollouts=2"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", default="rest_mcts,rest_em,alphallm,llama_berry",
                   help=f"comma list of {', '.join(ALGORITHMS)}")
    p.add_argument("--runs", help="comma list of existing run folders: read their tables, run nothing")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--runs-dir", default="runs/selftrain_curve", help="one run folder per loop here")
    p.add_argument("--config", help="a YAML RunConfig every loop starts from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RunConfig overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of the machinery)")
    p.add_argument("--force", action="store_true", help="restart run folders of another configuration")
    p.add_argument("--heldout", type=int, metavar="N",
                   help="re-evaluate every iteration's policy greedily on N fresh toy problems per number of "
                        "operations (none of them a training problem of any run), paired against --versus; "
                        "0: off (default 2000, or 0 with --quick)")
    p.add_argument("--heldout-ops", help="operations of the --heldout problems, as LO-HI (default: the runs' "
                                         "training range, min_ops-max_ops)")
    p.add_argument("--heldout-search", type=int, default=0, metavar="M",
                   help="also run each iteration's own search (the run's search config, policy and PRM) on the "
                        "first M of those problems per number of operations, against greedy there; 0: off")
    p.add_argument("--versus", default="rest_em", help="the loop every other loop is paired against in the "
                                                      "--heldout table (its run of the same seed)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of each interval")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    p.add_argument("--plot", default="selftrain_curve.png", help="PNG output ('' for none)")
    p.add_argument("--no-progress", action="store_true")
    return p


# Far from every seed the runs draw from (training 10_000 + seed, held-out 20_000 + seed).
HELDOUT_SEED = 30_000
# Greedy decoding of 2,000 two-operation problems takes about 9 s per policy on one core with the toy
# policy, and puts one standard error of a loop's accuracy near 0.9 points (the 148 held-out problems
# of a run's own evaluation: about 3).
DEFAULT_HELDOUT = 2000
HELDOUT_KEYS = ["loop", "iteration", "ops", "seeds", "problems", "accuracy", "low", "high", "versus", "diff",
                "diff_low", "diff_high"]
HARVEST_KEYS = ["loop", "iteration", "ops", "problems", "tokens", "solved", "solutions", "sound",
                "solutions_per_mtok", "sound_per_mtok", "label_agreement"]


def table(rows: list[dict], keys: list[str] | None = None) -> str:
    keys = keys or ["loop", "iteration", *METRIC_KEYS]

    def cell(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else (f"{v:,.0f}" if isinstance(v, (int, float)) else str(v))

    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    out = ["  ".join(k.rjust(w) for k, w in zip(keys, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(out + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells])


def plot(rows: list[dict], path: str, heldout: list[dict] | None = None) -> None:
    """One panel per run metric and, with --heldout rows, one of each loop's paired difference from
    the --versus loop on the fresh problems (every seed, and the seeds pooled), with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heldout = heldout or []
    pooled_ops = any(r["ops"] == "all" for r in heldout)  # else there is one number of operations
    pairs = [r for r in heldout if r["diff"] is not None and (r["ops"] == "all" or not pooled_ops)]
    fig, axes = plt.subplots(1, 4 if pairs else 3, figsize=(18 if pairs else 14, 4))
    for ax, key, title in zip(axes, ("greedy_acc", "search_acc", "prm_auc"),
                              ("the run's held-out greedy accuracy", "the run's held-out search accuracy", "PRM step AUC (oracle labels)")):
        for loop in dict.fromkeys(r["loop"] for r in rows):
            mine = [r for r in rows if r["loop"] == loop and r.get(key) is not None]
            ax.plot([r["iteration"] for r in mine], [r[key] for r in mine], marker="o", label=loop)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_xticks(sorted({r["iteration"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if pairs:
        ax = axes[3]
        series = list(dict.fromkeys((r["loop"], r["seeds"]) for r in pairs))
        for i, (loop, seeds) in enumerate(series):
            mine = [r for r in pairs if (r["loop"], r["seeds"]) == (loop, seeds)]
            x = np.array([r["iteration"] for r in mine]) + 0.06 * (i - (len(series) - 1) / 2)
            y = np.array([r["diff"] for r in mine])
            err = np.array([[r["diff"] - r["diff_low"] for r in mine], [r["diff_high"] - r["diff"] for r in mine]])
            pooled = "," in seeds
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linewidth=2.5 if pooled else 1,
                        label=f"{loop}, seed{'s' if pooled else ''} {seeds}")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"fresh held-out greedy: difference from {pairs[0]['versus'].split()[0]}")
        ax.set_xlabel("iteration")
        ax.set_xticks(sorted({r["iteration"] for r in pairs}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def read_run(folder: Path) -> tuple[str, int, list[dict]]:
    """A finished (or stopped) run folder's loop, seed and its iterations' metrics, in order."""
    config, metrics = run_metrics(folder)
    algorithm = str(config.get("algorithm", "?"))
    return (algorithm if folder.name == algorithm else f"{algorithm} ({folder.name})"), \
        int(config.get("seed", 0)), [metrics[k] for k in sorted(metrics)]


def run_config(folder: Path) -> tuple[RunConfig, dict[int, dict]]:
    """A run folder's configuration, rebuilt and checked as `selftrain run` builds it (a field the
    saved file lacks, from a run older than the field, takes the run's default), and its metrics
    by iteration."""
    saved, metrics = run_metrics(folder)
    try:
        return load_config(None, saved), metrics
    except ConfigError as err:
        raise ReportError(f"{folder / 'config.json'}: {err}") from None


def training_problems(folder: Path) -> set[str]:
    """Every problem a run's searches (or ReST-EM's sampling) were run on, from iter_k/search."""
    from selftrain.run import read_jsonl

    return {r["problem"] for results in folder.glob("iter_*/search/results.jsonl") for r in read_jsonl(results)}


def heldout_problems(per_ops: int, ops: range, exclude: set[str]) -> list[dict]:
    """Up to `per_ops` distinct toy problems per number of operations, none of them in `exclude`, in
    the order drawn (so a larger N extends a smaller one). The toy world holds about 300
    one-operation problems in its range, so a number of operations may have fewer, or none."""
    out = []
    for k in ops:
        arith = dataclasses.replace(toy_problem_config(), min_ops=k, max_ops=k)
        seen: set[str] = set()
        for record in generate_problems(20 * per_ops, HELDOUT_SEED + k, arith):
            if len(seen) == per_ops:
                break
            if record["problem"] not in exclude and record["problem"] not in seen:
                seen.add(record["problem"])
                out.append({"problem": record["problem"], "answer": str(record["answer"]), "ops": k})
    return out


def _proposer(policy: str, config: RunConfig):
    """The run's policy engine on `policy`, seeded and reseeded as the run's evaluation is."""
    from treesearch.loaders import load_proposer

    proposer = load_proposer(policy, backend=config.backend, seed=config.seed, device=config.device,
                             preset=config.preset)
    if hasattr(proposer, "reseed"):
        proposer.reseed(config.seed)
    return proposer


def decoding(config: RunConfig) -> tuple:
    """What `_proposer` and `greedy_hits` read of a run's configuration: two runs that agree on it
    decode a policy alike."""
    return config.seed, config.backend, config.device, config.preset, config.search.max_depth


def _hits(results, problems: list[dict]) -> np.ndarray:
    """1.0 where a result states the problem's gold answer, else 0.0."""
    return np.array([r.answer is not None and is_equivalent(r.answer, p["answer"]) for r, p in zip(results, problems)],
                    np.float64)


def greedy_hits(policy: str, problems: list[dict], config: RunConfig) -> np.ndarray:
    """Where the policy's greedy solution states the gold answer."""
    from mcts.algorithms import run_algorithm
    from mcts.config import SearchConfig

    return _hits(run_algorithm([p["problem"] for p in problems], _proposer(policy, config), None,
                               SearchConfig(algorithm="greedy", max_depth=config.search.max_depth)), problems)


def search_hits(policy: str, prm: str, problems: list[dict], config: RunConfig) -> np.ndarray:
    """Where the run's own search (its `search` config, this iteration's policy and PRM) states the
    gold answer."""
    from mcts.algorithms import run_algorithm
    from treesearch.loaders import load_scorer

    return _hits(run_algorithm([p["problem"] for p in problems], _proposer(policy, config),
                               load_scorer(prm, device=config.device), config.search), problems)


Hits = Callable[[str, int, int], "np.ndarray | None"]  # (loop, iteration, seed) -> hits per problem, None: not measured


def paired_rows(runs: dict, order: list[str], groups: list[tuple[str, list[int]]], value: Hits, reference: Hits,
                reference_name: str, resamples: int) -> list[dict]:
    """One row per loop, seed group (each seed, then all pooled), iteration and group of problems: the
    accuracy of `value` with its interval, and its paired difference from `reference` on the seeds
    where both were measured."""
    rows = []
    for loop in order:
        seeds = sorted(runs[loop])
        for group in [[s] for s in seeds] + ([seeds] if len(seeds) > 1 else []):
            for k in sorted({k for s in group for k in runs[loop][s][2]}):
                have = [s for s in group if value(loop, k, s) is not None]
                paired = [s for s in have if reference(loop, k, s) is not None]
                for label, idx in groups if have else []:
                    mine = np.stack([value(loop, k, s) for s in have])[:, idx]
                    low, high = bootstrap_ci(mine, resamples)
                    row = {"loop": loop, "iteration": k, "ops": label, "seeds": ",".join(map(str, have)),
                           "problems": len(idx), "accuracy": float(mine.mean()), "low": low, "high": high,
                           "versus": None, "diff": None, "diff_low": None, "diff_high": None}
                    if paired:
                        diff = paired_difference(np.stack([value(loop, k, s) for s in paired])[:, idx],
                                                 np.stack([reference(loop, k, s) for s in paired])[:, idx], resamples)
                        name = reference_name if paired == have else f"{reference_name} (seeds {','.join(map(str, paired))})"
                        row.update(versus=name, **dict(zip(("diff", "diff_low", "diff_high"), diff)))
                    rows.append(row)
    return rows


def heldout_rows(folders: list[Path], per_ops: int, ops: range | None, versus: str, resamples: int,
                 search_per_ops: int = 0, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Held-out greedy accuracy of every loop and iteration on the same fresh problems, per number
    of operations (and over all of them), and its difference from the `versus` loop of the same seeds;
    with `search_per_ops`, also each run's own search on the first `search_per_ops` of those problems
    per number of operations, against its policy's greedy decoding there.

    Rows come for each run seed, then, with several seeds, for all of them pooled (each problem's
    hits averaged over the seeds before the problems are resampled); the difference pairs each run
    with the `versus` run of the same seed, on the seeds both have.
    `ops` None: the runs' training range (min_ops to max_ops, which must be the same for every run).
    """
    runs: dict[str, dict[int, tuple[Path, RunConfig, dict]]] = {}  # loop -> seed -> (folder, config, metrics)
    for folder in folders:
        config, metrics = run_config(folder)
        loop, seed = config.algorithm, config.seed
        if seed in runs.setdefault(loop, {}):
            raise ReportError(f"{folder}: a second {loop} run of seed {seed} (also {runs[loop][seed][0]})")
        runs[loop][seed] = (folder, config, metrics)
    if ops is None:
        ranges = {(c.min_ops, c.max_ops) for seeds in runs.values() for _, c, _ in seeds.values()}
        if len(ranges) != 1:
            raise ReportError(f"--heldout: the runs were trained on different operations {sorted(ranges)}; "
                              f"give --heldout-ops")
        (lo, hi), = ranges
        ops = range(lo, hi + 1)
    trained = set().union(*(training_problems(f) for f in folders))
    if trained and not is_toy(sorted(trained)):
        raise ReportError("--heldout: the runs were not trained on toy problems, so fresh toy problems say nothing of them")
    problems = heldout_problems(per_ops, ops, trained)
    if not problems:
        raise ReportError(f"--heldout: every toy problem of {ops.start}-{ops.stop - 1} operations is a training problem")
    metrics_of = {(loop, k, seed): m for loop, seeds in runs.items() for seed, (_, _, ms) in seeds.items()
                  for k, m in ms.items()}
    for (loop, k, seed), m in sorted(metrics_of.items()):
        for kind in ("policy", "prm") if search_per_ops > 0 else ("policy",):
            if m.get(kind) and not Path(m[kind]).is_dir():
                raise ReportError(f"{runs[loop][seed][0] / f'iter_{k}' / 'metrics.json'}: its {kind} folder "
                                  f"{m[kind]} is missing (was the run moved?)")

    # Every run is decoded with its own configuration. What runs share is decoded once: the base
    # policy of one seed (greedily), and its search where the runs' search configs agree.
    def greedy_key(loop: str, k: int, seed: int) -> tuple | None:
        m, config = metrics_of.get((loop, k, seed), {}), runs[loop][seed][1]
        return (str(m["policy"]), *decoding(config)) if m.get("policy") else None

    todo = {greedy_key(*key): runs[key[0]][key[2]][1] for key in sorted(metrics_of) if greedy_key(*key)}
    greedy = {key: greedy_hits(key[0], problems, config)  # greedy_key -> hits per problem
              for key, config in tqdm(todo.items(), desc="held-out greedy", unit="policy", disable=not progress)}

    def greedy_of(loop: str, k: int, seed: int) -> np.ndarray | None:
        key = greedy_key(loop, k, seed)
        return None if key is None else greedy[key]

    def grouped(subset: list[dict]) -> list[tuple[str, list[int]]]:
        out = [(str(k), idx) for k in ops if (idx := [i for i, p in enumerate(subset) if p["ops"] == k])]
        return out + ([("all", list(range(len(subset))))] if len(out) > 1 else [])

    order = sorted(runs, key=lambda name: (name == versus, name))
    rows = paired_rows(runs, order, grouped(problems), greedy_of,
                       lambda loop, k, s: greedy_of(versus, k, s) if loop != versus else None, versus, resamples)
    if search_per_ops <= 0:
        return rows, []
    chosen, drawn = [], collections.Counter()  # the first search_per_ops problems of each number of operations
    for i, p in enumerate(problems):
        drawn[p["ops"]] += 1
        if drawn[p["ops"]] <= search_per_ops:
            chosen.append(i)
    subset = [problems[i] for i in chosen]

    def search_key(loop: str, k: int, seed: int) -> tuple | None:
        m, config = metrics_of.get((loop, k, seed), {}), runs[loop][seed][1]
        return (str(m["policy"]), str(m["prm"]), *decoding(config), config.search) \
            if m.get("policy") and m.get("prm") else None

    todo = {search_key(*key): runs[key[0]][key[2]][1] for key in sorted(metrics_of) if search_key(*key)}
    searched = {key: search_hits(key[0], key[1], subset, config)  # search_key -> hits per problem
                for key, config in tqdm(todo.items(), desc="held-out search", unit="search", disable=not progress)}

    def greedy_on_subset(loop: str, k: int, seed: int) -> np.ndarray | None:
        hits = greedy_of(loop, k, seed)
        return None if hits is None else hits[chosen]

    def search_of(loop: str, k: int, seed: int) -> np.ndarray | None:
        key = search_key(loop, k, seed)
        return None if key is None else searched[key]

    search_rows = paired_rows(runs, order, grouped(subset), search_of, greedy_on_subset, "greedy", resamples)
    return rows, search_rows


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    rows: list[dict] = []
    folders: list[tuple[str, Path]] = []
    if args.runs:
        try:
            read = [(folder, *read_run(folder)) for folder in map(Path, args.runs.split(","))]
            labels = [loop for _, loop, _, _ in read]
            for folder, loop, seed, metrics in read:
                if labels.count(loop) > 1:  # one loop's runs of several seeds: one row group (and line) each
                    loop = f"{loop} (seed {seed})"
                folders.append((loop, folder))
                rows += [{"loop": loop, **{k: m.get(k) for k in ("iteration", *METRIC_KEYS)}} for m in metrics]
        except ReportError as err:
            print(f"selftrain_curve: {err}", file=sys.stderr)
            return 2
    for loop in ([] if args.runs else args.loops.split(",")):
        sets = (QUICK if args.quick else []) + args.set
        config = load_config(args.config, {"algorithm": loop, "iterations": args.iterations, "seed": args.seed,
                                           "name": loop, "runs_dir": args.runs_dir}, sets)
        print(f"== {loop}: {config.folder}", file=sys.stderr)
        for metrics in execute(config, force=args.force, progress=not args.no_progress):
            rows.append({"loop": loop, **{k: metrics.get(k) for k in ("iteration", *METRIC_KEYS)}})
        folders.append((loop, config.folder))
    print(table(rows))
    harvest = [{"loop": loop, **r} for loop, folder in folders for r in harvest_by_ops(folder)]
    if harvest:
        print("\nharvest by number of operations (sound: accepted by the toy world's step checker; "
              "label_agreement: harvested PRM labels against the oracle's; both read the gold answer, "
              "a diagnostic only)")
        print(table(harvest, HARVEST_KEYS))
    heldout: list[dict] = []
    searched: list[dict] = []
    if args.heldout is None:
        args.heldout = 0 if args.quick else DEFAULT_HELDOUT
    if args.heldout_search > 0 and args.heldout <= 0:
        print("selftrain_curve: --heldout-search runs on the --heldout problems; give --heldout N > 0", file=sys.stderr)
        return 2
    if args.heldout > 0:
        ops = None
        if args.heldout_ops:
            try:
                lo, hi = (int(x) for x in args.heldout_ops.split("-"))
                if not 1 <= lo <= hi:
                    raise ValueError
            except ValueError:
                print(f"selftrain_curve: --heldout-ops must be LO-HI with 1 <= LO <= HI, got {args.heldout_ops!r}",
                      file=sys.stderr)
                return 2
            ops = range(lo, hi + 1)
        try:
            heldout, searched = heldout_rows([f for _, f in folders], args.heldout, ops, args.versus, args.bootstrap,
                                             search_per_ops=args.heldout_search, progress=not args.no_progress)
        except ReportError as err:
            print(f"selftrain_curve: {err}", file=sys.stderr)
            return 2
        print(f"\nheld-out greedy accuracy on up to {args.heldout} fresh problems per number of operations "
              f"(none a training problem of these runs), 95% bootstrap intervals over problems; diff: paired "
              f"against {args.versus} of the same seeds")
        print(table(heldout, HELDOUT_KEYS))
        if searched:
            print(f"\nheld-out search accuracy (each run's search config, with that iteration's policy and PRM) on "
                  f"the first {args.heldout_search} of those problems per number of operations; diff: paired "
                  f"against the same policy's greedy decoding there")
            print(table(searched, HELDOUT_KEYS))
    if args.json:
        for r in (rows + [dict(r, table="harvest") for r in harvest] + [dict(r, table="heldout") for r in heldout]
                  + [dict(r, table="heldout_search") for r in searched]):
            print(json.dumps(r))
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        try:
            plot(rows, args.plot, heldout)
        except ImportError:  # matplotlib comes with the bench extra
            print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        else:
            print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
