"""Training the PRM, the ORM and the pairwise PPRM, and `python -m prm.train`.

Every model here is a backbone with a scalar head that reads chosen positions (`prm.model`); a
training row is token ids plus one float label per position, `IGNORE_INDEX` everywhere but the
positions that carry loss (rows, batches and losses: `prm.rows`). One loop trains them all
(`mcts.policy.training.train_loop`, the project's one training loop; `train_rows` feeds it rows):

    rows grouped by length into batches -> Accelerator (CPU, one GPU, or `accelerate launch`)
    gradient accumulation, AdamW, linear warmup then cosine decay, gradient clipping
    loss on the labelled positions only: BCE (hard 0/1 labels) or MSE of the sigmoid (soft values)
    checkpoints every `save_every` steps into `<out>.checkpoints/step-N`; `--resume` goes on from
    the newest; the final model is written into a temporary folder beside `--out`, then renamed

Command line (data files only; the toy world's PRM and PPRM are built by `python -m prm.toy build`):

    python -m prm.train --data FILE --backbone DIR --out DIR [--kind prm|orm|pprm] [--loss mse|bce]

Bad data (`prm.data.StepDataError`) and bad arguments print one line and exit with status 2,
leaving nothing behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from accelerate import PartialState

from prm.data import StepDataError, load_pair_dataset, read_step_records
from prm.metrics import pairwise_metrics, step_metrics
from prm.model import CONFIG_FILE, PRM, PRMConfig, read_config
from prm.pairwise import PPRM
from prm.rows import batch_order, collate, encode_pair_rows, encode_step_rows, masked_loss, pair_logits
from mcts.options import add_flags, flag_message, flag_values
from mcts.policy.torch_utils import default_threads
from mcts.policy.training import LOSSES, TrainConfig, TrainError, train_loop

# encode_step_rows and encode_pair_rows stay importable from here (self-training reads them).
__all__ = [
    "KINDS", "LOSSES", "TRAIN_INFO", "TrainConfig", "TrainError", "add_config_arguments", "config_from_args",
    "default_threads", "load_model_for", "main", "make_parser",
    "save_atomic", "summary_table", "train_rows",
]

KINDS = ("prm", "orm", "pprm")
TRAIN_INFO = "train_info.json"



# ---------------------------------------------------------------------------------------------------
# The loop


def _fingerprint(config: TrainConfig, rows: Sequence[Mapping], loss: str) -> dict:
    h = hashlib.blake2b(digest_size=8)
    for r in rows:
        h.update(len(r["input_ids"]).to_bytes(4, "little"))
        h.update(json.dumps(r["labels"][-1]).encode())
    keep = ("epochs", "max_steps", "batch_size", "grad_accum", "seed")
    return {"rows": len(rows), "data_hash": h.hexdigest(), "loss": loss,
            **{k: getattr(config, k) for k in keep}}


def train_rows(model: "torch.nn.Module", rows: Sequence[Mapping], config: TrainConfig, *, loss: str,
               pad_id: int, checkpoint_dir: Path | None = None, resume: bool = False, progress: bool = True,
               seconds: float | None = None, desc: str = "training",
               loss_fn: Callable[["torch.nn.Module", dict], "torch.Tensor"] | None = None) -> dict:
    """Trains `model` (forward(input_ids, attention_mask) -> [B, T] logits) on labelled rows.

    Args:
        model: modified in place, left in eval mode (unwrapped) on return.
        rows: [R] {"input_ids", "labels"} (see `prm.model.tokenize_row`).
        config: optimisation settings.
        loss: "bce" or "mse".
        pad_id: padding token id.
        checkpoint_dir: where `step-N` checkpoints go (with `config.save_every`), and where
            `resume` looks for the newest one.
        resume: go on from the newest checkpoint in `checkpoint_dir` (same data and settings).
        progress: show a tqdm bar.
        seconds: stop after about this many seconds of training (the schedule is set from the speed
            of the first steps); None: epochs/max_steps decide.
        desc: the progress bar's label.
        loss_fn: (model, batch) -> scalar loss, replacing the masked head loss (the policy's SFT
            passes its language-model loss here: same batching, schedule, checkpoints, accelerate).

    Returns:
        info: steps, seconds, first and final loss (means over the first and last min(20, steps / 5)
        steps), threads, processes, rows.
    """
    if not rows:
        raise ValueError("no training rows")

    def batches(accelerator) -> tuple:
        order = batch_order([len(r["input_ids"]) for r in rows], config.batch_size, config.epochs, config.seed)
        loader = torch.utils.data.DataLoader(list(rows), batch_sampler=order, collate_fn=lambda b: collate(b, pad_id))
        return loader, max(1, math.ceil(len(order) / accelerator.num_processes) // config.grad_accum)

    def head_loss(model, batch) -> torch.Tensor:
        if "input_ids_b" in batch:  # Bradley-Terry pairs: the logistic loss of s(a) - s(b)
            diff = pair_logits(model(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"],
                               model(batch["input_ids_b"], batch["attention_mask_b"]), batch["attention_mask_b"])
            rows_idx = torch.arange(diff.shape[0], device=diff.device)
            target = batch["labels"][rows_idx, batch["attention_mask"].sum(1) - 1]
            return masked_loss(diff[:, None], target[:, None], "bce")
        return masked_loss(model(batch["input_ids"], batch["attention_mask"]), batch["labels"], loss, batch.get("weights"))

    info = train_loop(model, config, batches, loss_fn=loss_fn or head_loss, fingerprint=_fingerprint(config, rows, loss),
                      checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, seconds=seconds, desc=desc)
    return {**info, "rows": len(rows), "loss": loss}


def save_atomic(out: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Runs `write(tmp)` on a temporary folder beside `out`, then renames it to `out`.

    An existing `out` is replaced only with `overwrite` (else TrainError); a failed write leaves
    nothing behind.
    """
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise TrainError(f"{out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------------
# Models to train


def load_model_for(kind: str, backbone: str | Path, *, delimiter: str | None = None, max_length: int | None = None,
                   seed: int = 0, device: str | None = "cpu", pair_reading: str | None = None):
    """The model to train: a PRM/ORM/PPRM folder of the same kind goes on training (head kept);
    any other model folder (a causal LM, a PRM of another kind) gives its backbone a fresh head,
    except that a separate-reading PPRM made from a PRM or ORM folder keeps its head (the value at
    a solution's last step is already a score of the solution).

    Args:
        kind: "prm", "orm" or "pprm".
        backbone: a local model folder.
        delimiter: the step delimiter of a fresh model (None: keep a saved model's, else "\\n").
        max_length: reading limit (None: the backbone's).
        seed: seed of a fresh head.
        device: where to put it (accelerate moves it to the GPU when it uses one).
        pair_reading: a PPRM's reading, "joint" or "separate" (`prm.model.PRMConfig`); None: a saved
            PPRM's, else "joint".
    """
    folder = Path(backbone).expanduser()
    mode = {"prm": "prm", "orm": "orm", "pprm": "pairwise"}[kind]
    cls = PPRM if kind == "pprm" else PRM
    overrides = {"max_length": max_length} if max_length else {}
    if kind == "pprm" and pair_reading is not None:
        overrides["pair_reading"] = pair_reading
    if (folder / CONFIG_FILE).exists():
        config, _ = read_config(folder)
        if config.mode == mode:
            if delimiter is not None:
                overrides["delimiter"] = delimiter
            return cls.from_pretrained(folder, device=device, dtype=torch.float32, **overrides).train()
        delimiter = delimiter or config.delimiter
        if kind == "pprm" and pair_reading == "separate" and config.mode in ("prm", "orm"):
            source = PRM.from_pretrained(folder, device="cpu", dtype=torch.float32)
            fresh = PRMConfig(mode=mode, delimiter=delimiter, **overrides)
            return PPRM(source.backbone, source.tokenizer, fresh, head=source.head).to(device).train()
    config = PRMConfig(mode=mode, delimiter=delimiter or "\n", **overrides)
    return cls.from_backbone(folder, config, device=device, seed=seed)


# ---------------------------------------------------------------------------------------------------
# Command line


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prm.train",
        description="Train a PRM (step values), an ORM (outcomes) or a pairwise PPRM on step-labelled data "
                    "(the toy world's PRM and PPRM: python -m prm.toy build).")
    io = parser.add_argument_group("data and models")
    io.add_argument("--data", help="training file: JSONL/Parquet step records (problem, steps, labels/values), "
                    "PRM800K or Math-Shepherd lines, or pairs (problem, chosen, rejected) for --kind pprm")
    io.add_argument("--format", default="auto", choices=("auto", "steps", "prm800k", "math_shepherd"),
                    help="format of --data (auto: from the first record)")
    io.add_argument("--eval-data", help="held-out file in the same format, evaluated at the end")
    io.add_argument("--backbone", help="a local model folder: a causal LM (a fresh head is put on it) or a "
                    "saved model of the same --kind (training goes on)")
    io.add_argument("--out", help="output folder (written atomically)")
    io.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    io.add_argument("--kind", default="prm", choices=KINDS, help="prm (every step), orm (the last step), "
                    "pprm (pairs)")
    io.add_argument("--pair-reading", choices=("joint", "separate"), default=None, help="--kind pprm: both "
                    "solutions in one sequence (joint), or each alone with P(a > b) = sigmoid(s(a) - s(b)) "
                    "(separate: Bradley-Terry; from a PRM folder its head is kept); default: a saved PPRM's, "
                    "else joint")
    io.add_argument("--target", choices=("labels", "values"), help="which targets to fit (default: labels "
                    "when the data has them, else values)")
    io.add_argument("--delimiter", default=None, help="step delimiter of a fresh model (default '\\n'; "
                    "'\\n\\n' for MATH-style models; escapes are read)")
    io.add_argument("--resume", action="store_true", help="go on from the newest checkpoint in <out>.checkpoints")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser.add_argument_group("optimisation"))
    return parser


def add_config_arguments(group) -> None:
    """One option per `TrainConfig` field (`--batch-size`, ...), each defaulting to None (unset)."""
    add_flags(group, TrainConfig, choices={"loss": LOSSES}, unset=True)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default `TrainConfig()`) with the options of `add_config_arguments` that were set;
    a bad value raises TrainError."""
    base = base or TrainConfig()
    changes = flag_values(TrainConfig, args, given=True)
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as err:
        raise TrainError(flag_message(str(err), TrainConfig)) from None


def summary_table(rows: Sequence[tuple[str, object]]) -> str:
    """(key, value) rows as the CLIs' end-of-run table (floats to 4 decimals, trailing zeros cut)."""
    width = max(len(k) for k, _ in rows)
    lines = ["-" * (width + 14)]
    for key, value in rows:
        shown = f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    lines.append("-" * (width + 14))
    return "\n".join(lines)


def _train_cli(args: argparse.Namespace) -> int:
    for name in ("data", "backbone", "out"):
        if not getattr(args, name):
            raise TrainError(f"--{name} is required (the toy world's models: python -m prm.toy build)")
    config = config_from_args(args)
    delimiter = args.delimiter.encode().decode("unicode_escape") if args.delimiter else None
    # Read and check everything before anything is written.
    if args.kind == "pprm":
        train_records = list(load_pair_dataset(args.data))
        eval_records = list(load_pair_dataset(args.eval_data)) if args.eval_data else None
        target = None
    else:
        train_records = read_step_records(args.data, args.format)
        eval_records = read_step_records(args.eval_data, args.format) if args.eval_data else None
        target = args.target or ("labels" if "labels" in train_records[0] else "values")
        if target not in train_records[0]:
            raise TrainError(f"--target {target}: {args.data} has no {target!r} field")
    loss = config.loss or ("bce" if target in ("labels", None) else "mse")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise TrainError(f"{out} exists; pass --overwrite to replace it")
    try:
        model = load_model_for(args.kind, args.backbone, delimiter=delimiter, max_length=config.max_length,
                               seed=config.seed, pair_reading=args.pair_reading if args.kind == "pprm" else None)
    except (OSError, ValueError) as err:
        raise TrainError(f"--backbone {args.backbone}: {err}") from None
    limit = config.max_length or model.max_length
    if args.kind == "pprm":
        rows = encode_pair_rows(model, train_records, max_length=limit)
    else:
        rows = encode_step_rows(model, train_records, target=target, mode=args.kind, max_length=limit)
    checkpoints = out.parent / f"{out.name}.checkpoints"
    started = time.perf_counter()
    info = train_rows(model, rows, config, loss=loss, pad_id=model.pad_id, checkpoint_dir=checkpoints,
                      resume=args.resume, progress=not args.no_progress, desc=f"training the {args.kind}")
    summary: list[tuple[str, object]] = [
        ("kind", args.kind), ("loss", loss), ("target", target or "pairs"), ("rows", info["rows"]),
        ("steps", info["steps"]), ("train seconds", info["train_seconds"]),
        ("first loss", info["first_loss"]), ("final loss", info["final_loss"])]
    metrics = {}
    if eval_records is not None:
        metrics = (pairwise_metrics(model, eval_records) if args.kind == "pprm"
                   else step_metrics(model, eval_records))
        summary += [(f"eval {k}", v) for k, v in metrics.items()]

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        record = {"kind": args.kind, "data": str(args.data), "eval_data": args.eval_data, "target": target,
                  "train_config": dataclasses.asdict(config), "training": info, "eval": metrics}
        (tmp / TRAIN_INFO).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    if PartialState().is_main_process:
        save_atomic(out, write, overwrite=args.overwrite)
        shutil.rmtree(checkpoints, ignore_errors=True)
    summary.append(("total seconds", round(time.perf_counter() - started, 1)))
    print(summary_table(summary))
    print(f"saved: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--toy" in argv:  # checked before parsing, so that `--toy --quick` still gets this line
        print("error: --toy moved: the toy world's PRM and PPRM are built by `python -m prm.toy build "
              "[--pprm] [--quick] [--out DIR]`", file=sys.stderr)
        return 2
    args = make_parser().parse_args(argv)
    try:
        return _train_cli(args)
    except (TrainError, StepDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
