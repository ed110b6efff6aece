"""Problems per second against the number of Ray actors, beside the local executor, on CPU; and
what Ray itself costs: starting the cluster, starting an actor (engine build included), one call's
round trip, and the driver's atomic rewrite of the results file.

For each policy (the scripted one, the tiny transformer) the same toy problems are searched by the
local executor and by the Ray executor with each number of actors in --actors; every run is checked
to write the records of the local run (wall times aside). The rate counts the search only: engines
and actors are started before the clock runs and reported apart (a long run pays them once).

Columns: start_s (engine build, or actors started until every engine is built), search_s (first
shard sent to last record written), problems_per_s, speedup_vs_1_actor, worker_cpu_s (CPU time the
workers spent in their searches), cores_used (worker_cpu_s / search_s: how much CPU the workers
got; about the actor count on a free machine), problems_per_cpu_s, overhead_ms (median per shard of
driver wall time minus the worker's search time: Ray's round trip plus the driver's write).

    python benchmarks/scale_out.py                     # scripted and tiny, 32 problems, 1 and 2 actors
    python benchmarks/scale_out.py --json              # also one JSON object per row (table to stderr)

On a shared machine the figures move with the load: the load average and the speedup of n
pure-Python spinning workers over one (the parallelism the machine had free) are printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcts.envs.arith import ArithConfig, generate_problems, write_problems
from treesearch.engine import EngineSpec
from treesearch.executor import LocalExecutor, RayExecutor
from treesearch.results import search_problems
from mcts.problems import load_problems
from mcts.config import SearchConfig
from mcts.files import write_jsonl_atomic


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="scripted,tiny", help="comma list: scripted, tiny, or model folders")
    p.add_argument("--problems", type=int, default=32, help="toy problems per policy")
    p.add_argument("--ops", default="2-4", help="min-max operations of the problems")
    p.add_argument("--batch", type=int, default=4, help="problems per shard (trees per forest)")
    p.add_argument("--simulations", type=int, default=16)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--actors", type=_ints, default=[1, 2], help="comma list of actor counts")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--no-local", action="store_true", help="skip the local executor's rows")
    p.add_argument("--write-rows", type=int, default=12_000, help="results-file size for the driver-write figure")
    p.add_argument("--repeats", type=int, default=1, help="runs per row; the fastest search is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object per row (the table goes to stderr)")
    return p


def _timeless(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


class Recording:
    """An executor that keeps every `ShardResult` its inner executor streams back."""

    def __init__(self, inner):
        self.inner, self.results = inner, []

    def run(self, spec, shards, on_shard_done):
        self.inner.run(spec, shards, lambda r: (self.results.append(r), on_shard_done(r)))

    def close(self):
        self.inner.close()


def _clear_caches() -> None:
    """Empties the per-process caches of the toy world and the grader (keyed by expression and step
    text: a repeat over the same problems would otherwise hit them all)."""
    from mcts import grading
    from mcts.envs import arith
    from mcts.policy import toy

    for module in (arith, toy, grading):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def _timed_run(make_executor, spec, problems, args, out: Path) -> dict:
    """The best of --repeats runs (fresh executor each): search wall time, engine start, the CPU
    time the workers spent searching, and the records."""
    best = None
    for _ in range(args.repeats):
        out.unlink(missing_ok=True)
        _clear_caches()  # the local executor searches in this process: start it as cold as a fresh actor
        inner = make_executor()
        executor = Recording(inner)
        # Engines (actors) are started before the clock runs, so that the rate is the search's.
        start = time.perf_counter()
        if isinstance(inner, LocalExecutor):
            inner.engine(spec)
        else:
            inner.start(spec)
        start_s = time.perf_counter() - start
        run = search_problems(problems, spec, executor, batch=args.batch, out_path=out)
        if isinstance(inner, RayExecutor):
            search_s = inner.stats.search_seconds[-1]
            overhead = 1e3 * statistics.median(inner.stats.round_trip_overhead)
        else:
            search_s, overhead = run.seconds, None
        executor.close()
        cpu = sum(r.cpu_seconds for r in executor.results)
        row = {"start_s": start_s, "search_s": search_s, "problems_per_s": len(problems) / search_s,
               "worker_cpu_s": cpu, "cores_used": cpu / search_s,
               "problems_per_cpu_s": len(problems) / cpu if cpu > 0 else None,
               "overhead_ms": overhead, "workers": len({r.worker for r in executor.results}),
               "records": _timeless(run.records)}
        if best is None or row["search_s"] < best["search_s"]:
            best = row
    return best


def run_policy(policy: str, args, problems, folder: Path) -> list[dict]:
    spec = EngineSpec(model=policy, prm="oracle", seed=args.seed, oracle_noise=0.1,
                      config=SearchConfig(simulations=args.simulations, width=args.width),
                      golds={p.problem: p.answer for p in problems if p.answer})  # as search_problems fills it
    base = {"policy": policy, "problems": len(problems), "shards": -(-len(problems) // args.batch),
            "batch": args.batch, "simulations": args.simulations, "width": args.width}
    runs = []
    if not args.no_local:
        runs.append(("local", 1, _timed_run(LocalExecutor, spec, problems, args, folder / f"{policy}-local.jsonl")))
    for n in args.actors:
        runs.append(("ray", n, _timed_run(lambda: RayExecutor(actors=n), spec, problems, args,
                                          folder / f"{policy}-ray{n}.jsonl")))
    reference = runs[0][2]["records"]
    one = next((r["problems_per_s"] for kind, n, r in runs if kind == "ray" and n == 1), None)
    rows = []
    for kind, n, r in runs:
        records = r.pop("records")
        rows.append({**base, "executor": kind, "actors": n, **r,
                     "speedup_vs_1_actor": None if one is None else r["problems_per_s"] / one,
                     "same_records": records == reference})
    return rows


def _spin(n: int) -> float:
    x = 0
    for i in range(n):
        x += i
    return float(x)


def measure_parallelism(actor_counts: list[int], iterations: int = 10_000_000, repeats: int = 3) -> dict[int, float]:
    """What the machine gives right now: the speedup of n Ray workers spinning pure Python at once
    over one (best of `repeats`); on an idle machine with n free cores, about n. The actors' speedup
    is read against it, since a shared machine can leave much less than n cores free."""
    import ray

    spin = ray.remote(num_cpus=1)(_spin)
    ray.get([spin.remote(1) for _ in range(max(actor_counts))])  # start the workers
    rates = {}
    for n in sorted(set([1, *actor_counts])):
        best = min(_time(lambda: ray.get([spin.remote(iterations) for _ in range(n)])) for _ in range(repeats))
        rates[n] = n * iterations / best
    return {n: rates[n] / rates[1] for n in actor_counts}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_overheads(args, sample_records: list[dict], folder: Path, shard_problems) -> dict:
    """Ray's own costs, without search: one call's round trip (empty, and carrying a shard's
    problems out and its records back), and the driver's atomic rewrite of a large results file."""
    executor = RayExecutor(actors=1)
    empty = executor.measure_round_trip(None)
    payload = (shard_problems, sample_records[:args.batch])
    loaded = executor.measure_round_trip(payload)
    rows = [sample_records[i % len(sample_records)] for i in range(args.write_rows)]
    path = folder / "write-test.jsonl"
    times = []
    for _ in range(3):
        start = time.perf_counter()
        write_jsonl_atomic(path, rows)
        times.append(time.perf_counter() - start)
    return {"round_trip_empty_ms": 1e3 * empty, "round_trip_shard_ms": 1e3 * loaded,
            "write_rows": args.write_rows, "write_bytes": path.stat().st_size,
            "write_ms": 1e3 * statistics.median(times)}


def format_table(rows: list[dict]) -> str:
    cols = [("policy", "{}"), ("executor", "{}"), ("actors", "{}"), ("problems", "{}"), ("shards", "{}"),
            ("start_s", "{:.2f}"), ("search_s", "{:.2f}"), ("problems_per_s", "{:.2f}"),
            ("speedup_vs_1_actor", "{:.2f}"), ("worker_cpu_s", "{:.2f}"), ("cores_used", "{:.2f}"), ("problems_per_cpu_s", "{:.2f}"),
            ("overhead_ms", "{:.1f}"), ("same_records", "{}")]
    cells = [[("n/a" if r[k] is None else f.format(r[k])) for k, f in cols] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, (k, _) in enumerate(cols)]
    lines = ["  ".join(k.rjust(w) for (k, _), w in zip(cols, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import ray

    lo, hi = (int(x) for x in args.ops.split("-"))
    load_before = _load()
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - start
    rows = []
    machine_speedup = measure_parallelism(args.actors)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = write_problems(folder / "toy.jsonl", generate_problems(
            args.problems, seed=args.seed, config=ArithConfig(min_ops=lo, max_ops=hi)))
        problems = load_problems(source)
        try:
            for policy in args.policies.split(","):
                rows += run_policy(policy, args, problems, folder)
            machine_after = measure_parallelism(args.actors)
            first = args.policies.split(",")[0]
            sample = [json.loads(line) for line in (folder / f"{first}-ray{args.actors[0]}.jsonl").read_text().splitlines()]
            overheads = {"ray_init_s": ray_init_s, **measure_overheads(args, sample, folder, problems[:args.batch])}
        finally:
            ray.shutdown()
    machine = {"cpus": os.cpu_count(), "ray_cpus": args.num_cpus or os.cpu_count(),
               "load_before": load_before, "load_after": _load(),
               "spin_speedup_before": machine_speedup, "spin_speedup_after": machine_after}
    out = sys.stderr if args.json else sys.stdout
    print(format_table(rows), file=out)
    print("ray overheads: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in overheads.items()), file=out)
    spins = lambda d: ", ".join(f"{n} workers {v:.2f}x" for n, v in d.items())  # noqa: E731
    print(f"machine: {machine['cpus']} CPUs, Ray given {machine['ray_cpus']}, load average (1/5/15 min) "
          f"{machine['load_before']} before, {machine['load_after']} after; pure-Python spin speedup "
          f"(the parallelism the machine had free): {spins(machine_speedup)} before, {spins(machine_after)} after",
          file=out)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        print(json.dumps({"overheads": overheads, "machine": machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
