"""PRM throughput against tree depth: full rescoring against incremental scoring (prm/kv_cache.py).

A tree of depth D is grown as a search grows it, one scoring call per round: in round k every tree
expands its node at depth k - 1 with --width new steps, the first of which the next round expands
(a spine with siblings, --problems trees at once). The PRM scores the D * width * problems steps
in D calls, and is timed over all of them, from an empty cache:

    full               every step rereads its whole prefix (PRMConfig(incremental=False))
    incremental        a step reads its own tokens after its parent's cached keys and values
    incremental b=1    the same, one forward pass per new step (batch_size=1), against the batched

"read/step" is the PRM tokens fed to the model per scored step (padding not counted), "unique" the
tokens of the tree (each problem's head once, each step once), "read/unique" their ratio: full
rescoring of a depth-D spine reads about D/2 times its unique tokens when the steps outweigh the
prompt; incremental reading reads each token once (1.00) while the cache holds the tree.
steps/s is the scored steps per second of a whole tree: the median of --repeats runs, with the
lowest and highest. The steps are scripted toy steps (seeded random arithmetic in the toy policy's
step layout, "a + b = c, so n"), the problems the toy world's.

Backends: transformers only. The vLLM scorer (`--prm-backend vllm`, qwen_prm) leaves the caching to
vLLM's own prefix cache, which this benchmark does not measure yet.

    python benchmarks/prm_throughput.py                     # the toy PRM on CPU, depths 1-16
    python benchmarks/prm_throughput.py --quick             # depths 1, 4, 16; 4 trees; 1 repeat
    python benchmarks/prm_throughput.py --prm DIR           # any PRM folder (--prm-format NAME for an
                                                            # open PRM: prm/adapters.py)
    python benchmarks/prm_throughput.py --json              # JSON lines on stdout, the table on stderr
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tqdm import tqdm  # noqa: E402

from mcts.envs.arith import generate_problems  # noqa: E402
from mcts.policy.base import Prefix  # noqa: E402

MODES = {"full": {"incremental": False}, "incremental": {"incremental": True},
         "incremental b=1": {"incremental": True, "batch_size": 1}}


def scripted_step(rng: random.Random) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
    return f"{a} {op} {b} = {value}, so {value} {rng.choice('+-*')} {rng.randint(2, 99)}"


def make_rounds(problems: int, depth: int, width: int, seed: int) -> list[tuple[list[Prefix], list[str]]]:
    """The D scoring calls of a depth-D tree per problem: call k scores `width` children of the
    spine node at depth k - 1 of every tree."""
    rng = random.Random(seed)
    texts = [r["problem"] for r in generate_problems(problems, seed)]
    spines: dict[str, tuple[str, ...]] = {t: () for t in texts}
    rounds = []
    for _ in range(depth):
        prefixes, steps = [], []
        for text in texts:
            children = [scripted_step(rng) for _ in range(width)]
            prefixes += [Prefix(text, spines[text])] * width
            steps += children
            spines[text] = (*spines[text], children[0])
        rounds.append((prefixes, steps))
    return rounds


def tree_tokens(scorer, rounds) -> tuple[int, int]:
    """(unique tokens of the trees, tokens a full rescoring reads), by the scorer's pieces."""
    heads, unique, full = set(), 0, 0
    limit = getattr(scorer, "max_length", None) or float("inf")
    for prefixes, steps in rounds:
        for prefix, step in zip(prefixes, steps):
            head = scorer.head_ids(prefix.problem)
            pieces = [len(scorer.piece_ids(s, k)[0]) for k, s in enumerate((*prefix.steps, step))]
            if prefix.problem not in heads:
                heads.add(prefix.problem)
                unique += len(head)
            unique += pieces[-1]
            full += min(len(head) + sum(pieces), limit)
    return unique, full


def measure(scorer, mode: str, rounds, repeats: int) -> dict[str, Any]:
    """One untimed warm-up, then `repeats` timed trees, each from an empty cache."""
    seconds, reads = [], []
    for r in range(repeats + 1):
        cache = scorer.kv_cache
        if cache is not None:
            cache.clear()
            before = cache.stats.tokens_read
        start = time.perf_counter()
        for prefixes, steps in rounds:
            scorer.score(prefixes, steps)
        if r:  # the first run warms up
            seconds.append(time.perf_counter() - start)
            reads.append(None if cache is None else cache.stats.tokens_read - before)
    steps = sum(len(s) for _, s in rounds)
    rates = sorted(steps / s for s in seconds)
    return dict(mode=mode, steps=steps, tokens_read=reads[0], steps_per_s=statistics.median(rates),
                steps_per_s_min=rates[0], steps_per_s_max=rates[-1], repeats=repeats,
                cache_mb=None if scorer.kv_cache is None else scorer.kv_cache.nbytes / 2**20)


def load(args: argparse.Namespace):
    """The scorer named by --prm (and --prm-format) through treesearch.loaders.load_scorer; it must
    offer `with_config(incremental=...)`, as prm.model.PRM and prm.adapters.AdapterPRM do."""
    from treesearch.loaders import load_scorer

    options: dict[str, Any] = {"device": args.device, "progress": False}
    if args.prm_format:
        options["prm_format"] = args.prm_format
    try:
        scorer = load_scorer(args.prm, **options)
    except (OSError, ValueError) as err:
        raise SystemExit(f"--prm {args.prm}: {err}") from None
    if not hasattr(scorer, "with_config") or not hasattr(scorer, "piece_ids"):
        raise SystemExit(f"--prm {args.prm}: {type(scorer).__name__} has no incremental switch "
                         f"(with_config(incremental=...)) or no pieces (piece_ids)")
    return scorer


def run_depth(scorer, depth: int, modes: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    rounds = make_rounds(args.problems, depth, args.width, args.seed)
    unique, full_reads = tree_tokens(scorer, rounds)
    rows = []
    for mode in modes:
        variant = scorer.with_config(num_threads=args.threads, **MODES[mode])
        row = measure(variant, mode, rounds, args.repeats)
        if row["tokens_read"] is None:  # full reading: counted from the pieces
            row["tokens_read"] = full_reads
        rows.append(dict(depth=depth, problems=args.problems, width=args.width, unique_tokens=unique, **row,
                         read_per_step=row["tokens_read"] / row["steps"], read_per_unique=row["tokens_read"] / unique))
    base = next((r["steps_per_s"] for r in rows if r["mode"] == "full"), None)
    for r in rows:
        r["speedup"] = None if base is None else r["steps_per_s"] / base
    return rows


# ---------------------------------------------------------------------------------------------------
# Output

COLUMNS = (  # header, key, format
    ("depth", "depth", "d"), ("mode", "mode", "s"), ("steps", "steps", "d"), ("unique", "unique_tokens", "d"),
    ("read", "tokens_read", "d"), ("read/step", "read_per_step", ".1f"), ("read/unique", "read_per_unique", ".2f"),
    ("steps/s", "steps_per_s", ",.0f"), ("min", "steps_per_s_min", ",.0f"), ("max", "steps_per_s_max", ",.0f"),
    ("vs full", "speedup", ".2f"), ("cache MB", "cache_mb", ".1f"),
)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for h, _, _ in COLUMNS]] + [[_fmt(r.get(key), spec) for _, key, spec in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(x.ljust(w) if i == 1 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths))).rstrip()
             for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def header(scorer, args: argparse.Namespace) -> str:
    import torch
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = getattr(scorer, "device", "cpu")
    return "\n".join([
        f"PRM throughput: --prm {args.prm} ({type(scorer).__name__}) on {device} ({cores} cores, "
        f"{platform.processor() or platform.machine()}, {args.threads} torch threads); torch {torch.__version__}, "
        f"transformers {transformers.__version__}; backend: transformers (the vLLM scorer caches in vLLM itself: not measured here)",
        f"trees: {args.problems} toy problems, a spine of depth D with {args.width} children per level, "
        f"one scoring call per level; steps/s: median [min, max] of {args.repeats} trees after a warm-up",
    ])


def _depths(text: str) -> list[int]:
    out = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    if not out or min(out) < 1:
        raise SystemExit(f"--depths {text!r}: give depths >= 1, e.g. 1-16 or 1,4,16")
    return out


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prm", default="tiny", help="'tiny' (the shipped toy PRM) or a PRM folder")
    p.add_argument("--prm-format", default=None, help="the reward model's format, passed to load_scorer")
    p.add_argument("--depths", default="1,2,4,8,12,16", help="tree depths: a comma list, ranges allowed (1-16)")
    p.add_argument("--problems", type=int, default=8, help="trees scored together")
    p.add_argument("--width", type=int, default=4, help="children per expanded node")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of: {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=5, help="timed trees per row (after a warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while scoring")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="depths 1, 4, 16; 4 trees; 1 repeat")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout; the table goes to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.problems, args.repeats = min(args.problems, 4), 1
        if args.depths == make_parser().get_default("depths"):
            args.depths = "1,4,16"
    depths, modes = _depths(args.depths), [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES) or not modes:
        raise SystemExit(f"--modes: choose from {', '.join(MODES)}")
    if min(args.problems, args.width, args.repeats, args.threads) < 1:
        raise SystemExit("--problems, --width, --repeats and --threads must be >= 1")
    scorer = load(args)
    table_out = sys.stderr if args.json else sys.stdout
    print(header(scorer, args), file=table_out, flush=True)
    rows = []
    for depth in tqdm(depths, desc="depths", file=sys.stderr, leave=False):
        for row in run_depth(scorer, depth, modes, args):
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    print(format_table(rows), file=table_out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
