"""`mcts report`: one self-contained HTML page of a search run, read from the files it wrote.

    mcts report --results results.jsonl [--trees trees/] [--compare other.jsonl] --out report.html

The page opens from a file path with no server and fetches nothing (treesearch.report.page). Bad
input is one line on stderr naming the flag and exit status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mcts.files import write_atomic
from treesearch.report.page import search_page
from treesearch.report.runs import ReportError, load_run

__all__ = ["add_arguments", "main", "run", "write_search_report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, help="the results file of a search (python -m mcts.search "
                        "--out); its manifest beside it names the scorer and the problem file")
    parser.add_argument("--trees", default=None, help="the search's --trees-out folder: one tree per problem")
    parser.add_argument("--compare", default=None, help="a second results file over the same problems, shown "
                        "beside the first: which problems flipped, the tokens each side spent")
    parser.add_argument("--problem-file", default=None, help="the problem file the search read, for the "
                        "breakdown by level and subject (default: the one its manifest names)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (replaced if it exists)")
    parser.add_argument("--title", default=None, help="the page's title")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def write_search_report(out: str | os.PathLike, results: str | os.PathLike, *, trees=None, compare=None,
                        problem_file=None, title: str | None = None, scorer: str | None = None,
                        oracle: bool | None = None, progress: bool = False) -> Path:
    """Reads a run (and the run to compare with), writes its page to `out` atomically; returns `out`.
    Raises `ReportError` for input the page cannot be made from."""
    out = Path(out)
    inputs = [Path(p) for p in (results, compare, problem_file) if p is not None]
    if out.is_dir():
        raise ReportError(f"--out {out}: is a folder, not an HTML file")
    if any(p.exists() and out.exists() and os.path.samefile(p, out) for p in inputs):
        raise ReportError(f"--out {out}: is one of the inputs; writing the page there would destroy it")
    run = load_run(results, trees=trees, problem_file=problem_file, scorer=scorer, oracle=oracle, progress=progress)
    other = load_run(compare, flag="--compare", progress=progress) if compare is not None else None
    page = search_page(run, other, title=title, progress=progress)
    try:
        write_atomic(out, lambda handle: handle.write(page))
    except OSError as err:
        raise ReportError(f"--out {out}: cannot be written ({err.strerror or err})") from None
    return out


def run(args: argparse.Namespace) -> int:
    try:
        out = write_search_report(args.out, args.results, trees=args.trees, compare=args.compare,
                                  problem_file=args.problem_file, title=args.title, progress=not args.no_progress)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB; open it in a browser: file://{out.resolve()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcts report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
