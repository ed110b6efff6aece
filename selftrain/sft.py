"""Supervised fine-tuning of the policy on harvested solutions (loss on the solution tokens only).

A training row is exactly what the policy sees and then generates: the prompt of the problem as
`HFPolicy` renders it (the chat template once per problem, or the plain `problem + delimiter`),
then the solution's steps and EOS. The prompt's tokens carry no loss. Training runs through
`prm.train.train_rows` with a language-model loss (the same length-bucketed batches, schedule,
accelerate, checkpoints and resume as the PRM), full fine-tuning or LoRA (peft; the adapter is
merged into the saved folder, so the result loads like any model, in transformers and in vLLM).

    sft_policy(base_dir, traces, out_dir, SFTConfig())    -> out_dir (written atomically)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from prm.train import TrainConfig, save_atomic, train_rows
from mcts.options import option

__all__ = ["SFTConfig", "encode_sft_rows", "sft_policy"]

IGNORE_INDEX = -100



@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """How the policy is fine-tuned on harvested solutions."""

    epochs: float = option(3.0, "passes over the harvested solutions")
    max_steps: int | None = option(None, "stop after this many optimizer steps")
    batch_size: int = option(32, "solutions per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-3,
        "peak learning rate (the toy policy trains at 5e-3 from scratch; real models want ~1e-5 full, ~1e-4 LoRA)")
    warmup_ratio: float = option(0.05, "fraction of the steps of linear warmup")
    min_lr_ratio: float = option(0.1, "final LR as a fraction of the peak")
    weight_decay: float = option(0.01, "AdamW weight decay on matrices")
    lora: bool = option(False, "train a LoRA adapter (peft) instead of every weight")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_targets: tuple[str, ...] = option(("q_proj", "k_proj", "v_proj", "o_proj"), "module names LoRA adapts")
    save_every: int | None = option(50,
        "checkpoint every this many optimizer steps (resume after a crash); None: none")
    max_length: int | None = option(None, "most tokens per row (None: the model's)")

    def __post_init__(self):
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"lora_r and lora_alpha must be >= 1, got {self.lora_r}, {self.lora_alpha}")

    def train_config(self, seed: int, num_threads: int | None, device: str = "auto") -> TrainConfig:
        return TrainConfig(epochs=self.epochs, max_steps=self.max_steps, batch_size=self.batch_size,
                           grad_accum=self.grad_accum, lr=self.lr, warmup_ratio=self.warmup_ratio,
                           min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay,
                           save_every=self.save_every, seed=seed, num_threads=num_threads, device=device,
                           max_length=self.max_length)


def encode_sft_rows(policy, traces: Sequence[Mapping], max_length: int | None = None) -> list[dict]:
    """{"input_ids", "labels"} rows of solutions: the policy's prompt (no loss), the steps and EOS.

    Args:
        policy: an `HFPolicy` (its tokenizer, prompt rendering, delimiter and EOS).
        traces: [{"problem", "steps"}]; each step ends with the delimiter.
        max_length: longer rows lose their start (the prompt first).
    """
    from mcts.policy.base import Prefix

    tokenizer = policy.tokenizer
    prompts = policy.prompt_ids([Prefix(t["problem"], ()) for t in traces])
    eos = policy.eos_ids[0]
    rows = []
    for prompt, trace in zip(prompts, traces):
        body = tokenizer("".join(trace["steps"]), add_special_tokens=False)["input_ids"] + [eos]
        ids = list(prompt) + body
        labels = [IGNORE_INDEX] * len(prompt) + body
        if max_length is not None and len(ids) > max_length:
            ids, labels = ids[-max_length:], labels[-max_length:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _lm_loss(model, batch: dict):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["labels"].long(), use_cache=False).loss


def _wrap_lora(model, config: SFTConfig):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("SFTConfig.lora needs peft: pip install peft") from None
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in names]
    if not targets:
        raise ValueError(f"lora_targets {list(config.lora_targets)} name no module of this model")
    return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets,
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))


def sft_policy(base: str | Path, traces: Sequence[Mapping], out: str | Path, config: SFTConfig = SFTConfig(), *,
               seed: int = 0, num_threads: int | None = None, progress: bool = True, resume: bool = True,
               device: str = "auto", preset: str | None = None) -> dict:
    """Fine-tunes the policy folder `base` on `traces` and saves it to `out` (atomically).

    Checkpoints go to `<out>.checkpoints` every `config.save_every` steps; with `resume` an
    interrupted run goes on from the newest one (same data and settings give the same model as an
    uninterrupted run). The checkpoints are removed once `out` is written.

    Returns:
        the training info (steps, seconds, losses, rows) also written to `out/sft_info.json`.
    """
    import torch

    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig, POLICY_FILE

    base, out = Path(base), Path(out)
    if not traces:
        raise ValueError("no solutions to fine-tune on")
    options = {"device": "cpu", "dtype": "float32"}
    if preset is not None:  # render the prompts as the searches that found the solutions did
        from mcts.policy.presets import preset_fields

        options = preset_fields(preset, **options)
    policy = HFPolicy.from_pretrained(base, HFPolicyConfig(**options))
    model = policy.model
    rows = encode_sft_rows(policy, traces, config.max_length or policy.max_context)
    torch.manual_seed(seed)
    if config.lora:
        model = _wrap_lora(model, config)
    checkpoints = out.parent / f"{out.name}.checkpoints"
    resume = resume and checkpoints.is_dir() and any(checkpoints.glob("step-*"))
    info = train_rows(model, rows, config.train_config(seed, num_threads, device), loss="lm", pad_id=policy.pad_id,
                      checkpoint_dir=checkpoints, resume=resume, progress=progress, desc="policy SFT",
                      loss_fn=_lm_loss)
    if config.lora:
        model = model.merge_and_unload()
    model = model.to("cpu").eval()
    info.update(traces=len(traces), tokens=sum(len(r["input_ids"]) for r in rows), lora=config.lora,
                base=str(base), resumed=resume)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        policy.tokenizer.save_pretrained(folder)
        if (base / POLICY_FILE).exists():
            shutil.copy(base / POLICY_FILE, folder / POLICY_FILE)
        (folder / "sft_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

    from accelerate import PartialState

    if PartialState().is_main_process:  # under `accelerate launch` one process writes
        save_atomic(out, write, overwrite=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return info
