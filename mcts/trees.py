"""The one form of a searched tree: what the search writes (`--trees-out`, the records of
self-training's search stages), what the harvest reads, and what every loop builds.

A tree's JSON, format TREE_FORMAT:

    {"format": 1, "problem": str, "algorithm": str,
     "nodes": [{"id": int, "parent": int, "depth": int, "step": str | null,
                "terminal": bool, "answer": str | null,
                "logprob", "prior", "reward", "visits", "q", "expanded"}, ...],
     ...}                                       algorithm-specific extras at the top level

- `nodes` lists parents before children; node 0 is the root (parent -1, depth 0, step null).
- `step` is the text of the step into the node. `terminal`: the node ends its branch (a stated
  answer, the depth limit, or the end of a sampled solution). `answer`: the answer it states.
- The search statistics are present for tree searches only: `logprob` (the policy's log-probability
  of the step), `prior`, `reward` (the PRM's value of the step), `visits`, `q` and `expanded`.
  Trees made from whole solutions (ReST-EM's chains, SR-MCTS's trie) leave them out.
- Extras: `widths` (eta-MCTS: the importance and width of every expansion), `solutions` (SR-MCTS:
  its solution nodes, refinements included).

`TreeRecord.from_json` refuses a tree of another format, or one with a missing or mistyped field,
with a `TreeFormatError` naming where it came from and the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

__all__ = ["TREE_FORMAT", "NodeRecord", "TreeFormatError", "TreeRecord", "tree_from_solutions"]

TREE_FORMAT = 1

# Fields every node has, with their JSON types; the search statistics are optional.
_REQUIRED = {"id": int, "parent": int, "depth": int, "terminal": bool}
_OPTIONAL = {"logprob": (int, float), "prior": (int, float), "reward": (int, float), "visits": int,
             "q": (int, float), "expanded": bool}
_TOP = ("format", "problem", "algorithm", "nodes")


class TreeFormatError(ValueError):
    """A tree JSON that is not TREE_FORMAT: the message names its origin and the field."""


@dataclasses.dataclass
class NodeRecord:
    """One node of a tree (see the module docstring for the fields)."""

    id: int
    parent: int
    depth: int
    step: str | None
    terminal: bool = False
    answer: str | None = None
    logprob: float | None = None
    prior: float | None = None
    reward: float | None = None
    visits: int | None = None
    q: float | None = None
    expanded: bool | None = None

    def to_json(self) -> dict:
        out = {"id": self.id, "parent": self.parent, "depth": self.depth, "step": self.step,
               "terminal": self.terminal, "answer": self.answer}
        out.update({k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None})
        return out


@dataclasses.dataclass
class TreeRecord:
    """A searched tree: its problem, the algorithm that grew it, its nodes and the extras."""

    problem: str
    algorithm: str
    nodes: list[NodeRecord]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": TREE_FORMAT, "problem": self.problem, "algorithm": self.algorithm,
                "nodes": [n.to_json() for n in self.nodes], **self.extra}

    @classmethod
    def from_json(cls, data: Mapping, where: str = "tree") -> "TreeRecord":
        """The tree of a JSON object; `where` names its origin in errors (a file, a record)."""
        if not isinstance(data, Mapping):
            raise TreeFormatError(f"{where}: a tree is a JSON object, got {type(data).__name__}")
        if data.get("format") != TREE_FORMAT:
            raise TreeFormatError(f"{where}: field 'format': this version reads tree format {TREE_FORMAT}, "
                                  f"got {data.get('format')!r}")
        for key, kind in (("problem", str), ("algorithm", str), ("nodes", list)):
            if not isinstance(data.get(key), kind):
                raise TreeFormatError(f"{where}: field '{key}': missing or not a {kind.__name__}")
        nodes = []
        for i, node in enumerate(data["nodes"]):
            at = f"{where}: node {i}"
            if not isinstance(node, Mapping):
                raise TreeFormatError(f"{at}: not a JSON object")
            for key, kind in _REQUIRED.items():
                value = node.get(key)
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    raise TreeFormatError(f"{at}: field '{key}': missing or not a {kind.__name__}")
            for key in ("step", "answer"):
                if node.get(key) is not None and not isinstance(node[key], str):
                    raise TreeFormatError(f"{at}: field '{key}': not a string or null")
            for key, kind in _OPTIONAL.items():
                if node.get(key) is not None and not isinstance(node[key], kind):
                    raise TreeFormatError(f"{at}: field '{key}': not a number" if kind != bool else
                                          f"{at}: field '{key}': not a boolean")
            if node["id"] != i or not -1 <= node["parent"] < i or (node["parent"] < 0) != (i == 0):
                raise TreeFormatError(f"{at}: field 'parent': nodes must be listed parents first, node 0 the root")
            nodes.append(NodeRecord(**{k: node.get(k) for k in ("id", "parent", "depth", "step", "terminal",
                                                               "answer", *_OPTIONAL)}))
        extra = {k: v for k, v in data.items() if k not in _TOP}
        return cls(data["problem"], data["algorithm"], nodes, extra)

    def children(self) -> dict[int, list[int]]:
        """node id -> its children's ids."""
        out: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes[1:]:
            out[n.parent].append(n.id)
        return out

    def path(self, node: int) -> list[int]:
        """Node ids from the root's child down to `node` (the steps of its prefix, in order)."""
        out = []
        while node > 0:
            out.append(node)
            node = self.nodes[node].parent
        return out[::-1]


def tree_from_solutions(problem: str, solutions: Sequence[tuple[Sequence[str], str | None]], algorithm: str, *,
                        share_prefixes: bool, extra: Mapping[str, Any] | None = None) -> TreeRecord:
    """Whole solutions, (steps, answer) each, as one tree: their last steps are terminal nodes.

    share_prefixes: solutions that begin with the same steps share those nodes (the trie: SR-MCTS,
    where a rewrite shares what it keeps of the solution it refines); False gives one independent
    chain per solution (ReST-EM's samples, which share nothing, so that the harvest infers nothing
    across them). Solutions without steps are left out.
    """
    nodes = [NodeRecord(0, -1, 0, None)]
    index: dict[tuple[int, str], int] = {}
    for steps, answer in solutions:
        parent = 0
        for depth, step in enumerate(steps, start=1):
            key = (parent, step)
            if share_prefixes and key in index:
                parent = index[key]
                continue
            nodes.append(NodeRecord(len(nodes), parent, depth, step))
            parent = index[key] = len(nodes) - 1
        if parent:
            nodes[parent].terminal = True
            if answer is not None:
                nodes[parent].answer = answer
    return TreeRecord(problem, algorithm, nodes, dict(extra or {}))
