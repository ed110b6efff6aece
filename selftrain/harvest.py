"""Training data from searched trees: what self-training learns from (ARCHITECTURE.md).

From one searched tree (the JSON of `TreeSearch.to_json`) and the problem's verified answer:

    policy SFT data     the verified-correct solutions in the tree, deduplicated (with `best_only`,
                        the one whose lowest PRM step value is highest)
    PRM data            every finished solution in the tree with, per step, its inferred label and
                        ReST-MCTS* quality value (below); every expanded node of the tree lies on one
                        of them unless its subtree never reached an answer (no outcome to infer from)
    preference pairs    (correct, wrong) solutions of one problem, for the pairwise PPRM

Inferred targets (ARCHITECTURE.md): a node on a path that ends in a verified-correct answer gets
r_k = 0 and m_k = K - k (K: the length of the shortest correct solution through it); any other node
of a finished solution gets r_k = 1 (its subtree holds no correct answer) and m_k = the steps left
to that solution's end. Its label is 1 - r_k; its value V_k = max(V_{k-1} + w_k, 0) with
w_k = (1 - V_{k-1}) / (m_k + 1) (1 - 2 r_k) (`prm.quality.quality_values`).

Everything here is a pure function of the tree; `write_harvest` stores a harvest as Parquet files
(`datasets`) with a `manifest.json`, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from mcts.grading import is_equivalent
from mcts.trees import TreeRecord
from prm.data import pair_records
from prm.quality import quality_values

__all__ = ["Harvest", "SFT_FILE", "PRM_FILE", "PAIRS_FILE", "MANIFEST", "balance_by_length", "harvest_tree",
           "harvest_trees", "read_harvest", "unique_solutions", "write_harvest"]

SFT_FILE, PRM_FILE, PAIRS_FILE, MANIFEST = "sft.parquet", "prm.parquet", "pairs.parquet", "manifest.json"


@dataclasses.dataclass
class Harvest:
    """What a set of searched problems yields.

    sft: [{"problem", "steps"}] verified-correct solutions, distinct per problem.
    prm: [{"problem", "steps", "labels", "values", "outcome"}] finished solutions with inferred
         per-step targets, distinct per problem.
    pairs: [{"problem", "chosen", "rejected"}] (correct, wrong) solutions of one problem.
    """

    sft: list[dict] = dataclasses.field(default_factory=list)
    prm: list[dict] = dataclasses.field(default_factory=list)
    pairs: list[dict] = dataclasses.field(default_factory=list)

    def extend(self, other: "Harvest") -> None:
        self.sft += other.sft
        self.prm += other.prm
        self.pairs += other.pairs

    def counts(self) -> dict:
        return {"sft_traces": len(self.sft), "prm_traces": len(self.prm),
                "prm_values": sum(len(r["steps"]) for r in self.prm), "pairs": len(self.pairs),
                "problems_solved": len({r["problem"] for r in self.sft})}


def balance_by_length(traces: Sequence[Mapping], max_repeat: int = 8) -> list[dict]:
    """The SFT traces with those of rarer lengths (number of steps) repeated, so that each length
    weighs about as much as the most common one: ceil(most / count) copies, at most `max_repeat`.

    Why: a search harvests easy problems far more often than hard ones, so verified solutions are
    mostly short, and a policy fine-tuned on them learns to stop early (difficulty-aware rejection
    tuning, DART-Math, makes the same correction by sampling hard problems more).
    """
    if max_repeat < 1:
        raise ValueError(f"max_repeat must be >= 1, got {max_repeat}")
    counts: dict[int, int] = defaultdict(int)
    for t in traces:
        counts[len(t["steps"])] += 1
    most = max(counts.values(), default=0)
    out = []
    for t in traces:
        out += [dict(t)] * min(max_repeat, -(-most // counts[len(t["steps"])]))
    return out


def harvest_tree(tree: TreeRecord | Mapping, gold: str | int | None, *, grade: Callable[[str | None, object], bool] = is_equivalent,
                 max_pairs: int = 16, seed: int = 0,
                 check_steps: Callable[[str, Sequence[str]], bool] | None = None,
                 best_only: bool = False) -> Harvest:
    """The SFT traces, PRM targets and preference pairs of one searched tree (see the module doc).

    Args:
        tree: a `mcts.trees.TreeRecord`, or its JSON (refused with `TreeFormatError` when it is
            not the current format).
        gold: the verified answer; None harvests nothing (no outcome can be verified).
        grade: (answer, gold) -> correct.
        max_pairs: most preference pairs from this tree.
        seed: seed of the pair sampling.
        check_steps: (problem, steps) -> every step sound; when given, a correct answer reached
            through an unsound step (a lucky guess, a slip that cancels out) is not SFT data. A
            weak policy writes many of those, and fine-tuning on them teaches its slips.
        best_only: keep, of the verified solutions, only the one whose lowest step value (the PRM's
            reward as the search scored it) is highest: the PRM's judgement of which derivation is
            sound, where outcome verification cannot tell. A tree whose steps carry no PRM value
            (ReST-EM's samples) keeps every verified solution.
    """
    if gold is None:
        return Harvest()
    if not isinstance(tree, TreeRecord):
        tree = TreeRecord.from_json(tree)
    problem, nodes, children = tree.problem, tree.nodes, tree.children()
    ends = [n.id for n in nodes[1:] if n.terminal and not children[n.id]]
    correct_end = {i: nodes[i].answer is not None and grade(nodes[i].answer, gold) for i in ends}
    # K of the shortest correct solution through each node on a correct path
    shortest: dict[int, int] = {}
    for end, ok in correct_end.items():
        if ok:
            path = tree.path(end)
            for node in path:
                shortest[node] = min(shortest.get(node, len(path)), len(path))
    out = Harvest()
    seen: set[tuple[str, ...]] = set()
    rewards_seen: list[list[float | None]] = []  # the PRM's step values of each SFT solution
    for end in sorted(ends):
        path = tree.path(end)
        steps = tuple(nodes[i].step for i in path)
        if steps in seen:
            continue
        seen.add(steps)
        rewards = [0.0 if i in shortest else 1.0 for i in path]
        remaining = [shortest[i] - (k + 1) if i in shortest else len(path) - (k + 1) for k, i in enumerate(path)]
        out.prm.append({"problem": problem, "steps": list(steps), "labels": [1.0 - r for r in rewards],
                        "values": quality_values(rewards, remaining), "outcome": float(correct_end[end])})
        if correct_end[end] and (check_steps is None or check_steps(problem, steps)):
            out.sft.append({"problem": problem, "steps": list(steps)})
            rewards_seen.append([nodes[i].reward for i in path])
    if best_only and len(out.sft) > 1 and all(r is not None for rs in rewards_seen for r in rs):
        best = max(range(len(out.sft)), key=lambda j: (min(rewards_seen[j]), -j))
        out.sft = [out.sft[best]]
    out.pairs = pair_records(out.prm, max_pairs_per_problem=max_pairs, seed=seed)
    return out


def harvest_trees(trees: Iterable[Mapping], golds: Mapping[str, object], **options) -> Harvest:
    """`harvest_tree` over many trees; `golds` maps problem text to its verified answer. A solution
    found in the trees of two copies of one problem is kept once (small problem spaces repeat)."""
    out = Harvest()
    for i, tree in enumerate(trees):
        record = tree if isinstance(tree, TreeRecord) else TreeRecord.from_json(tree, f"tree {i}")
        out.extend(harvest_tree(record, golds.get(record.problem), seed=i, **options))
    out.sft = unique_solutions(out.sft)
    return out


def unique_solutions(traces: Iterable[Mapping]) -> list:
    """The solutions with repeats (same problem, same steps) dropped, first occurrence kept."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    unique = []
    for t in traces:
        key = (t["problem"], tuple(t["steps"]))
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def _to_parquet(records: list[dict], path: Path, columns: Sequence[str]) -> None:
    import datasets
    import pyarrow.parquet as pq

    # an empty table keeps its columns; pyarrow writes the dataset's table without a progress bar
    table = datasets.Dataset.from_list(records) if records else datasets.Dataset.from_dict({c: [] for c in columns})
    pq.write_table(table.data.table, path)


def write_harvest(harvest: Harvest, folder: str | os.PathLike, **manifest) -> Path:
    """Writes sft/prm/pairs Parquet files and manifest.json into `folder`, atomically (a temporary
    folder renamed into place); extra keyword arguments go into the manifest."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _to_parquet(harvest.sft, tmp / SFT_FILE, ("problem", "steps"))
        _to_parquet(harvest.prm, tmp / PRM_FILE, ("problem", "steps", "labels", "values", "outcome"))
        _to_parquet(harvest.pairs, tmp / PAIRS_FILE, ("problem", "chosen", "rejected"))
        files = {"sft": SFT_FILE, "prm": PRM_FILE, "pairs": PAIRS_FILE}
        (tmp / MANIFEST).write_text(json.dumps({"files": files, **harvest.counts(), **manifest}, indent=1),
                                    encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_harvest(folder: str | os.PathLike) -> Harvest:
    """A harvest written by `write_harvest`, as plain lists of dicts."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))

    def rows(name: str) -> list[dict]:  # pyarrow, not datasets: no cache files, and empty tables read back
        return pq.read_table(folder / manifest["files"][name]).to_pylist()

    return Harvest(sft=rows("sft"), prm=rows("prm"), pairs=rows("pairs"))
