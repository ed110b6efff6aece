"""The results file of a search run, and the driver that fills it as shards finish.

    search_problems(problems, spec, executor, out_path=..., resume=..., trees_out=...) -> SearchRun
                        skips finished problems (`resume`), shards the rest, rewrites `out_path`
                        atomically (temporary file + rename) after every finished shard, finished
                        records first then new ones in file order, dumps trees, one tqdm bar
    read_results        the records of a results file; a bad line is a `ResultsFileError`
                        naming the file, line and field
    write_jsonl_atomic  JSON lines through a temporary file renamed into place
    write_tree          one tree's JSON per problem into a folder
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from mcts.problems import Problem
from treesearch.engine import EngineSpec, ShardResult, make_shards
from treesearch.executor import Executor, LocalExecutor

__all__ = ["ResultsFileError", "SearchRun", "read_results", "search_problems", "write_jsonl_atomic", "write_tree"]


class ResultsFileError(ValueError):
    """A results file that cannot be read back: the message names its file, line and field."""


def read_results(path: Path) -> list[dict]:
    """The records of an existing results file (for --resume); a bad line raises ResultsFileError."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ResultsFileError(f"{path}:{lineno}: malformed JSON ({err.msg}); cannot resume from it") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ResultsFileError(f"{path}:{lineno}: field 'id': missing or not a string; cannot resume from it")
            records.append(record)
    return records


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Writes JSON lines to a temporary file beside `path`, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tree(folder: Path, problem_id: str, tree: dict) -> None:
    """Writes one tree's JSON (with the problem id inside) to `folder`, atomically."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in problem_id)
    target = folder / f"{safe}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"id": problem_id, **tree}, handle, ensure_ascii=False)
    os.replace(tmp, target)


@dataclasses.dataclass
class SearchRun:
    """The outcome of `search_problems`."""

    records: list[dict]  # every record (finished ones from `out_path` first, then new ones in file order)
    searched: int  # problems searched in this run
    seconds: float  # wall time of the search (in process: the models loaded before it)


def search_problems(problems: Sequence[Problem], spec: EngineSpec, executor: Executor | None = None, *,
                    batch: int = 16, out_path: str | os.PathLike | None = None, resume: bool = False,
                    trees_out: str | os.PathLike | None = None, on_record: Callable[[dict], None] | None = None,
                    progress: bool = False) -> SearchRun:
    """Searches every problem with `executor` (default: a fresh `LocalExecutor`) and collects the
    records, writing them as shards finish.

    Args:
        problems: [P] problems, in file order (shard k is problems [k * batch, (k + 1) * batch)).
        spec: the engine every worker builds; `spec.golds` None is filled from the problems' answers.
        executor: where the shards run; not closed here.
        batch: problems per shard (trees per forest).
        out_path: the results file, rewritten atomically after every finished shard; None: not written.
        resume: keep the records already in `out_path` and search only the other problems.
        trees_out: folder for one JSON file per searched tree (tree algorithms).
        on_record: called with each new record, as its shard finishes.
        progress: show a tqdm bar over the problems.

    Returns:
        The `SearchRun`. Raises `EngineLoadError` when the spec cannot search these problems, and
        `ResultsFileError` for a results file that cannot be resumed.
    """
    out = Path(out_path) if out_path is not None else None
    done = read_results(out) if resume and out is not None and out.exists() else []
    done_ids = {r["id"] for r in done}
    todo = [p for p in problems if p.id not in done_ids]
    if todo:
        spec.check([p.problem for p in todo])
    if spec.golds is None and spec.needs_scorer and spec.prm == "oracle":
        spec = dataclasses.replace(spec, golds={p.problem: p.answer for p in todo if p.answer})
    tree_dir = Path(trees_out) if trees_out is not None else None
    if tree_dir is not None:
        tree_dir.mkdir(parents=True, exist_ok=True)
    shards = make_shards(problems, batch, done_ids, trees=tree_dir is not None)
    position = {p.id: i for i, p in enumerate(problems)}
    new: list[dict] = []
    written: set[str] = set()
    executor = LocalExecutor() if executor is None else executor
    if todo and isinstance(executor, LocalExecutor):
        # The models load (or build, with bars of their own) before the search's bar starts, so that
        # loading is neither shown as search progress nor counted in its problems per second. Ray
        # actors build theirs while the first shards wait, and `RayStats` times that start apart.
        executor.start(spec)

    with tqdm(total=len(todo), desc=spec.config.algorithm, unit="problem", disable=not (progress and todo)) as bar:
        def on_shard_done(result: ShardResult) -> None:
            fresh = [r for r in result.records if r["id"] not in written]  # never write a problem twice
            written_now = {r["id"] for r in fresh}
            written.update(r["id"] for r in fresh)
            new.extend(fresh)
            new.sort(key=lambda r: position[r["id"]])
            if out is not None:
                write_jsonl_atomic(out, [*done, *new])
            if tree_dir is not None and result.trees is not None:
                for record, tree in zip(result.records, result.trees):
                    if tree is not None and record["id"] in written_now:
                        write_tree(tree_dir, record["id"], tree)
            if on_record is not None:
                for record in fresh:
                    on_record(record)
            graded = [r["correct"] for r in new if r["correct"] is not None]
            bar.set_postfix(acc=f"{sum(graded) / len(graded):.3f}" if graded else "n/a")
            bar.update(len(fresh))

        start = time.perf_counter()
        executor.run(spec, shards, on_shard_done)
        elapsed = time.perf_counter() - start
    if out is not None and not todo and not out.exists():
        write_jsonl_atomic(out, done)
    return SearchRun([*done, *new], len(new), elapsed)
