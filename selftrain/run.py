"""A self-training run: its folder, its stages, and the stages every loop shares.

    runs/NAME/config.json          the resolved configuration (a run folder from another config is
                                   refused unless --force)
    runs/NAME/base/                the starting policy and PRM (iteration 0)
    runs/NAME/iter_k/stages.json   the finished stages of iteration k, with their seconds and figures
    runs/NAME/iter_k/<stage>/      what each stage wrote: search results and trees, harvested data
                                   (Parquet + manifest), the fine-tuned policy, the PRM
    runs/NAME/iter_k/metrics.json  greedy_acc, search_acc, prm_auc, harvested_traces,
                                   harvested_values, tokens, seconds

Resumption: a stage is recorded in `stages.json` only once everything it wrote is in place (files
are written to temporary names and renamed), so a run killed at any point and started again skips
the finished stages and redoes at most the unfinished one, from its own resume point: the search
keeps every finished shard (a shard's sampling is seeded by its index, so a resumed search gives
the same trees), training goes on from its newest checkpoint. Everything is seeded and the torch
thread count is fixed, so a resumed run ends with the same figures as an uninterrupted one.

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
from treesearch.results import write_jsonl_atomic
from selftrain.config import RunConfig, config_fingerprint, to_dict

__all__ = ["RunContext", "RunError", "crash_point", "summary_table", "write_json_atomic"]

METRIC_KEYS = ("greedy_acc", "search_acc", "prm_auc", "harvested_traces", "harvested_values", "tokens", "seconds")
CRASH_ENV = "SELFTRAIN_CRASH_AT"


class RunError(Exception):
    """A run that cannot start or go on; printed as one line by the CLI."""


def crash_point(label: str) -> None:
    """Fault injection for the resumption tests: SIGKILL this process at `label` when the
    SELFTRAIN_CRASH_AT environment variable lists it (comma-separated)."""
    if label in os.environ.get(CRASH_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
        self._check_folder(force)
        self.train, self.eval = self._problems()
        self.golds = {p.problem: p.answer for p in (*self.train, *self.eval) if p.answer is not None}

    # -- the folder

    def _check_folder(self, force: bool) -> None:
        saved = self.folder / "config.json"
        fingerprint = config_fingerprint(self.config)
        if saved.exists():
            old = json.loads(saved.read_text(encoding="utf-8"))
            if old.get("fingerprint") != fingerprint:
                if not force:
                    raise RunError(f"{self.folder} holds a run of another configuration (fingerprint "
                                   f"{old.get('fingerprint')} vs {fingerprint}); choose another --name, or "
                                   f"--force to delete it and start over")
                shutil.rmtree(self.folder)
        elif self.folder.exists() and any(self.folder.iterdir()):
            if not force:
                raise RunError(f"{self.folder} exists and is not a selftrain run folder; --force deletes it")
            shutil.rmtree(self.folder)
        write_json_atomic(saved, {"fingerprint": fingerprint, "config": to_dict(self.config)})

    def iter_dir(self, k: int) -> Path:
        return self.folder / f"iter_{k}"

    # -- stages

    def stages(self, k: int) -> dict:
        path = self.iter_dir(k) / "stages.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

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
        return json.loads(path.read_text(encoding="utf-8")).get("seconds", 0.0) if path.exists() else 0.0

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

        return load_proposer(str(folder), backend=self.config.backend, seed=seed, device=self.config.device)

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
                              runner=runner)
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
        if getattr(self, "_executor", None) is not None:
            self._executor.close()
            self._executor = None

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
            from selftrain.train_stage import job_config, run_training

            if not traces:
                return {"skipped": "no verified solution to learn from"}
            start = self.models(0)[0] if self.config.sft_from == "base" else self.models(k - 1)[0]
            rows = balance_by_length(traces) if self.config.sft_balance == "length" else [dict(t) for t in traces]
            return run_training({"kind": "sft", "start": str(start), "records": rows,
                                 "sft": job_config(self.config.sft), "seed": self.config.seed + k,
                                 "threads": self.config.threads, "progress": self.progress,
                                 "device": "cpu" if self.config.device == "cpu" else "auto"}, folder)

        return self.stage(k, "policy", work)

    def train_scorer(self, k: int, stage: str, kind: str, start: Path, records: Sequence[Mapping], *,
                     target: str | None = None) -> dict:
        """Stage `stage`: a PRM/ORM (kind prm/orm, on step records' `target`) or PPRM (kind pprm, on
        pairs) trained from `start` (a model of that kind goes on; another folder gets a fresh head)."""

        def work(folder: Path) -> dict:
            from selftrain.train_stage import job_config, run_training

            if not records:
                return {"skipped": "no data"}
            cfg = self.config.prm_train
            train = dataclasses.replace(cfg, seed=self.config.seed + k, num_threads=self.config.threads,
                                        device="cpu" if self.config.device == "cpu" else cfg.device)
            return run_training({"kind": kind, "start": str(start), "records": [dict(r) for r in records],
                                 "train": job_config(train), "target": target, "seed": self.config.seed + k,
                                 "progress": self.progress, "desc": f"iter {k} {stage}"}, folder)

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
            greedy_acc = sum(is_equivalent(r.answer, p.answer) for r, p in zip(greedy, self.eval)) / max(1, len(self.eval))
            subset = self.eval[:self.config.eval_search_problems]
            search_acc = None
            if subset:
                if search_eval is not None:
                    answers = search_eval(subset, policy_dir, prm_dir)
                else:
                    if hasattr(proposer, "reseed"):
                        proposer.reseed(self.config.seed)
                    results = run_algorithm([p.problem for p in subset], proposer, self.load_prm(prm_dir), self.config.search)
                    answers = [r.answer for r in results]
                search_acc = sum(is_equivalent(a, p.answer) for a, p in zip(answers, subset)) / len(subset)
            prm_auc = None
            if self.toy:
                from prm.metrics import step_metrics

                prm_auc = step_metrics(self.load_prm(prm_dir), self.prm_eval_records())["step_auc"]
            return {"greedy_acc": greedy_acc, "search_acc": search_acc, "prm_auc": prm_auc}

        info = self.stage(k, "evaluate", work)
        stages = self.stages(k)
        harvest = next((s for s in stages.values() if "sft_traces" in s), {})
        metrics = {
            "iteration": k, "greedy_acc": info["greedy_acc"], "search_acc": info["search_acc"],
            "prm_auc": info["prm_auc"], "harvested_traces": harvest.get("sft_traces", 0),
            "harvested_values": harvest.get("prm_values", 0),
            "tokens": sum(int(s.get("tokens", 0)) for s in stages.values()),
            "seconds": round(sum(float(s.get("seconds", 0.0)) for s in stages.values()), 1),
            "policy": str(self.models(k)[0]), "prm": str(self.models(k)[1]),
        }
        write_json_atomic(self.iter_dir(k) / "metrics.json", metrics)
        return metrics


# ---------------------------------------------------------------------------------------------------
# The starting models and the driver


def weak_policy_dir(steps: int, traces: int | None, seed: int) -> Path:
    from mcts.envs.tiny_models import FORMAT_VERSION, default_cache_dir

    data = "fresh" if traces is None else f"{traces}t"
    return default_cache_dir().parent / f"toy-policy-weak-{data}-{steps}s-s{seed}-v{FORMAT_VERSION}"


def build_weak_policy(steps: int, traces: int | None, seed: int, *, threads: int, progress: bool) -> Path:
    """The toy policy trained for only `steps` optimizer steps of 32 solutions (the full one takes
    3000), on `traces` distinct solutions or (None) a fresh one every time: deliberately weak (it
    writes the format but has learnt few arithmetic facts), cached beside the full toy policy
    (training is deterministic under its seed and threads)."""
    from mcts.envs.tiny_models import build_toy_policy
    from mcts.envs.toy_config import FULL_CONFIG

    out = weak_policy_dir(steps, traces, seed)
    if not out.exists():
        config = dataclasses.replace(FULL_CONFIG, steps=steps, warmup_steps=min(FULL_CONFIG.warmup_steps, steps // 4),
                                     distinct_traces=traces, seed=seed, eval_per_ops=0, num_threads=threads)
        build_toy_policy(out, config, progress=progress)
    return out


def build_base(ctx: RunContext) -> dict:
    """Stage base/ of iteration 0: the starting policy and PRM."""

    def work(folder: Path) -> dict:
        from prm.train import load_model_for, save_atomic

        cfg = ctx.config
        if cfg.policy == "weak":
            policy = build_weak_policy(cfg.weak_steps, cfg.weak_traces, cfg.seed, threads=cfg.threads,
                                       progress=ctx.progress)
        elif cfg.policy == "tiny":
            from mcts.envs.tiny_models import ensure_toy_policy

            policy = ensure_toy_policy(progress=ctx.progress)
        else:
            policy = Path(cfg.policy)
            if not policy.is_dir():
                raise RunError(f"policy {cfg.policy!r}: not 'weak', 'tiny' or a model folder")
        if cfg.prm == "fresh":
            model = load_model_for("prm", policy, seed=cfg.seed)
            prm = save_atomic(folder / "prm", lambda tmp: model.save_pretrained(tmp), overwrite=True)
        elif cfg.prm == "tiny":
            from prm.toy import ensure_toy_prm

            prm = ensure_toy_prm(progress=ctx.progress)
        else:
            prm = Path(cfg.prm)
            if not prm.is_dir():
                raise RunError(f"prm {cfg.prm!r}: not 'fresh', 'tiny' or a PRM folder")
        return {"policy": str(Path(policy).resolve()), "prm": str(Path(prm).resolve())}

    return ctx.stage(0, "base", work)
