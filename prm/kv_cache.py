"""Incremental PRM scoring: a bounded cache of key/value states per scored prefix (ARCHITECTURE.md).

A scored trace is `head_ids` (BOS, prompt, chat template) followed by one token piece per step,
each piece tokenised on its own (`prm.model.encode_pieces`), so the tokens of a prefix are a prefix
of the tokens of every extension of it. With causal attention a step's outputs depend only on the
head and the pieces up to it, so a tree node's keys and values are its parent's plus its own
piece's: scoring a new step costs the step's tokens, not the whole prefix again.

    Piece                            (token ids, read offset or None): one step (or the head, whose
                                     offset is None); the offset indexes the piece (-1: its last token)
    StepFn                           step(input_ids [R, N], attention_mask [R, P + N], position_ids
                                     [R, N], past) -> (outputs [R, N, ...], past'), past: [(keys,
                                     values)] per layer, each [R, heads, P, head_dim] (None when P = 0)
    transformers_step(model, read)   a StepFn for a transformers model with a DynamicCache; `read`
                                     picks the per-position outputs (default: last_hidden_state)
    supports_incremental(model)      whether the model's cache is plain full attention (no sliding
                                     window, no recurrent state), which the cache needs
    weights_fingerprint(module)      changes when any parameter is replaced or updated in place
    refreshed_cache(cache, model, owner, max_bytes=, batch_size=)
                                     a model's cache, made on first use, emptied when the weights of
                                     `owner` changed; None when the model cannot be read incrementally
    KVCache(step, max_bytes)         .outputs(traces) -> [output at each trace's last read offset];
                                     .stats (CacheStats), .clear()
    PieceScorer                      what `score_pairs` needs of a reward model: head_ids, piece_ids,
                                     read (the adapters of prm/adapters.py and prm.model.PRM)
    score_pairs(cache, scorer, prefixes, steps, max_length=, full=)
                                     the `StepScorer.score` of any PieceScorer, incremental; traces
                                     longer than `max_length` go to `full` (the truncated reading)

Storage: an entry per node holds only its own piece's keys and values (cloned, so it owns its
bytes) and the model's output at its read offset; its parent's entry holds the rest, down to the
head (cached too: every node of a problem shares it). Entries live in one LRU with a byte budget:
using a node refreshes its ancestors after it, so an ancestor is always more recent than its
descendants and the least recently used entry is always a leaf; eviction never strands a child. An
entry bigger than the whole budget is not kept (nor, then, its children).

A call to `outputs` finds, for every trace, its longest cached ancestor (walking down by pieces),
gathers the missing nodes of all traces into one trie (so siblings share their missing parent),
cuts it into chains that do not branch, and runs the chains in waves (a chain after its parent's):
a search round, whose new steps hang off parents scored the round before, is one wave. A wave runs
in batches of `batch_size` chains: each row's past is padded on the left (attention mask 0) to the
longest past of its batch and its new tokens on the right, with explicit position ids, so a row
reads as it would alone. Stored tensors are never extended in place: the model appends to a fresh
DynamicCache built from copies of them, so two children of one parent never see each other.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections import OrderedDict
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from mcts.policy.base import Prefix, Step

__all__ = ["CacheStats", "KVCache", "Piece", "PieceScorer", "StepFn", "refreshed_cache", "score_pairs",
           "supports_incremental", "transformers_step", "weights_fingerprint"]

Piece = tuple[Sequence[int], int | None]
Past = list[tuple[torch.Tensor, torch.Tensor]] | None
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Past], tuple[torch.Tensor, list]]
ROOT = 0  # the node before the head: it has no entry


# ---------------------------------------------------------------------------------------------------
# The model side


def transformers_step(model, read: Callable[[Any], torch.Tensor] | None = None) -> StepFn:
    """A `StepFn` for a transformers model (a base model, a causal LM, a token classifier).

    The model runs on a fresh `DynamicCache` built from the padded past; the new past is read from
    that cache object (token classifiers do not return it). `read(model_output)` gives the
    per-position outputs [R, N, ...]: default the last hidden state (a base model's), e.g.
    `lambda out: out.logits` for an LM or a token classifier.
    """
    from transformers import DynamicCache

    # transformers 5 renamed `past_key_values` to `cache`: pass whichever this model's forward takes.
    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    read = read or (lambda out: out.last_hidden_state)

    def step(input_ids, attention_mask, position_ids, past):
        cache = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=True, **{cache_arg: cache})
        return read(out), [(layer.keys, layer.values) for layer in cache.layers]

    return step


def supports_incremental(model) -> bool:
    """True when the model's key/value cache is plain full attention in every layer: sliding
    windows drop old keys and recurrent layers keep a state, so neither extends piece by piece."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(model, "config", None)
    if config is None or "position_ids" not in inspect.signature(model.forward).parameters:
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # a config this transformers cannot map to cache layers: no incremental reading
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def weights_fingerprint(module: torch.nn.Module) -> tuple:
    """Changes when a parameter is replaced (`.to()`, a new tensor) or updated in place (an optimizer
    step, `load_state_dict`: torch counts in-place writes in `_version`): cached states are stale then."""
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


# ---------------------------------------------------------------------------------------------------
# The cache


@dataclasses.dataclass
class CacheStats:
    """Counters since the cache was made (`clear` keeps them)."""

    tokens_read: int = 0  # tokens fed to the model (padding not counted), whole readings included
    whole_reads: int = 0  # traces read whole (past the scorer's max_length: `score_pairs`)
    forward_calls: int = 0
    nodes_computed: int = 0  # pieces read (their entries may not have been kept)
    hits: int = 0  # traces whose node was cached whole: no token read
    evictions: int = 0
    not_kept: int = 0  # entries too big for the budget, or whose parent was gone

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


@dataclasses.dataclass
class _Entry:
    parent: int
    key: tuple
    keys: list[torch.Tensor]  # per layer [heads, n, head_dim]: this piece's only
    values: list[torch.Tensor]
    output: torch.Tensor | None  # at the read offset
    nbytes: int


@dataclasses.dataclass
class _Missing:
    """A node of this call's trie of missing nodes."""

    start: int  # cache id of the cached ancestor (for a trie root) or -1
    parent: int  # index of the missing parent in the trie, or -1
    ids: tuple[int, ...]
    read: int | None
    children: list[int] = dataclasses.field(default_factory=list)
    cache_id: int | None = None  # once kept
    output: torch.Tensor | None = None


def _piece_key(piece: Piece) -> tuple[tuple[int, ...], int | None]:
    ids, read = tuple(int(t) for t in piece[0]), piece[1]
    if not ids:
        raise ValueError("a piece tokenises to nothing")
    if read is not None:
        if not -len(ids) <= read < len(ids):
            raise ValueError(f"read offset {read} is outside a piece of {len(ids)} tokens")
        read %= len(ids)
    return ids, read


class KVCache:
    """Key/value states of scored prefixes, keyed by their token pieces; see the module docstring.

    Args:
        step: the model call (`transformers_step(model)`).
        max_bytes: the byte budget of all entries (keys, values and outputs); least recently used
            entries are evicted beyond it.
        batch_size: rows (chains of new pieces) per forward pass.
        device: the model's device, where the new ids, mask and positions go (the pasts stay where
            the model put them).
    """

    def __init__(self, step: StepFn, max_bytes: int, *, batch_size: int = 64, device: torch.device | str = "cpu"):
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.step, self.max_bytes, self.batch_size = step, max_bytes, batch_size
        self.device = torch.device(device)
        self.stats = CacheStats()
        self.fingerprint: Any = None  # what the owner last checked the model against (`weights_fingerprint`)
        self.clear()

    def clear(self) -> None:
        """Drops every entry (the counters stay)."""
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._children: dict[tuple, int] = {}  # (parent id, piece key) -> node id
        self._next_id = ROOT + 1
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- the LRU

    def _touch(self, node: int) -> None:
        """Marks a node and then its ancestors as used (ancestors end up the more recent)."""
        while node != ROOT:
            self._entries.move_to_end(node)
            node = self._entries[node].parent

    def _keep(self, parent: int, key: tuple, keys, values, output) -> int | None:
        if parent != ROOT and parent not in self._entries:
            self.stats.not_kept += 1
            return None
        tensors = [*keys, *values] + ([output] if output is not None else [])
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if nbytes > self.max_bytes:
            self.stats.not_kept += 1
            return None
        node, self._next_id = self._next_id, self._next_id + 1
        self._entries[node] = _Entry(parent, key, keys, values, output, nbytes)
        self._children[(parent, key)] = node
        self.nbytes += nbytes
        self._touch(node)
        while self.nbytes > self.max_bytes:
            _, entry = self._entries.popitem(last=False)  # a leaf: see _touch
            del self._children[(entry.parent, entry.key)]
            self.nbytes -= entry.nbytes
            self.stats.evictions += 1
        return node if node in self._entries else None

    def _segments(self, node: int) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """The past of the prefix up to `node` as its entries' (keys, values), head first; each
        per layer [heads, n, head_dim]. Copied once, into the padded batch (`_padded_past`)."""
        chain = []
        while node != ROOT:
            chain.append(self._entries[node])
            node = chain[-1].parent
        return [(e.keys, e.values) for e in reversed(chain)]

    # -- reading

    def outputs(self, traces: Sequence[Sequence[Piece]]) -> list[torch.Tensor]:
        """The model's output at the read offset of each trace's last piece.

        Args:
            traces: [P] traces, each a sequence of `Piece`s: the head (read offset None; an empty head
                is skipped), then one piece per step. The last piece needs a read offset.

        Returns:
            [P] tensors (the per-position output at that offset, e.g. [hidden]), equal to a full
            reading of the trace within float tolerance.
        """
        results: list[torch.Tensor | None] = [None] * len(traces)
        trie: list[_Missing] = []
        index: dict[tuple, int] = {}  # (start id, missing parent, piece key) -> trie index
        wanted: list[tuple[int, int]] = []  # (trace, trie index)
        for t, trace in enumerate(traces):
            keys = [_piece_key(p) for p in trace if len(p[0]) or p[1] is not None]
            if not keys or keys[-1][1] is None:
                raise ValueError(f"trace {t} has no piece to read")
            node, depth = ROOT, 0
            while depth < len(keys) and (node, keys[depth]) in self._children:
                node, depth = self._children[(node, keys[depth])], depth + 1
            if depth == len(keys):
                self._touch(node)
                self.stats.hits += 1
                results[t] = self._entries[node].output
                continue
            self._touch(node)
            start, parent = node, -1
            for key in keys[depth:]:
                slot = (start, parent, key)
                if slot not in index:
                    index[slot] = len(trie)
                    trie.append(_Missing(start if parent < 0 else -1, parent, *key))
                    if parent >= 0:
                        trie[parent].children.append(index[slot])
                parent = index[slot]
            wanted.append((t, parent))
        self._compute(trie)
        for t, i in wanted:
            results[t] = trie[i].output
        return results

    def _compute(self, trie: list[_Missing]) -> None:
        """Reads every node of the trie: chains that do not branch, in waves, parents first."""
        held: dict[int, list] = {}  # trie index -> full past of a chain's end that has child chains
        wave = [[i] for i, m in enumerate(trie) if m.parent < 0]
        while wave:
            for chain in wave:  # extend each chain while it does not branch
                while len(trie[chain[-1]].children) == 1:
                    chain.append(trie[chain[-1]].children[0])
            pasts, starts = [], {}
            for chain in wave:
                first = trie[chain[0]]
                if first.parent >= 0:
                    pasts.append(held[first.parent])
                elif first.start != ROOT:
                    if first.start not in starts:  # siblings share their parent's segments
                        self._touch(first.start)
                        starts[first.start] = self._segments(first.start)
                    pasts.append(starts[first.start])
                else:
                    pasts.append([])
            ends = self._run_wave(trie, wave, pasts)
            held = {chain[-1]: past for chain, past in zip(wave, ends) if trie[chain[-1]].children}
            wave = [[c] for chain in wave for c in trie[chain[-1]].children]

    def _run_wave(self, trie: list[_Missing], wave: list[list[int]], pasts: list) -> list:
        """Runs the chains of one wave in batches; keeps their entries; the full past at each chain's end."""
        ends: list = [None] * len(wave)
        lengths = [sum(keys[0].shape[1] for keys, _ in p) for p in pasts]
        order = sorted(range(len(wave)), key=lambda i: lengths[i])  # similar pasts together: less padding
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            new = [[t for i in wave[r] for t in trie[i].ids] for r in rows]
            width, longest = max(len(n) for n in new), max(lengths[r] for r in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), longest + width), dtype=torch.long)
            positions = torch.zeros((len(rows), width), dtype=torch.long)
            for b, (r, n) in enumerate(zip(rows, new)):
                ids[b, :len(n)] = torch.tensor(n)
                mask[b, longest - lengths[r]:longest + len(n)] = 1
                positions[b] = torch.arange(lengths[r], lengths[r] + width)
            past = self._padded_past([pasts[r] for r in rows], [lengths[r] for r in rows], longest)
            out, past_out = self.step(ids.to(self.device), mask.to(self.device), positions.to(self.device), past)
            self.stats.forward_calls += 1
            self.stats.tokens_read += sum(len(n) for n in new)
            for b, r in enumerate(rows):
                offset = longest
                for i in wave[r]:
                    node, n = trie[i], len(trie[i].ids)
                    node.output = None if node.read is None else out[b, offset - longest + node.read].clone()
                    parent = node.start if node.parent < 0 else trie[node.parent].cache_id
                    if parent is not None:
                        node.cache_id = self._keep(parent, (node.ids, node.read),
                                                   [k[b, :, offset:offset + n].clone() for k, _ in past_out],
                                                   [v[b, :, offset:offset + n].clone() for _, v in past_out],
                                                   node.output)
                    else:
                        self.stats.not_kept += 1
                    self.stats.nodes_computed += 1
                    offset += n
                if trie[wave[r][-1]].children:
                    ends[r] = [([k[b, :, longest - lengths[r]:offset] for k, _ in past_out],
                                [v[b, :, longest - lengths[r]:offset] for _, v in past_out])]
        return ends

    def _padded_past(self, pasts: list, lengths: list[int], longest: int) -> Past:
        """[(keys, values)] per layer [R, heads, longest, head_dim], each row's segments on the right."""
        if longest == 0:
            return None
        some_keys, some_values = next(p for p in pasts if p)[0]
        out = []
        for layer, (k0, v0) in enumerate(zip(some_keys, some_values)):
            keys = k0.new_empty((len(pasts), k0.shape[0], longest, k0.shape[2]))
            values = v0.new_empty((len(pasts), v0.shape[0], longest, v0.shape[2]))
            for b, (segments, n) in enumerate(zip(pasts, lengths)):
                at = longest - n
                keys[b, :, :at] = 0  # masked, but 0 * NaN would not be 0: no garbage there
                values[b, :, :at] = 0
                for seg_keys, seg_values in segments:
                    width = seg_keys[layer].shape[1]
                    keys[b, :, at:at + width] = seg_keys[layer]
                    values[b, :, at:at + width] = seg_values[layer]
                    at += width
            out.append((keys, values))
        return out


def refreshed_cache(cache: KVCache | None, model, owner: torch.nn.Module, *, max_bytes: int,
                    batch_size: int = 64) -> KVCache | None:
    """`cache`, or a new one over `transformers_step(model)` when it is None; emptied when the
    weights of `owner` (the model and whatever reads its outputs) changed since the last call.
    None when `model` cannot be read piece by piece (`supports_incremental`)."""
    if cache is None:
        if not supports_incremental(model):
            return None
        cache = KVCache(transformers_step(model), max_bytes, batch_size=batch_size)
    fingerprint = weights_fingerprint(owner)
    if fingerprint != cache.fingerprint:
        cache.clear()
        cache.fingerprint = fingerprint
        cache.device = next(owner.parameters()).device
    return cache


# ---------------------------------------------------------------------------------------------------
# Scoring (step, prefix) pairs with any reward model that follows the piece contract


@runtime_checkable
class PieceScorer(Protocol):
    """A reward model in pieces: the ids before the first step, each step's ids and read offset, and
    the reading of the model's outputs at the read offsets into scores in [0, 1]."""

    def head_ids(self, problem: str) -> list[int]: ...

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]: ...

    def read(self, outputs: torch.Tensor) -> list[float]: ...


def score_pairs(cache: KVCache, scorer: PieceScorer, prefixes: Sequence[Prefix], steps: Sequence[Step | str], *,
                max_length: int | None = None,
                full: Callable[[list[int]], list[float]] | None = None) -> list[float]:
    """`StepScorer.score` read through the cache: [P] scores of each prefix's next step.

    Args:
        max_length: the most tokens the scorer reads at once; a longer trace loses its start in a full
            reading, which the cache cannot reproduce, so it goes to `full`.
        full: full_scores(indices of the pairs) -> their scores, read the ordinary way.
    """
    if len(prefixes) != len(steps):
        raise ValueError(f"got {len(prefixes)} prefixes and {len(steps)} steps")
    traces, long = [], []
    for p, (prefix, step) in enumerate(zip(prefixes, steps)):
        texts = (*prefix.steps, step.text if isinstance(step, Step) else step)
        trace = [(scorer.head_ids(prefix.problem), None), *(scorer.piece_ids(s, k) for k, s in enumerate(texts))]
        if max_length is not None and sum(len(ids) for ids, _ in trace) > max_length:
            long.append(p)
        else:
            traces.append((p, trace))
    scores = [math.nan] * len(prefixes)
    if traces:
        outputs = cache.outputs([trace for _, trace in traces])
        for (p, _), value in zip(traces, scorer.read(torch.stack(outputs))):
            scores[p] = value
    if long:
        if full is None:
            raise ValueError(f"{len(long)} traces are longer than max_length={max_length} and no full reading was given")
        for p, value in zip(long, full(long)):
            scores[p] = value
        cache.stats.whole_reads += len(long)
        cache.stats.tokens_read += len(long) * max_length  # a whole reading keeps the last max_length
    return scores
