"""A self-training run: its folder, its stages, and the stages every loop shares.

    runs/NAME/config.json          the resolved configuration and its fingerprint (a run folder of
                                   another config is refused unless --force)
    runs/NAME/base/                the starting policy and PRM (iteration 0)
    runs/NAME/iter_k/stages.json   the finished stages of iteration k, with their seconds and figures
    runs/NAME/iter_k/<stage>/      what each stage wrote: search results and trees, harvested data
                                   (Parquet + manifest), the fine-tuned policy, the PRM
    runs/NAME/iter_k/metrics.json  greedy_acc, search_acc, greedy_subset_acc, prm_auc, harvested_traces,
                                   harvested_values, tokens, seconds

Resumption: a stage is recorded in `stages.json` only once everything it wrote is in place (files
are written to temporary names and renamed), so a run killed at any point and started again skips
the finished stages and redoes at most the unfinished one, from its own resume point: the search
keeps every finished shard (a shard's sampling is seeded by its index, so a resumed search gives
the same trees), training goes on from its newest checkpoint. Everything is seeded and the torch
thread count is fixed, so a resumed run ends with the same figures as an uninterrupted one.

Safety: every input (the policy and PRM, the problem files) is checked before the folder is touched.
`--force` replaces only a folder this tool recognises as a run folder (`is_run_folder`: a
config.json of a run, whose fingerprint matches the configuration it holds, beside nothing but what
a run writes); any other non-empty folder is refused, with or without --force. A start that fails
before its first stage is recorded leaves nothing behind (`close` removes the folder it created), so
the corrected retry starts afresh. A corrupt config.json or stages.json is one line naming the file.

Iteration 0 evaluates the starting models; each iteration k >= 1 runs the loop's stages
(`selftrain.rest_mcts`, `.alphallm`, `.llama_berry`, `.rest_em`) and ends with `evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mcts.envs.arith import is_toy
from mcts.grading import is_equivalent
from mcts.problems import Problem
from mcts.files import write_json_atomic, write_jsonl_atomic
from selftrain.config import ConfigError, RunConfig, config_fingerprint, fingerprint_of, load_config, to_dict

__all__ = ["RunContext", "RunError", "check_models", "crash_point", "is_run_folder", "summary_table"]

def _accuracy(answers, problems) -> float:
    """The share of `problems` whose answer in `answers` (in order) is equivalent to the gold."""
    return sum(is_equivalent(a, p.answer) for a, p in zip(answers, problems)) / max(1, len(problems))


METRIC_KEYS = ("greedy_acc", "search_acc", "greedy_subset_acc", "prm_auc", "harvested_traces", "harvested_values", "tokens", "seconds")
CRASH_ENV = "SELFTRAIN_CRASH_AT"


class RunError(Exception):
    """A run that cannot start or go on; printed as one line by the CLI."""


def crash_point(label: str) -> None:
    """Fault injection for the resumption tests: SIGKILL this process at `label` when the
    SELFTRAIN_CRASH_AT environment variable lists it (comma-separated)."""
    if label in os.environ.get(CRASH_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def read_json(path: Path, what: str) -> Any:
    """The JSON in `path` (one of the run's own records, `what`); RunError naming the file when it
    cannot be read or parsed (a truncated or hand-edited file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = getattr(err, "strerror", None) or " ".join(str(err).split())
        raise RunError(f"{path}: unreadable {what} ({reason}); restore or remove it") from None


# What a run writes at the top of its folder (`is_run_folder`): RUN_FILES, iter_<k>/ folders, and the
# temporaries of write_json_atomic / write_jsonl_atomic (".<name>.tmp", ".<name>.<random>.tmp").
RUN_FILES = ("config.json", "summary.json", "prm_eval_traces.jsonl", "report.html")


def _is_run_entry(entry: Path) -> bool:
    name = entry.name
    if entry.is_symlink():
        return False
    if name.startswith("iter_") and name[5:].isdigit():
        return entry.is_dir()
    if name.startswith(".") and name.endswith(".tmp"):
        return any(name == f".{f}.tmp" or name.startswith(f".{f}.") for f in RUN_FILES)
    return name in RUN_FILES and entry.is_file()


def _same_run(saved: Mapping[str, Any], fingerprint: str) -> bool:
    """Whether a run folder's saved configuration (`_saved_run`) is the run of `fingerprint`. A
    run saved before a field existed lacks it: rebuilt as `load_config` builds a run (the missing
    field takes the run's default, which keeps what older runs did), it is the same run if it
    then matches."""
    if saved["fingerprint"] == fingerprint:
        return True
    try:
        return config_fingerprint(load_config(None, saved["config"])) == fingerprint
    except ConfigError:
        return False


def _saved_run(folder: Path) -> dict | None:
    """The parsed config.json of run folder `folder` when it is one a run wrote ({"fingerprint",
    "config"}, the fingerprint that of the config), else None; RunError when it is not JSON."""
    saved = folder / "config.json"
    if not saved.is_file() or saved.is_symlink():
        return None
    data = read_json(saved, "run configuration")
    if not (isinstance(data, dict) and set(data) == {"fingerprint", "config"} and isinstance(data["config"], dict)
            and isinstance(data["fingerprint"], str)):
        return None
    try:
        return data if fingerprint_of(data["config"]) == data["fingerprint"] else None
    except (TypeError, ValueError):
        return None


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is one this tool wrote (see `_not_a_run_folder`); only such a folder may be
    replaced by --force."""
    return _not_a_run_folder(Path(folder)) is None


def _not_a_run_folder(folder: Path) -> str | None:
    """Why `folder` is not a run folder this tool wrote, or None when it is one: a run's config.json
    (`_saved_run`) and nothing at its top but what a run writes (RUN_FILES, iter_<k>/ folders whose
    stages.json, where they have one, is a JSON object, the writers' temporaries)."""
    if folder.is_symlink():
        return "it is a symbolic link"
    if not folder.is_dir():
        return "it is not a folder"
    saved = folder / "config.json"
    if not saved.exists():
        return "it has no run config.json"
    try:
        if _saved_run(folder) is None:
            return "its config.json is not a run's"
        entries = list(folder.iterdir())
    except RunError:
        return "its config.json is not valid JSON"
    except OSError as err:
        return f"it cannot be listed: {err.strerror or err}"
    strangers = sorted(e.name for e in entries if not _is_run_entry(e))
    if strangers:
        more = f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
        return f"it holds what a run does not write: {', '.join(strangers[:3])}{more}"
    for entry in sorted(entries):
        stages = entry / "stages.json"
        if entry.name.startswith("iter_") and stages.exists():
            try:
                if not isinstance(read_json(stages, "stage record"), dict):
                    return f"{entry.name}/stages.json is not a stage record"
            except RunError:
                return f"{entry.name}/stages.json is not valid JSON"
    return None


def check_models(config: RunConfig) -> None:
    """RunError unless the starting policy and PRM name what `build_base` can use: 'weak' / 'tiny' /
    a model folder (with its config.json), 'fresh' / 'tiny' / a PRM folder (with prm_config.json)."""
    if config.policy not in ("weak", "tiny"):
        policy = Path(config.policy)
        if not policy.is_dir():
            raise RunError(f"--policy {config.policy}: not 'weak', 'tiny' or a model folder (no such folder)")
        if not (policy / "config.json").is_file():
            raise RunError(f"--policy {config.policy}: not a model folder (it has no config.json)")
    elif config.preset not in (None, "toy"):
        raise RunError(f"--preset {config.preset}: the toy policy ('{config.policy}') takes no preset but 'toy'")
    if config.preset is not None:
        from mcts.policy.presets import get_preset

        try:
            get_preset(config.preset)
        except ValueError as err:
            raise RunError(str(err)) from None
    if config.prm not in ("fresh", "tiny"):
        prm = Path(config.prm)
        if not prm.is_dir():
            raise RunError(f"--prm {config.prm}: not 'fresh', 'tiny' or a PRM folder (no such folder)")
        if not (prm / "prm_config.json").is_file():
            raise RunError(f"--prm {config.prm}: not a PRM folder (it has no prm_config.json)")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_table(rows: Sequence[Mapping]) -> str:
    """One line per iteration: iteration, then METRIC_KEYS."""
    header = ["iter", *METRIC_KEYS]
    cells = [[str(r.get("iteration", "?")), *(_fmt(r.get(k)) for k in METRIC_KEYS)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


class RunContext:
    """The run folder, its problems and models, and the shared stages."""

    def __init__(self, config: RunConfig, *, force: bool = False, progress: bool = True):
        self.config = config
        self.folder = config.folder
        self.progress = progress
        self._created: list[Path] | None = None  # set when this context started the run: folders it made
        # every input first: nothing is written, and nothing replaced by --force, for a start that cannot go on
        check_models(config)
        self.train, self.eval = self._problems()
        self.golds = {p.problem: p.answer for p in (*self.train, *self.eval) if p.answer is not None}
        self._check_folder(force)

    # -- the folder

    def _check_folder(self, force: bool) -> None:
        folder = self.folder
        fingerprint = config_fingerprint(self.config)
        if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            raise RunError(f"{folder} exists and is not a folder; choose another --name")
        if folder.is_dir():
            try:
                entries = [e.name for e in folder.iterdir()]
            except OSError as err:
                raise RunError(f"{folder}: cannot list the run folder: {err.strerror or err}") from None
            if entries:
                saved = folder / "config.json"
                old = _saved_run(folder) if saved.exists() else None  # RunError: a corrupt config.json
                if old is not None and _same_run(old, fingerprint):
                    for k in sorted(int(p.parent.name[5:]) for p in folder.glob("iter_*/stages.json")
                                    if p.parent.name[5:].isdigit()):
                        self.stages(k)  # a corrupt stage record is named now, not half-way through the run
                    return  # resume
                why = _not_a_run_folder(folder)
                if why is not None:
                    raise RunError(f"{folder} exists and is not a selftrain run folder ({why}); --force replaces "
                                   f"only run folders: choose another --name or --runs-dir, or move it away yourself")
                if not force:
                    raise RunError(f"{folder} holds a run of another configuration (fingerprint "
                                   f"{old['fingerprint']} vs {fingerprint}); choose another --name, or "
                                   f"--force to delete it and start over")
                shutil.rmtree(folder)
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "config.json", {"fingerprint": fingerprint, "config": to_dict(self.config)})
        except OSError as err:
            self._created = created
            self._remove_unfinished()
            raise RunError(f"{folder}: cannot create the run folder: {err.strerror or err}") from None
        self._created = created  # the folder and the parents this start made ([] : the folder was there, empty)

    def _remove_unfinished(self) -> None:
        """Removes what this context's start wrote when no stage of it was recorded: the folder's
        contents (the folder too, and the parents the start made, where it made them)."""
        if self._created is None or not self.folder.is_dir():
            return
        if any(self.folder.glob("iter_*/stages.json")):
            return  # a stage finished: the run resumes from it
        if self.folder in self._created:
            shutil.rmtree(self.folder, ignore_errors=True)
            for parent in self._created[1:]:
                try:
                    parent.rmdir()  # only while empty: another run may have appeared beside this one
                except OSError:
                    break
        else:
            for entry in self.folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self._created = None

    def iter_dir(self, k: int) -> Path:
        return self.folder / f"iter_{k}"

    # -- stages

    def stages(self, k: int) -> dict:
        path = self.iter_dir(k) / "stages.json"
        if not path.exists():
            return {}
        done = read_json(path, "stage record")
        if not isinstance(done, dict):
            raise RunError(f"{path}: unreadable stage record (not a JSON object); restore or remove it")
        return done

    def stage(self, k: int, name: str, work: Callable[[Path], dict | None]) -> dict:
        """Runs `work(folder)` unless iteration k already finished stage `name`; returns its info.

        The stage's folder is iter_k/<name>; `work` writes there (resuming what an interrupted
        attempt left) and returns a JSON-able info dict, recorded with the seconds spent.
        """
        done = self.stages(k)
        if name in done:
            return done[name]
        folder = self.iter_dir(k) / name
        previous = float(self._partial_seconds(k, name))  # an interrupted attempt's, read before `work` adds to it
        started = time.perf_counter()
        info = dict(work(folder) or {})
        info["seconds"] = round(previous + time.perf_counter() - started, 2)
        done = self.stages(k)
        done[name] = info
        write_json_atomic(self.iter_dir(k) / "stages.json", done)
        crash_point(f"iter_{k}/{name}")
        return info

    def _partial_seconds(self, k: int, name: str) -> float:
        """Seconds an interrupted attempt of a stage recorded before it died (search shards)."""
        path = self.iter_dir(k) / name / "progress.json"
        if not path.exists():
            return 0.0
        progress = read_json(path, "progress record")
        return progress.get("seconds", 0.0) if isinstance(progress, dict) else 0.0

    # -- problems

    def _problems(self) -> tuple[list[Problem], list[Problem]]:
        from mcts.problems import ProblemFileError, load_problems

        cfg = self.config

        def generated(n: int, seed: int) -> list[Problem]:
            from mcts.envs.arith import generate_problems
            from mcts.envs.toy_config import toy_problem_config

            arith = dataclasses.replace(toy_problem_config(), min_ops=cfg.min_ops, max_ops=cfg.max_ops)
            return [Problem(id=r["id"], problem=r["problem"], answer=str(r["answer"]), source="jsonl")
                    for r in generate_problems(n, seed, arith)]

        def from_file(path: str, n: int) -> list[Problem]:
            try:
                problems = load_problems(path, limit=n)
            except ProblemFileError as err:
                raise RunError(str(err)) from None
            missing = [p.id for p in problems if p.answer is None]
            if missing:
                raise RunError(f"{path}: problem {missing[0]} has no answer; self-training needs verified answers")
            return problems

        # Train and held-out seeds are far apart: generate_problems(n, seed) is a pure function of both.
        train = from_file(cfg.train_file, cfg.train_problems) if cfg.train_file else generated(cfg.train_problems, 10_000 + cfg.seed)
        held = from_file(cfg.eval_file, cfg.eval_problems) if cfg.eval_file else generated(cfg.eval_problems, 20_000 + cfg.seed)
        overlap = {p.problem for p in train} & {p.problem for p in held}
        held = [p for p in held if p.problem not in overlap]  # never evaluate on a training problem
        return train, held

    @property
    def toy(self) -> bool:
        """Whether the run's problems are the toy world's (the oracle's step labels exist)."""
        return is_toy([p.problem for p in [*self.train, *self.eval]])

    # -- models

    def models(self, k: int) -> tuple[Path, Path]:
        """(policy folder, PRM folder) in effect after iteration k."""
        for j in range(k, 0, -1):
            found = self.stages(j).get("models")
            if found:
                return Path(found["policy"]), Path(found["prm"])
        info = self.stages(0).get("base")
        if info is None:
            raise RunError(f"{self.folder}: the base models are not built yet")
        return Path(info["policy"]), Path(info["prm"])

    def load_policy(self, folder: Path, seed: int):
        from treesearch.loaders import load_proposer

        return load_proposer(str(folder), backend=self.config.backend, seed=seed, device=self.config.device,
                             preset=self.config.preset)

    def load_prm(self, folder: Path):
        from treesearch.loaders import load_scorer

        return load_scorer(str(folder), device=self.config.device)

    # -- shared stages

    def search(self, k: int, name: str, problems: Sequence[Problem], policy: Path, prm: Path | None,
               search, *, seed: int, runner=None) -> dict:
        """Searches `problems` in shards of `config.batch` (stage iter_k/<name>): results.jsonl holds
        one record per problem, with its tree, in problem order; finished shards survive a crash.

        Every search goes through `treesearch.executor` (local, or Ray actors with --executor ray):
        `search.algorithm`'s, or a loop's own `runner` (a picklable `treesearch.executor.SearchRunner`:
        eta-MCTS, SR-MCTS, ReST-EM's chains). Shard k is seeded by (seed, k) either way, so the
        records do not depend on where or in which order the shards ran."""

        def work(folder: Path) -> dict:
            from tqdm.auto import tqdm

            from treesearch.engine import EngineSpec, ShardResult, make_shards

            out = folder / "results.jsonl"
            order = {p.id: i for i, p in enumerate(problems)}
            by_id = {r["id"]: r for r in read_jsonl(out)}
            progress_file = folder / "progress.json"
            seconds = [float(self._partial_seconds(k, name))]
            shards = make_shards(problems, self.config.batch, by_id, trees=True)
            spec = EngineSpec(model=str(policy), prm=str(prm) if prm is not None else "oracle",
                              backend=self.config.backend, device=self.config.device, seed=seed, config=search,
                              preset=self.config.preset, runner=runner)
            bar = tqdm(total=len(problems), initial=len(by_id), desc=f"iter {k} {name}", unit="problem",
                       disable=not self.progress)
            started = [time.perf_counter()]

            def done(result: ShardResult) -> None:
                shard = next(s for s in shards if s.index == result.index)
                for p, record, tree in zip(shard.problems, result.records, result.trees):
                    by_id[p.id] = {**record, "problem": p.problem, "tree": tree}
                write_jsonl_atomic(out, sorted(by_id.values(), key=lambda r: order[r["id"]]))
                now = time.perf_counter()
                seconds[0] += now - started[0]
                started[0] = now
                write_json_atomic(progress_file, {"seconds": seconds[0], "problems_done": len(by_id)})
                bar.update(len(shard.problems))
                crash_point(f"iter_{k}/{name}/shard_{result.index}")

            try:
                self.executor.run(spec, shards, done)
            finally:
                bar.close()
            records = list(by_id.values())
            graded = [r["correct"] for r in records if r["correct"] is not None]
            return {"problems": len(records), "accuracy": sum(graded) / len(graded) if graded else None,
                    "tokens": sum(r["tokens"] for r in records)}

        return self.stage(k, name, work)

    @property
    def executor(self):
        """The executor of the search stages (config.executor), started on first use."""
        if getattr(self, "_executor", None) is None:
            from treesearch.executor import make_executor

            self._executor = make_executor(self.config.executor, actors=self.config.actors)
        return self._executor

    def close(self) -> None:
        """Frees the executor; when this context started the run and no stage of it was recorded (a
        start that failed), removes what it wrote, so that a corrected retry starts afresh."""
        try:
            if getattr(self, "_executor", None) is not None:
                self._executor.close()
                self._executor = None
        finally:
            self._remove_unfinished()

    def search_records(self, k: int, name: str) -> list[dict]:
        return read_jsonl(self.iter_dir(k) / name / "results.jsonl")

    def harvests(self, k: int, name: str = "harvest"):
        """The harvested data this iteration trains on: iteration k's, or every iteration's so far
        (a solution found again in a later iteration is learnt once)."""
        from selftrain.harvest import Harvest, read_harvest, unique_solutions

        out = Harvest()
        for j in (range(1, k + 1) if self.config.accumulate else [k]):
            folder = self.iter_dir(j) / name
            if (folder / "manifest.json").exists():
                out.extend(read_harvest(folder))
        out.sft = unique_solutions(out.sft)
        return out

    def sft(self, k: int, traces: Sequence[Mapping]) -> dict:
        """Stage `policy`: the policy fine-tuned on `traces` (from the previous or the base policy)."""

        def work(folder: Path) -> dict:
            from selftrain.harvest import balance_by_length
            from selftrain.train_stage import TrainJob, run_training

            if not traces:
                return {"skipped": "no verified solution to learn from"}
            start = self.models(0)[0] if self.config.sft_from == "base" else self.models(k - 1)[0]
            rows = balance_by_length(traces) if self.config.sft_balance == "length" else [dict(t) for t in traces]
            return run_training(TrainJob("sft", str(start), rows, self.config.seed + k, sft=self.config.sft,
                                         preset=self.config.preset, threads=self.config.threads, progress=self.progress,
                                         device="cpu" if self.config.device == "cpu" else "auto"), folder)

        return self.stage(k, "policy", work)

    def train_scorer(self, k: int, stage: str, kind: str, start: Path, records: Sequence[Mapping], *,
                     target: str | None = None) -> dict:
        """Stage `stage`: a PRM/ORM (kind prm/orm, on step records' `target`) or PPRM (kind pprm, on
        pairs) trained from `start` (a model of that kind goes on; another folder gets a fresh head)."""

        def work(folder: Path) -> dict:
            from selftrain.train_stage import TrainJob, run_training

            if not records:
                return {"skipped": "no data"}
            cfg = self.config.prm_train
            train = dataclasses.replace(cfg, seed=self.config.seed + k, num_threads=self.config.threads,
                                        device="cpu" if self.config.device == "cpu" else cfg.device)
            return run_training(TrainJob(kind, str(start), [dict(r) for r in records], self.config.seed + k,
                                         train=train, target=target, progress=self.progress,
                                         desc=f"iter {k} {stage}"), folder)

        return self.stage(k, stage, work)

    def set_models(self, k: int, policy: Path, prm: Path) -> None:
        """Records the models iteration k hands on (stage `models`)."""
        self.stage(k, "models", lambda folder: {"policy": str(policy), "prm": str(prm)})

    # -- evaluation

    def prm_eval_records(self) -> list[dict]:
        """Held-out oracle-labelled traces for the PRM's step AUC (toy world), made once per run:
        sampled from the starting policy (config.prm_eval 'policy': the steps this run's PRM is
        trained to judge) or the scripted policy's slips ('scripted')."""
        path = self.folder / "prm_eval_traces.jsonl"
        if path.exists():
            return read_jsonl(path)
        from prm.toy_traces import ToyDataConfig, toy_step_records

        cfg = self.config
        data = ToyDataConfig(problems=max(1, cfg.prm_eval_traces // 4), samples=4, min_ops=cfg.min_ops,
                             max_ops=cfg.max_ops, max_operand=10, slip_rates=(0.15,), seed=30_000 + cfg.seed)
        policy = self.load_policy(self.models(0)[0], 30_000 + cfg.seed) if cfg.prm_eval == "policy" else None
        records = toy_step_records(data, policy)[:cfg.prm_eval_traces]
        write_jsonl_atomic(path, records)
        return records

    def evaluate(self, k: int, search_eval: Callable[[Sequence[Problem], Path, Path], list] | None = None) -> dict:
        """Stage `evaluate`: held-out greedy and search accuracy, the PRM's step AUC, and the
        iteration's harvest, tokens and seconds, into iter_k/metrics.json."""

        def work(folder: Path) -> dict:
            from mcts.algorithms import run_algorithm
            from mcts.config import SearchConfig

            policy_dir, prm_dir = self.models(k)
            texts = [p.problem for p in self.eval]
            proposer = self.load_policy(policy_dir, self.config.seed)
            greedy = run_algorithm(texts, proposer, None, SearchConfig(algorithm="greedy", max_depth=self.config.search.max_depth))
            greedy_acc = _accuracy([r.answer for r in greedy], self.eval)
            subset = self.eval[:self.config.eval_search_problems]
            search_acc = greedy_subset_acc = None
            if subset:
                if search_eval is not None:
                    answers = search_eval(subset, policy_dir, prm_dir)
                else:
                    if hasattr(proposer, "reseed"):
                        proposer.reseed(self.config.seed)
                    results = run_algorithm([p.problem for p in subset], proposer, self.load_prm(prm_dir), self.config.search)
                    answers = [r.answer for r in results]
                search_acc = _accuracy(answers, subset)
                # greedy on the same problems: search_acc's fair comparison (greedy_acc reads all of them)
                greedy_subset_acc = _accuracy([r.answer for r in greedy], subset)
            prm_auc = None
            if self.toy:
                from prm.metrics import step_metrics

                prm_auc = step_metrics(self.load_prm(prm_dir), self.prm_eval_records())["step_auc"]
            return {"greedy_acc": greedy_acc, "search_acc": search_acc, "greedy_subset_acc": greedy_subset_acc,
                    "prm_auc": prm_auc}

        info = self.stage(k, "evaluate", work)
        stages = self.stages(k)
        harvest = next((s for s in stages.values() if "sft_traces" in s), {})
        metrics = {
            "iteration": k, "greedy_acc": info["greedy_acc"], "search_acc": info["search_acc"],
            "greedy_subset_acc": info.get("greedy_subset_acc"),
            "prm_auc": info["prm_auc"], "heldout_problems": len(self.eval),
            "search_problems": min(len(self.eval), self.config.eval_search_problems),
            "harvested_traces": harvest.get("sft_traces", 0),
            "harvested_values": harvest.get("prm_values", 0),
            "tokens": sum(int(s.get("tokens", 0)) for s in stages.values()),
            "seconds": round(sum(float(s.get("seconds", 0.0)) for s in stages.values()), 1),
            "policy": str(self.models(k)[0]), "prm": str(self.models(k)[1]),
        }
        write_json_atomic(self.iter_dir(k) / "metrics.json", metrics)
        return metrics
