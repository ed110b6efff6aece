"""The `selftrain` command: `selftrain run` runs (or resumes) a self-training loop.

    selftrain run                                   ReST-MCTS* on the toy world, from a weak policy
    selftrain run --config run.yaml                 settings from YAML (sections: search, sft, prm_train, ...)
    selftrain run --algorithm alphallm --iterations 2 --set search.simulations=32
    selftrain run --name toy --force                replace a run folder of another configuration (only
                                                    a folder a run wrote; never any other folder)

A run lives in runs/NAME/ and resumes where it stopped when started again with the same
configuration (see selftrain.run). Every iteration ends with a summary table, also written to
runs/NAME/iter_k/metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from selftrain.config import ALGORITHMS, ConfigError, RunConfig, load_config

FLAG_FIELDS = ("name", "runs_dir", "algorithm", "iterations", "seed", "policy", "prm", "backend", "executor",
               "actors", "device", "threads", "train_file", "train_problems", "eval_file", "eval_problems")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selftrain", description="self-training from searched trees "
                                     "(ReST-MCTS*, AlphaLLM, LLaMA-Berry; ReST-EM as the no-search baseline)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume a self-training loop",
                         description="Run or resume a self-training loop; flags override the config file.")
    run.add_argument("--config", help="YAML file of RunConfig fields (sections: search, sft, prm_train, "
                     "alphallm, llama_berry)")
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for name in FLAG_FIELDS:
        f = fields[name]
        kind = {"int": int, "int | None": int}.get(str(f.type), str)
        extra = {"choices": ALGORITHMS} if name == "algorithm" else {}
        run.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f.metadata["help"], **extra)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any field, e.g. search.simulations=32 or sft.lora=true (repeatable)")
    run.add_argument("--force", action="store_true", help="replace a run folder of another configuration "
                     "(only one that selftrain wrote, and only once every input has been checked)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    from selftrain.loops import execute
    from selftrain.run import RunError, summary_table

    args = make_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in FLAG_FIELDS}
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
    if config.sft_filter != "outcome":
        print(f"sft_filter: {config.sft_filter} (ABLATION: in the toy world the policy learns only from solutions "
              f"that the world's step checker, an oracle, accepts)")
    print(f"run folder: {config.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
