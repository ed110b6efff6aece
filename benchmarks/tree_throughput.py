"""Tree-core throughput: simulations per second of every backend, side by side with DeepMind's mctx.

One *simulation* is one round over all B trees: select one leaf per tree (puct, c=1.25, virtual
loss 1), expand it with K = actions children (random normalised priors, random rewards, none
terminal), and back a random value up (rule "mean"). A search is S such rounds on a fresh forest of
capacity 1 + S*K (every simulation expands one leaf), and sims/s counts tree-simulations:
B * S / seconds. mctx runs `mctx.muzero_policy` jitted with num_simulations = S on the same B and K,
with a trivial recurrent_fn (a cheap integer hash of the embedding and the action gives the reward,
value, prior logits and next embedding), and is timed up to `.block_until_ready()`.

What is timed, for both sides: one whole search, allocating the tree included (`Forest.empty`, as
mctx's search allocates its own). The random numbers (priors, rewards, values; mctx's root logits
and key) are generated up front, outside the timed region, so both sides time the tree work, not
the RNG. A warm-up search runs first and is not timed (Numba's and XLA's compile happen there).
Then the backends of a setting are timed in turn, one search each (cpp, numba, mctx, cpp, ...), so
that a burst of other work on the machine hits them alike, until each has at least --repeats
searches adding up to --min-time seconds (at most --max-repeats); each row reports the best (the
least disturbed), and the JSON rows also the median and the count. The NumPy reference is timed
once. The "load" column is the 1-minute load average: above the core count, other work competed,
and multi-threaded rows (--threads) suffer most.

`expand` is called with validate=False: the leaves come straight from `select`, which only returns
allocated, unexpanded, distinct leaves, so the check cannot fail in this loop and a search loop is
entitled to skip it (its cost is what --validate measures).

Memory: bytes per node are the statistics of one node (`mcts.core.BYTES_PER_NODE`; for mctx, the
nbytes of every array of the returned `search_tree` divided by its B * (S+1) nodes; an mctx node
holds its children's edge statistics). Trees differ in what a node is, so KB per tree is shown too.
Peak MB: for our host backends, the tracemalloc peak of the allocations during one search (NumPy's
are traced: the forest and per-call temporaries; the pre-generated inputs are excluded), measured
in an extra, untimed search; for cuda, torch's peak device memory; for mctx, XLA's memory analysis
of the compiled search (output + temporary buffers, inputs excluded).

The NumPy reference is pure Python loops (tens of thousands of sims/s): it is skipped where
B*S*K > --numpy-max-work. mctx on CPU slows down with the tree size (each of its simulations costs
more as the tree grows), so it is skipped where B*S*K > --mctx-max-work. Skipped rows say so.

    python benchmarks/tree_throughput.py              # the full grid (several minutes on 2 cores)
    python benchmarks/tree_throughput.py --quick      # batch 64 and 1024, 64 sims, 4 actions
    python benchmarks/tree_throughput.py --json       # JSON lines on stdout, the table on stderr
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from mcts.core import BYTES_PER_NODE, Forest, backup, expand, native, select

RULE, C_PUCT, VIRTUAL_LOSS, BACKUP_RULE = "puct", 1.25, 1.0, "mean"
OUR_BACKENDS = ("cuda", "cpp", "numba", "numpy")
# Tree bytes beyond the per-node arrays: num_nodes (int32) and full (uint8) per tree.
BYTES_PER_TREE_EXTRA = 5
# Where the acceptance figure is read: (batch, simulations, actions) -> minimum ratio vs mctx.
ACCEPTANCE = ((1024, 64, 4), {"cpp": 10.0, "numba": 3.0})


@dataclasses.dataclass(frozen=True)
class Setting:
    batch: int  # B trees searched together
    simulations: int  # S rounds per search
    actions: int  # K children per expanded leaf

    @property
    def work(self) -> int:
        """Children allocated by one search: B * S * K."""
        return self.batch * self.simulations * self.actions

    @property
    def capacity(self) -> int:
        return 1 + self.simulations * self.actions


@dataclasses.dataclass
class Workload:
    """The random inputs of one search, generated before the clock starts."""

    priors: np.ndarray  # float32 [S, B, 1, K], normalised over K
    rewards: np.ndarray  # float32 [S, B, 1, K]
    values: np.ndarray  # float64 [S, B, 1]
    counts: np.ndarray  # int32 [B, 1], all K
    terminal: np.ndarray  # uint8 [B, 1, K], all 0


def make_workload(s: Setting, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    shape = (s.simulations, s.batch, 1, s.actions)
    priors = rng.random(shape, dtype=np.float32) + np.float32(1e-3)
    priors /= priors.sum(axis=-1, keepdims=True)
    return Workload(
        priors=priors,
        rewards=rng.random(shape, dtype=np.float32),
        values=rng.random((s.simulations, s.batch, 1)),
        counts=np.full((s.batch, 1), s.actions, np.int32),
        terminal=np.zeros((s.batch, 1, s.actions), np.uint8),
    )


def row(backend: str, s: Setting, **fields: Any) -> dict[str, Any]:
    out = {"backend": backend, "batch": s.batch, "simulations": s.simulations, "actions": s.actions,
           "sims_per_s": None, "seconds": None, "seconds_median": None, "repeats": 0,
           "bytes_per_node": None, "bytes_per_tree": None, "peak_mem_mb": None, "ratio_vs_mctx": None,
           "loadavg": None, "skipped": None}
    out.update(fields)
    return out


# ---------------------------------------------------------------------------------------------
# Our backends


class CoreBench:
    """One of our backends at one setting: S rounds of select -> expand -> backup on a fresh forest."""

    def __init__(self, backend: str, s: Setting, work: Workload, validate: bool):
        self.name, self.s, self.validate = backend, s, validate
        self.sync: Callable[[], None] = lambda: None
        if backend == "cuda":
            import torch

            def dev(a):
                return torch.from_numpy(np.ascontiguousarray(a)).cuda()

            template = Forest.empty(s.batch, s.capacity).map(dev)
            self.new_forest = lambda: template.map(torch.clone)
            self.sync = torch.cuda.synchronize
        else:
            dev = np.asarray  # host arrays are used as they are
            self.new_forest = lambda: Forest.empty(s.batch, s.capacity)
        self.priors, self.rewards, self.values = dev(work.priors), dev(work.rewards), dev(work.values)
        self.counts, self.terminal = dev(work.counts), dev(work.terminal)
        self.sync()
        self.peak_mem_mb: float | None = None

    def run(self) -> Forest:
        """One search, the timed unit."""
        s, b = self.s, self.name
        forest = self.new_forest()
        for i in range(s.simulations):
            leaves = select(forest, 1, RULE, C_PUCT, VIRTUAL_LOSS, backend=b)
            expand(forest, leaves, self.counts, self.priors[i], self.rewards[i], self.terminal, backend=b,
                   validate=self.validate)
            backup(forest, leaves, self.values[i], BACKUP_RULE, backend=b)
        self.sync()
        return forest

    def warm_up(self) -> None:
        """Untimed: JIT compiles, the allocator's pages get touched, and the work is checked. The
        NumPy reference has nothing to compile, so its warm-up is also its memory run."""
        forest = self._run_measuring_memory() if self.name == "numpy" else self.run()
        num_nodes = forest.num_nodes if self.name != "cuda" else forest.num_nodes.cpu().numpy()
        if not (np.asarray(num_nodes) == self.s.capacity).all():
            raise RuntimeError(f"{self.name}: a search at {self.s} allocated {np.unique(num_nodes)} nodes "
                               f"per tree, expected {self.s.capacity}: the timed work would not be done")

    def _run_measuring_memory(self) -> Forest:
        if self.name == "cuda":
            import torch

            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            forest = self.run()
            self.peak_mem_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
            return forest
        tracemalloc.start()
        try:
            forest = self.run()
            self.peak_mem_mb = tracemalloc.get_traced_memory()[1] / 2**20
            return forest
        finally:
            tracemalloc.stop()

    def finish(self) -> dict[str, Any]:
        """Untimed, after the timed searches: memory figures."""
        if self.peak_mem_mb is None:
            self._run_measuring_memory()  # after the timing: tracemalloc slows allocations down
        return {"bytes_per_node": BYTES_PER_NODE, "peak_mem_mb": self.peak_mem_mb, "validate": self.validate,
                "bytes_per_tree": BYTES_PER_NODE * self.s.capacity + BYTES_PER_TREE_EXTRA}


# ---------------------------------------------------------------------------------------------
# mctx


def mctx_versions() -> dict[str, str] | None:
    """{"jax": ..., "mctx": ...} where both import, else None."""
    try:
        import jax
        import mctx
    except Exception:  # noqa: BLE001 - any broken install means "not measured", said in the header
        return None
    return {"jax": jax.__version__, "mctx": getattr(mctx, "__version__", "?")}


class MctxBench:
    """mctx.muzero_policy at one setting, jitted, with a trivial recurrent_fn."""

    name = "mctx"

    def __init__(self, s: Setting, seed: int = 0):
        import jax
        import jax.numpy as jnp
        import mctx

        self.s = s
        # Odd multipliers: one cheap hash per child gives A different prior logits per node.
        mults = jnp.asarray(np.arange(s.actions, dtype=np.uint32) * np.uint32(2) + np.uint32(0x9E3779B1))

        def recurrent_fn(params, rng_key, action, embedding):
            del params, rng_key
            h = embedding * jnp.uint32(1664525) + action.astype(jnp.uint32) * jnp.uint32(1013904223) + 12345
            h = h ^ (h >> 15)
            u = (h >> 8).astype(jnp.float32) / jnp.float32(2**24)  # [B] in [0, 1)
            logits = ((h[:, None] * mults[None, :]) >> 8).astype(jnp.float32) / jnp.float32(2**24)
            out = mctx.RecurrentFnOutput(reward=u, discount=jnp.ones_like(u), prior_logits=logits, value=1.0 - u)
            return out, h

        def search(rng_key, prior_logits, value, embedding):
            root = mctx.RootFnOutput(prior_logits=prior_logits, value=value, embedding=embedding)
            return mctx.muzero_policy(None, rng_key, root, recurrent_fn, num_simulations=s.simulations)

        key, k1, k2 = jax.random.split(jax.random.PRNGKey(seed), 3)
        self.args = (key, jax.random.normal(k1, (s.batch, s.actions)), jax.random.uniform(k2, (s.batch,)),
                     jnp.arange(s.batch, dtype=jnp.uint32))
        jax.block_until_ready(self.args)
        self.compiled = jax.jit(search).lower(*self.args).compile()
        self._block = jax.block_until_ready
        self._leaves = jax.tree_util.tree_leaves

    def run(self) -> Any:
        return self._block(self.compiled(*self.args))

    def warm_up(self) -> None:
        tree = self.run().search_tree
        self.tree_bytes = sum(int(x.nbytes) for x in self._leaves(tree))

    def finish(self) -> dict[str, Any]:
        mem = self.compiled.memory_analysis()
        peak = None if mem is None else (mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20
        s = self.s
        return {"bytes_per_node": self.tree_bytes / (s.batch * (s.simulations + 1)),
                "bytes_per_tree": self.tree_bytes / s.batch, "peak_mem_mb": peak}


# ---------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass(frozen=True)
class Timing:
    repeats: int  # at least this many timed searches
    min_time: float  # ... and more until they add up to this many seconds
    max_repeats: int  # ... but never more than this

    def wants_more(self, times: list[float]) -> bool:
        return len(times) < self.repeats or (sum(times) < self.min_time and len(times) < self.max_repeats)


REFERENCE_TIMING = Timing(1, 0.0, 1)  # the NumPy reference is slow: one timed search


def measure(s: Setting, benches: list[Any], timing: Timing) -> list[dict[str, Any]]:
    """Warm every bench up, then time their searches in turn (a, b, c, a, b, c, ...) so that a
    burst of other work on the machine hits every backend alike; best and median per bench."""
    for bench in benches:
        bench.warm_up()
    times: dict[str, list[float]] = {bench.name: [] for bench in benches}
    plan = {bench.name: REFERENCE_TIMING if bench.name == "numpy" else timing for bench in benches}
    while pending := [bench for bench in benches if plan[bench.name].wants_more(times[bench.name])]:
        for bench in pending:
            t0 = time.perf_counter()
            bench.run()
            times[bench.name].append(time.perf_counter() - t0)
    rows = []
    for bench in benches:
        t = times[bench.name]
        rows.append(row(bench.name, s, sims_per_s=s.batch * s.simulations / min(t), seconds=min(t),
                        seconds_median=statistics.median(t), repeats=len(t), **bench.finish(),
                        loadavg=round(os.getloadavg()[0], 2)))
    return rows


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (  # header, key, format
    ("backend", "backend", "s"), ("batch", "batch", "d"), ("sims", "simulations", "d"),
    ("actions", "actions", "d"), ("sims/s", "sims_per_s", ",.0f"), ("best s", "seconds", ".4f"),
    ("vs mctx", "ratio_vs_mctx", ".1f"), ("B/node", "bytes_per_node", ".1f"), ("KB/tree", "kb_per_tree", ".1f"),
    ("peak MB", "peak_mem_mb", ".1f"), ("load", "loadavg", ".1f"),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns; a skipped row shows its reason in place of the measurements."""
    cells = [[h for h, _, _ in COLUMNS]]
    for r in rows:
        r = dict(r, kb_per_tree=None if r["bytes_per_tree"] is None else r["bytes_per_tree"] / 1024)
        line = [_fmt(r[key], spec) for _, key, spec in COLUMNS]
        cells.append(line[:4] + [f"skipped: {r['skipped']}"] if r["skipped"] else line)
    widths = [max(len(c[i]) for c in cells if len(c) == len(COLUMNS)) for i in range(len(COLUMNS))]
    lines = ["  ".join(x.ljust(w) if i == 0 or len(c) < len(COLUMNS) and i == 4 else x.rjust(w)
                       for i, (x, w) in enumerate(zip(c, widths))).rstrip() for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def header(args: argparse.Namespace, backends: list[str], versions: dict[str, str] | None) -> str:
    cores = _cores()
    lines = [
        f"tree throughput: {cores} cores; C++ and Numba threads {native.num_threads()} "
        f"(TREESEARCH_NUM_THREADS; at least {native.MIN_TREES_PER_THREAD} trees per thread); numpy {np.__version__}"
        + (f"; jax {versions['jax']}, mctx {versions['mctx']}" if versions else "; mctx not measured"),
        f"backends: {', '.join(backends)}, timed in turn; best of >= {args.repeats} searches "
        f"(and >= {args.min_time:g} s of them, at most {args.max_repeats}) after a warm-up; "
        f"sims/s = batch * simulations / seconds; expand validate={args.validate}",
        f"one simulation: select 1 leaf/tree ({RULE}, c={C_PUCT}, virtual loss {VIRTUAL_LOSS:g}), expand it with "
        f"`actions` children, back up ({BACKUP_RULE}); random inputs generated outside the timed region",
        "peak MB: tracemalloc peak of one search (ours), torch peak device memory (cuda), "
        "XLA memory analysis: output + temp (mctx); load: 1-minute load average after the setting",
        f"caps: numpy reference skipped where batch*sims*actions > {args.numpy_max_work:,}; "
        f"mctx where > {args.mctx_max_work:,}",
    ]
    return "\n".join(lines)


def acceptance_lines(rows: list[dict[str, Any]]) -> list[str]:
    (batch, sims, actions), targets = ACCEPTANCE
    at = {r["backend"]: r for r in rows if (r["batch"], r["simulations"], r["actions"]) == (batch, sims, actions)
          and not r["skipped"]}
    if "mctx" not in at:
        return []
    lines = []
    for backend, target in targets.items():
        if backend in at:
            ratio = at[backend]["ratio_vs_mctx"]
            verdict = "meets" if ratio >= target else "BELOW"
            lines.append(f"batch {batch}, {sims} sims, {actions} actions: {backend} = {ratio:.1f}x mctx "
                         f"({verdict} the {target:g}x target)")
    return lines


# ---------------------------------------------------------------------------------------------
# CLI


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _flat(lists: list[list[Any]] | None) -> list[Any] | None:
    return None if lists is None else [x for part in lists for x in part]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="batch 64 and 1024, 64 simulations, 4 actions, shorter timing, NumPy reference "
                        "only at batch 64 (well under a minute on 2 cores)")
    p.add_argument("--backends", type=_names, nargs="+",
                   help="among cuda, cpp, numba, numpy, mctx (default: every available one)")
    p.add_argument("--batch", type=_ints, nargs="+", help="trees per batch (default 1 64 1024 4096)")
    p.add_argument("--actions", type=_ints, nargs="+", help="children per expansion (default 4 16)")
    p.add_argument("--simulations", type=_ints, nargs="+", help="simulations per tree (default 64 256)")
    p.add_argument("--repeats", type=int, default=3, help="at least this many timed searches per row")
    p.add_argument("--min-time", type=float,
                   help="... and more until they add up to this many seconds (default 1, --quick 0.25)")
    p.add_argument("--max-repeats", type=int, default=50, help="... but at most this many")
    p.add_argument("--threads", type=int,
                   help="threads of the C++ and Numba backends (sets TREESEARCH_NUM_THREADS; 0: every core); "
                        "default: the library's, one thread unless TREESEARCH_NUM_THREADS says otherwise")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout; the table goes to stderr")
    p.add_argument("--no-mctx", action="store_true", help="do not run mctx even where it is installed")
    p.add_argument("--validate", action="store_true", help="run expand with validate=True")
    p.add_argument("--numpy-max-work", type=int,
                   help="skip the NumPy reference where batch*simulations*actions is larger "
                        "(default 2**18, --quick 2**14)")
    p.add_argument("--mctx-max-work", type=int, default=2**20,
                   help="skip mctx where batch*simulations*actions is larger")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    quick = args.quick
    batches = _flat(args.batch) or ([64, 1024] if quick else [1, 64, 1024, 4096])
    sims = _flat(args.simulations) or ([64] if quick else [64, 256])
    actions = _flat(args.actions) or ([4] if quick else [4, 16])
    if args.min_time is None:
        args.min_time = 0.25 if quick else 1.0
    if args.numpy_max_work is None:
        args.numpy_max_work = 2**14 if quick else 2**18
    if args.repeats < 1 or min(batches + sims + actions) < 1:
        raise SystemExit("--repeats, --batch, --simulations and --actions must be >= 1")
    timing = Timing(args.repeats, args.min_time, max(args.max_repeats, args.repeats))
    with _threads(args.threads):
        return _run(args, batches, sims, actions, timing)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the C++ and Numba backends on n threads (0: every core) inside the block (None: the
    library's setting, TREESEARCH_NUM_THREADS or one thread)."""
    if n is None:
        yield
        return
    previous = os.environ.get("TREESEARCH_NUM_THREADS")
    os.environ["TREESEARCH_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TREESEARCH_NUM_THREADS", None)
        else:
            os.environ["TREESEARCH_NUM_THREADS"] = previous


def _run(args: argparse.Namespace, batches: list[int], sims: list[int], actions: list[int],
         timing: Timing) -> int:
    available = native.available_backends()
    versions = None if args.no_mctx else mctx_versions()
    requested = _flat(args.backends) or [*available, "mctx"]
    unknown = sorted(set(requested) - {*OUR_BACKENDS, "mctx"})
    if unknown:
        raise SystemExit(f"unknown backend(s) {', '.join(unknown)}; choose among {', '.join((*OUR_BACKENDS, 'mctx'))}")
    notes = []
    for name in requested:
        if name == "mctx" and versions is None and not args.no_mctx:
            notes.append("mctx: not installed (pip install -e '.[bench]'), not measured")
        elif name in OUR_BACKENDS and name not in available:
            notes.append(f"{name}: not available here (available: {', '.join(available)}), not measured")
    if "cuda" in requested and "cuda" in available:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError("torch has no CUDA device")
        except ImportError as e:
            notes.append(f"cuda: needs torch with CUDA for device arrays ({e}), not measured")
            available = [b for b in available if b != "cuda"]
    ours = [b for b in OUR_BACKENDS if b in requested and b in available]
    run_mctx = "mctx" in requested and versions is not None
    backends = ours + (["mctx"] if run_mctx else [])

    out = sys.stderr if args.json else sys.stdout
    print(header(args, backends, versions), file=out)
    for note in notes:
        print(note, file=out)
    out.flush()

    settings = [Setting(b, s, a) for b in batches for s in sims for a in actions]
    rows: list[dict[str, Any]] = []
    with tqdm(settings, file=sys.stderr, desc="tree throughput", unit="setting", leave=False, disable=None) as bar:
        for s in bar:
            bar.set_postfix_str(f"B={s.batch} S={s.simulations} K={s.actions}")
            skipped, benches = {}, []
            work = make_workload(s, args.seed) if set(backends) & set(OUR_BACKENDS) else None
            for backend in backends:
                if backend == "numpy" and s.work > args.numpy_max_work:
                    skipped[backend] = f"reference capped at B*S*K <= {args.numpy_max_work:,}"
                elif backend == "mctx" and s.work > args.mctx_max_work:
                    skipped[backend] = f"mctx capped at B*S*K <= {args.mctx_max_work:,}"
                elif backend == "mctx":
                    benches.append(MctxBench(s, args.seed))
                else:
                    benches.append(CoreBench(backend, s, work, args.validate))
            measured = {r["backend"]: r for r in measure(s, benches, timing)}
            del benches, work  # free the inputs and compiled searches before the next setting
            group = [measured.get(b) or row(b, s, skipped=skipped[b]) for b in backends]
            base = measured.get("mctx", {}).get("sims_per_s")
            for r in group:
                if base and r["sims_per_s"]:
                    r["ratio_vs_mctx"] = r["sims_per_s"] / base
                if args.json:
                    print(json.dumps(r), flush=True)
            rows.extend(group)

    print(format_table(rows), file=out)
    for line in acceptance_lines(rows):
        print(line, file=out)
    load = max((r.get("loadavg") or 0.0 for r in rows), default=0.0)
    if load > _cores():
        print(f"note: the 1-minute load average reached {load:.1f} on {_cores()} cores: other work competed for "
              "the cores, which hurts the multi-threaded rows most (an OpenMP barrier waits for a descheduled "
              "thread); rerun on a quiet machine" + ("" if args.threads == 1 else ", or compare with --threads 1"),
              file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
