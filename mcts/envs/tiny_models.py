"""The toy world's tiny transformer policy: the embedded default policy of the search CLI.

A small Llama-architecture causal LM (0.37M parameters) with a character-level tokenizer, trained
on traces of `mcts.envs.arith` problems and saved with `save_pretrained`, so that it runs through
the same transformers backend (`HFPolicy`) as real models. The full build ships inside the package
(`mcts/envs/models/toy-policy`, weights stored as float16, about 1 MB): nothing trains on first use.

    ensure_toy_policy()        the model folder: the shipped one (a cache build for --quick or when
                               the shipped folder is missing or stale)
    load_toy_policy()          that folder as an `HFPolicy` with the toy world's settings
    toy_problem_config()       the problems it is trained for: draw search problems from it
    python -m mcts.envs.tiny_models build --ship          rebuild the shipped folder (about 10 minutes, one core)
    python -m mcts.envs.tiny_models build [--out DIR] [--quick] [--steps N] [--seconds N]
    python -m mcts.envs.tiny_models check [DIR]           a folder's files against their recorded sha256
    python -m mcts.envs.tiny_models evaluate [--model DIR] [--n 100] [--pass-k 16]

Training data: problem + "\\n" + canonical solution steps + EOS, with 1-6 operations on operands up to
10, every value a solution writes within 100 (arithmetic facts are what a small model can learn
from few traces, and there are few enough of these; 1-4 operation problems are drawn three times
as often as 5-6 operation ones). A fraction of the traces is rolled out by the toy world's noisy
`ScriptedPolicy` instead: its slips stay in the text, as context, but carry no loss, so the model
learns to go on from the wrong states a search reaches without being taught to slip. The loss is
on solution tokens only. The full build is competent but fallible (see the table at
`FULL_CONFIG`): greedy, it solves every one-operation problem, two in three with two operations,
one in three with three and one in eight with four, while sampled at T=1 it holds right solutions
its greedy path misses (pass@16 0.78 against greedy 0.52 over 1-4 operations): searching with it
pays.

Every build records, in `toy_policy.json`, its full config, the code version, the torch version,
the training figures, the accuracy measured on the saved weights, and the sha256 of every other
file. Training runs on one thread with fixed seeds, so a rebuild with the same torch on the same
kind of CPU gives the same files bit for bit (the test suite checks that on the quick build, and
that the shipped folder matches its record and the code's `FULL_CONFIG`). A build is atomic: it
trains into a temporary folder beside the destination and renames it into place; a file lock keeps
two processes from training the same folder at once.

This module holds the build, the cache and the shipped folder's checks, loading, and the command
line. The rest lives beside it: the tokenizer in `mcts.envs.toy_tokenizer`, the build configs
(`FULL_CONFIG`, `QUICK_CONFIG`, `toy_problem_config`) in `mcts.envs.toy_config`, the traces and the
training loop in `mcts.envs.toy_training`, and the evaluation in `mcts.envs.toy_eval`. The names of
those that the rest of the project uses are importable from here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mcts.envs.arith_steps import DELIMITER
from mcts.envs.toy_config import FULL_CONFIG, QUICK_CONFIG, ToyTrainConfig
from mcts.envs import shipping
from mcts.envs.shipping import check_record, code_version, read_record
from mcts.envs.toy_eval import evaluate_toy_policy, format_table
from mcts.envs.toy_training import train_toy_model

if TYPE_CHECKING:
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

__all__ = [
    "FORMAT_VERSION",
    "INFO_FILE",
    "SHIPPED_DIR",
    "TOY_POLICY_DEFAULTS",
    "build_toy_policy",
    "check_folder",
    "code_version",
    "default_cache_dir",
    "ensure_toy_policy",
    "folder_hashes",
    "load_toy_policy",
    "main",
    "make_parser",
    "shipped_toy_policy",
    "toy_policy_config",
    "train_config_of",
]

FORMAT_VERSION = 3  # 1: the first draft (192 wide, operands to 25), never a finished build; 2: 1600 steps, built
# on first use (greedy 0.96 / 0.50 / 0.04 / 0.00 at 1-4 operations)
INFO_FILE = "toy_policy.json"
# The full build, shipped in the package (`python -m mcts.envs.tiny_models build --ship` writes it).
SHIPPED_DIR = Path(__file__).resolve().parent / "models" / "toy-policy"
SHIP_PASS_K = 16  # the shipped build's record holds pass@16 at T=1 beside its greedy accuracy
EVAL_SEED = 777  # problems of the accuracy recorded after a build: seeds EVAL_SEED + k, k operations


# Declared in the model folder (`HFPolicy.from_pretrained` reads them): any loader gets them right.
TOY_POLICY_DEFAULTS = {"delimiter": DELIMITER, "chat_template": False, "num_threads": 1, "max_new_tokens": 160,
                       "batch_size": 128}


def toy_policy_config(**overrides) -> "HFPolicyConfig":
    """The `HFPolicyConfig` of the toy policy: delimiter '\\n', no chat template, one thread (its
    matrices are too small to share), steps up to 160 characters (the longest canonical step of a
    6-operation problem is about 60)."""
    from mcts.policy.hf_policy import HFPolicyConfig

    settings = dict(TOY_POLICY_DEFAULTS)
    settings.update(overrides)
    return HFPolicyConfig(**settings)


# ---------------------------------------------------------------------------------------------------
# Building, caching, loading


def default_cache_dir(quick: bool = False, root: str | os.PathLike | None = None) -> Path:
    """Where the toy policy lives: `<root>/toy-policy-v<FORMAT_VERSION>` (`toy-policy-quick-v...`
    for the quick build), root being `$TREESEARCH_CACHE` or `~/.cache/treesearch`."""
    if root is None:
        root = os.environ.get("TREESEARCH_CACHE") or Path.home() / ".cache" / "treesearch"
    name = f"toy-policy-quick-v{FORMAT_VERSION}" if quick else f"toy-policy-v{FORMAT_VERSION}"
    return Path(root).expanduser() / name


def _read_info(folder: Path) -> dict | None:
    return read_record(folder, INFO_FILE, FORMAT_VERSION)


def folder_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file of a toy policy folder but its record (`toy_policy.json`), by name."""
    return shipping.folder_hashes(folder, INFO_FILE)


def build_toy_policy(out: str | os.PathLike, config: ToyTrainConfig = FULL_CONFIG, *, progress: bool = True,
                     replace: bool = False, storage_dtype: str = "float32", pass_k: int = 0) -> Path:
    """Trains a toy policy and saves it (model, tokenizer, `toy_policy.json`) into `out`, atomically.

    Training happens in a temporary folder beside `out`, renamed into place at the end: an
    interrupted build leaves no half model. When `out` already exists it is kept (the other
    build's result wins) unless `replace`. The record `toy_policy.json` holds the build config,
    the code version, the training figures, the accuracy measured on the saved weights (loaded
    back as float32) and the sha256 of every other file of the folder.

    Args:
        storage_dtype: the weights' dtype on disk ('float32' or 'float16': half the size; loading
            on CPU restores float32).
        pass_k: also record pass@k of `pass_k` samples at T=1 (0: greedy accuracy only).

    Returns:
        `out`.
    """
    import torch

    from mcts.policy.hf_policy import HFPolicy, write_policy_defaults

    if storage_dtype not in ("float32", "float16"):
        raise ValueError(f"storage_dtype must be 'float32' or 'float16', got {storage_dtype!r}")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model, tokenizer, info = train_toy_model(config, progress=progress)
        model.to(getattr(torch, storage_dtype)).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_policy_defaults(tmp, **TOY_POLICY_DEFAULTS)
        accuracy = []
        if config.eval_per_ops:
            started = time.perf_counter()
            policy = HFPolicy.from_pretrained(tmp, toy_policy_config(device="cpu", dtype="float32"))
            accuracy = evaluate_toy_policy(policy, per_ops=config.eval_per_ops, seed=EVAL_SEED,
                                           problems=config.arith(), samples=config.eval_samples, pass_k=pass_k)
            info["eval_seconds"] = round(time.perf_counter() - started, 1)
        record = {
            "format_version": FORMAT_VERSION,
            "kind": "treesearch toy-world policy",
            "train_config": dataclasses.asdict(config),
            "data_seed": config.data_seed,
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "storage_dtype": storage_dtype,
            "training": info,
            "accuracy": accuracy,
            "eval": {"seed": EVAL_SEED, "problems": dataclasses.asdict(config.arith()),
                     "samples": config.eval_samples, "pass_k": pass_k, "temperature": 1.0} if accuracy else None,
            "files": folder_hashes(tmp),
        }
        (tmp / INFO_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "model")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)
            except OSError:
                if not out.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another build finished first: keep it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_folder(folder: str | os.PathLike, config: ToyTrainConfig | None = None) -> list[str]:
    """What is wrong with a toy policy folder (empty: nothing): a missing or foreign record, files
    whose sha256 differs from the recorded one, files missing or not recorded, and, with
    `config`, a recorded build config other than `config`."""
    expected = {"train_config": dataclasses.asdict(config)} if config is not None else None
    return check_record(folder, INFO_FILE, FORMAT_VERSION, "toy policy", expected)


def shipped_toy_policy() -> Path | None:
    """The toy policy that ships inside the package (`mcts/envs/models/toy-policy`), when it is
    there, intact, and built with `FULL_CONFIG`; else None (then `ensure_toy_policy` builds one)."""
    return None if check_folder(SHIPPED_DIR, FULL_CONFIG) else SHIPPED_DIR


def ensure_toy_policy(cache_dir: str | os.PathLike | None = None, *, quick: bool = False,
                      progress: bool = True) -> Path:
    """The toy policy's folder, built on first use.

    Args:
        cache_dir: the cache root (default `$TREESEARCH_CACHE` or `~/.cache/treesearch`); the model
            is its `toy-policy-v<version>` (or `toy-policy-quick-v<version>`) folder.
        quick: the quick variant (a much smaller model trained for seconds: for tests).
        progress: show the training progress bar.

    Returns:
        The folder, ready for `HFPolicy.from_pretrained`: the one shipped in the package
        (`shipped_toy_policy`) unless `quick`, else the cache's. Two processes asking at once build
        it once (a file lock); a folder in the way that is not a toy policy of this version is an error.
    """
    from filelock import FileLock

    if not quick and (shipped := shipped_toy_policy()) is not None:
        return shipped
    folder = default_cache_dir(quick, cache_dir)
    if _read_info(folder) is not None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if _read_info(folder) is not None:
            return folder
        if folder.exists():
            raise RuntimeError(f"{folder} exists but holds no toy policy of format version {FORMAT_VERSION} "
                               f"(no valid {INFO_FILE}); delete it or choose another cache_dir")
        config = QUICK_CONFIG if quick else FULL_CONFIG
        what = ("the quick toy policy (seconds)" if quick
                else "the toy-world policy (once; about 10 minutes of one CPU core)")
        print(f"treesearch: building {what} into {folder}", file=sys.stderr, flush=True)
        build_toy_policy(folder, config, progress=progress)
    return folder


def load_toy_policy(cache_dir: str | os.PathLike | None = None, *, quick: bool = False, progress: bool = True,
                    model_dir: str | os.PathLike | None = None, **overrides) -> "HFPolicy":
    """The toy policy as an `HFPolicy` (building it on first use).

    Args:
        cache_dir, quick, progress: see `ensure_toy_policy`.
        model_dir: a model folder to load instead of the cached build.
        **overrides: `HFPolicyConfig` fields (device, batch_size, max_new_tokens, seed, ...).
    """
    from mcts.policy.hf_policy import HFPolicy

    folder = Path(model_dir) if model_dir is not None else ensure_toy_policy(cache_dir, quick=quick, progress=progress)
    return HFPolicy.from_pretrained(folder, toy_policy_config(**overrides))


# ---------------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcts.envs.tiny_models",
                                     description="Builds and evaluates the toy world's tiny transformer policy.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train the toy policy and save it")
    build.add_argument("--out", help="model folder (default: the cache folder ensure_toy_policy uses)")
    build.add_argument("--quick", action="store_true", help="the quick variant (seconds; for tests)")
    build.add_argument("--ship", action="store_true", help=(
        f"the full build into the package ({SHIPPED_DIR}), weights stored as float16, pass@{SHIP_PASS_K} "
        "recorded: what the repository ships (about 12 minutes of one core)"))
    build.add_argument("--seconds", type=float, help="train for about this many seconds instead of a fixed step count")
    build.add_argument("--steps", type=int, help="optimizer steps (overrides the config's)")
    build.add_argument("--threads", type=int, help="torch threads (default: the CPUs this process may use)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = sub.add_parser("check", help="check a folder's files against the sha256 its record holds")
    check.add_argument("folder", nargs="?", help=f"model folder (default: the shipped one, {SHIPPED_DIR})")
    ev = sub.add_parser("evaluate", help="greedy accuracy by number of operations on fresh problems")
    ev.add_argument("--model", help="model folder (default: the cached build, built if missing)")
    ev.add_argument("--quick", action="store_true", help="evaluate the quick build")
    ev.add_argument("--n", type=int, default=100, help="problems per number of operations")
    ev.add_argument("--max-ops", type=int, default=6, help="largest number of operations")
    ev.add_argument("--max-operand", type=int, help="largest operand (default: the model's training problems')")
    ev.add_argument("--max-value", type=int,
                    help="bound on intermediate values (default: the model's training problems')")
    ev.add_argument("--samples", type=int, default=4, help="samples per prefix for the sampled step rates")
    ev.add_argument("--pass-k", type=int, default=16,
                    help="whole solutions sampled per problem for pass@k (0: skip)")
    ev.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature of pass@k and the sampled step rates (the search's: 1)")
    ev.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the problems")
    ev.add_argument("--batch-size", type=int, default=128, help="sequences per generate call")
    ev.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def _build(args: argparse.Namespace) -> int:
    config = QUICK_CONFIG if args.quick else FULL_CONFIG
    changes = {k: v for k, v in (("seconds", args.seconds), ("steps", args.steps), ("num_threads", args.threads))
               if v is not None}
    if args.ship and (args.quick or args.out or changes):
        print("error: --ship builds FULL_CONFIG into the package; it takes no --quick, --out, --seconds, "
              "--steps or --threads", file=sys.stderr)
        return 2
    config = dataclasses.replace(config, **changes)
    from filelock import FileLock

    out = SHIPPED_DIR if args.ship else (Path(args.out) if args.out else default_cache_dir(args.quick)).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"treesearch: building the toy policy into {out}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with FileLock(str(out.parent / f".{out.name}.lock")):  # the lock `ensure_toy_policy` takes
        build_toy_policy(out, config, progress=not args.no_progress, replace=True,
                         storage_dtype="float16" if args.ship else "float32", pass_k=SHIP_PASS_K if args.ship else 0)
    record = _read_info(out) or {}
    training = record.get("training", {})
    print(f"built in {time.perf_counter() - started:.0f} s (training {training.get('train_seconds')} s, "
          f"{training.get('steps')} steps, {training.get('parameters')} parameters, "
          f"final loss {training.get('final_loss')})")
    if record.get("accuracy"):
        print(format_table(record["accuracy"]))
    return 0


def train_config_of(folder: str | os.PathLike) -> ToyTrainConfig | None:
    """The `ToyTrainConfig` a toy policy folder was built with (None: not a toy policy folder)."""
    info = _read_info(Path(folder))
    if info is None:
        return None
    known = {f.name for f in dataclasses.fields(ToyTrainConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in info["train_config"].items() if k in known}
    return ToyTrainConfig(**fields)


def _evaluate(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        print(f"error: --temperature must be a number > 0 (the samples of pass@k), got {args.temperature}",
              file=sys.stderr)
        return 2
    folder = Path(args.model) if args.model else ensure_toy_policy(quick=args.quick)
    problems = (train_config_of(folder) or FULL_CONFIG).arith()
    if args.max_operand is not None:
        problems = dataclasses.replace(problems, max_operand=args.max_operand)
    if args.max_value is not None:
        problems = dataclasses.replace(problems, max_value=args.max_value)
    policy = load_toy_policy(model_dir=folder, batch_size=args.batch_size, device="cpu")
    started = time.perf_counter()
    rows = evaluate_toy_policy(policy, per_ops=args.n, ops=range(1, args.max_ops + 1), seed=args.seed,
                               problems=problems, samples=args.samples, pass_k=args.pass_k,
                               temperature=args.temperature)
    print(f"{folder}: operands {problems.min_operand}-{problems.max_operand}, "
          f"|values| <= {problems.max_value}, {args.n} problems per number of operations, "
          f"sampled at T={args.temperature:g}")
    print(format_table(rows))
    print(f"({time.perf_counter() - started:.0f} s, {policy.stats.generated_tokens} tokens generated)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def _check(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else SHIPPED_DIR
    problems = check_folder(folder, None if args.folder else FULL_CONFIG)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{folder}: every file matches its recorded sha256")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return {"build": _build, "check": _check, "evaluate": _evaluate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
