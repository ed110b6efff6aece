"""Training the PRM, the ORM and the pairwise PPRM, and `python -m prm.train`.

Every model here is a backbone with a scalar head that reads chosen positions (`prm.model`); a
training row is token ids plus one float label per position, `IGNORE_INDEX` everywhere but the
positions that carry loss (rows, batches and losses: `prm.rows`). One loop trains them all:

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
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from prm.data import StepDataError, load_pair_dataset, read_step_records
from prm.metrics import pairwise_metrics, step_metrics
from prm.model import CONFIG_FILE, PRM, PRMConfig, read_config
from prm.pairwise import PPRM
from prm.rows import batch_order, collate, encode_pair_rows, encode_step_rows, masked_loss, pair_logits
from mcts.options import add_flags, flag_message, flag_values, option, require
from mcts.policy.torch_utils import default_threads

# encode_step_rows and encode_pair_rows stay importable from here (self-training reads them).
__all__ = [
    "KINDS", "LOSSES", "TRAIN_INFO", "TrainConfig", "TrainError", "add_config_arguments", "config_from_args",
    "default_threads", "load_model_for", "main", "make_parser",
    "save_atomic", "summary_table", "train_rows",
]

KINDS = ("prm", "orm", "pprm")
LOSSES = ("bce", "mse")
TRAIN_INFO = "train_info.json"



class TrainError(Exception):
    """A bad argument or input: printed as one line by the CLI (exit status 2), nothing written."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by the PRM, ORM and PPRM."""

    loss: str | None = option(None,
        "bce (hard 0/1 labels; soft ones work too) or mse (of the sigmoid, for soft values); "
        "None: bce when training on labels, mse on values")
    epochs: float = option(1.0, "passes over the data (fractions allowed)")
    max_steps: int | None = option(None,
        "stop after this many optimizer steps (None: the epochs decide)")
    batch_size: int = option(16, "sequences per micro-batch (per process)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(5e-5, "peak learning rate of the backbone (AdamW)")
    head_lr: float | None = option(None,
        "peak learning rate of the head (None: lr; with Adam much more makes the fresh head's logits jump)")
    warmup_ratio: float = option(0.05, "fraction of the steps of linear warmup")
    min_lr_ratio: float = option(0.1, "final LR as a fraction of the peak (cosine)")
    weight_decay: float = option(0.01, "AdamW weight decay on matrices")
    grad_clip: float = option(1.0, "gradient norm clip")
    max_length: int | None = option(None,
        "most tokens per sequence (longer ones lose their start); None: the backbone's limit")
    seed: int = option(0, "seed of the head and the batch order")
    save_every: int | None = option(None,
        "checkpoint every this many optimizer steps (None: no checkpoints)")
    num_threads: int | None = option(None,
        "torch CPU threads (None: the CPUs not kept busy by other processes)")
    device: str = option("auto",
        "'auto' (what accelerate picks: the GPU when there is one), or 'cpu'")
    mixed_precision: str = option("no",
        "accelerate's mixed precision on GPU: 'no', 'bf16' or 'fp16'")

    def __post_init__(self):
        require(self.loss is None or self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        require(math.isfinite(self.epochs) and self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        require(self.max_steps is None or self.max_steps >= 1, f"max_steps must be None or >= 1, got {self.max_steps}")
        require(self.batch_size >= 1 and self.grad_accum >= 1,
             f"batch_size and grad_accum must be >= 1, got {self.batch_size}, {self.grad_accum}")
        require(self.lr > 0 and (self.head_lr is None or self.head_lr > 0),
             f"lr and head_lr must be > 0, got {self.lr}, {self.head_lr}")
        require(0 <= self.warmup_ratio < 1 and 0 <= self.min_lr_ratio <= 1,
             f"need 0 <= warmup_ratio < 1 and 0 <= min_lr_ratio <= 1, got {self.warmup_ratio}, {self.min_lr_ratio}")
        require(self.weight_decay >= 0 and self.grad_clip > 0,
             f"need weight_decay >= 0 and grad_clip > 0, got {self.weight_decay}, {self.grad_clip}")
        require(self.max_length is None or self.max_length >= 2, f"max_length must be None or >= 2, got {self.max_length}")
        require(self.save_every is None or self.save_every >= 1, f"save_every must be None or >= 1, got {self.save_every}")
        require(self.num_threads is None or self.num_threads >= 1, f"num_threads must be None or >= 1, got {self.num_threads}")
        require(self.device in ("auto", "cpu"), f"device must be 'auto' or 'cpu', got {self.device!r}")
        require(self.mixed_precision in ("no", "bf16", "fp16"),
             f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")


# ---------------------------------------------------------------------------------------------------
# The loop


def _lr_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _checkpoints(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


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
    threads = config.num_threads or default_threads()
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cpu = config.device == "cpu"
        accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, cpu=cpu,
                                  mixed_precision="no" if cpu else config.mixed_precision)
        set_seed(config.seed)
        batches = batch_order([len(r["input_ids"]) for r in rows], config.batch_size, config.epochs, config.seed)
        loader = torch.utils.data.DataLoader(list(rows), batch_sampler=batches,
                                             collate_fn=lambda b: collate(b, pad_id))
        per_process = math.ceil(len(batches) / accelerator.num_processes)
        total = max(1, per_process // config.grad_accum)
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        head = [p for n, p in model.named_parameters() if n.startswith("head.")]
        body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        groups = [{"params": [p for p in body if p.ndim >= 2], "weight_decay": config.weight_decay, "lr": config.lr},
                  {"params": [p for p in body if p.ndim < 2], "weight_decay": 0.0, "lr": config.lr},
                  {"params": head, "weight_decay": 0.0, "lr": config.head_lr or config.lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.95), eps=1e-8)
        schedule_total = [total]  # set from the measured speed when training for `seconds`
        warmup = [int(config.warmup_ratio * total)]

        def factor(tick: int) -> float:
            step = tick // accelerator.num_processes  # the prepared scheduler ticks once per process
            return _lr_lambda(schedule_total[0], warmup[0], config.min_lr_ratio)(step)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        model.train()
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

        fingerprint = _fingerprint(config, rows, loss)
        step, skip = 0, 0
        if resume:
            found = _checkpoints(checkpoint_dir)
            if not found:
                raise TrainError(f"--resume: no checkpoint in {checkpoint_dir}")
            with open(found[-1] / "progress.json", encoding="utf-8") as handle:
                saved = json.load(handle)
            if saved["fingerprint"] != fingerprint:
                raise TrainError(f"--resume: {found[-1]} was made with other data or settings "
                                 f"({saved['fingerprint']} vs {fingerprint})")
            accelerator.load_state(str(found[-1]))
            step = saved["step"]
            skip = step * config.grad_accum
        loop_loader = accelerator.skip_first_batches(loader, skip) if skip else loader

        losses: list[float] = []
        window: list[float] = []
        started = time.perf_counter()
        calibrate_at = min(10, max(1, total // 10)) if seconds else None
        bar = tqdm(total=total, initial=step, desc=desc, unit="step", dynamic_ncols=True,
                   disable=not progress or not accelerator.is_local_main_process)
        for batch in loop_loader:
            if step >= schedule_total[0]:
                break
            with accelerator.accumulate(model):
                if loss_fn is not None:
                    value = loss_fn(model, batch)
                elif "input_ids_b" in batch:  # Bradley-Terry pairs: the logistic loss of s(a) - s(b)
                    diff = pair_logits(model(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"],
                                       model(batch["input_ids_b"], batch["attention_mask_b"]), batch["attention_mask_b"])
                    rows_idx = torch.arange(diff.shape[0], device=diff.device)
                    target = batch["labels"][rows_idx, batch["attention_mask"].sum(1) - 1]
                    value = masked_loss(diff[:, None], target[:, None], "bce")
                else:
                    logits = model(batch["input_ids"], batch["attention_mask"])
                    value = masked_loss(logits, batch["labels"], loss, batch.get("weights"))
                accelerator.backward(value)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window.append(value.item())
            if not accelerator.sync_gradients:
                continue
            losses.append(sum(window) / len(window))
            window = []
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
            if calibrate_at is not None and step == calibrate_at:
                per_step = (time.perf_counter() - started) / step
                schedule_total[0] = max(step + 1, min(total, int(seconds / per_step)))
                warmup[0] = int(config.warmup_ratio * schedule_total[0])
                bar.total = schedule_total[0]
                bar.refresh()
            if config.save_every and checkpoint_dir is not None and step % config.save_every == 0:
                _save_checkpoint(accelerator, checkpoint_dir, step, fingerprint)
        bar.close()
        elapsed = time.perf_counter() - started
        accelerator.wait_for_everyone()
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        accelerator.free_memory()
    finally:
        torch.set_num_threads(before_threads)
    mean = lambda xs: round(sum(xs) / len(xs), 5) if xs else None  # noqa: E731
    k = max(1, min(20, len(losses) // 5))  # the loss windows compared: up to 20 steps, never overlapping
    return {"steps": step, "train_seconds": round(elapsed, 1), "threads": threads,
            "processes": accelerator.num_processes, "rows": len(rows), "loss": loss,
            "first_loss": mean(losses[:k]), "final_loss": mean(losses[-k:]),
            "parameters": sum(p.numel() for p in unwrapped.parameters())}


def _save_checkpoint(accelerator, folder: Path, step: int, fingerprint: dict) -> None:
    """accelerate state (model, optimizer, scheduler, RNG) into folder/step-N, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".step-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint}), encoding="utf-8")
        os.replace(tmp, folder / f"step-{step}")
        for old in _checkpoints(folder)[:-2]:  # keep the two newest
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


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
