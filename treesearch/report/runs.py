"""What a report shows, read from a search run's files: its records, problems, trees and figures.

    load_run(results, trees=..., problem_file=...)   a `Run`: the results file, its manifest, the
                          fields of its problems (level, subject), its trees (read through
                          `mcts.trees.TreeRecord.from_json`, so a tree of another format is refused)
    summary(rows)         accuracy with its 95% Wilson interval, answered, tokens and simulations
    breakdown(rows)       the same per difficulty: the toy world's number of operations, MATH's
                          level and subject
    problem_rows(run)     one row per problem for the page's list
    tree_view(...)        one tree as the page draws it: columns of node fields, the chosen path,
                          each finished answer right or wrong, each toy step's oracle label
    comparison(a, b)      two runs over the same problems: which flipped, the tokens each side spent
    bootstrap_ci, paired_difference   95% bootstrap intervals over problems of an accuracy and of
                          the paired difference of two methods, each side [seeds, problems]

Bad input raises `ReportError`, one line naming the file or flag. Everything returned is plain
JSON-able data; `treesearch.report.page` turns it into HTML.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mcts.envs.arith_expr import ArithParseError, BinOp, parse_expression
from mcts.envs.arith_steps import gold_int, label_step
from mcts.grading import is_equivalent
from mcts.problems import ProblemFileError, load_problems
from mcts.trees import TreeFormatError, TreeRecord
from treesearch.cli import scorer_label
from treesearch.results import ResultsFileError, manifest_path, read_results, tree_file_name

__all__ = ["ReportError", "Run", "breakdown", "chosen_path", "comparison", "load_run", "problem_rows", "summary",
           "tree_view", "wilson_interval", "bootstrap_ci", "paired_difference"]

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


class ReportError(ValueError):
    """An input a report cannot be made from; the message names the file or flag."""


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None for n = 0. Unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n <= 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 or n successes a bound is exactly 0 or 1; computed, it would miss by a rounding error
    return (0.0 if correct == 0 else max(0.0, centre - half)), (1.0 if correct == n else min(1.0, centre + half))


def _bootstrap_interval(per_problem: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% interval of the mean of per-problem figures, problems resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_problem), size=(resamples, len(per_problem)))
    means = per_problem[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def bootstrap_ci(correct: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean accuracy: problems resampled with replacement, `correct` being
    [seeds, problems] (each resample averages its problems over every seed)."""
    return _bootstrap_interval(correct.mean(axis=0), resamples, seed)


def paired_difference(correct: np.ndarray, reference: np.ndarray, resamples: int,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean accuracy difference of two methods on the same problems and its 95% interval, problems
    resampled with replacement (each side [seeds, problems], averaged over its seeds per problem)."""
    per_problem = correct.mean(axis=0) - reference.mean(axis=0)
    return (float(per_problem.mean()), *_bootstrap_interval(per_problem, resamples, seed))


@dataclasses.dataclass
class Run:
    """A search run as a report reads it."""

    path: Path
    records: list[dict]
    manifest: dict | None
    texts: dict[str, str]  # problem id -> its statement (from the trees, the problem file or the records)
    fields: dict[str, dict]  # problem id -> {"level": ..., "subject": ...} or {"operations": ...}
    trees: dict[str, TreeRecord]
    scorer: str
    oracle: bool
    notes: list[str]  # what the page should say about what it could not read

    @property
    def model(self) -> str | None:
        return (self.manifest or {}).get("model")

    @property
    def algorithm(self) -> str | None:
        algorithms = sorted({str(r.get("algorithm")) for r in self.records if r.get("algorithm")})
        return ", ".join(algorithms) or (self.manifest or {}).get("algorithm")


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())
        raise ReportError(f"{flag} {path}: not readable JSON ({reason})") from None


def _read_records(path: Path, flag: str) -> list[dict]:
    if path.is_dir():
        raise ReportError(f"{flag} {path}: is a folder, not a results file")
    if not path.exists():
        raise ReportError(f"{flag} {path}: file not found")
    try:
        records = read_results(path)
    except ResultsFileError as err:
        raise ReportError(f"{flag} {str(err).replace('; cannot resume from it', '')}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{flag} {path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    if not records:
        raise ReportError(f"{flag} {path}: holds no records")
    for r in records:
        for key, kind in (("tokens", int), ("correct", (bool, type(None))), ("answer", (str, type(None)))):
            if key in r and not isinstance(r[key], kind):
                raise ReportError(f"{flag} {path}: record {r['id']!r}: field {key!r} has the wrong type")
    return records


def _operations(expr) -> int:
    return 1 + _operations(expr.left) + _operations(expr.right) if isinstance(expr, BinOp) else 0


def toy_operations(text: str) -> int | None:
    """The number of operations of a toy-world problem (its difficulty); None for any other text."""
    try:
        return _operations(parse_expression(text))
    except ArithParseError:
        return None


def _problem_fields(problem_file: Path | None, records: Sequence[dict], notes: list[str],
                    flag: str) -> tuple[dict[str, str], dict[str, dict]]:
    """(texts, fields) by id from the problem file the run read, for the records whose problem text
    it still holds (same sha256)."""
    if problem_file is None:
        return {}, {}
    try:
        problems = {p.id: p for p in load_problems(problem_file)}
    except ProblemFileError as err:
        if flag == "manifest":  # the file the search read has moved or changed: report without it
            notes.append(f"the problem file of the manifest could not be read ({err}); pass --problem-file")
            return {}, {}
        raise ReportError(f"{flag}: {err}") from None
    texts, fields, changed = {}, {}, 0
    for r in records:
        p = problems.get(r["id"])
        if p is None:
            continue
        if r.get("problem_sha256") not in (None, p.sha256):
            changed += 1
            continue
        texts[p.id] = p.problem
        fields[p.id] = {k: p.meta[k] for k in ("level", "subject") if p.meta.get(k) is not None}
    if changed:
        notes.append(f"{changed} records were searched on another text than {problem_file} holds under "
                     f"their id: their level and subject are left out")
    return texts, fields


def _load_trees(folder: Path, records: Sequence[dict], flag: str, progress: bool) -> dict[str, TreeRecord]:
    if not folder.is_dir():
        raise ReportError(f"{flag} {folder}: " + ("is a file, not a folder of trees" if folder.exists()
                                                  else "no such folder"))
    trees = {}
    for r in tqdm(records, desc="reading trees", unit="tree", disable=not progress):
        path = folder / tree_file_name(r["id"])
        if not path.exists():
            continue
        data = _read_json(path, flag)
        if isinstance(data, dict) and data.get("id") not in (None, r["id"]):
            raise ReportError(f"{flag} {path}: holds the tree of problem {data.get('id')!r}, not of {r['id']!r}")
        trees[r["id"]] = _tree(data, str(path))
    if not trees:
        raise ReportError(f"{flag} {folder}: holds no tree of any problem of the results file (was it the "
                          f"--trees-out of this search?)")
    return trees


def _tree(data: Any, where: str) -> TreeRecord:
    try:
        return TreeRecord.from_json(data, where)
    except TreeFormatError as err:
        raise ReportError(str(err)) from None


def load_run(results: str | Path, *, trees: str | Path | None = None, problem_file: str | Path | None = None,
             scorer: str | None = None, oracle: bool | None = None, flag: str = "--results",
             progress: bool = False) -> Run:
    """A search run from its results file (with `<results>.manifest.json` beside it when the search
    wrote one), its trees (`--trees-out`, or a `tree` field in each record, as self-training's search
    stages write them) and its problem file (the manifest's, unless `problem_file` is given).

    `scorer`/`oracle` name the scorer where no manifest does (self-training's stages)."""
    path = Path(results)
    records = _read_records(path, flag)
    manifest = None
    if manifest_path(path).exists():
        manifest = _read_json(manifest_path(path), f"{flag} manifest")
        if not isinstance(manifest, dict):
            raise ReportError(f"{flag} {manifest_path(path)}: not a manifest (a JSON object)")
    notes: list[str] = []
    if problem_file is not None:
        texts, fields = _problem_fields(Path(problem_file), records, notes, "--problem-file")
    elif manifest and manifest.get("problem_file"):
        texts, fields = _problem_fields(Path(manifest["problem_file"]), records, notes, "manifest")
    else:
        texts, fields = {}, {}
    found = {}
    if trees is not None:
        found = _load_trees(Path(trees), records, "--trees", progress)
    for lineno, r in enumerate(records, start=1):
        if isinstance(r.get("tree"), dict) and r["id"] not in found:
            found[r["id"]] = _tree(r["tree"], f"{path}:{lineno}: field 'tree'")
    for r in records:
        text = found[r["id"]].problem if r["id"] in found else r.get("problem")
        if isinstance(text, str):
            texts.setdefault(r["id"], text)
        if r["id"] in texts and (ops := toy_operations(texts[r["id"]])) is not None:
            fields.setdefault(r["id"], {})["operations"] = ops
    if scorer is None and manifest is None:
        scorer, oracle = "unknown (no manifest beside the results file names it)", False
    elif scorer is None:
        prm = manifest.get("prm")
        scorer = scorer_label(str(prm), manifest.get("oracle_noise"), needs_scorer=prm is not None)
        oracle = prm == "oracle"
    return Run(path, records, manifest, texts, fields, found, scorer, bool(oracle), notes)


# ---------------------------------------------------------------------------------------------------
# Figures


def summary(rows: Sequence[Mapping]) -> dict:
    """Accuracy (over the graded problems) with its 95% Wilson interval, and the per-problem means."""
    n = len(rows)
    graded = [r for r in rows if r["correct"] is not None]
    correct = sum(bool(r["correct"]) for r in graded)
    return {"problems": n, "graded": len(graded), "correct": correct,
            "accuracy": correct / len(graded) if graded else None, "ci": wilson_interval(correct, len(graded)),
            "answered": sum(r["answer"] is not None for r in rows),
            "tokens": sum(r["tokens"] for r in rows),
            "tokens_per_problem": sum(r["tokens"] for r in rows) / n if n else None,
            "simulations_per_problem": sum(r["simulations"] for r in rows) / n if n else None}


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def breakdown(rows: Sequence[Mapping]) -> list[dict]:
    """Per field that some rows have (operations, level, subject): one summary per value."""
    out = []
    for field in ("operations", "level", "subject"):
        groups: dict[Any, list] = {}
        for r in rows:
            if r["fields"].get(field) is not None:
                groups.setdefault(r["fields"][field], []).append(r)
        if groups:
            out.append({"field": field, "rows": [{"value": value, **summary(groups[value])}
                                                 for value in sorted(groups, key=_sort_key)]})
    return out


def problem_rows(run: Run) -> list[dict]:
    """One row per record, in file order: what the list shows and sorts by."""
    rows = []
    for i, r in enumerate(run.records):
        tree = run.trees.get(r["id"])
        rows.append({"index": i, "id": r["id"], "problem": run.texts.get(r["id"], ""), "gold": _text(r.get("gold")),
                     "answer": _text(r.get("answer")), "correct": r.get("correct"), "sha256": r.get("problem_sha256"),
                     "tokens": int(r.get("tokens", 0)), "value": _number(r.get("value")),
                     "simulations": int(r.get("simulations", 0)), "candidates": r.get("num_candidates"),
                     "nodes": len(tree.nodes) if tree is not None else 0,
                     "fields": run.fields.get(r["id"], {})})
    return rows


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any, digits: int = 4) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return round(float(value), digits)


# ---------------------------------------------------------------------------------------------------
# Trees


def chosen_path(tree: TreeRecord, trace: str) -> tuple[list[int], bool]:
    """The node ids (root's child first) whose steps spell the chosen solution's `trace`, and whether
    the whole trace lies in the tree (False: it ends in a greedy completion made after the search,
    or the tree holds another spelling)."""
    children = tree.children()
    node, at, path = 0, 0, []
    while True:
        fits = [c for c in children[node] if tree.nodes[c].step and trace.startswith(tree.nodes[c].step, at)]
        if not fits:
            return path, at == len(trace) and bool(trace)
        node = max(fits, key=lambda c: len(tree.nodes[c].step))  # the longest spelling that fits
        path.append(node)
        at += len(tree.nodes[node].step)


def _labeller(problem: str, gold: str | None) -> Callable[[str], int] | None:
    """The toy oracle's step label against `gold`, where the problem is the toy world's."""
    if gold is None or toy_operations(problem) is None:
        return None
    try:
        value = gold_int(gold)
    except ValueError:
        return None
    return lambda step: label_step(step, value)


def tree_view(tree: TreeRecord, record: Mapping) -> dict:
    """Tree `tree` of `record` as the page reads it: one list per node field (node i at position i),
    the chosen path, finished answers graded against the gold answer, toy steps labelled."""
    gold = _text(record.get("gold"))
    label = _labeller(tree.problem, gold)
    graded: dict[str, bool] = {}

    def right(answer: str | None) -> bool | None:
        if answer is None or gold is None:
            return None
        if answer not in graded:
            graded[answer] = is_equivalent(answer, gold)
        return graded[answer]

    nodes = tree.nodes
    trace = str(record.get("trace") or "")
    path, whole = chosen_path(tree, trace)
    return {
        "problem": tree.problem, "algorithm": tree.algorithm,
        "parent": [n.parent for n in nodes], "depth": [n.depth for n in nodes], "step": [n.step for n in nodes],
        "prior": [_number(n.prior) for n in nodes], "reward": [_number(n.reward) for n in nodes],
        "q": [_number(n.q) for n in nodes], "visits": [n.visits for n in nodes],
        "logprob": [_number(n.logprob, 3) for n in nodes],
        "expanded": [n.expanded for n in nodes], "terminal": [n.terminal for n in nodes],
        "answer": [n.answer for n in nodes], "right": [right(n.answer) if n.terminal else None for n in nodes],
        "label": [label(n.step) if label is not None and n.step else None for n in nodes],
        "chosen": path, "chosen_whole": whole if trace else None,  # None: nothing was chosen
    }


# ---------------------------------------------------------------------------------------------------
# Two runs


def comparison(a: Sequence[Mapping], b: Sequence[Mapping], b_name: str) -> dict:
    """Run b beside run a (the problem rows of each), over the problems both searched (same id and,
    where both records say, the same text)."""
    by_id = {r["id"]: r for r in b}
    pairs = [(x, by_id[x["id"]]) for x in a if x["id"] in by_id]
    # an id whose text changed between the runs is another problem: both records say which text they searched
    both = [(x, y) for x, y in pairs if None in (x["sha256"], y["sha256"]) or x["sha256"] == y["sha256"]]
    if not both:
        raise ReportError(f"--compare {b_name}: shares no problem id with --results")

    def flips(was: bool, now: bool) -> list[dict]:
        return [{"id": x["id"], "index": x["index"], "a": x["answer"], "b": y["answer"], "gold": x["gold"],
                 "a_tokens": x["tokens"], "b_tokens": y["tokens"]}
                for x, y in both if x["correct"] is was and y["correct"] is now]

    shared_a, shared_b = [x for x, _ in both], [y for _, y in both]
    return {"name": b_name, "shared": len(both), "only_a": len(a) - len(pairs), "only_b": len(b) - len(pairs),
            "other_text": len(pairs) - len(both),
            "a": summary(shared_a), "b": summary(shared_b),
            "wrong_to_right": flips(False, True), "right_to_wrong": flips(True, False),
            "other": {x["id"]: {"answer": y["answer"], "correct": y["correct"], "tokens": y["tokens"]}
                      for x, y in both}}
