"""The one training loop of the project: every model it trains goes through `train_loop`.

    TrainConfig                     optimisation settings (AdamW, warmup then cosine, clipping,
                                    accumulation, checkpoints, threads, device)
    train_loop(model, config, batches, loss_fn=...)   trains `model` in place; returns its info
    lr_factor(total, warmup, min_ratio)               the schedule, as a function of the step

Who uses it: `prm.train.train_rows` (the PRM, ORM and PPRM, on labelled rows: length-bucketed
batches, resumable), `selftrain.sft` (the policy's fine-tuning, with a language-model loss) and
`mcts.envs.toy_training` (the toy policy's build, on an endless stream of fresh traces). The loop
runs on accelerate (CPU, one GPU, or one process per GPU under `accelerate launch`): gradient
accumulation, AdamW (decay on matrices only; a `head.` parameter group with its own rate), linear
warmup then cosine decay to `min_lr_ratio`, gradient clipping, checkpoints every `save_every`
steps (the two newest kept) and resumption from the newest with the same data fingerprint.

It sits with the policies (below `prm`) because the toy policy's build, in `mcts.envs`, needs it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from mcts.options import option, require
from mcts.policy.torch_utils import default_threads

__all__ = ["LOSSES", "TrainConfig", "TrainError", "lr_factor", "train_loop"]

LOSSES = ("bce", "mse")


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


def lr_factor(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warmup over `warmup` steps, then cosine decay
    to `min_ratio` at step `total`."""
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


Batches = Callable[[Accelerator], "tuple[Iterable[Mapping[str, Any]], int]"]


def _on_device(batch: Mapping[str, Any], device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_loop(model: "torch.nn.Module", config: TrainConfig, batches: Batches, *,
               loss_fn: Callable[["torch.nn.Module", dict], "torch.Tensor"],
               warmup: Callable[[int], int] | None = None, fingerprint: Mapping | None = None,
               checkpoint_dir: Path | None = None, resume: bool = False, progress: bool = True,
               seconds: float | None = None, desc: str = "training") -> dict:
    """Trains `model` in place (left unwrapped, in eval mode) and returns its info.

    Args:
        config: optimisation settings (`max_steps` caps the step count `batches` gives).
        batches: (accelerator) -> (batches, total steps): a torch DataLoader (prepared by accelerate:
            sharded over processes, moved to the device, resumable) or any other iterable of
            dict batches (an endless stream, say: moved to the device, not resumable).
        loss_fn: (model, batch) -> scalar loss.
        warmup: total steps -> warmup steps (default: `config.warmup_ratio` of them).
        fingerprint: what a checkpoint must match to be resumed (the data and settings).
        checkpoint_dir: where `step-N` checkpoints go (with `config.save_every`) and where `resume`
            looks for the newest one.
        seconds: stop after about this many seconds (the step count is set from the speed of the
            first steps); None: the steps `batches` gives decide.
        desc: the progress bar's label.

    Returns:
        {steps, train_seconds, threads, processes, first_loss, final_loss (means over the first and
        last min(20, steps / 5) steps), parameters}.
    """
    warmup = warmup or (lambda total: int(config.warmup_ratio * total))
    threads = config.num_threads or default_threads()
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cpu = config.device == "cpu"
        accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, cpu=cpu,
                                  mixed_precision="no" if cpu else config.mixed_precision)
        set_seed(config.seed)
        loader, total = batches(accelerator)
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        head = [p for n, p in model.named_parameters() if n.startswith("head.")]
        body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        groups = [{"params": [p for p in body if p.ndim >= 2], "weight_decay": config.weight_decay, "lr": config.lr},
                  {"params": [p for p in body if p.ndim < 2], "weight_decay": 0.0, "lr": config.lr},
                  {"params": head, "weight_decay": 0.0, "lr": config.head_lr or config.lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.95), eps=1e-8)
        schedule_total = [total]  # set from the measured speed when training for `seconds`
        warmup_steps = [warmup(total)]

        def factor(tick: int) -> float:
            step = tick // accelerator.num_processes  # the prepared scheduler ticks once per process
            return lr_factor(schedule_total[0], warmup_steps[0], config.min_lr_ratio)(step)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        model.train()
        prepared = isinstance(loader, torch.utils.data.DataLoader)
        if prepared:
            model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        else:
            model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
            loader = (_on_device(b, accelerator.device) for b in loader)

        step, skip = 0, 0
        if resume:
            if not prepared:
                raise TrainError("resume needs a DataLoader of batches (a stream cannot be skipped into)")
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
                value = loss_fn(model, batch)
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
                warmup_steps[0] = warmup(schedule_total[0])
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
            "processes": accelerator.num_processes, "first_loss": mean(losses[:k]), "final_loss": mean(losses[-k:]),
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
