"""The `mcts` command: a small registry of subcommands, each importing what it needs lazily.

    mcts info      the tree backends this install can use
    mcts report    one self-contained HTML page of a search run and its trees (treesearch.report)
    mcts toy build policy|prm|pprm [FLAGS]    build the toy world's models (`--ship`: into the package)
    mcts toy check policy|prm|pprm [FOLDER]   a folder's files against its record (default: the shipped one)
    mcts toy evaluate policy [FLAGS]          the toy policy's greedy accuracy and pass@k

It lives at the edge, the layer that may import everything the subcommands need (`python -m
mcts.cli` forwards here).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

__all__ = ["COMMANDS", "main", "make_parser"]

Command = Callable[[argparse.Namespace], int]


def _info(args: argparse.Namespace) -> int:
    from mcts.core import BYTES_PER_NODE, Forest, available_backends, native, resolve_backend

    print(f"tree backends available: {', '.join(available_backends())}")
    print(f"auto backend for host forests: {resolve_backend('auto', Forest.empty(1, 1))}")
    print(f"C++ extension: {'built' if native.cpp_available() else 'not built (no compiler at install time?)'}")
    cuda = "usable" if native.cuda_available() else ("built, no device" if native._core_cuda else "not built")
    print(f"CUDA extension: {cuda}")
    print(f"bytes of statistics per node: {BYTES_PER_NODE}")
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    from treesearch.report.cli import add_arguments

    add_arguments(parser)


def _report(args: argparse.Namespace) -> int:
    from treesearch.report.cli import run

    return run(args)


TOY_MODELS = ("policy", "prm", "pprm")


def _toy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build", "check", "evaluate"), help="what to do")
    parser.add_argument("model", choices=TOY_MODELS, help="which of the toy world's models")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="the action's own flags (`mcts toy build policy --help` lists them)")


def _toy(args: argparse.Namespace) -> int:
    """One door to the toy models' builds: the policy's lives in mcts.envs.tiny_models, the PRM's and the
    PPRM's in prm.toy; each keeps its flags, this only routes to them."""
    if args.model == "policy":
        from mcts.envs.tiny_models import main as policy_main

        return policy_main([args.action, *args.rest])
    if args.action == "evaluate":
        print(f"error: mcts toy evaluate {args.model}: evaluate the PRMs with `python -m prm.eval` or "
              f"benchmarks/prm_heldout.py", file=sys.stderr)
        return 2
    if args.action == "check":
        from pathlib import Path

        from prm.toy import SHIPPED, check_toy_folder

        if len(args.rest) > 1:
            print("error: mcts toy check takes at most one folder", file=sys.stderr)
            return 2
        folder = Path(args.rest[0]) if args.rest else SHIPPED[args.model]
        problems = check_toy_folder(folder, args.model)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"{folder}: every file matches its recorded sha256, and its build is the code's full build")
        return 1 if problems else 0
    from prm.toy import main as prm_main

    return prm_main(["build", *(["--pprm"] if args.model == "pprm" else []), *args.rest])


# name -> (help, add its flags, run it)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {
    "info": ("show the tree backends this install can use", lambda parser: None, _info),  # no flags
    "report": ("write one self-contained HTML page of a search run: summary, problems, trees, a second run "
               "beside it", _report_arguments, _report),
    "toy": ("build, check or evaluate the toy world's policy, PRM and PPRM", _toy_arguments, _toy),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcts", description="treesearch: batched MCTS over reasoning steps")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, arguments, _) in COMMANDS.items():
        arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
