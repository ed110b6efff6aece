"""The engine of a search worker: what it builds once (one policy and one scorer) and the shards
it searches with them.

    EngineSpec      what every worker builds: the policy (`model`, `backend`, `device`,
                    `max_new_tokens`, `delimiter`), the scorer (`prm`, `prm_format`, `oracle_noise`, `golds`,
                    the answer judge (`pprm`, `ebc_alpha`), `seed`, the `SearchConfig`, and
                    optionally a `runner` (a search of its own, `SearchRunner`). Frozen and picklable; `spec.check(texts)`
                    validates problems up front, `spec.build()` returns an `Engine`.
    Engine          one proposer and one scorer (`treesearch.loaders`); `engine.search(shard)`.
    Shard           index, problems, trees (also return each tree's JSON); `make_shards`.
    ShardResult     index, records (one dict per problem, as `python -m mcts.search` writes them),
                    trees, seconds, worker, cpu_seconds.

A shard's randomness depends only on (seed, index): the engine reseeds its proposer with
`shard_seed(seed, k)` before shard k, so its records are the same whichever worker searches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from mcts.algorithms import run_algorithm
from mcts.config import SearchConfig
from mcts.grading import is_equivalent
from mcts.problems import Problem
from treesearch.loaders import check_toy, load_judge, load_proposer, load_scorer

__all__ = ["Engine", "EngineLoadError", "EngineSpec", "SearchRunner", "Shard", "ShardResult", "make_shards",
           "shard_seed", "worker_name"]



def shard_seed(seed: int, index: int) -> int:
    """The proposer's seed for shard `index` of a run seeded with `seed`: a hash of both, below
    2**31 (vLLM's per-request seeds must fit), so neighbouring shards share no random stream."""
    digest = hashlib.blake2b(f"treesearch-shard:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**31


# ---------------------------------------------------------------------------------------------------
# The engine: one policy and one scorer


class SearchRunner(Protocol):
    """A search other than `run_algorithm`'s, carried by `EngineSpec.runner` to every worker.

    It must pickle (a frozen dataclass of what it needs: folders, configs, never a loaded model),
    so that Ray actors can run it; it loads its extra models itself, once per engine, into `cache`
    (a dict the engine keeps). `name` goes into every record's `algorithm`. Self-training's loops
    search this way: eta-MCTS, SR-MCTS and ReST-EM's sampled chains run through the executor like
    any other search, locally or on Ray.
    """

    name: str

    def __call__(self, problems: Sequence[str], proposer: Any, scorer: Any, config: SearchConfig, *,
                 on_tree: Callable[[int, dict], None], cache: dict) -> list: ...



class EngineLoadError(ValueError):
    """The policy or scorer of a spec cannot be built: `part` is 'model' or 'prm', `name` what
    the spec names, `reason` why (the message of the underlying error)."""

    def __init__(self, part: str, name: str, reason: str):
        self.part, self.name, self.reason = part, name, reason
        super().__init__(f"{part} {name}: {reason}")

    def __reduce__(self):  # picklable across Ray's process boundary
        return type(self), (self.part, self.name, self.reason)


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build its engine; picklable (it is shipped to every actor)."""

    model: str = "tiny"  # 'scripted', 'tiny' or a local model folder (`load_proposer`)
    prm: str = "tiny"  # 'tiny' (the shipped toy PRM), 'oracle' (tests only) or a PRM folder (`load_scorer`)
    prm_format: str = "auto"  # how a --prm folder is read: 'auto' (detected) or a `PRM_FORMATS` name
    prm_backend: str = "hf"  # what runs the --prm folder: 'hf' (transformers) or 'vllm' (a pooling engine)
    prm_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its vLLM engine options
    backend: str = "hf"  # what runs `model`: 'hf' or 'vllm'
    device: str | None = None  # torch device; None: cuda when the worker sees one, else cpu
    seed: int = 0  # the run's seed: shard k's proposer is seeded with shard_seed(seed, k)
    oracle_noise: float = 0.1  # flip probability of the oracle PRM
    max_new_tokens: int | None = None  # most tokens in one step (None: the policy's default)
    delimiter: str | None = None  # step delimiter of a model folder (None: what it declares)
    preset: str | None = None  # the policy's prompt and step settings (`mcts.policy.presets`)
    config: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    golds: Mapping[str, str] | None = None  # problem text -> gold answer, for the oracle
    pprm: str | None = None  # the PPRM of the `ebc` answer rule: 'tiny' or a folder (`load_judge`)
    ebc_alpha: float = 0.5  # EBC's weight of the Borda score against the candidates' values
    trust_remote_code: bool = False  # let model folders run their own Python (auto_map); refused otherwise
    proposer_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # vLLM engine options
    runner: SearchRunner | None = None  # a search of its own instead of config.algorithm's

    @property
    def needs_scorer(self) -> bool:
        """A spec whose algorithm never scores loads no scorer in its workers."""
        return self.config.needs_scorer

    @property
    def algorithm(self) -> str:
        """What the records name as their search."""
        return self.runner.name if self.runner is not None else self.config.algorithm

    def check(self, problems: Sequence[str]) -> None:
        """Raises `EngineLoadError` when the spec cannot search these problem texts (the toy
        world's scripted policy and oracle know only arithmetic); cheap, loads no model."""
        if self.model == "scripted":
            try:
                check_toy(problems, "--model scripted")
            except ValueError as err:
                raise EngineLoadError("model", self.model, str(err)) from None
        if self.needs_scorer and self.prm == "oracle":
            try:
                check_toy(problems, "--prm oracle")
            except ValueError as err:
                raise EngineLoadError("prm", self.prm, str(err)) from None

    def build(self) -> "Engine":
        return Engine(self)


class Engine:
    """One proposer and one scorer built from a spec, searching shards.

    Attributes:
        spec: the `EngineSpec`.
        proposer: the policy (a `StepProposer`).
        scorer: the PRM (a `StepScorer`), None for algorithms that do not score.
        judge: the answer judge of `answer_selection='ebc'` (an `AnswerJudge`), else None.
    """

    def __init__(self, spec: EngineSpec):
        """Loads the models; raises `EngineLoadError` naming the part that failed."""
        self.spec = spec
        self.runner_cache: dict = {}  # what spec.runner loads for itself, kept for the engine's life
        try:
            self.proposer = load_proposer(spec.model, backend=spec.backend, seed=spec.seed, device=spec.device,
                                          max_new_tokens=spec.max_new_tokens, delimiter=spec.delimiter,
                                          engine_options=dict(spec.proposer_options),
                                          trust_remote_code=spec.trust_remote_code, preset=spec.preset)
        except (OSError, ValueError, ImportError) as err:  # ImportError: an optional backend not installed
            raise EngineLoadError("model", spec.model, str(err)) from err
        self.scorer = None
        if spec.needs_scorer:
            golds = dict(spec.golds) if spec.golds is not None else None
            try:
                self.scorer = load_scorer(spec.prm, golds=golds, oracle_noise=spec.oracle_noise, seed=spec.seed,
                                          device=spec.device, trust_remote_code=spec.trust_remote_code,
                                          prm_format=spec.prm_format, prm_backend=spec.prm_backend,
                                          prm_engine_options=dict(spec.prm_options))
            except (OSError, ValueError, ImportError) as err:
                raise EngineLoadError("prm", spec.prm, str(err)) from err
        self.judge = None
        if spec.pprm is not None:
            try:
                self.judge = load_judge(spec.pprm, alpha=spec.ebc_alpha, device=spec.device,
                                        trust_remote_code=spec.trust_remote_code)
            except (OSError, ValueError, ImportError) as err:
                raise EngineLoadError("pprm", spec.pprm, str(err)) from err

    def search(self, shard: "Shard") -> "ShardResult":
        """Searches one shard as one batch, its proposer (and a scorer that can) reseeded first.

        Returns:
            The shard's records in its problems' order (and trees when `shard.trees`).
        """
        seed = shard_seed(self.spec.seed, shard.index)
        self.proposer.reseed(seed)
        if self.scorer is not None and hasattr(self.scorer, "reseed"):  # the oracle and PRMs are stateless
            self.scorer.reseed(seed)
        config = self.spec.config
        trees: list[dict | None] | None = [None] * len(shard.problems) if shard.trees else None

        def on_tree(b: int, tree: dict) -> None:
            trees[b] = tree

        start, cpu = time.perf_counter(), time.process_time()
        texts = [p.problem for p in shard.problems]
        if self.spec.runner is None:
            results = run_algorithm(texts, self.proposer, self.scorer, config, judge=self.judge,
                                    on_tree=on_tree if shard.trees else None)
        else:
            results = self.spec.runner(texts, self.proposer, self.scorer, config, cache=self.runner_cache,
                                       on_tree=on_tree if shard.trees else (lambda b, tree: None))
        records = []
        for p, r in zip(shard.problems, results):
            correct = None if p.answer is None else is_equivalent(r.answer, p.answer)
            records.append({"id": p.id, "answer": r.answer, "gold": p.answer, "correct": correct,
                            "algorithm": self.spec.algorithm, **r.record(), "problem_sha256": p.sha256})
        return ShardResult(shard.index, records, trees, time.perf_counter() - start, worker_name(),
                           time.process_time() - cpu)


def worker_name() -> str:
    """host:pid of this process, as the records of a shard name their worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------------
# Shards


@dataclasses.dataclass(frozen=True)
class Shard:
    """One batch of problems searched together: shard `index` of the run (its seed's key)."""

    index: int
    problems: tuple[Problem, ...]
    trees: bool = False  # return each tree's JSON with the records


@dataclasses.dataclass
class ShardResult:
    """What a worker sends back for one shard."""

    index: int
    records: list[dict]  # one per problem, the shard's order
    trees: list[dict | None] | None  # one per problem when asked for (None: no tree), else None
    seconds: float  # search time inside the worker
    worker: str  # host:pid of the worker that searched it
    cpu_seconds: float = 0.0  # CPU time of the worker's process during the search (all its threads)


def make_shards(problems: Sequence[Problem], batch: int, done_ids: Iterable[str] = (), *,
                trees: bool = False) -> list[Shard]:
    """Cuts the problem list, in file order, into shards of `batch` consecutive problems.

    Shard k always covers problems [k * batch, (k + 1) * batch) of `problems`; finished problems
    (`done_ids`) are left out of their shard and empty shards are dropped, so a run restarted after
    a crash searches each unfinished shard exactly as the first run would have. (Only a shard that
    was finished in part, e.g. by an earlier run with another `--limit`, is searched with fewer trees.)

    Args:
        problems: [P] problems.
        batch: problems per shard (>= 1).
        done_ids: ids of problems not to search.
        trees: ask workers for each tree's JSON.

    Returns:
        The shards that have problems left, by index.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    done = set(done_ids)
    shards = []
    for k, start in enumerate(range(0, len(problems), batch)):
        # Problem.meta (a MATH solution, ...) is not needed by the search: it is not shipped.
        todo = tuple(dataclasses.replace(p, meta={}) for p in problems[start:start + batch] if p.id not in done)
        if todo:
            shards.append(Shard(k, todo, trees))
    return shards
