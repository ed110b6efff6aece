"""Where search runs: in this process, or sharded over Ray actors (one policy + one PRM each).

The unit of work is a *shard*: `batch` consecutive problems of the problem list, in file order,
with index k (`make_shards`). A shard is one batched search (one forest of `batch` trees). Its
randomness depends only on (seed, k): the engine reseeds its proposer with `shard_seed(seed, k)` at
the start of every shard, so a shard's records are the same whichever worker searches it, in
whatever order, and the local and Ray executors write identical results for the same seed.

    from mcts.config import SearchConfig
    from mcts.problems import load_problems
    from treesearch.engine import EngineSpec
    from treesearch.executor import RayExecutor
    from treesearch.results import search_problems

    spec = EngineSpec(model="tiny", prm="oracle", seed=0, config=SearchConfig(simulations=32))
    run = search_problems(load_problems("toy.jsonl"), spec, RayExecutor(actors=4),
                          batch=16, out_path="results.jsonl", resume=True, progress=True)
    run.records        # every record of the results file, file order (finished ones first on resume)

API (the engine, specs and shards: `treesearch.engine`):

    LocalExecutor()     searches the shards one after another in this process; the engine is
                        built on first use and kept while the spec stays the same.
    RayExecutor(actors=None, address=None, num_cpus_per_actor=1, num_gpus_per_actor=None,
                max_attempts=3, keep_actors=False, connect_timeout=30, dashboard=False)
                        N actors (default: one per GPU of the cluster, else 1), each with
                        `num_gpus=1` when the cluster has GPUs; each actor starts searching as
                        soon as its engine is built, and shards are handed out one at a time to
                        whichever actor is free; an actor that dies (`RayActorError`) is
                        replaced and its shard re-queued (at most `max_attempts` tries a shard).
                        Connects to `address` ('auto', 'host:port', 'ray://host:port') or starts
                        a local Ray, on 127.0.0.1 only, when none is running (see "Safety" below).
                        Actors are killed at the end of every run (freeing
                        their GPUs for training) unless `keep_actors`, which keeps them for the
                        next run of an equal spec. `executor.start(spec)` starts the actors and
                        waits for their engines (optional). `executor.stats` (`RayStats`): actor
                        start times, per-shard round-trip overheads, restarts, re-queued shards.
    executor.run(spec, shards, on_shard_done)
                        the one method of both executors: searches every shard and calls
                        `on_shard_done(ShardResult)` in the calling thread as each one finishes
                        (in completion order, each shard exactly once). Errors raised by the
                        search itself (a bad model folder: `EngineLoadError`) are raised here;
                        `ExecutorError` when the cluster cannot hold an actor or a shard kills
                        its workers `max_attempts` times (`ShardFailedError`).
    executor.close()    frees the workers (Ray: kills the actors; shuts Ray down if it started it).
    treesearch.results.search_problems(problems, spec, executor, out_path=..., resume=...)
                        the driver that writes the results file as shards finish.

Safety: a local Ray started by `RayExecutor` (no `address`, no cluster running) binds every server
(GCS, raylet, workers, the driver) to 127.0.0.1 only, with the dashboard off unless `dashboard=True`
(then on 127.0.0.1 too): Ray's servers take no authentication, so nothing of theirs is reachable from
another machine. Joining a cluster (`address=`, RAY_ADDRESS, or one `ray start` left running) is the
user's explicit choice and keeps that cluster's settings. A cluster that does not accept connections
within `connect_timeout` seconds (Ray itself would retry forever) raises `ExecutorError` naming the
address. `init_local_ray(**ray_init_kwargs)` starts such a loopback-only Ray for other callers (tests).

Ray is imported only by `RayExecutor` (`pip install -e .[ray]`); without it, an ImportError says
how to install it. On a multi-node cluster the workers must be able to import treesearch (install
it on every node, or pass a `runtime_env` to `RayExecutor`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import socket
import time
from typing import Any, Callable, Protocol, Sequence

from treesearch.engine import Engine, EngineSpec, Shard, ShardResult, worker_name

__all__ = ["CONNECT_TIMEOUT_S", "EXECUTORS", "Executor", "ExecutorError", "LocalExecutor", "RayExecutor", "RayStats",
           "SearchWorker", "ShardFailedError", "init_local_ray", "make_executor"]

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 30.0  # RayExecutor(connect_timeout=None): seconds to wait for a cluster to accept connections
LOOPBACK = "127.0.0.1"
# ---------------------------------------------------------------------------------------------------
# Executors

OnShardDone = Callable[[ShardResult], None]


class Executor(Protocol):
    """Runs shards somewhere and streams each finished one back."""

    def run(self, spec: EngineSpec, shards: Sequence[Shard], on_shard_done: OnShardDone) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Searches the shards one after another in this process."""

    def __init__(self):
        self._engine: Engine | None = None

    def engine(self, spec: EngineSpec) -> Engine:
        """The engine of `spec`, built on first use and reused while the spec stays equal."""
        if self._engine is None or self._engine.spec != spec:
            self._engine = None  # free the old models before loading new ones
            self._engine = spec.build()
        return self._engine

    def start(self, spec: EngineSpec) -> None:
        """Loads the models of `spec` now (building them where they are built on first use)."""
        self.engine(spec)

    def run(self, spec: EngineSpec, shards: Sequence[Shard], on_shard_done: OnShardDone) -> None:
        if not shards:
            return
        engine = self.engine(spec)
        for shard in shards:
            on_shard_done(engine.search(shard))

    def close(self) -> None:
        self._engine = None


class SearchWorker:
    """The body of a Ray actor: builds its engine once (on `setup` or its first shard)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.engine: Engine | None = None

    def setup(self) -> str:
        """Builds the engine; returns the worker's name."""
        if self.engine is None:
            self.engine = self.spec.build()
        return worker_name()

    def search(self, shard: Shard) -> ShardResult:
        self.setup()
        return self.engine.search(shard)

    def ping(self, payload: Any = None) -> Any:
        """Returns `payload` (to measure the round trip of a call)."""
        return payload


class ExecutorError(RuntimeError):
    """The executor cannot do its work: the cluster cannot hold an actor, or workers keep dying."""


class ShardFailedError(ExecutorError):
    """A shard whose workers died `max_attempts` times (e.g. it runs them out of memory)."""


@dataclasses.dataclass
class RayStats:
    """What a `RayExecutor` measured (seconds; lists grow over every `run`)."""

    actor_start: list[float] = dataclasses.field(default_factory=list)  # create + build engine, per first actor
    startup_seconds: list[float] = dataclasses.field(default_factory=list)  # per run: until every actor is ready
    search_seconds: list[float] = dataclasses.field(default_factory=list)  # per run: first shard sent to last back
    round_trip_overhead: list[float] = dataclasses.field(default_factory=list)  # driver wall - worker search, per shard
    shards: int = 0  # shards finished
    restarts: int = 0  # actors replaced after dying
    requeued: list[int] = dataclasses.field(default_factory=list)  # indices of re-queued shards


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the ray executor needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def init_local_ray(**kwargs):
    """Starts a new local Ray whose servers all listen on 127.0.0.1 only; returns `ray.init`'s context.

    `kwargs` go to `ray.init` (num_cpus, runtime_env, ...); `include_dashboard` defaults to False (when
    True, the dashboard too listens on 127.0.0.1). Ray binds its gRPC servers to the node's IP, and
    `ray.init` turns a loopback `_node_ip_address` into the machine's outward address unless Ray
    clusters are "disabled" (its setting for laptops), so that setting is switched off around the
    call. Raises ExecutorError (after shutting that Ray down) when the node still came up on another
    address, rather than leave unauthenticated servers open to the network.
    """
    ray = _import_ray()
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("dashboard_host", LOOPBACK)
    if kwargs.get("dashboard_host") != LOOPBACK:
        raise ValueError(f"a local Ray listens on {LOOPBACK} only; dashboard_host={kwargs['dashboard_host']!r}")
    try:
        import ray._private.ray_constants as constants
    except ImportError:  # another layout: the check below still refuses a node on another address
        constants = None
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if saved is not None:
        constants.ENABLE_RAY_CLUSTER = False  # ray.init then keeps 127.0.0.1 as the node's address
    try:
        context = ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
    finally:
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = saved
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise ExecutorError(f"the local Ray came up on {node_ip}, not {LOOPBACK} (this Ray version ignores the "
                            f"loopback setting); start a cluster yourself and pass its address")
    return context


def _discovered_address(address: str | None) -> str | None:
    """The GCS address (host:port) `ray.init(address)` would join, or None when it would start a
    local Ray. 'ray://' addresses are returned as they are."""
    if address is not None and address.startswith("ray://"):
        return address
    if address == "local":
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address)
    except ImportError:  # another Ray layout: what the user or the environment named
        return address or os.environ.get("RAY_ADDRESS") or None
    except Exception as err:  # 'auto' with no cluster found, a malformed address
        raise ExecutorError(f"Ray address {address!r}: {err}") from None


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if address.startswith("ray://") else "6379"
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        raise ExecutorError(f"Ray address {address!r}: not host:port") from None


def wait_for_cluster(address: str, timeout: float, label: str | None = None) -> None:
    """Returns once something accepts TCP connections at `address` (host:port or ray://host:port);
    ExecutorError naming it (or `label`) after `timeout` seconds of refused or unanswered connections."""
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(2.0, left))):
                return
        except OSError as err:
            last = err
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    reason = getattr(last, "strerror", None) or last or "no answer"
    raise ExecutorError(f"no Ray cluster at {label or address}: nothing accepted a connection within {timeout:g} s "
                        f"({reason}); start one (ray start --head) or check the address")


class RayExecutor:
    """Shards searched by N Ray actors, each holding one engine (policy + PRM) on its GPU or CPU.

    The driver hands out one shard per free actor and collects results as they finish; an actor
    starts searching as soon as its own engine is built. An actor that dies takes only its
    unfinished shard with it: the shard goes back to the front of the queue and a fresh actor
    replaces the dead one. Finished shards have been passed to `on_shard_done` already, so nothing
    finished is lost or searched twice.
    """

    def __init__(self, actors: int | None = None, *, address: str | None = None, num_cpus_per_actor: float = 1,
                 num_gpus_per_actor: float | None = None, max_attempts: int = 3, keep_actors: bool = False,
                 runtime_env: dict | None = None, worker_cls: type = SearchWorker,
                 connect_timeout: float | None = None, dashboard: bool = False):
        """Args:
            actors: number of actors (default: one per GPU of the cluster, else 1); a run starts no
                more than it has shards.
            address: the Ray cluster to join when Ray is not initialised yet ('auto', 'host:port',
                'ray://host:10001'); None joins the one RAY_ADDRESS or `ray start` names, else starts a
                local one that listens on 127.0.0.1 only.
            num_cpus_per_actor: CPUs Ray reserves per actor (Ray also sets its OMP threads to it).
            num_gpus_per_actor: GPUs per actor; None: 1 when the cluster has GPUs, else 0.
            max_attempts: tries per shard before `ShardFailedError`.
            keep_actors: keep the actors (and their models) between runs of the same spec; False
                frees them (and their GPUs) at the end of every run.
            runtime_env: passed to `ray.init` when this executor starts Ray.
            worker_cls: the actor's class (`SearchWorker` or a subclass; tests inject faults with one).
            connect_timeout: seconds to wait for the cluster to join to accept connections before
                `ExecutorError` (None: CONNECT_TIMEOUT_S, 30).
            dashboard: start the Ray dashboard (on 127.0.0.1) with a local Ray; off by default.
        """
        if actors is not None and actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if connect_timeout is not None and not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        self.dashboard = dashboard
        self.actors = actors
        self.address = address
        self.num_cpus_per_actor = num_cpus_per_actor
        self.num_gpus_per_actor = num_gpus_per_actor
        self.max_attempts = max_attempts
        self.keep_actors = keep_actors
        self.runtime_env = runtime_env
        self.worker_cls = worker_cls
        self.stats = RayStats()
        self.live: dict[Any, int | None] = {}  # actor handle -> index of the shard it searches (None: idle)
        self._ready: set = set()  # actors whose engine is built
        self._spec: EngineSpec | None = None
        self._spec_ref = self._actor_cls = None
        self._started_ray = False

    # -----------------------------------------------------------------------------------------------

    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs = {"log_to_driver": False}
            if self.runtime_env is not None:
                kwargs["runtime_env"] = self.runtime_env
            join = _discovered_address(self.address)
            if join is None:  # nothing to join: a cluster of our own, on the loopback only
                init_local_ray(include_dashboard=self.dashboard, **kwargs)
            else:
                timeout = self.connect_timeout if self.connect_timeout is not None else CONNECT_TIMEOUT_S
                if self.address is None:
                    label = f"{join} (named by RAY_ADDRESS or a running `ray start`)"
                else:
                    label = self.address if self.address == join else f"{self.address} (resolved to {join})"
                wait_for_cluster(join, timeout, label)
                try:
                    ray.init(address=self.address, **kwargs)
                except (ConnectionError, RuntimeError, ValueError) as err:
                    if isinstance(err, ExecutorError):
                        raise
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise ExecutorError(f"cannot join the Ray cluster at {self.address or join}: {first}") from None
            self._started_ray = True
        return ray

    def resources(self) -> tuple[int, float, float]:
        """(actors, cpus per actor, gpus per actor) on the cluster Ray is connected to.

        Raises ExecutorError when not even one actor fits the cluster. Actors beyond what fits now
        wait for resources (an autoscaling cluster may add them) and get shards once they start.
        """
        ray = self._ray()
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        per_gpu = self.num_gpus_per_actor if self.num_gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
        actors = self.actors if self.actors is not None else (max(1, int(gpus // per_gpu)) if per_gpu else 1)
        if self.num_cpus_per_actor > cpus or per_gpu > gpus:
            raise ExecutorError(f"an actor needs {self.num_cpus_per_actor:g} CPUs and {per_gpu:g} GPUs, but the Ray "
                             f"cluster has {cpus:g} CPUs and {gpus:g} GPUs")
        return actors, self.num_cpus_per_actor, per_gpu

    def _prepare(self, spec: EngineSpec, n: int) -> None:
        """Actors for `spec`: those of another spec are killed, missing ones created (not awaited)."""
        ray = self._ray()
        if self._spec != spec:
            self._kill_all()
            self._spec, self._spec_ref = spec, ray.put(spec)  # shipped once, shared by every actor
        if self._actor_cls is None:
            _, cpus, gpus = self.resources()
            # max_restarts=0: a dead actor stays dead and the driver decides what to redo.
            self._actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(self.worker_cls)
        while len(self.live) < n:
            self.live[self._actor_cls.remote(self._spec_ref)] = None

    def _kill(self, actor) -> None:
        import ray

        self.live.pop(actor, None)
        self._ready.discard(actor)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    def _kill_all(self) -> None:
        for actor in list(self.live):
            self._kill(actor)

    @staticmethod
    def _unwrap(err: Exception) -> Exception:
        # An error raised by the search itself (RayTaskError): hand the driver the original one.
        cause = getattr(err, "cause", None)
        return cause if isinstance(cause, Exception) else err

    # -----------------------------------------------------------------------------------------------

    def start(self, spec: EngineSpec) -> None:
        """Starts the actors of `spec` and waits until every one has built its engine (optional:
        `run` starts them itself; this separates start-up from search, e.g. to time them)."""
        self.run(spec, [], lambda result: None, _wait_for_actors=True)

    def run(self, spec: EngineSpec, shards: Sequence[Shard], on_shard_done: OnShardDone, *,
            _wait_for_actors: bool = False) -> None:
        if not shards and not _wait_for_actors:
            return
        ray = self._ray()
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)
        wanted = self.resources()[0]
        self._prepare(spec, wanted if _wait_for_actors else min(wanted, len(shards)))
        pending = collections.deque(shards)
        remaining = len(shards)
        attempts: collections.Counter = collections.Counter()
        inflight: dict[Any, tuple[Any, Shard | None, float]] = {}  # ref -> (actor, shard or None: setup, sent)
        start = time.perf_counter()
        searching: float | None = None
        setup_deaths = 0

        def dispatch(actor) -> None:
            nonlocal searching
            if actor not in self._ready:
                inflight[actor.setup.remote()] = (actor, None, time.perf_counter())
            elif pending:
                shard = pending.popleft()
                attempts[shard.index] += 1
                searching = time.perf_counter() if searching is None else searching
                inflight[actor.search.remote(shard)] = (actor, shard, time.perf_counter())
                self.live[actor] = shard.index

        def replace(actor) -> None:
            self._kill(actor)
            self.stats.restarts += 1
            new = self._actor_cls.remote(self._spec_ref)
            self.live[new] = None
            dispatch(new)

        ok = False
        try:
            for actor in list(self.live):
                dispatch(actor)
            while remaining or (_wait_for_actors and len(self._ready) < len(self.live)):
                if not inflight:
                    raise AssertionError("RayExecutor: shards left but no actor to run them")  # a bug, not a fault
                [ref], _ = ray.wait(list(inflight), num_returns=1)
                actor, shard, sent = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except lost:
                    if shard is not None:
                        if attempts[shard.index] >= self.max_attempts:
                            raise ShardFailedError(f"shard {shard.index}: its worker died {attempts[shard.index]} "
                                                   f"times; giving up") from None
                        self.stats.requeued.append(shard.index)
                        pending.appendleft(shard)
                    else:
                        setup_deaths += 1
                        if setup_deaths >= self.max_attempts * max(1, len(self.live)):
                            raise ShardFailedError("actors keep dying while they build their engines; "
                                                   "giving up") from None
                    replace(actor)
                    continue
                except ray.exceptions.RayTaskError as err:
                    raise self._unwrap(err) from None
                if shard is None:  # the actor's engine is built
                    self._ready.add(actor)
                    self.stats.actor_start.append(time.perf_counter() - sent)
                    if len(self._ready) == len(self.live):
                        self.stats.startup_seconds.append(time.perf_counter() - start)
                else:
                    self.live[actor] = None
                    remaining -= 1
                    self.stats.shards += 1
                    self.stats.round_trip_overhead.append(time.perf_counter() - sent - result.seconds)
                    on_shard_done(result)
                dispatch(actor)
            if searching is not None:
                self.stats.search_seconds.append(time.perf_counter() - searching)
            ok = True
        finally:
            if not (ok and (self.keep_actors or _wait_for_actors)):
                self._kill_all()

    def measure_round_trip(self, payload: Any = None, repeats: int = 20) -> float:
        """Median seconds of one call to an idle actor carrying `payload` both ways (Ray's own cost
        per shard, without any search); starts and kills one actor."""
        ray = self._ray()
        actor = ray.remote(num_cpus=self.num_cpus_per_actor, max_restarts=0)(self.worker_cls).remote(EngineSpec())
        try:
            ray.get(actor.ping.remote(None))
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                ray.get(actor.ping.remote(payload))
                times.append(time.perf_counter() - t)
        finally:
            ray.kill(actor, no_restart=True)
        return sorted(times)[len(times) // 2]

    def close(self) -> None:
        """Kills the actors (freeing their GPUs); shuts Ray down if this executor started it."""
        if self._started_ray or self.live:
            self._kill_all()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


def make_executor(name: str, *, actors: int | None = None, address: str | None = None,
                  connect_timeout: float | None = None) -> Executor:
    """The executor named `name` ('local' or 'ray'); 'ray' raises ImportError without Ray."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        _import_ray()
        return RayExecutor(actors, address=address, connect_timeout=connect_timeout)
    raise ValueError(f"executor={name!r} is not one of {', '.join(EXECUTORS)}")
