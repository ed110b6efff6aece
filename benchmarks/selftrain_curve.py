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

    python benchmarks/selftrain_curve.py                          # every loop, 3 iterations (long)
    python benchmarks/selftrain_curve.py --loops rest_mcts,rest_em --iterations 3
    python benchmarks/selftrain_curve.py --quick                  # tiny sizes, a smoke run
    python benchmarks/selftrain_curve.py --runs runs/a,runs/b     # tables of finished run folders
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selftrain.config import ALGORITHMS, load_config
from selftrain.loops import execute
from selftrain.report import harvest_by_ops, run_metrics
from selftrain.run import METRIC_KEYS
from treesearch.report.runs import ReportError

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
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    p.add_argument("--plot", default="selftrain_curve.png", help="PNG output ('' for none)")
    p.add_argument("--no-progress", action="store_true")
    return p


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


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("greedy_acc", "search_acc", "prm_auc"),
                              ("held-out greedy accuracy", "held-out search accuracy", "PRM step AUC (oracle labels)")):
        for loop in dict.fromkeys(r["loop"] for r in rows):
            mine = [r for r in rows if r["loop"] == loop and r.get(key) is not None]
            ax.plot([r["iteration"] for r in mine], [r[key] for r in mine], marker="o", label=loop)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def read_run(folder: Path) -> tuple[str, list[dict]]:
    """A finished (or stopped) run folder's loop and its iterations' metrics, in order."""
    config, metrics = run_metrics(folder)
    algorithm = str(config.get("algorithm", "?"))
    return (algorithm if folder.name == algorithm else f"{algorithm} ({folder.name})"), \
        [metrics[k] for k in sorted(metrics)]


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    rows: list[dict] = []
    folders: list[tuple[str, Path]] = []
    if args.runs:
        try:
            for folder in map(Path, args.runs.split(",")):
                loop, metrics = read_run(folder)
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
    if args.json:
        for r in rows + [dict(r, table="harvest") for r in harvest]:
            print(json.dumps(r))
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        try:
            plot(rows, args.plot)
        except ImportError:  # matplotlib comes with the bench extra
            print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        else:
            print(f"plot: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
