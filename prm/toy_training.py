"""What the full toy PRM build trains with beyond step-end labels (`prm.toy`, whose docstring says
why each is there and what it bought).

    dense_labels(...)    per-token labels of a toy trace: 1 while a step agrees with the canonical
                         one, 0 from the first character where it does not
    lm_labels(...)       next-token targets on the tokens of the correct steps
    grow_backbone(...)   blocks added on top of a Llama-like backbone, starting as the identity
    AuxLMLoss            `prm.train.train_rows`' loss_fn: the value loss plus the next-token loss
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from mcts.envs.arith import DELIMITER, answer_step, reduce_once, reduction_step
from mcts.policy.base import Prefix
from mcts.policy.toy import current_expression
from prm.model import IGNORE_INDEX
from prm.rows import masked_loss

__all__ = ["AuxLMLoss", "dense_labels", "grow_backbone", "lm_labels"]


def dense_labels(problem: str, steps: Sequence[str], labels: Sequence[int], ends: Sequence[int],
                 num_tokens: int, weight: float) -> tuple[list[float], list[float]]:
    """Per-token labels and loss weights of a toy trace (the PRM's token layout, one token per character).

    A token of a step is labelled 1 while the step (up to and including that character) still
    agrees with the canonical step of its state (`mcts.policy.toy.current_expression`), and 0
    from the first character where it does not; every token of a step after a wrong one is 0
    (its state is off). Step ends keep the oracle's label and weight 1; the other step tokens
    weigh `weight`; the problem's tokens weigh 0.

    Args:
        problem, steps, labels: the trace and its oracle labels.
        ends: [K] index of each step's last token.
        num_tokens: the row's length.
        weight: loss weight of the tokens inside steps.

    Returns:
        (labels, weights), both [num_tokens]; positions of weight 0 are labelled `IGNORE_INDEX`.
    """
    out = [IGNORE_INDEX] * num_tokens
    weights = [0.0] * num_tokens
    wrong_before = False
    for k, (step, label, end) in enumerate(zip(steps, labels, ends)):
        text = step if step.endswith(DELIMITER) else step + DELIMITER
        start = end - len(text) + 1
        if wrong_before:
            agree = 0
        elif label:
            agree = len(text)
        else:
            try:
                expr = current_expression(Prefix(problem, tuple(steps[:k])))
            except ValueError:
                expr = None
            red = reduce_once(expr) if expr is not None else None
            canonical = "" if expr is None else (answer_step(expr) if red is None else reduction_step(
                red.a, red.op, red.b, red.result, red.after)) + DELIMITER
            agree = next((i for i, (x, c) in enumerate(zip(text, canonical)) if x != c), min(len(text), len(canonical)))
            agree = min(agree, len(text) - 1)
        for t in range(max(start, 0), end):
            out[t] = 1.0 if t - start < agree else 0.0
            weights[t] = weight
        out[end], weights[end] = float(label), 1.0
        wrong_before = wrong_before or not label
    return out, weights


def lm_labels(ids: Sequence[int], labels: Sequence[int], ends: Sequence[int], steps: Sequence[str],
              delimiter: str) -> list[int]:
    """Next-token targets of a row: the tokens of its correct steps (each predicted from the one
    before), -100 elsewhere (the problem, wrong steps and the steps after them)."""
    out = [-100] * len(ids)
    for step, label, end in zip(steps, labels, ends):
        if not label:
            break
        start = end - len(step if step.endswith(delimiter) else step + delimiter) + 1
        for t in range(max(start, 1), end + 1):
            out[t - 1] = ids[t]
    return out


def grow_backbone(model, extra_layers: int, seed: int = 0) -> None:
    """Adds `extra_layers` blocks on top of a Llama-like backbone (in place), their attention and MLP
    output projections zero: each new block starts as the identity, so the model starts as before.

    Args:
        model: a `PRM` whose backbone has `.layers`, `.config.num_hidden_layers` and a constructor
            taking its config (LlamaModel and its kin).
        extra_layers: how many blocks.
        seed: seed of the new blocks' other weights.
    """
    if extra_layers <= 0:
        return
    old = model.backbone
    config = old.config.__class__.from_dict(old.config.to_dict())
    depth = config.num_hidden_layers
    config.num_hidden_layers = depth + extra_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = type(old)(config)
    missing = new.load_state_dict(old.state_dict(), strict=False).missing_keys
    if any(not k.startswith(tuple(f"layers.{i}." for i in range(depth, depth + extra_layers))) for k in missing):
        raise ValueError(f"growing the backbone lost weights other than the new blocks': {missing[:3]}")
    for layer in new.layers[depth:]:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    model.backbone = new.to(old.device)


class AuxLMLoss:
    """`train_rows`' loss_fn for a toy PRM: the masked value loss (weighted step ends and dense
    labels) plus `weight` times the next-token loss on a batch's `lm_labels`, read at block `layer`
    (the policy's depth: a grown backbone has blocks above it) through the backbone's final norm
    and the tied input embedding."""

    def __init__(self, loss: str, weight: float, layer: int):
        self.loss, self.weight, self.layer = loss, weight, layer

    def __call__(self, model, batch) -> "torch.Tensor":
        prm = getattr(model, "module", model)  # unwrapped under DDP
        want_lm = self.weight > 0 and "lm_labels" in batch
        out = prm.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=want_lm, use_cache=False)
        logits = prm.head(out.last_hidden_state.float()).squeeze(-1)
        value = masked_loss(logits, batch["labels"], self.loss, batch.get("weights"))
        if not want_lm:
            return value
        hidden = out.hidden_states[self.layer]
        if self.layer < prm.backbone.config.num_hidden_layers:
            hidden = prm.backbone.norm(hidden)  # the last entry is normed already
        lm = hidden.float() @ prm.backbone.get_input_embeddings().weight.float().T
        return value + self.weight * F.cross_entropy(lm.flatten(0, 1), batch["lm_labels"].flatten(), ignore_index=-100)
