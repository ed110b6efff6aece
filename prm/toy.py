"""The toy world's tiny PRM and PPRM: trained locally on oracle-labelled traces, cached like the
tiny policy (`mcts.envs.tiny_models`).

    ensure_toy_prm(cache_dir=None, *, quick=False)    the PRM folder, built on first use
    ensure_toy_pprm(cache_dir=None, *, quick=False)   the PPRM folder (its backbone starts from the PRM's)
    load_toy_prm(...) / load_toy_pprm(...)            those folders as models
    build_toy_prm(out, build) / build_toy_pprm(...)   a build into a folder of one's own
    python -m prm.toy build [--pprm] [--quick] [--out DIR] [--base DIR] [--num-threads N ...]   the command line

What a toy PRM must learn is to check a step: `a op b = r, so EXPR` is right iff r is the value
of `a op b` (arithmetic) and EXPR is the previous expression with `a op b` replaced by r (copying);
a step after a wrong one is wrong too (its value is off). Trained with BCE on step-end labels
alone, a model learns the depth of a step (later steps are more often wrong: AUC about 0.75)
and not the check. The full build gets there with these together:

- Data: the toy world's default problems (`mcts.envs.toy_config.toy_problem_config`: operands up
  to 10, every value within 100, 1-6 operations) in four forms: one-operation facts (`a op b`,
  its canonical step or a slip: the arithmetic alone, a few tokens each), one-step traces from the
  states of canonical solutions (the check in context), branch traces (a canonical solution that
  turns into a slip at a random step, then goes on: first errors deep in long traces), and whole
  traces rolled out by the scripted policy at several slip rates (errors carried forward). Slips:
  the scripted policy's (off by a few, swapped digits, wrong operator, wrong answer) and copy slips
  (`prm.toy_traces.copy_slip`: a number or operator of the rest of the expression changed, an
  operation dropped: what the tiny transformer does). About half of all steps are wrong.
- Model: the tiny policy's weights (it already computes results and copies expressions) and two
  more blocks on top whose output projections start at zero (the model starts as the policy),
  where the policy's next-token prediction is compared with the token written.
- Dense labels: every token of a step carries a label, 1 while the step still agrees with the
  canonical step of its state and 0 from the first character where it does not (and on every
  token after a wrong step), at a lower weight than the step ends, which carry the oracle's label.
- An auxiliary next-token loss on the tokens of correct steps, read at the policy's own depth
  (through the final norm and the tied embedding), which keeps and sharpens the policy's
  arithmetic that the check rests on.
- Long enough training: what decides best-of-N is the rare missed first error, and that rate kept
  falling with training long after the AUC looked done.

The traces are made by `prm.toy_traces`; the dense labels, next-token targets, grown backbone and
auxiliary loss are in `prm.toy_training`.

The value is still the scalar head at the last token of each step (`prm.model.PRM`); the folder
is a plain PRM folder (a Llama backbone of 5 blocks, 0.61M parameters). Ablations, 3000 steps at
lr 1e-3 on this data, held-out step AUC on scripted traces: step ends only 0.73 (1200 steps on
rollouts alone), + facts and one-step traces + two blocks + next-token loss 0.73, + dense labels
0.91. Then, at lr 2e-3, on 5-6 operation traces of the scripted policy at slip rate 0.1 (step AUC /
first-error accuracy / best-of-16 by min against majority 0.97 on 100 problems of seed DESIGN_SEED,
which no benchmark reports on):

    format 2 (half the facts and one-step traces, no branch traces, 4000 steps)   0.938 / 0.771 / 0.65
    + 15000 branch traces                                                         0.959 / 0.826 / 0.72
    twice the facts and one-step traces, 10000 steps                              0.979 / 0.897 / 0.91
    both, 10000 steps                                                             0.984 / 0.946 / 0.92
    both, 14000 steps (the full build)                                            0.988 / 0.973 / 0.96
    the full build + 30% of facts with negated operands (fact_negate_fraction)    0.989 / 0.951 / 0.98

What it still misses on the scripted traces is mostly arithmetic on negative numbers (`3 - -1 = 2`,
`-11 * 4`), and a missed first error makes every later step of that trace look right to it as well.
Facts with negated operands did not settle it (the last row above: within the noise of 100
problems), so they stay off.

The tiny policy's own traces are harder: its first errors are copy slips deep in 3-4 operation
expressions. Format 5 added 6000 of its T=1 traces (1-6 operations); format 6 adds 8000 more on
3-4 operation problems (`policy_focus_problems`: 4000 problems, 2 traces each) and trains 16000
steps instead of 14000. On 1000 held-out traces of the policy (`eval_policy_traces`, fresh 1-4
operation problems; `benchmarks/prm_heldout.py` splits them), format 5 -> format 6:

    step AUC, all / problems it never trained on    0.943 / 0.770  ->  0.955 / 0.822
    step AUC at 3 / 4 operations                    0.747 / 0.497  ->  0.829 / 0.609
    first-error accuracy, all / at 3 / at 4         0.656 / 0.416 / 0.333  ->  0.773 / 0.606 / 0.628

and on the scripted held-out traces (1-6 operations, slip rate 0.05) step AUC 0.987 -> 0.987,
first-error accuracy 0.901 -> 0.925. That build (16000 steps) took 642 s of data (the policy's
rollouts are most of it) and 4274 s of training on one CPU core with a second job on the other.

Format 7 keeps format 6 as its first stage and trains a second on the policy's commonest first
errors: `prm/toy_config.py` has why, the variants it was chosen from, and its figures.

The toy PPRM (`ensure_toy_pprm`) reads each solution alone (`pair_reading="separate"`: a
Bradley-Terry model) and starts from the toy PRM with its head, so it starts as the PRM's value at
the last step; 100 steps of the logistic loss on (correct, wrong) pairs follow (under a minute).
Held-out pairwise accuracy 0.99 (0.95-0.96 from the format-2 PRM). A joint-reading PPRM (both
solutions in one sequence) from the same PRM reached 0.79 after 670 steps: the PRM's way of
carrying an error forward (attend to any earlier wrong step) sees the other solution's errors too,
and unlearning that takes long.

See `train_info.json` of a build for its data, training and held-out figures. The quick builds
train much smaller models from scratch in seconds (for tests; they learn next to nothing). Builds
are atomic (a temporary folder beside the destination, renamed into place) and a file lock keeps
two processes from building the same folder at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from filelock import FileLock
from transformers import LlamaConfig, LlamaModel

from mcts.envs.arith import DELIMITER
from mcts.envs.shipping import check_record, code_version, folder_hashes, read_record
from mcts.envs.tiny_models import ensure_toy_policy, load_toy_policy
from mcts.envs.tiny_models import folder_hashes as policy_hashes  # the record names the policy's files
from mcts.envs.toy_tokenizer import build_char_tokenizer
from prm.data import pair_records
from prm.metrics import pairwise_metrics, step_metrics
from prm.model import IGNORE_INDEX, PRM, PRMConfig
from prm.pairwise import PPRM
from prm.rows import encode_pair_rows, encode_step_rows
from prm.toy_training import AuxLMLoss, dense_labels, grow_backbone, lm_labels
from prm.toy_traces import (ToyDataConfig, branch_traces, single_step_traces, solution_states, toy_problems, toy_records,
                             toy_step_records)
from prm.train import (TRAIN_INFO, TrainError, add_config_arguments, config_from_args, load_model_for,
                       save_atomic, summary_table, train_rows)
from prm.toy_config import (DESIGN_SEED, EVAL_SEED, FAILURE_SEED, FULL_BUILD, FULL_PPRM_BUILD, POLICY_EVAL_SEED, QUICK_BUILD,
                             QUICK_PPRM_BUILD, RESERVED_SEEDS, STAGE1_BUILD, ToyBuild, check_base_folder,
                             check_report_seed)

__all__ = [
    "DESIGN_SEED", "EVAL_SEED", "FAILURE_SEED", "FORMAT_VERSION", "RESERVED_SEEDS", "check_report_seed", "FULL_BUILD", "FULL_PPRM_BUILD", "QUICK_BUILD", "QUICK_PPRM_BUILD", "ToyBuild",
    "SHIPPED", "SHIPPED_BASE", "STAGE1_BUILD", "build_toy_pprm", "build_toy_prm", "check_base_folder", "check_toy_folder", "ensure_toy_pprm", "ensure_toy_prm",
    "eval_policy_records", "load_toy_pprm", "load_toy_prm", "main", "make_parser", "shipped_toy", "toy_cache_dir",
    "training_problems",
]

FORMAT_VERSION = 8  # 1: BCE on step ends of 1-8 operation problems, operands to 20 (AUC ~0.75); 2: 4000 steps,
# no branch traces (first-error accuracy 0.77 on 5-6 operations); 3: on the format-2 tiny policy; 4: on the
# format-3 tiny policy (the one shipped until format 8 of this PRM); 5: with that
# policy's own T=1 traces in the data, shipped in the package (`python -m prm.toy build --ship`); 6: with 8000
# more of its traces on 3-4 operation problems (policy_focus_problems), 16000 steps; 7: format 6 as stage 1
# (STAGE1_BUILD), then 5000 steps on operand and copy slips in branch traces (FULL_BUILD); 8: format 7's
# builds on the tiny policy trained with ops weights 3,3,3,3,1,1, whose files the record now names
# (`data.policy`)
SHIPPED = {"prm": Path(__file__).resolve().parent / "models" / "toy-prm",
           "pprm": Path(__file__).resolve().parent / "models" / "toy-pprm"}
# The first stage of the shipped PRM (STAGE1_BUILD: the format-6 PRM, files unchanged), which
# `build --ship` continues; shipped so that a rebuild need not retrain it.
SHIPPED_BASE = Path(__file__).resolve().parent / "models" / "toy-prm-stage1"




# ---------------------------------------------------------------------------------------------------
# Data


def _training_configs(build: ToyBuild) -> tuple[ToyDataConfig, list[tuple[ToyDataConfig, int]]]:
    """The data config of the build's scripted rollouts, and (data config, sampling seed) of its
    tiny-policy rollouts: the whole range, then the focused operations, each where the build asks."""
    config = ToyDataConfig(problems=max(1, build.problems), samples=build.samples, min_ops=build.min_ops,
                           max_ops=build.max_ops, max_operand=build.max_operand, max_value=build.max_value,
                           slip_rates=build.slip_rates, seed=build.data_seed)
    tiny = []
    if build.policy_problems:
        tiny.append((dataclasses.replace(config, problems=build.policy_problems, samples=1, seed=build.data_seed + 7919),
                     build.data_seed))
    if build.policy_focus_problems:
        low, high = build.policy_focus_ops
        focus = dataclasses.replace(config, problems=build.policy_focus_problems, samples=build.policy_focus_samples,
                                    min_ops=low, max_ops=high, seed=build.data_seed + 15401)
        tiny.append((focus, focus.seed))
    return config, tiny


_FACT_SALT, _SINGLE_SALT, _BRANCH_OFFSET = 555, 556, 104729  # the shipped builds' seeds: fixed


def _problem_draws(build: ToyBuild) -> dict[str, tuple[int, int]]:
    """{source: (problems, seed)} of the one-step and branch draws (one-step steps: seed data_seed + salt)."""
    return {"fact": (build.fact_problems, build.data_seed + _FACT_SALT * 1009),
            "single": (build.single_problems, build.data_seed + _SINGLE_SALT * 1009),
            "branch": (build.branch_problems, build.data_seed + _BRANCH_OFFSET)}


def _training_records(build: ToyBuild) -> list[dict]:
    config, tiny = _training_configs(build)
    draws = _problem_draws(build)
    arith = (build.min_ops, build.max_ops, build.max_operand, build.max_value)
    records = toy_step_records(config) if build.problems else []
    for source, salt, isolate in (("fact", _FACT_SALT, True), ("single", _SINGLE_SALT, False)):
        if draws[source][0]:
            problems = [p["problem"] for p in toy_problems(*draws[source], *arith)]
            records += toy_records(single_step_traces(
                problems, seed=build.data_seed + salt, isolate=isolate, wrong_fraction=build.wrong_fraction,
                copy_fraction=build.copy_fraction, negate_fraction=build.fact_negate_fraction, max_value=build.max_value))
    if build.branch_problems:
        problems = toy_problems(*draws["branch"], *arith)
        records += toy_records(branch_traces(
            [p["problem"] for p in problems], seed=build.data_seed, wrong_fraction=build.branch_wrong_fraction,
            slip_rate=build.branch_slip_rate, operand_fraction=build.branch_operand_fraction,
            copy_fraction=build.branch_copy_fraction, copy_context_fraction=build.branch_copy_context_fraction,
            max_value=build.max_value))
    for data, sampling_seed in tiny:  # a policy per draw: the focused draw leaves the first one's traces as they were
        records += toy_step_records(data, load_toy_policy(seed=sampling_seed, device="cpu", progress=False))
    return records


def training_problems(build: ToyBuild) -> set[str]:
    """A superset of the problems the build trains on: every drawn problem, its canonical states and
    operations (where one-step traces start), and those of its base build, which it continues;
    benchmarks/prm_heldout.py splits held-out figures by it."""
    earlier = training_problems(build.base) if build.base is not None else set()
    config, tiny = _training_configs(build)
    arith = (build.max_operand, build.max_value)
    draws = [(build.problems and config.problems, config.seed, build.min_ops, build.max_ops),
             *((n, seed, build.min_ops, build.max_ops) for n, seed in _problem_draws(build).values()),
             *((data.problems, data.seed, data.min_ops, data.max_ops) for data, _ in tiny)]
    return earlier | solution_states([p["problem"] for n, seed, low, high in draws if n
                                      for p in toy_problems(n, seed, low, high, *arith)])


def _eval_records(build: ToyBuild) -> list[dict]:
    config = ToyDataConfig(problems=max(1, build.eval_traces // 4), samples=4, min_ops=build.min_ops,
                           max_ops=build.max_ops, max_operand=build.max_operand, max_value=build.max_value,
                           slip_rates=(0.05,), seed=EVAL_SEED)
    return toy_step_records(config)[:build.eval_traces]


def eval_policy_records(build: ToyBuild) -> list[dict]:
    """Held-out traces of the tiny policy itself (T=1, fresh 1-4 operation problems)."""
    policy = load_toy_policy(seed=POLICY_EVAL_SEED, device="cpu", progress=False)
    config = ToyDataConfig(problems=build.eval_policy_traces, samples=1, min_ops=1, max_ops=4,
                           max_operand=build.max_operand, max_value=build.max_value, seed=POLICY_EVAL_SEED)
    return toy_step_records(config, policy)[:build.eval_policy_traces]


def _rows(model, records: Sequence[dict], build: ToyBuild) -> list[dict]:
    """Training rows: step-end labels, plus dense labels and next-token targets when the build asks."""
    rows = encode_step_rows(model, records, target="labels", mode="prm", max_length=model.max_length)
    if not (build.dense_weight or build.lm_weight):
        return rows
    for row, record in zip(rows, records):
        ends = [i for i, y in enumerate(row["labels"]) if y != IGNORE_INDEX]
        if len(ends) != len(record["steps"]):  # cut by max_length: keep the step-end labels only
            continue
        if build.dense_weight:
            row["labels"], row["weights"] = dense_labels(record["problem"], record["steps"], record["labels"], ends,
                                                         len(row["input_ids"]), build.dense_weight)
        if build.lm_weight:
            row["lm_labels"] = lm_labels(row["input_ids"], record["labels"], ends, record["steps"],
                                         model.config.delimiter)
    return rows


# ---------------------------------------------------------------------------------------------------
# Models


def _scratch_prm(build: ToyBuild, mode: str):
    tokenizer = build_char_tokenizer(build.max_positions)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=build.hidden_size,
                         intermediate_size=build.intermediate_size, num_hidden_layers=build.num_layers,
                         num_attention_heads=build.num_heads, num_key_value_heads=build.num_heads,
                         max_position_embeddings=build.max_positions, rope_theta=10000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(build.train.seed)
        cls = PPRM if mode == "pairwise" else PRM
        reading = {"pair_reading": build.pair_reading} if mode == "pairwise" else {}
        return cls(LlamaModel(config), tokenizer, PRMConfig(mode=mode, delimiter="\n", **reading))


# ---------------------------------------------------------------------------------------------------
# Builds


def build_toy_prm(out: str | os.PathLike, build: ToyBuild = FULL_BUILD, *, progress: bool = True,
                  replace: bool = False, cache_dir: str | os.PathLike | None = None,
                  storage_dtype: str = "float32", base_dir: str | os.PathLike | None = None) -> Path:
    """Trains a toy PRM and saves it into `out` (atomically), with `train_info.json`.

    A build with init="prm" continues the PRM of its `base` build: `base_dir` when given (checked:
    its files must match its record, and its recorded build must be `build.base`), else the
    shipped first stage (`SHIPPED_BASE`) when it is that build, else the base built into the cache
    (`toy-prm-base-v<FORMAT_VERSION>`, stored in float16 as a shipped folder is), once.

    Args:
        out: the destination folder.
        build: data, model and training settings.
        progress: show progress bars.
        replace: replace an existing `out` (else the existing folder is kept and returned).
        cache_dir: cache root of the tiny policy (for init="policy").
        storage_dtype: the weights' dtype on disk ('float16' halves the folder; loading on a CPU
            restores float32).
        base_dir: the folder of the base build (init="prm"), instead of the cache's.

    Returns:
        `out`.
    """
    out = Path(out).expanduser()
    if out.exists() and not replace:
        return out
    if build.init == "prm" and build.base is None:
        raise ValueError("a toy PRM build with init='prm' continues a base build: set ToyBuild.base")
    started = time.perf_counter()
    base_record = None
    if build.init == "prm":
        base = _base_folder(build.base, base_dir, cache_dir, progress)
        recorded = json.loads((base / TRAIN_INFO).read_text(encoding="utf-8"))
        base_record = {k: recorded.get(k) for k in ("format_version", "code_version", "storage_dtype", "eval")}
        base_record["files"] = folder_hashes(base, TRAIN_INFO)
    records = _training_records(build)
    if build.init == "prm":
        model = PRM.from_pretrained(base, device="cpu")
    elif build.init == "policy":
        model = load_model_for("prm", ensure_toy_policy(cache_dir, progress=progress), delimiter=DELIMITER,
                               seed=build.train.seed)
    else:
        model = _scratch_prm(build, "prm")
    grow_backbone(model, build.extra_layers, seed=build.train.seed)
    policy_depth = build.policy_depth(model.backbone.config.num_hidden_layers)
    rows = _rows(model, records, build)
    data_seconds = time.perf_counter() - started
    loss = build.train.loss or "bce"
    loss_fn = AuxLMLoss(loss, build.lm_weight, policy_depth) if build.lm_weight else None
    info = train_rows(model, rows, build.train, loss=loss, pad_id=model.pad_id, progress=progress,
                      seconds=build.seconds, desc="training the toy PRM", loss_fn=loss_fn)
    metrics = step_metrics(model, _eval_records(build)) if build.eval_traces else {}
    if build.eval_policy_traces:
        metrics.update({f"policy_{k}": v for k, v in step_metrics(model, eval_policy_records(build)).items()})
    data = {"traces": len(records), "steps": sum(len(r["steps"]) for r in records),
            "wrong_steps": sum(r["labels"].count(0) for r in records), "seconds": round(data_seconds, 1)}
    if base_record is not None:
        data["base"] = base_record
    if build.init == "policy" or build.policy_problems or build.policy_focus_problems or build.eval_policy_traces:
        # the policy whose weights or traces went in: a new shipped policy makes this PRM stale
        data["policy"] = {"files": policy_hashes(ensure_toy_policy(cache_dir, progress=False))}
    _save(out, model, build, "treesearch toy prm", data, info, metrics, replace, storage_dtype)
    return out


def _base_folder(base: ToyBuild, base_dir, cache_dir, progress: bool) -> Path:
    if base_dir is not None:
        folder = Path(base_dir).expanduser()
        problems = check_base_folder(folder, base)
        if problems:
            raise ValueError(f"{folder} is not the base build: {problems[0]}")
        return folder
    if not check_base_folder(SHIPPED_BASE, base):
        return SHIPPED_BASE
    folder = toy_cache_dir("prm", root=cache_dir).with_name(f"toy-prm-base-v{FORMAT_VERSION}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if folder.exists() and not check_base_folder(folder, base):
            return folder
        print(f"treesearch: building the toy PRM's first stage into {folder} (once; about 80 minutes of one "
              f"CPU core)", file=sys.stderr, flush=True)
        return build_toy_prm(folder, base, progress=progress, replace=True, cache_dir=cache_dir,
                             storage_dtype="float16")


def build_toy_pprm(out: str | os.PathLike, build: ToyBuild = FULL_PPRM_BUILD, *, progress: bool = True,
                   replace: bool = False, cache_dir: str | os.PathLike | None = None,
                   prm_dir: str | os.PathLike | None = None, quick: bool = False,
                   storage_dtype: str = "float32") -> Path:
    """Trains a toy PPRM on (correct, wrong) trace pairs and saves it into `out` (atomically).

    With init="prm" the backbone starts from the toy PRM's (`prm_dir`, default
    `ensure_toy_prm(cache_dir, quick=quick)`), which already tells wrong steps from right ones (a
    separate-reading PPRM keeps its head too: it starts as the PRM's value at the last step);
    "policy" starts from the tiny policy, "scratch" from a fresh model.
    """
    out = Path(out).expanduser()
    if out.exists() and not replace:
        return out
    started = time.perf_counter()
    pairs = pair_records(_training_records(build), max_pairs_per_problem=build.pairs_per_problem,
                         seed=build.data_seed)
    data_seconds = time.perf_counter() - started
    if build.init == "prm":
        source = prm_dir or ensure_toy_prm(cache_dir, quick=quick, progress=progress)
        model = load_model_for("pprm", source, seed=build.train.seed, pair_reading=build.pair_reading)
    elif build.init == "policy":
        model = load_model_for("pprm", ensure_toy_policy(cache_dir, progress=progress), seed=build.train.seed,
                               pair_reading=build.pair_reading)
    else:
        model = _scratch_prm(build, "pairwise")
    rows = encode_pair_rows(model, pairs, max_length=model.max_length)
    info = train_rows(model, rows, build.train, loss="bce", pad_id=model.pad_id, progress=progress,
                      seconds=build.seconds, desc="training the toy PPRM")
    metrics = {}
    if build.eval_traces:
        held_out = pair_records(_eval_records(build), max_pairs_per_problem=build.pairs_per_problem, seed=EVAL_SEED)
        metrics = pairwise_metrics(model, held_out)
    data = {"traces": len(pairs), "pairs": len(pairs), "seconds": round(data_seconds, 1)}
    _save(out, model, build, "treesearch toy pprm", data, info, metrics, replace, storage_dtype)
    return out


def _save(out: Path, model, build: ToyBuild, kind: str, data: dict, info: dict, metrics: dict, replace: bool,
          storage_dtype: str = "float32") -> None:
    if storage_dtype not in ("float32", "float16"):
        raise ValueError(f"storage_dtype must be 'float32' or 'float16', got {storage_dtype!r}")

    def write(tmp: Path) -> None:
        model.to(getattr(torch, storage_dtype)).save_pretrained(tmp)
        record = {"format_version": FORMAT_VERSION, "kind": kind, "build": dataclasses.asdict(build),
                  "code_version": code_version(), "storage_dtype": storage_dtype, "data": data, "training": info,
                  "eval": metrics, "files": folder_hashes(tmp, TRAIN_INFO)}
        (tmp / TRAIN_INFO).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    try:
        save_atomic(out, write, overwrite=replace)
    except Exception:
        if not replace and out.exists():
            return  # another build finished first: keep it
        raise


# ---------------------------------------------------------------------------------------------------
# Cache


def toy_cache_dir(kind: str = "prm", quick: bool = False, root: str | os.PathLike | None = None) -> Path:
    """`<root>/toy-<kind>-v<FORMAT_VERSION>` (`toy-<kind>-quick-v...` for the quick build), root being
    `$TREESEARCH_CACHE` or `~/.cache/treesearch` (beside the tiny policy's folder)."""
    if kind not in ("prm", "pprm"):
        raise ValueError(f"kind must be 'prm' or 'pprm', got {kind!r}")
    if root is None:
        root = os.environ.get("TREESEARCH_CACHE") or Path.home() / ".cache" / "treesearch"
    return Path(root).expanduser() / (f"toy-{kind}-quick-v{FORMAT_VERSION}" if quick else f"toy-{kind}-v{FORMAT_VERSION}")


def _valid(folder: Path) -> bool:
    return read_record(folder, TRAIN_INFO, FORMAT_VERSION) is not None and (folder / "prm_config.json").is_file()


def check_toy_folder(folder: str | os.PathLike, kind: str) -> list[str]:
    """What is wrong with a toy PRM or PPRM folder as the shipped one (empty: nothing): its record,
    the sha256 of its files, and a recorded build other than the code's full build."""
    build = FULL_BUILD if kind == "prm" else FULL_PPRM_BUILD
    return check_record(folder, TRAIN_INFO, FORMAT_VERSION, f"toy {kind}", {"build": dataclasses.asdict(build)})


def shipped_toy(kind: str) -> Path | None:
    """The toy PRM or PPRM that ships inside the package (`prm/models/toy-<kind>`), when it is there,
    intact and built with the code's full build; else None (then it is built on first use)."""
    return None if check_toy_folder(SHIPPED[kind], kind) else SHIPPED[kind]


def _ensure(kind: str, cache_dir, quick: bool, progress: bool) -> Path:
    if not quick and (shipped := shipped_toy(kind)) is not None:
        return shipped
    folder = toy_cache_dir(kind, quick, cache_dir)
    if _valid(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if _valid(folder):
            return folder
        if folder.exists():
            raise RuntimeError(f"{folder} exists but holds no toy {kind} of format version {FORMAT_VERSION} "
                               f"(no valid {TRAIN_INFO}); delete it or choose another cache_dir")
        what = f"the quick toy {kind.upper()} (seconds)" if quick else (
            "the toy-world PRM (once; about 30 minutes of one CPU core from the shipped first stage, 80 more "
            "without it)"
            if kind == "prm"
            else "the toy-world PPRM (once; under a minute, after the toy PRM)")
        print(f"treesearch: building {what} into {folder}", file=sys.stderr, flush=True)
        if kind == "prm":
            build_toy_prm(folder, QUICK_BUILD if quick else FULL_BUILD, progress=progress, cache_dir=cache_dir)
        else:
            build_toy_pprm(folder, QUICK_PPRM_BUILD if quick else FULL_PPRM_BUILD, progress=progress,
                           cache_dir=cache_dir, quick=quick)
    return folder


def ensure_toy_prm(cache_dir: str | os.PathLike | None = None, *, quick: bool = False,
                   progress: bool = True) -> Path:
    """The toy PRM's folder, built on first use.

    Args:
        cache_dir: the cache root (default `$TREESEARCH_CACHE` or `~/.cache/treesearch`); the model
            is its `toy-prm-v<version>` (or `toy-prm-quick-v<version>`) folder.
        quick: the quick variant (a small model trained from scratch in seconds: for tests).
        progress: show progress bars.

    Returns:
        The folder, ready for `prm.model.PRM.from_pretrained` (and `--prm` of `python -m mcts.search`).
    """
    return _ensure("prm", cache_dir, quick, progress)


def ensure_toy_pprm(cache_dir: str | os.PathLike | None = None, *, quick: bool = False,
                    progress: bool = True) -> Path:
    """The toy PPRM's folder, built on first use (after the toy PRM, whose backbone it starts from)."""
    return _ensure("pprm", cache_dir, quick, progress)


def load_toy_prm(cache_dir=None, *, quick: bool = False, device=None, **overrides):
    """The toy PRM as a `PRM` (built on first use)."""
    return PRM.from_pretrained(ensure_toy_prm(cache_dir, quick=quick), device=device, **overrides)


def load_toy_pprm(cache_dir=None, *, quick: bool = False, device=None, **overrides):
    """The toy PPRM as a `PPRM` (built on first use)."""
    return PPRM.from_pretrained(ensure_toy_pprm(cache_dir, quick=quick), device=device, **overrides)


# ---------------------------------------------------------------------------------------------------
# Command line: python -m prm.toy build [--pprm] [--quick] [--out DIR] [optimisation options]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prm.toy", description="Build the toy world's PRM or PPRM.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="train and save (replacing the folder)")
    build.add_argument("--pprm", action="store_true", help="the pairwise model instead of the PRM")
    build.add_argument("--quick", action="store_true", help="the quick variant (seconds; for tests)")
    build.add_argument("--out", help="folder (default: the cache folder)")
    build.add_argument("--ship", action="store_true", help="the full build into the package's folder "
                       "(prm/models/toy-<kind>, weights stored in float16), with its record and file hashes")
    build.add_argument("--seconds", type=float, help="train for about this many seconds")
    build.add_argument("--init", choices=("policy", "prm", "scratch"), help="start from the tiny policy's weights, "
                       "a toy PRM's (the base build's; PPRM builds: the toy PRM) or from scratch (default: the build's)")
    build.add_argument("--base", metavar="DIR", help="PRM builds that continue a base build: its folder (checked "
                       "against its record; default: the shipped first stage, prm/models/toy-prm-stage1, else one built "
                       "once into the cache)")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(build.add_argument_group("optimisation (each replaces the build's setting)"))
    return parser


def _build_cli(args: argparse.Namespace) -> int:
    kind = "pprm" if args.pprm else "prm"
    if kind == "pprm":
        build = QUICK_PPRM_BUILD if args.quick else FULL_PPRM_BUILD
    else:
        build = QUICK_BUILD if args.quick else FULL_BUILD
    changes = {}
    if args.seconds is not None:
        changes["seconds"] = args.seconds
    if args.init is not None:
        changes["init"] = args.init
    try:
        build = dataclasses.replace(build, **changes)
    except ValueError as err:
        raise TrainError(str(err)) from None
    build = dataclasses.replace(build, train=config_from_args(args, build.train))
    if args.ship and (args.quick or args.out or build != (FULL_PPRM_BUILD if kind == "pprm" else FULL_BUILD)):
        raise TrainError("--ship writes the full build as the code configures it: no --quick, --out or overrides")
    out = SHIPPED[kind] if args.ship else Path(args.out) if args.out else toy_cache_dir(kind, args.quick)
    storage = "float16" if args.ship else "float32"
    started = time.perf_counter()
    if kind == "pprm":
        build_toy_pprm(out, build, progress=not args.no_progress, replace=True, quick=args.quick, storage_dtype=storage)
    else:
        try:
            build_toy_prm(out, build, progress=not args.no_progress, replace=True, storage_dtype=storage,
                          base_dir=args.base)
        except ValueError as err:
            raise TrainError(str(err)) from None
    record = json.loads((out / TRAIN_INFO).read_text(encoding="utf-8"))
    summary = [("kind", kind), ("init", record["build"]["init"]), ("traces", record["data"]["traces"]),
               ("data seconds", record["data"]["seconds"]),
               ("steps", record["training"]["steps"]), ("train seconds", record["training"]["train_seconds"]),
               ("final loss", record["training"]["final_loss"])]
    summary += [(f"held-out {k}", v) for k, v in record.get("eval", {}).items()]
    summary.append(("total seconds", round(time.perf_counter() - started, 1)))
    print(summary_table(summary))
    print(f"saved: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return _build_cli(args)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
