"""Every backend against the NumPy reference on random workloads and on edge cases.

One shared check per operation (`run_both`), run for each backend; a backend that is not built or
has no device here is skipped, never silently replaced.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcts.core import Forest, backup, best_path, expand, native, select, terminal_nodes
from mcts.core.forest import NODE_FIELDS, PRUNED, TERMINAL
from mcts.core.reference import BACKUP_RULES, BEST_PATH_KEYS, SELECT_RULES


def _backend_param(name: str):
    available = name in native.available_backends()
    return pytest.param(name, marks=[pytest.mark.skipif(not available, reason=f"{name} backend not available")]
                        + ([pytest.mark.cuda] if name == "cuda" else []))


NATIVE = [_backend_param(name) for name in ("cpp", "numba", "cuda")]


class Runner:
    """Applies each operation to a reference forest and a backend's forest, comparing results."""

    def __init__(self, backend: str, forest: Forest):
        self.backend = backend
        self.ref = forest
        self.dev = forest.copy() if backend != "cuda" else _to_device(forest)

    def _host(self, a):
        return a if self.backend != "cuda" else a.cpu().numpy()

    def _dev(self, a):
        if self.backend != "cuda":
            return a
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).cuda()

    def check_forest(self, what: str) -> None:
        for name, ref in self.ref.arrays().items():
            got = self._host(getattr(self.dev, name))
            if name == "value_sum":
                assert np.allclose(got, ref, rtol=0, atol=1e-9), f"{what}: value_sum differs by {np.abs(got - ref).max()}"
            else:
                assert np.array_equal(got, ref), f"{what}: {name} differs at {np.argwhere(got != ref)[:5].tolist()}"

    def select(self, *args, **kw):
        want = select(self.ref, *args, backend="numpy", **kw)
        got = self._host(select(self.dev, *args, backend=self.backend, **kw))
        assert np.array_equal(got, want), f"select {args} {kw}:\n{got}\n!=\n{want}"
        self.check_forest("select")
        return want

    def expand(self, leaves, counts, priors, rewards, terminal, **kw):
        want = expand(self.ref, leaves, counts, priors, rewards, terminal, backend="numpy", **kw)
        args = [self._dev(np.ascontiguousarray(a, dt)) for a, dt in
                ((leaves, np.int32), (counts, np.int32), (priors, np.float32), (rewards, np.float32),
                 (terminal, np.uint8))]
        got = self._host(expand(self.dev, *args, backend=self.backend, **kw))
        assert np.array_equal(got, want), f"expand:\n{got}\n!=\n{want}"
        self.check_forest("expand")
        return want

    def backup(self, leaves, values, rule):
        backup(self.ref, leaves, values, rule, backend="numpy")
        backup(self.dev, self._dev(np.ascontiguousarray(leaves, np.int32)),
               self._dev(np.ascontiguousarray(values, np.float64)), rule, backend=self.backend)
        self.check_forest(f"backup {rule}")

    def best_path(self, by):
        want = best_path(self.ref, by, backend="numpy")
        got = self._host(best_path(self.dev, by, backend=self.backend))
        assert np.array_equal(got, want), f"best_path {by}:\n{got}\n!=\n{want}"
        return want

    def terminal_nodes(self):
        want = terminal_nodes(self.ref, backend="numpy")
        got = self._host(terminal_nodes(self.dev, backend=self.backend))
        assert np.array_equal(got, want), f"terminal_nodes:\n{got}\n!=\n{want}"
        return want


def _to_device(forest: Forest) -> Forest:
    import torch

    return forest.map(lambda a: torch.from_numpy(a.copy()).cuda())


def random_round(run: Runner, rng: np.random.Generator, *, L: int, K: int, select_rule: str,
                 backup_rule: str, c: float, vl: float, p_terminal: float, quantised: bool) -> None:
    """select -> expand with random children -> backup with random values, checked at each step."""
    B = run.ref.num_trees
    leaves = run.select(L, select_rule, c, vl)
    counts = np.where(leaves >= 0, rng.integers(0, K + 1, leaves.shape), 0).astype(np.int32)
    if quantised:  # few distinct values, so exact score ties happen often
        priors = rng.integers(1, 3, (B, L, K)).astype(np.float32) / 4
        rewards = rng.integers(0, 3, (B, L, K)).astype(np.float32) / 2
        values = rng.integers(0, 3, (B, L)).astype(np.float64) / 2
    else:
        priors = rng.dirichlet(np.ones(K), (B, L)).astype(np.float32)
        rewards = rng.random((B, L, K)).astype(np.float32)
        values = rng.random((B, L))
    terminal = rng.random((B, L, K)) < p_terminal
    # Terminal leaves are re-selected but cannot be expanded; keep them in backup.
    expandable = np.where(leaves >= 0, (run.ref.flags[np.arange(B)[:, None], np.maximum(leaves, 0)] & TERMINAL) == 0, False)
    run.expand(np.where(expandable, leaves, -1), counts, priors, rewards, terminal)
    if rng.random() < 0.1:  # sometimes leave a pending selection for the next round
        keep = rng.random(leaves.shape) < 0.5
        run.backup(np.where(keep, leaves, -1), values, backup_rule)
        run.backup(np.where(keep, -1, leaves), values, backup_rule)
    else:
        run.backup(leaves, values, backup_rule)


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("seed", range(12))
def test_random_workloads_agree(backend, seed):
    rng = np.random.default_rng(seed)
    B = int(rng.choice([1, 3, 17, 64]))
    K = int(rng.integers(1, 6))
    C = int(rng.integers(2, 90)) | 1  # odd capacities; small ones fill up mid-run
    run = Runner(backend, Forest.empty(B, C))
    select_rule = SELECT_RULES[seed % 3]
    backup_rule = BACKUP_RULES[(seed // 3) % 3]
    for _ in range(int(rng.integers(5, 25))):
        random_round(run, rng, L=int(rng.integers(1, 6)), K=K, select_rule=select_rule,
                     backup_rule=backup_rule, c=float(rng.choice([0.0, 0.5, 1.4, 5.0])),
                     vl=float(rng.choice([0.0, 1.0, 3.0])), p_terminal=float(rng.choice([0.0, 0.2, 0.6])),
                     quantised=bool(seed % 2))
    for by in BEST_PATH_KEYS:
        run.best_path(by)
    run.terminal_nodes()


@pytest.mark.parametrize("backend", NATIVE)
def test_empty_forest_and_root_only_trees(backend):
    run = Runner(backend, Forest.empty(0, 5))
    assert run.select(3, "puct").shape == (0, 3)
    assert run.best_path("visits").shape == (0, 1)
    assert run.terminal_nodes().shape == (0, 0)

    run = Runner(backend, Forest.empty(4, 1))
    leaves = run.select(3, "uct")
    assert leaves.tolist() == [[0, -1, -1]] * 4  # only the root, once
    for by in BEST_PATH_KEYS:
        assert run.best_path(by).tolist() == [[0]] * 4
    ones = np.ones((4, 3, 2), np.float32)
    first = run.expand(leaves, np.full((4, 3), 2), ones, ones, np.zeros((4, 3, 2)))
    assert first.tolist() == [[-1, -1, -1]] * 4  # capacity 1: nothing fits
    assert run.ref.full.tolist() == [1] * 4
    run.backup(leaves, np.full((4, 3), 0.5), "mean")
    assert run.ref.virtual_loss.sum() == 0 and run.ref.visits[:, 0].tolist() == [1] * 4


@pytest.mark.parametrize("backend", NATIVE)
def test_full_tree_is_never_corrupted(backend):
    rng = np.random.default_rng(7)
    run = Runner(backend, Forest.empty(3, 8))
    for _ in range(10):
        random_round(run, rng, L=2, K=3, select_rule="puct", backup_rule="mean", c=1.0, vl=1.0,
                     p_terminal=0.0, quantised=False)
    assert run.ref.full.all() and (run.ref.num_nodes <= 8).all()
    before = run.ref.copy()
    leaves = run.select(1, "puct")
    tree_state = {n: getattr(run.ref, n).copy() for n in NODE_FIELDS}
    big = np.full((3, 1, 8), 0.5, np.float32)
    assert (run.expand(leaves, np.full((3, 1), 8), big, big, np.zeros((3, 1, 8))) == -1).all()
    for n in NODE_FIELDS:
        assert np.array_equal(getattr(run.ref, n), tree_state[n]), n
    run.backup(leaves, np.zeros((3, 1)), "mean")
    assert np.array_equal(run.ref.virtual_loss, before.virtual_loss)


def _star(backend: str, rewards, priors=None, terminal=None) -> Runner:
    """A forest of one tree: a root with len(rewards) children, visited once."""
    k = len(rewards)
    run = Runner(backend, Forest.empty(1, 1 + k + 4 * k))
    leaves = run.select(1, "puct")
    priors = np.full(k, 1.0 / k) if priors is None else np.asarray(priors)
    terminal = np.zeros(k) if terminal is None else np.asarray(terminal)
    run.expand(leaves, [[k]], priors[None, None], np.asarray(rewards)[None, None], terminal[None, None])
    run.backup(leaves, [[0.0]], "mean")
    return run


@pytest.mark.parametrize("backend", ["numpy", *NATIVE])
def test_ties_break_to_lowest_index(backend):
    run = _star(backend, [0.5, 0.5, 0.5, 0.5])
    for rule in SELECT_RULES:
        assert run.select(1, rule, 1.0, 1.0).tolist() == [[1]]
        run.backup([[1]], [[0.5]], "mean")
        # child 1 now has a visit and Q 0.5; with c = 0 the unvisited 0.5s tie with it -> lowest id
        assert run.select(1, rule, 0.0, 1.0).tolist() == [[1]]
        run.backup([[1]], [[0.5]], "mean")
        for f in (run.ref, run.dev):  # restore the star for the next rule
            f.visits[0, 1] = 0
            f.value_sum[0, 1] = 0


@pytest.mark.parametrize("backend", ["numpy", *NATIVE])
def test_more_leaves_than_selectable(backend):
    run = _star(backend, [0.9, 0.2, 0.4], terminal=[0, 1, 0])
    leaves = run.select(6, "puct", 1.0, 1.0)
    assert sorted(leaves[0, :3].tolist()) == [1, 2, 3] and leaves[0, 3:].tolist() == [-1] * 3
    assert leaves[0, 0] == 1  # highest first-play value first
    assert run.ref.virtual_loss[0, 0] == 3 and run.ref.flags.max() < 128  # scratch bit cleared
    run.backup(leaves, np.full((1, 6), 0.3), "mean")
    assert run.ref.virtual_loss.sum() == 0  # virtual loss removal leaves no residue
    assert run.ref.visits[0, :4].tolist() == [4, 1, 1, 1]


@pytest.mark.parametrize("backend", ["numpy", *NATIVE])
def test_pruned_and_terminal_nodes(backend):
    run = _star(backend, [0.9, 0.8, 0.1], terminal=[1, 0, 0])
    for f in (run.ref, run.dev):
        f.flags[0, 2] |= PRUNED
    leaves = run.select(3, "uct", 0.0)
    assert leaves.tolist() == [[1, 3, -1]]  # pruned node 2 is never chosen
    # a terminal leaf cannot be expanded: validate raises, the raw op returns -1
    with pytest.raises(ValueError, match="terminal"):
        expand(run.ref, [[1]], [[1]], [[[1.0]]], [[[1.0]]], backend="numpy")
    assert run.expand([[1, -1]], [[1, 0]], np.ones((1, 2, 1)), np.ones((1, 2, 1)), np.zeros((1, 2, 1)),
                      validate=False).tolist() == [[-1, -1]]
    run.backup(leaves, [[1.0, 0.0, 0.0]], "mean")
    assert run.terminal_nodes().tolist() == [[1]]
    assert run.best_path("reward").tolist() == [[0, 1]]  # terminal preferred over the higher-Q...
    assert run.select(1, "uct", 0.0).tolist() == [[1]]  # ...and terminal leaves are re-selectable


def test_q_values_cover_the_allocated_nodes_of_every_tree():
    # tree 0: a root with three children (one backed up); tree 1: a bare root; capacity to spare
    f = Forest.empty(2, 64)
    expand(f, [[0], [-1]], [[3], [0]], [[[0.2, 0.3, 0.5]], [[0, 0, 0]]], [[[0.1, 0.7, 0.4]], [[0, 0, 0]]],
           backend="numpy")
    backup(f, [[2], [-1]], [[0.9], [0.0]], "mean")
    q = f.q_values()
    assert q.shape == (2, 4) and q.dtype == np.float64
    assert np.allclose(q[0], [0.9, 0.1, 0.9, 0.4])  # visited nodes W / N, the others their reward
    assert f.q_values(0).shape == (4,) and np.allclose(f.q_values(0), q[0])
    assert f.q_values(1).shape == (1,)
    assert Forest.empty(0, 8).q_values().shape == (0, 1)


def test_backup_rules_by_hand():
    # root -> a (reward .2), b (reward .6); a -> a1, a2
    run = _star("numpy", [0.2, 0.6])
    f = run.ref
    expand(f, [[1]], [[2]], [[[0.5, 0.5]]], [[[0.1, 0.9]]], backend="numpy")  # a1 = 3, a2 = 4
    backup(f, [[4]], [[0.9]], "quality")  # a2 = .9; a = .9; root = .9 (b unvisited)
    backup(f, [[3]], [[0.3]], "quality")  # a1 = .3; a = (.9 + .3) / 2; root = .6
    backup(f, [[2]], [[0.0]], "quality")  # b = 0; root = (2 * .6 + 0) / 3 = .4
    assert np.allclose(f.q_values()[0][:5], [0.4, 0.6, 0.0, 0.3, 0.9])
    g = _star("numpy", [0.2, 0.6]).ref
    expand(g, [[1]], [[2]], [[[0.5, 0.5]]], [[[0.1, 0.9]]], backend="numpy")
    backup(g, [[4]], [[0.9]], "max")
    backup(g, [[3]], [[0.3]], "max")
    backup(g, [[2]], [[0.5]], "max")
    assert np.allclose(g.q_values()[0][:5], [0.9, 0.9, 0.5, 0.3, 0.9])  # a = max(.3, .9); root = max(.9, .5)
    h = _star("numpy", [0.2, 0.6]).ref
    backup(h, [[1]], [[1.0]], "mean")
    backup(h, [[2]], [[0.0]], "mean")
    assert h.visits[0, :3].tolist() == [3, 1, 1] and np.isclose(h.value_sum[0, 0], 1.0)


def test_puct_follows_prior_and_uct_explores():
    run = _star("numpy", [0.5, 0.5, 0.5], priors=[0.1, 0.7, 0.2])
    assert run.select(1, "puct", 2.0, 1.0).tolist() == [[2]]  # node 2 has the largest prior
    run.backup([[2]], [[0.5]], "mean")
    assert run.select(1, "uct", 2.0, 1.0).tolist() == [[1]]  # unvisited beats visited at equal Q


def test_validation_errors_name_the_problem():
    f = Forest.empty(2, 10)
    with pytest.raises(ValueError, match="rule"):
        select(f, 1, "ucb")
    with pytest.raises(ValueError, match="leaves_per_tree"):
        select(f, 0)
    with pytest.raises(ValueError, match="not an allocated node"):
        expand(f, [[3], [0]], [[1], [1]], np.ones((2, 1, 1)), np.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="twice"):
        expand(f, [[0, 0], [0, -1]], [[1, 1], [1, 0]], np.ones((2, 2, 1)), np.ones((2, 2, 1)))
    with pytest.raises(ValueError, match="counts"):
        expand(f, [[0], [0]], [[2], [1]], np.ones((2, 1, 1)), np.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="shape"):
        backup(f, [[0]], [[1.0]])
    with pytest.raises(ValueError, match="unknown backend"):
        select(f, 1, backend="tpu")


def test_thread_setting(monkeypatch):
    monkeypatch.delenv("TREESEARCH_NUM_THREADS", raising=False)
    assert native.num_threads() == 1 and native.threads_for(100_000) == 1  # serial unless asked
    monkeypatch.setenv("TREESEARCH_NUM_THREADS", "4")
    assert native.threads_for(100) == 1 and native.threads_for(300) == 2 and native.threads_for(10_000) == 4
    monkeypatch.setenv("TREESEARCH_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="TREESEARCH_NUM_THREADS"):
        native.num_threads()


def test_auto_backend_is_fastest_host_backend():
    f = Forest.empty(1, 4)
    expected = next(b for b in native.available_backends() if b != "cuda")
    assert native.resolve_backend("auto", f) == expected
    with native.override_backend("numpy"):
        assert native.resolve_backend("auto", f) == "numpy"


def test_bytes_per_node_within_budget():
    from mcts.core import BYTES_PER_NODE

    f = Forest.empty(3, 7)
    per_node = sum(a.nbytes for n, a in f.arrays().items() if n in NODE_FIELDS) / (3 * 7)
    assert per_node == BYTES_PER_NODE <= 48


@pytest.mark.parametrize("backend", [p for p in NATIVE if p.values[0] == "cpp"])
def test_cpp_rejects_wrong_dtype_instead_of_copying(backend):
    f = Forest.empty(2, 5)
    f.visits = f.visits.astype(np.int64)
    with pytest.raises(TypeError):
        native.get_ops("cpp").select(f, 1, "puct", 1.0, 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_reference_invariants_on_random_workloads(seed):
    """The specification itself keeps the tree consistent under random use."""
    rng = np.random.default_rng(100 + seed)
    B, C, K = 5, 61, 3
    run = Runner("numpy", Forest.empty(B, C))
    for _ in range(30):
        random_round(run, rng, L=int(rng.integers(1, 5)), K=K, select_rule=SELECT_RULES[seed % 3],
                     backup_rule="mean", c=1.0, vl=1.0, p_terminal=0.2, quantised=False)
    f = run.ref
    pending = f.virtual_loss.sum()
    for b in range(B):
        n = int(f.num_nodes[b])
        assert 1 <= n <= C
        ids = np.arange(1, n)
        assert (f.parent[b, ids] < ids).all() and (f.parent[b, ids] >= 0).all()
        assert (f.depth[b, ids] == f.depth[b, f.parent[b, ids]] + 1).all()
        for s in range(n):
            kids = f.children(b, s)
            assert (f.parent[b, kids] == s).all()
            # N(s) = visits that ended at s + visits of its children (mean backup adds one per pass)
            assert f.visits[b, s] >= f.visits[b, kids].sum()
        assert (f.num_children[b, n:] == 0).all() and (f.parent[b, n:] == -1).all()
    assert pending == 0  # every selected leaf was backed up, so no virtual loss remains


@pytest.mark.parametrize("backend", NATIVE)
def test_large_batches_take_the_parallel_path_and_agree(backend, monkeypatch):
    """Threads asked for and enough trees that the C++ backend runs them on several OpenMP threads
    (each keeps at least 128 trees) and Numba's prange splits them."""
    monkeypatch.setenv("TREESEARCH_NUM_THREADS", "0")
    rng = np.random.default_rng(2024)
    run = Runner(backend, Forest.empty(640, 41))
    for i in range(8):
        random_round(run, rng, L=2, K=3, select_rule=SELECT_RULES[i % 3], backup_rule=BACKUP_RULES[i % 3],
                     c=1.0, vl=1.0, p_terminal=0.2, quantised=bool(i % 2))
    for by in BEST_PATH_KEYS:
        run.best_path(by)
    run.terminal_nodes()
