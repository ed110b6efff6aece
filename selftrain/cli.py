"""The `selftrain` command: `selftrain run` runs (or resumes) a self-training loop, `selftrain report`
draws one.

    selftrain run                                   ReST-MCTS* on the toy world, from a weak policy
    selftrain run --config run.yaml                 settings from YAML (sections: search, sft, prm_train, ...)
    selftrain run --algorithm alphallm --iterations 2 --set search.simulations=32
    selftrain run --name toy --force                replace a run folder of another configuration (only
                                                    a folder a run wrote; never any other folder)
    selftrain report runs/toy                       runs/toy/report.html: the run's metrics as plots, its
                                                    stages, links into each iteration's search report

A run lives in runs/NAME/ and resumes where it stopped when started again with the same
configuration (see selftrain.run). Every iteration ends with a summary table, also written to
runs/NAME/iter_k/metrics.json.
"""

from __future__ import annotations

import argparse
import sys

from mcts.options import add_flags, flag_values
from selftrain.config import ALGORITHMS, ConfigError, RunConfig, load_config

FLAG_FIELDS = ("name", "runs_dir", "algorithm", "iterations", "seed", "policy", "preset", "prm", "backend", "executor",
               "actors", "device", "threads", "train_file", "train_problems", "eval_file", "eval_problems")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selftrain", description="self-training from searched trees "
                                     "(ReST-MCTS*, AlphaLLM, LLaMA-Berry; ReST-EM as the no-search baseline)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume a self-training loop",
                         description="Run or resume a self-training loop; flags override the config file.")
    run.add_argument("--config", help="YAML file of RunConfig fields (sections: search, sft, prm_train, "
                     "alphallm, llama_berry)")
    # unset: a flag not given leaves the field to the config file (or its default)
    add_flags(run, RunConfig, only=FLAG_FIELDS, choices={"algorithm": ALGORITHMS}, unset=True)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any field, e.g. search.simulations=32 or sft.lora=true (repeatable)")
    run.add_argument("--force", action="store_true", help="replace a run folder of another configuration "
                     "(only one that selftrain wrote, and only once every input has been checked)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    report = sub.add_parser("report", help="write one HTML page of a run folder (and a search report per "
                            "iteration)", description="Write RUN/report.html: the per-iteration metrics as "
                            "plots, the stages with their times, and links into each iteration's search report "
                            "(iter_k/search/report.html, written too).")
    report.add_argument("run", help="the run folder (runs/NAME), or a run's NAME under --runs-dir")
    report.add_argument("--runs-dir", default="runs", help="where run folders live (for a NAME)")
    report.add_argument("--out", default=None, help="the run page (default: RUN/report.html)")
    report.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def report(args: argparse.Namespace) -> int:
    """`selftrain report`: one line on stderr and status 2 for a folder that is not a run's."""
    from pathlib import Path

    from selftrain.report import write_run_report
    from treesearch.report.runs import ReportError

    folder = Path(args.run)
    if not folder.is_dir() and (Path(args.runs_dir) / args.run).is_dir():
        folder = Path(args.runs_dir) / args.run
    if not folder.is_dir():
        print(f"error: {args.run}: no such run folder (nor {Path(args.runs_dir) / args.run})", file=sys.stderr)
        return 2
    try:
        out = write_run_report(folder, args.out, progress=not args.no_progress)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out} (open it in a browser: file://{out.resolve()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from selftrain.loops import execute
    from selftrain.run import RunError, summary_table

    args = make_parser().parse_args(argv)
    if args.command == "report":
        return report(args)
    overrides = flag_values(RunConfig, args, only=FLAG_FIELDS)
    try:
        config = load_config(args.config, overrides, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows: list[dict] = []

    def show(row: dict) -> None:
        rows.append(row)
        print(f"\n{config.algorithm} · {config.folder} · iteration {row['iteration']} of {config.iterations}",
              file=sys.stderr)
        print(summary_table(rows), file=sys.stderr)

    try:
        final = execute(config, force=args.force, progress=not args.no_progress, on_iteration=show)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(final))
    sizes = final[-1] if final else {}
    if sizes.get("heldout_problems"):
        n, acc = sizes["heldout_problems"], sizes.get("greedy_acc") or 0.0
        print(f"greedy_acc: {n} held-out problems, one standard error about {100 * (acc * (1 - acc) / n) ** 0.5:.1f} "
              f"points; search_acc and greedy_subset_acc: the first {sizes.get('search_problems')} of them. To compare "
              f"loops on more: python benchmarks/selftrain_curve.py --runs RUN,RUN --heldout 2000")
    if config.sft_filter != "outcome":
        print(f"sft_filter: {config.sft_filter} (ABLATION: in the toy world the policy learns only from solutions "
              f"that the world's step checker, an oracle, accepts)")
    print(f"run folder: {config.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
