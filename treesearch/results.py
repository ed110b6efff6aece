"""The results file of a search run, and the driver that fills it as shards finish.

    search_problems(problems, spec, executor, out_path=..., resume=..., trees_out=...) -> SearchRun
                        skips finished problems (`resume`), shards the rest, rewrites `out_path`
                        atomically (temporary file + rename) after every finished shard, finished
                        records first then new ones in file order, dumps trees, one tqdm bar
    read_results        the records of a results file; a bad line is a `ResultsFileError`
                        naming the file, line and field
    write_tree          one tree's JSON per problem into a folder, under a bounded, unique name
    run_manifest        what a results file is made from (the problem file's sha256, the models,
                        the seed, the search config): written beside it (`<out>.manifest.json`);
                        `--resume` refuses a file made from anything else and says what differs
    OutputLock          an exclusive lock on a results file for the whole run (`.<out>.lock`): a
                        second writer is refused with the holder's pid

Every record holds `problem_sha256` (`mcts.problems.Problem.sha256`), so that a resumed run notices
a problem file whose problems changed under the same ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tqdm import tqdm

from mcts.files import write_atomic, write_json_atomic, write_jsonl_atomic
from mcts.problems import Problem
from treesearch.engine import EngineSpec, ShardResult, make_shards
from treesearch.executor import Executor, LocalExecutor

__all__ = ["MANIFEST_FORMAT", "OutputLock", "ResultsFileError", "SearchRun", "check_manifest", "manifest_path",
           "read_results", "run_manifest", "search_problems", "tree_file_name",
           "write_tree"]

MANIFEST_FORMAT = 1


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
            except RecursionError:
                raise ResultsFileError(f"{path}:{lineno}: JSON nested too deeply; cannot resume from it") from None
            except json.JSONDecodeError as err:
                raise ResultsFileError(f"{path}:{lineno}: malformed JSON ({err.msg}); cannot resume from it") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ResultsFileError(f"{path}:{lineno}: field 'id': missing or not a string; cannot resume from it")
            records.append(record)
    return records


def tree_file_name(problem_id: str) -> str:
    """A tree's file name: the id's safe characters (at most 80) and a hash of the whole id, so
    that ids such as `a/b` and `a_b` never share a file and a long id never makes too long a name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in problem_id)[:80].lstrip(".")
    return f"{safe}-{hashlib.sha256(problem_id.encode('utf-8')).hexdigest()[:12]}.json"


def write_tree(folder: Path, problem_id: str, tree: dict) -> None:
    """Writes one tree's JSON (with the problem id inside) to `folder`, atomically."""
    write_atomic(Path(folder) / tree_file_name(problem_id),
                  lambda handle: json.dump({"id": problem_id, **tree}, handle, ensure_ascii=False))


def manifest_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".manifest.json")


def run_manifest(problem_file: str | os.PathLike, spec: EngineSpec) -> dict:
    """What a results file is made from: compared field by field on --resume."""
    digest = hashlib.sha256(Path(problem_file).read_bytes()).hexdigest()
    return {"format": MANIFEST_FORMAT, "problem_file": str(Path(problem_file).resolve()), "problem_file_sha256": digest,
            "model": spec.model, "preset": spec.preset, "prm": spec.prm if spec.needs_scorer else None,
            "backend": spec.backend,
            # None when at their defaults, so that a results file from before these fields still resumes
            "prm_format": spec.prm_format if spec.needs_scorer and spec.prm_format != "auto" else None,
            "prm_backend": spec.prm_backend if spec.needs_scorer and spec.prm_backend != "hf" else None,
            "seed": spec.seed, "oracle_noise": spec.oracle_noise if spec.prm == "oracle" else None,
            "pprm": spec.pprm, "ebc_alpha": spec.ebc_alpha if spec.pprm else None, "algorithm": spec.algorithm,
            "search": json.loads(json.dumps(dataclasses.asdict(spec.config)))}


def check_manifest(out: Path, manifest: Mapping) -> None:
    """Raises ResultsFileError unless `out`'s manifest equals `manifest` (its problem file path may move)."""
    path = manifest_path(out)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(f"{out}: no manifest ({path.name}) says what it was made from, so --resume cannot "
                               f"check it; search into another --out, or pass --overwrite") from None
    except (OSError, ValueError) as err:
        raise ResultsFileError(f"{path}: unreadable manifest ({err}); cannot resume {out}") from None
    if not isinstance(recorded, dict) or recorded.get("format") != MANIFEST_FORMAT:
        raise ResultsFileError(f"{path}: field 'format': not a manifest of format {MANIFEST_FORMAT}")
    differ = []
    for key, value in manifest.items():
        if key == "problem_file":
            continue
        if key == "search":
            old = recorded.get("search") or {}
            differ += [f"{k} ({old.get(k)!r}, now {v!r})" for k, v in value.items() if old.get(k) != v]
        elif recorded.get(key) != value:
            differ.append(f"{key} ({recorded.get(key)!r}, now {value!r})" if key != "problem_file_sha256" else
                          f"the problem file's content ({recorded.get('problem_file')} then, {manifest['problem_file']} now)")
    if differ:
        raise ResultsFileError(f"--resume: {out} was made with another " + "; ".join(differ)
                               + "; search with the same settings, or into another --out")


class OutputLock:
    """An exclusive lock on a results file, held for the whole run: `.<name>.lock` beside it holds
    the holder's pid. A second writer gets a `ResultsFileError` naming that pid."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out.with_name(f".{self.out.name}.lock")
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise ResultsFileError(f"--out {self.out}: another process (pid {holder}) is writing it "
                                           f"(lock {self.path})") from None
                raise
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed this lock file as we took it: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        # Removed while still held: a process that opened it meanwhile sees, once it holds it, that
        # the path no longer names its file, and takes a fresh one.
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclasses.dataclass
class SearchRun:
    """The outcome of `search_problems`."""

    records: list[dict]  # every record (finished ones from `out_path` first, then new ones in file order)
    searched: int  # problems searched in this run
    seconds: float  # wall time of the search (in process: the models loaded before it)


def search_problems(problems: Sequence[Problem], spec: EngineSpec, executor: Executor | None = None, *,
                    batch: int = 16, out_path: str | os.PathLike | None = None, resume: bool = False,
                    trees_out: str | os.PathLike | None = None, on_record: Callable[[dict], None] | None = None,
                    progress: bool = False, manifest: Mapping | None = None) -> SearchRun:
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
        manifest: what the run is made from (`run_manifest`): written beside `out_path`; with
            `resume`, an existing results file must have been made from the same.

    Returns:
        The `SearchRun`. Raises `EngineLoadError` when the spec cannot search these problems, and
        `ResultsFileError` for a results file that cannot be resumed or that another process writes.
    """
    out = Path(out_path) if out_path is not None else None
    with OutputLock(out) if out is not None else contextlib.nullcontext():
        return _search_problems(problems, spec, executor, batch, out, resume, trees_out, on_record, progress,
                                manifest)


def _search_problems(problems, spec, executor, batch, out, resume, trees_out, on_record, progress,
                     manifest) -> SearchRun:
    done = []
    if resume and out is not None and out.exists():
        if manifest is not None:
            check_manifest(out, manifest)
        done = read_results(out)
        texts = {p.id: p for p in problems}
        for r in done:
            if r["id"] in texts and r.get("problem_sha256") != texts[r["id"]].sha256:
                raise ResultsFileError(f"--resume: {out}: record {r['id']!r} was made for another problem text "
                                       f"than the problem file's problem of that id")
    manifest_written = [manifest is None]

    def save(records: list[dict]) -> None:
        # the manifest goes down with the first results, so that a run that fails before any leaves nothing
        if not manifest_written[0]:
            write_json_atomic(manifest_path(out), dict(manifest))
            manifest_written[0] = True
        write_jsonl_atomic(out, records)

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
            # trees first: a results file never holds a record whose tree was not written
            if tree_dir is not None and result.trees is not None:
                for record, tree in zip(result.records, result.trees):
                    if tree is not None and record["id"] in written_now:
                        write_tree(tree_dir, record["id"], tree)
            if out is not None:
                save([*done, *new])
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
        save(done)
    return SearchRun([*done, *new], len(new), elapsed)
