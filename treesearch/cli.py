"""`python -m mcts.search`: search every problem of a problem file, choose and grade answers, and
write one JSON line per problem (ARCHITECTURE.md).

    python -m mcts.search --problem-file examples/toy_arith.jsonl --algorithm mcts_star --simulations 32

Every SearchConfig field is a flag (`--leaf-value`, `--top-p`, ...), read from the dataclass so that
the two never drift apart. Bad input is one line on stderr and exit status 2, before any model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from mcts.core.native import available_backends, num_threads
from mcts.problems import ProblemFileError, load_problems
from mcts.config import ALGORITHMS, SearchConfig
from mcts.options import add_flags, flag_message, flag_values
from mcts.policy.presets import PRESET_NAMES, get_preset
from treesearch.engine import EngineLoadError, EngineSpec
from treesearch.executor import ExecutorError, make_executor
from treesearch.loaders import POLICY_BACKENDS, PRM_BACKENDS, PRM_FORMAT_CHOICES, check_toy_gold
from treesearch.results import ResultsFileError, run_manifest, search_problems

__all__ = ["CliError", "main", "make_parser", "run_cli", "summarize"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcts.search",
        description="Search every problem of a problem file in batched rounds, choose and grade "
                    "answers, and write one JSON line per problem.")
    io = parser.add_argument_group("input and output")
    io.add_argument("--problem-file", required=True, help="JSONL problems: MATH-500, GSM8K, the toy world, "
                    "or any JSONL with a problem/question field (answer optional)")
    io.add_argument("--limit", type=int, default=None, help="search only the first N problems")
    io.add_argument("--out", default="results.jsonl", help="results, one JSON line per problem "
                    "(written atomically after every batch)")
    io.add_argument("--resume", action="store_true", help="keep the problems already in --out and "
                    "search only the others (refused when --out was made from another problem file, models, "
                    "seed or search config: its manifest says)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out (without "
                    "--resume or --overwrite, one is refused: finished results are never lost by accident)")
    io.add_argument("--trees-out", default=None, help="folder for one JSON file per searched tree")
    models = parser.add_argument_group("models")
    models.add_argument("--model", default="tiny", help="the policy: a local transformers model folder, "
                        "'tiny' (the toy world's tiny transformer, built on first use) or 'scripted' "
                        "(the toy world's scripted policy)")
    models.add_argument("--prm", default="tiny", help="the scorer: a local PRM folder, 'tiny' (the toy "
                        "world's trained PRM, shipped in the package) or 'oracle' (the toy world's oracle: it "
                        "reads the gold answer, for tests of the search logic only; with --oracle-noise)")
    models.add_argument("--prm-format", default="auto", choices=PRM_FORMAT_CHOICES,
                        help="how a --prm folder is read: treesearch (this project's own), math_shepherd, qwen_prm, "
                        "rlhflow, value_head, generative (the open reward models' recipes, prm/adapters.py), or auto "
                        "(what the folder's files say; rlhflow and generative folders must be named)")
    models.add_argument("--prm-backend", default="hf", choices=PRM_BACKENDS,
                        help="what runs a --prm folder: hf (transformers) or vllm (a vLLM pooling engine; "
                        "--prm-format qwen_prm)")
    models.add_argument("--prm-gpu-memory-utilization", type=float, default=None,
                        help="--prm-backend vllm: fraction of the GPU's memory the PRM's engine may take (beside "
                        "the policy's --gpu-memory-utilization on the same GPU)")
    models.add_argument("--oracle-noise", type=float, default=0.1,
                        help="probability that the oracle PRM flips a step's score")
    models.add_argument("--pprm", default=None, help="a pairwise PPRM folder or 'tiny' (the toy world's, "
                        "built on first use): the judge of --answer-selection ebc")
    models.add_argument("--ebc-alpha", type=float, default=0.5, help="--answer-selection ebc: weight of the "
                        "normalised Borda score against the candidates' values (in [0, 1])")
    models.add_argument("--backend", default="hf", choices=POLICY_BACKENDS,
                        help="what runs --model: hf (transformers, CPU or GPU) or vllm (pip install -e .[vllm])")
    models.add_argument("--device", default=None, help="torch device of the models (default: cuda if "
                        "available, else cpu)")
    models.add_argument("--max-new-tokens", type=int, default=None, help="most tokens in one step")
    models.add_argument("--tensor-parallel-size", type=int, default=None,
                        help="--backend vllm: GPUs one engine shards the model over")
    models.add_argument("--dtype", default=None, help="--backend vllm: weights' dtype (auto, float16, "
                        "bfloat16, float32)")
    models.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="--backend vllm: fraction of the GPU's memory the engine may take")
    models.add_argument("--trust-remote-code", action="store_true", help="let transformers (or vLLM) import "
                        "and run the Python files of a --model, --prm or --pprm folder whose config names them "
                        "(auto_map). Off by default: such a folder is refused, and nothing of it runs")
    models.add_argument("--delimiter", default=None, help="the step delimiter of --model DIR, as a Python "
                        "string literal (default: what the folder declares, else '\\n\\n')")
    models.add_argument("--preset", default=None, metavar="NAME", help="the prompt and step settings of a "
                        f"policy family ({', '.join(PRESET_NAMES)}): system prompt, answer instruction, delimiter, "
                        "stop tokens, chat template (mcts/policy/presets.py); --delimiter still wins")
    search = parser.add_argument_group("search (shared by every algorithm, for equal budgets)")
    # The config refuses a bad value with a one-line error naming the flag; argparse checks only the
    # algorithm's name (its usage message lists them).
    add_flags(search, SearchConfig, choices={"algorithm": ALGORITHMS})
    search.add_argument("--batch", type=int, default=16, help="problems searched together (trees per forest)")
    search.add_argument("--seed", type=int, default=0, help="seed of the run: batch k's policy sampling is "
                        "seeded from (seed, k), the oracle's noise from seed")
    where = parser.add_argument_group("where the search runs (treesearch.executor)")
    where.add_argument("--executor", default="local", choices=("local", "ray"), help="local: this process; "
                       "ray: the batches are shared out over Ray actors, one policy and one PRM each "
                       "(pip install -e .[ray]); same results for the same seed")
    where.add_argument("--actors", type=int, default=None, help="--executor ray: number of actors "
                       "(default: one per GPU of the cluster, else 1)")
    where.add_argument("--ray-address", default=None, help="--executor ray: the cluster to join ('auto', "
                       "'ray://host:10001'); default: start a local one")
    return parser


class CliError(Exception):
    """A bad argument or input: printed as one line, exit status 2, nothing written."""


def _config_from_args(args: argparse.Namespace) -> SearchConfig:
    try:
        return SearchConfig(**flag_values(SearchConfig, args))
    except ValueError as err:
        raise CliError(flag_message(str(err), SearchConfig)) from None


def _delimiter(text: str | None) -> str | None:
    """--delimiter as typed: '\\n\\n' means two newlines."""
    if text is None:
        return None
    try:
        value = text.encode("utf-8").decode("unicode_escape") if "\\" in text else text
    except UnicodeDecodeError:
        raise CliError(f"--delimiter {text!r}: not a valid escape sequence") from None
    if not value:
        raise CliError("--delimiter must not be empty")
    return value


def scorer_label(prm: str, oracle_noise: float, needs_scorer: bool = True) -> str:
    """How a results table names the scorer; the oracle says that it reads the answer key."""
    if not needs_scorer:
        return "none (the algorithm scores nothing)"
    if prm == "oracle":
        return f"ORACLE (reads the gold answer: for tests of the search logic), noise {oracle_noise}"
    return "the toy world's trained PRM (tiny)" if prm == "tiny" else f"PRM {prm}"


def summarize(records: Sequence[dict], searched: int, seconds: float, scorer: str | None = None) -> str:
    """The end-of-run table over every record of the results file; the rate counts only the
    `searched` problems of this run."""
    graded = [r for r in records if r.get("correct") is not None]
    n = len(records)
    rows = [*([("scorer", scorer)] if scorer else []),
        ("problems", f"{n}"),
        ("graded", f"{len(graded)}"),
        ("accuracy", f"{sum(r['correct'] for r in graded) / len(graded):.3f}" if graded else "n/a"),
        ("answered", f"{sum(r['answer'] is not None for r in records) / n:.3f}" if n else "n/a"),
        ("tokens / problem", f"{sum(r['tokens'] for r in records) / n:.1f}" if n else "n/a"),
        ("simulations / problem", f"{sum(r['simulations'] for r in records) / n:.1f}" if n else "n/a"),
        ("searched in this run", f"{searched}"),
        ("problems / s (this run)", f"{searched / seconds:.2f}" if searched and seconds > 0 else "n/a"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _writable_place(path: Path) -> bool:
    """Whether `path` can be created or replaced: its nearest existing ancestor is a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path checked before any model loads: a run never fails late on where it writes,
    never writes over an input, and never replaces finished results unless asked."""
    out, inputs = Path(args.out), [Path(args.problem_file)]
    if args.resume and args.overwrite:
        raise CliError("--resume keeps what --out holds and --overwrite replaces it: pass one of them")
    if out.is_dir():
        raise CliError(f"--out {out}: is a folder, not a results file")
    for given in inputs:
        if given.exists() and (out.resolve() == given.resolve() or (out.exists() and os.path.samefile(out, given))):
            raise CliError(f"--out {out}: is the input {given}; writing results there would destroy it")
    if not (out.exists() and os.access(out, os.W_OK)) and not _writable_place(out):
        raise CliError(f"--out {out}: cannot be written (no writable folder to create it in)")
    if out.exists() and out.stat().st_size > 0 and not (args.resume or args.overwrite):
        raise CliError(f"--out {out}: holds results already; pass --resume to continue them or --overwrite "
                       f"to replace them")
    if args.trees_out is not None:
        trees = Path(args.trees_out)
        if trees.exists() and not trees.is_dir():
            raise CliError(f"--trees-out {trees}: is a file, not a folder")
        if not (trees.is_dir() and os.access(trees, os.W_OK | os.X_OK)) and not _writable_place(trees):
            raise CliError(f"--trees-out {trees}: cannot be written")


def check_environment(args: argparse.Namespace, config: SearchConfig) -> None:
    """What this machine must offer the run, checked before any model loads (a Ray cluster's
    workers may have what the driver lacks, so devices are checked only for local runs)."""
    try:
        num_threads()
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.executor != "local":
        return
    if config.tree_backend != "auto" and config.tree_backend not in available_backends():
        raise CliError(f"--tree-backend {config.tree_backend}: not available here (available: "
                       f"{', '.join(available_backends())})")
    if args.device is not None:
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise CliError(f"--device {args.device}: not a torch device (cpu, cuda, cuda:1, ...)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CliError(f"--device {args.device}: this machine has no CUDA device torch can use")


def run_cli(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    if args.limit is not None and args.limit < 0:
        raise CliError(f"--limit must be >= 0, got {args.limit}")
    if args.actors is not None and args.actors < 1:
        raise CliError(f"--actors must be >= 1, got {args.actors}")
    if args.executor != "ray" and (args.actors is not None or args.ray_address is not None):
        raise CliError("--actors and --ray-address need --executor ray")
    check_outputs(args)
    check_environment(args, config)
    oracle = args.prm == "oracle" and config.needs_scorer
    try:
        problems = load_problems(args.problem_file, limit=args.limit, check=check_toy_gold if oracle else None)
    except ProblemFileError as err:
        raise CliError(str(err)) from None
    if (config.selection == "ebc") != (args.pprm is not None):
        raise CliError("--answer-selection ebc needs --pprm DIR|tiny (the pairwise judge), and --pprm is "
                       "only read by --answer-selection ebc")
    if not 0.0 <= args.ebc_alpha <= 1.0:
        raise CliError(f"--ebc-alpha must be in [0, 1], got {args.ebc_alpha}")
    if args.preset is not None:
        try:
            get_preset(args.preset)
        except ValueError as err:
            raise CliError(f"--preset: {err}") from None
    if args.prm_backend != "vllm" and args.prm_gpu_memory_utilization is not None:
        raise CliError("--prm-gpu-memory-utilization needs --prm-backend vllm")
    spec = EngineSpec(model=args.model, prm=args.prm, prm_format=args.prm_format, backend=args.backend,
                      prm_backend=args.prm_backend,
                      prm_options={"gpu_memory_utilization": args.prm_gpu_memory_utilization},
                      device=args.device, seed=args.seed,
                      oracle_noise=args.oracle_noise, max_new_tokens=args.max_new_tokens,
                      delimiter=_delimiter(args.delimiter), preset=args.preset, config=config, pprm=args.pprm,
                      ebc_alpha=args.ebc_alpha,
                      trust_remote_code=args.trust_remote_code,
                      proposer_options={"tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype,
                                        "gpu_memory_utilization": args.gpu_memory_utilization})
    try:
        executor = make_executor(args.executor, actors=args.actors, address=args.ray_address)
    except ImportError as err:
        raise CliError(f"--executor {args.executor}: {err}") from None
    out = Path(args.out)
    try:
        run = search_problems(problems, spec, executor, batch=args.batch, out_path=out, resume=args.resume,
                              trees_out=args.trees_out, progress=True,
                              manifest=run_manifest(args.problem_file, spec))
    except EngineLoadError as err:
        raise CliError(f"--{err.part} {err.name}: {err.reason}") from None
    except ResultsFileError as err:
        raise CliError(str(err)) from None
    except ExecutorError as err:
        raise CliError(f"--executor {args.executor}: {err}") from None
    finally:
        executor.close()
    if not run.searched:
        print(f"nothing to search: all {len(problems)} problems are already in {out}", file=sys.stderr)
    print(summarize(run.records, run.searched, run.seconds, scorer_label(args.prm, args.oracle_noise, spec.needs_scorer)))
    print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
