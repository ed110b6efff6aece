"""Numba backend beyond test_backends.py: a large forest checked bit for bit (value_sum included),
results independent of the thread count, one compiled specialisation per kernel, and forked
children that keep working."""

from __future__ import annotations

import multiprocessing
import sys

import numpy as np
import pytest

from mcts.core import Forest, backup, best_path, expand, native, select, terminal_nodes
from mcts.core.forest import TERMINAL
from mcts.core.reference import BACKUP_RULES, BEST_PATH_KEYS, SELECT_RULES

pytestmark = pytest.mark.skipif("numba" not in native.available_backends(), reason="numba backend not available")


def _workload(forest: Forest, backend: str, seed: int, rounds: int, max_leaves: int = 8, K: int = 4) -> list:
    """Random rounds of select -> expand -> backup, each with a random rule; returns every op's output."""
    rng = np.random.default_rng(seed)
    B = forest.num_trees
    outputs = []
    for _ in range(rounds):
        L = int(rng.integers(2, max_leaves + 1))
        select_rule, backup_rule = rng.choice(SELECT_RULES), rng.choice(BACKUP_RULES)
        leaves = select(forest, L, select_rule, float(rng.choice([0.5, 1.4])), float(rng.choice([0.0, 1.0, 3.0])),
                        backend=backend)
        terminal = rng.random((B, L, K)) < 0.05
        expandable = (leaves >= 0) & ((forest.flags[np.arange(B)[:, None], np.maximum(leaves, 0)] & TERMINAL) == 0)
        counts = np.where(rng.random((B, L)) < 0.05, 0, rng.integers(1, K + 1, (B, L)))
        priors = rng.dirichlet(np.ones(K), (B, L))
        rewards = rng.random((B, L, K))
        firsts = expand(forest, np.where(expandable, leaves, -1), counts, priors, rewards, terminal, backend=backend)
        backup(forest, leaves, rng.random((B, L)), backup_rule, backend=backend)
        outputs += [leaves, firsts]
    outputs += [best_path(forest, by, backend=backend) for by in BEST_PATH_KEYS]
    outputs.append(terminal_nodes(forest, backend=backend))
    return outputs


def _assert_identical(got: Forest, want: Forest, got_out: list, want_out: list) -> None:
    for i, (g, w) in enumerate(zip(got_out, want_out)):
        assert g.shape == w.shape and g.dtype == w.dtype and np.array_equal(g, w), f"output {i} differs"
    for name, w in want.arrays().items():
        assert np.array_equal(getattr(got, name), w), f"{name} differs"  # value_sum too: bit for bit


@pytest.mark.slow
def test_large_forest_matches_reference_bit_for_bit():
    # Deep trees of hundreds of nodes (node ids and paths far beyond the small cases of test_backends).
    B, C = 256, 1025
    ref, nb = Forest.empty(B, C), Forest.empty(B, C)
    want = _workload(ref, "numpy", 1, 30, max_leaves=12, K=6)
    got = _workload(nb, "numba", 1, 30, max_leaves=12, K=6)
    assert ref.num_nodes.mean() > 500 and ref.depth.max() > 10
    _assert_identical(nb, ref, got, want)


def test_thread_count_does_not_change_results(monkeypatch):
    import numba

    from mcts.core import native

    # Enough trees that the kernels use every thread (they keep MIN_TREES_PER_THREAD per thread).
    most = numba.config.NUMBA_NUM_THREADS
    B = native.MIN_TREES_PER_THREAD * most + 37
    runs = []
    for threads in ("1", "0"):  # the serial twins, then the parallel kernels on every core
        monkeypatch.setenv("TREESEARCH_NUM_THREADS", threads)
        forest = Forest.empty(B, 301)
        runs.append((forest, _workload(forest, "numba", 2, 30)))
    (f1, out1), (f2, out2) = runs
    _assert_identical(f2, f1, out2, out1)


def test_each_kernel_has_one_specialisation():
    # Compile time: every call must reuse the one compiled signature (forest.py's dtypes, int rule
    # codes, float hyperparameters), never trigger a second compilation.
    from mcts.core import numba_ops

    forest = Forest.empty(3, 40)
    _workload(forest, "numba", 3, 5)
    kernels = [getattr(numba_ops, name) for name in dir(numba_ops)
               if name.endswith("_kernel") and hasattr(getattr(numba_ops, name), "signatures")]
    assert len(kernels) == 5
    for kernel in kernels:
        assert len(numba_ops._serial_twin(kernel).signatures) == 1, kernel.__name__
        assert len(kernel.signatures) <= 1, (kernel.__name__, kernel.signatures)


def _forked_workload(B: int) -> tuple:
    forest = Forest.empty(B, 61)
    return forest.visits, _workload(forest, "numba", 4, 6)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_runs_after_parent_used_the_thread_pool(monkeypatch):
    # GNU OpenMP's pool does not survive fork; the child must fall back to serial kernels, not die.
    monkeypatch.setenv("TREESEARCH_NUM_THREADS", "0")
    want = [_forked_workload(B) for B in (5, 300)]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = [pool.apply_async(_forked_workload, (B,)).get(timeout=120) for B in (5, 300)]
    for (visits, out), (want_visits, want_out) in zip(got, want):
        assert np.array_equal(visits, want_visits)
        assert all(np.array_equal(g, w) for g, w in zip(out, want_out))
