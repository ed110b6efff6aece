"""Training rows, batches and losses of the PRM, the ORM and the PPRM (pure functions of rows and
tensors; the loop that uses them is `prm.train`).

A training row is token ids plus one float label per position, `IGNORE_INDEX` everywhere but the
positions that carry loss (step ends for a PRM, the last step end for an ORM, the last token of a
pair for the PPRM):

    encode_step_rows, encode_pair_rows   rows of step records / preference pairs
    batch_order                          batches of row indices grouped by length, every epoch
    collate                              a batch of rows as right-padded tensors
    masked_loss, pair_logits             the loss on the labelled positions; s(a) - s(b) of pair rows
"""

from __future__ import annotations

import math
import random
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from prm.model import IGNORE_INDEX, PRM, pad_right, tokenize_row

__all__ = ["batch_order", "collate", "encode_pair_rows", "encode_step_rows", "masked_loss", "pair_logits"]


def encode_step_rows(model: PRM, records: Iterable[Mapping], *, target: str, mode: str,
                     max_length: int | None = None) -> list[dict]:
    """Training rows of step records: ids and a float label at each step end (the last only for an ORM).

    Args:
        model: the PRM (its tokenizer, delimiter and problem head).
        records: canonical records (problem, steps, labels and/or values).
        target: "labels" or "values".
        mode: "prm" or "orm".
        max_length: see `prm.model.tokenize_row`.
    """
    rows = []
    for r in records:
        rows.append(tokenize_row(model.tokenizer, model.head_ids(r["problem"]), r["steps"], r[target],
                                 delimiter=model.config.delimiter, mode=mode, max_length=max_length))
    return rows


def encode_pair_rows(model, records: Iterable[Mapping], *, max_length: int | None = None) -> list[dict]:
    """Training rows of preference pairs.

    A joint PPRM (see `prm.pairwise`): both orders, (chosen, rejected) -> 1, (rejected, chosen) ->
    0, the label on the last token of the pair sequence (`PPRM.encode_pair`). A separate-reading
    (Bradley-Terry) PPRM: one row per pair, the chosen solution's ids with label 1 on its last
    token, and the rejected one's as "input_ids_b" (`train_rows` fits sigmoid(s(a) - s(b)))."""
    rows = []
    if getattr(model, "separate", False):
        for r in records:
            a = model.encode_solution(r["problem"], r["chosen"])
            b = model.encode_solution(r["problem"], r["rejected"])
            if max_length is not None:
                a, b = a[-max_length:], b[-max_length:]
            rows.append({"input_ids": a, "labels": [IGNORE_INDEX] * (len(a) - 1) + [1.0], "input_ids_b": b})
        return rows
    for r in records:
        for a, b, y in ((r["chosen"], r["rejected"], 1.0), (r["rejected"], r["chosen"], 0.0)):
            ids = model.encode_pair(r["problem"], a, b)
            if max_length is not None and len(ids) > max_length:
                ids = ids[-max_length:]
            rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (len(ids) - 1) + [y]})
    return rows


def batch_order(lengths: Sequence[int], batch_size: int, epochs: float, seed: int, pool_batches: int = 50) -> list[list[int]]:
    """Batches of row indices grouped by length, for every epoch.

    Each epoch shuffles the rows (seeded by seed and epoch), cuts them into pools of
    `pool_batches` batches, sorts each pool by length and cuts it into batches, then shuffles the
    batches: similar lengths share a batch (little padding) and the order stays random. A
    fractional last epoch keeps that fraction of its batches.
    """
    out: list[list[int]] = []
    whole = math.ceil(epochs)
    for epoch in range(whole):
        rng = random.Random(f"prm-batches:{seed}:{epoch}")
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        pool = batch_size * pool_batches
        batches = []
        for start in range(0, len(idx), pool):
            chunk = sorted(idx[start:start + pool], key=lambda i: lengths[i])
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        if epoch == whole - 1 and epochs < whole:
            batches = batches[:max(1, round(len(batches) * (epochs - epoch)))]
        out += batches
    return out


def collate(rows: Sequence[Mapping], pad_id: int) -> dict:
    """Right-padded {"input_ids", "attention_mask", "labels"} tensors of a batch of rows, "weights"
    when the rows carry per-position weights (else every labelled position weighs 1), and
    "lm_labels" (int64, -100 where no next-token loss; for a `loss_fn`) when they carry them, and
    "input_ids_b"/"attention_mask_b" (the second solutions of Bradley-Terry pair rows)."""
    ids, mask = pad_right([r["input_ids"] for r in rows], pad_id)
    labels = torch.full(ids.shape, IGNORE_INDEX, dtype=torch.float32)
    for i, r in enumerate(rows):
        labels[i, :len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.float32)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if any("weights" in r for r in rows):
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        for i, r in enumerate(rows):
            w = r.get("weights") or [float(y != IGNORE_INDEX) for y in r["labels"]]
            weights[i, :len(w)] = torch.tensor(w, dtype=torch.float32)
        batch["weights"] = weights
    if any("lm_labels" in r for r in rows):
        lm = torch.full(ids.shape, -100, dtype=torch.long)
        for i, r in enumerate(rows):
            if "lm_labels" in r:
                lm[i, :len(r["lm_labels"])] = torch.tensor(r["lm_labels"], dtype=torch.long)
        batch["lm_labels"] = lm
    if any("input_ids_b" in r for r in rows):
        batch["input_ids_b"], batch["attention_mask_b"] = pad_right([r["input_ids_b"] for r in rows], pad_id)
    return batch


def pair_logits(logits: "torch.Tensor", mask: "torch.Tensor", logits_b: "torch.Tensor",
                mask_b: "torch.Tensor") -> "torch.Tensor":
    """[B] s(a) - s(b) of Bradley-Terry pair rows: each sequence's logit at its last real token."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, mask.sum(1) - 1] - logits_b[rows, mask_b.sum(1) - 1]


def masked_loss(logits: "torch.Tensor", labels: "torch.Tensor", loss: str,
                weights: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Mean loss over the labelled positions (labels != IGNORE_INDEX) of [B, T] logits.

    bce: binary cross-entropy with logits (the Bradley-Terry / logistic loss for pairs); mse: squared
    error of sigmoid(logit). With `weights` [B, T], the weighted mean over labelled positions. A
    batch without a labelled position gives a zero that keeps the graph.
    """
    mask = labels != IGNORE_INDEX
    if weights is not None:
        mask = mask & (weights > 0)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    x, y = logits[mask].float(), labels[mask].float()
    if loss == "bce":
        per = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    else:
        per = (x.sigmoid() - y) ** 2
    if weights is None:
        return per.mean()
    w = weights[mask].float()
    return (per * w).sum() / w.sum()
