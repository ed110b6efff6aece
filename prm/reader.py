"""What every reward model read at token positions shares: the project's own PRM (`prm.model.PRM`)
and the open PRMs' adapters (`prm.adapters.AdapterPRM`) are a base model whose last hidden states
are read at chosen positions of a trace and turned into scores by a small head.

    pad_right(rows, pad_id)   right-padded [B, T] ids and their attention mask
    PieceReader               the base class: per-problem head ids, truncation to `max_length`, the
                              batched reading of positions, the incremental cache (prm/kv_cache.py)
                              and the `StepScorer` calls built on them (`score`, `score_traces`,
                              `score_outcomes`)

A subclass sets `backbone` (a transformers base model), `head`, `config` (with `batch_size`,
`num_threads`, `incremental`, `cache_bytes`), `pad_id` and `max_length`, and defines how it encodes
(`_head_ids(problem)`, `piece_ids(step, index)`, `encode(problem, steps) -> (ids, read positions)`)
and how it reads (`reading(hidden [N, H]) -> [N]` scores in [0, 1]).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from mcts.policy.base import Prefix, Step
from mcts.policy.torch_utils import torch_threads
from prm.kv_cache import KVCache, refreshed_cache, score_pairs

__all__ = ["PieceReader", "pad_right"]

HEADS_KEPT = 4096  # problems whose head ids stay cached (the search scores many prefixes of each)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids (right-padded with `pad_id`) and [B, T] attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


class PieceReader(nn.Module):
    """A base model read at token positions of a trace: see the module docstring for what a subclass
    provides. Implements `StepScorer`."""

    def __init__(self):
        super().__init__()
        self._heads: OrderedDict[str, list[int]] = OrderedDict()
        self._kv: KVCache | None = None

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    # -------------------------------------------------------------------------------------------
    # Encoding

    def _head_ids(self, problem: str) -> list[int]:
        raise NotImplementedError

    def head_ids(self, problem: str) -> list[int]:
        """The ids before the first step (`_head_ids`), cached per problem."""
        ids = self._heads.get(problem)
        if ids is None:
            ids = self._heads[problem] = self._head_ids(problem)
            if len(self._heads) > HEADS_KEPT:
                self._heads.popitem(last=False)
        else:
            self._heads.move_to_end(problem)
        return ids

    def _truncate(self, ids: list[int], reads: list[int]) -> tuple[list[int], list[int]]:
        if self.max_length is None or len(ids) <= self.max_length:
            return ids, reads
        cut = len(ids) - self.max_length
        return ids[cut:], [r - cut for r in reads]  # reads < 0 fell off

    # -------------------------------------------------------------------------------------------
    # Reading

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T, H] last hidden states of the base model (after its final norm)."""
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def reading(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N] scores in [0, 1] of [N, H] hidden states at read positions."""
        raise NotImplementedError

    def read(self, outputs: torch.Tensor) -> list[float]:
        """The piece contract's reading (prm/kv_cache.py): `reading` as floats."""
        return self.reading(outputs).cpu().tolist()

    @contextlib.contextmanager
    def _reading(self):
        """Eval mode, no autograd and the configured CPU threads for a block (the mode restored after)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), torch_threads(self.config.num_threads):
                yield
        finally:
            self.train(was_training)

    @property
    def kv_cache(self) -> KVCache | None:
        """The cache `score` reads through: None when `config.incremental` is off or the base model's
        attention cannot be extended piece by piece (a sliding window, recurrent layers). Emptied
        whenever the weights changed since the last call (training, loading, `.to()`)."""
        if not self.config.incremental:
            return None
        self._kv = refreshed_cache(self._kv, self.backbone, self, max_bytes=self.config.cache_bytes,
                                   batch_size=self.config.batch_size)
        return self._kv

    def _values(self, rows: Sequence[tuple[list[int], list[int]]],
                reading: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[list[float]]:
        """`reading` (default `self.reading`) at the given positions of each row, batched over
        right-padded chunks of similar lengths.

        Args:
            rows: [R] (ids, positions to read); a negative position reads NaN (cut off).

        Returns:
            [R][len(positions)] values.
        """
        reading = reading or self.reading
        out: list[list[float]] = [[] for _ in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # similar lengths together
        size = self.config.batch_size
        with self._reading():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                ids, mask = pad_right([rows[i][0] for i in chunk], self.pad_id)
                hidden = self.hidden_states(ids.to(self.device), mask.to(self.device))
                r_idx = [r for r, i in enumerate(chunk) for p in rows[i][1] if p >= 0]
                t_idx = [p for i in chunk for p in rows[i][1] if p >= 0]
                picked = hidden[torch.tensor(r_idx, device=self.device), torch.tensor(t_idx, device=self.device)]
                it = iter(reading(picked).cpu().tolist())
                for i in chunk:
                    out[i] = [next(it) if p >= 0 else math.nan for p in rows[i][1]]
        return out

    # -------------------------------------------------------------------------------------------
    # Scoring

    def score(self, prefixes: Sequence[Prefix], steps: Sequence[Step | str]) -> list[float]:
        """Scores the last step of each (prefix, step) pair: the `StepScorer` protocol.

        Args:
            prefixes: [P] problem + steps so far.
            steps: [P] the step after each prefix (a `Step` or its text).

        Returns:
            [P] scores in [0, 1] at the end of prefix + step; through `kv_cache` when there is one
            (equal within float tolerance).
        """
        if len(prefixes) != len(steps):
            raise ValueError(f"got {len(prefixes)} prefixes and {len(steps)} steps")
        cache = self.kv_cache
        if cache is None or not prefixes:
            return self._full_scores(prefixes, steps)
        with self._reading():
            return score_pairs(cache, self, prefixes, steps, max_length=self.max_length,
                               full=lambda idx: self._full_scores([prefixes[i] for i in idx], [steps[i] for i in idx]))

    def _full_scores(self, prefixes: Sequence[Prefix], steps: Sequence[Step | str]) -> list[float]:
        """`score` by reading every trace whole (its start cut off beyond `max_length`)."""
        rows = []
        for prefix, step in zip(prefixes, steps):
            text = step.text if isinstance(step, Step) else step
            ids, reads = self._truncate(*self.encode(prefix.problem, (*prefix.steps, text)))
            rows.append((ids, reads[-1:]))
        return [v[0] for v in self._values(rows)]

    def score_traces(self, prefixes: Sequence[Prefix]) -> list[list[float]]:
        """[P][len(steps)] scores of every step of each trace, one pass per trace: value k equals
        `score` of (steps[:k], steps[k]); a step cut off by `max_length` reads NaN."""
        return self._values([self._truncate(*self.encode(p.problem, p.steps)) for p in prefixes])

    def score_outcomes(self, prefixes: Sequence[Prefix]) -> list[float]:
        """The score at the end of each whole trace (how an ORM scores; NaN for a trace without steps)."""
        rows = [self._truncate(*self.encode(p.problem, p.steps)) for p in prefixes]
        values = self._values([(ids, reads[-1:]) for ids, reads in rows])
        return [v[0] if v else math.nan for v in values]
