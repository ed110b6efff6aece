"""Numba backend of the tree operations: reference.py compiled, parallel over trees.

A port of `reference.py` (the specification), laid out as `csrc/tree.h`: per-tree helpers take one
tree's rows (1-D views of the Forest's [B, C] arrays, so updates land in place) and the kernels
run them over trees with `prange`; each iteration touches only its own tree's rows. Results agree
with the reference bit for bit: float64 in the reference's order without fastmath (so nothing is
contracted into an FMA), sums over children in increasing id, ties to the lowest id, and
`math.log`/`math.sqrt` from the C library, as Python's. Every kernel is compiled once, for the
dtypes of forest.py, and cached on disk.
"""

from __future__ import annotations

import math
import os
import types

import numba
import numpy as np

from .forest import BLOCKED, EXPANDED, NO_PARENT, PRUNED, ROOT_INDEX, TERMINAL, Forest
from .native import BACKUP_RULE_CODES, BEST_PATH_CODES, SELECT_RULE_CODES, threads_for

# Plain ints, frozen into the compiled code as constants.
_EXPANDED, _TERMINAL, _PRUNED, _BLOCKED = int(EXPANDED), int(TERMINAL), int(PRUNED), int(BLOCKED)
_UNBLOCK = 0xFF ^ _BLOCKED  # uint8 mask that clears the scratch bit
_PUCT = SELECT_RULE_CODES["puct"]
_MEAN, _MAX = BACKUP_RULE_CODES["mean"], BACKUP_RULE_CODES["max"]
_BY_VISITS, _BY_REWARD = BEST_PATH_CODES["visits"], BEST_PATH_CODES["reward"]

# error_model="numpy": no zero-division checks (no divisor here can be 0), as in the C++ backend.
_tree_fn = numba.njit(cache=True, error_model="numpy")
_kernel = numba.njit(parallel=True, cache=True, error_model="numpy")


# ---------------------------------------------------------------------------------------------
# select


@_tree_fn
def _is_leaf(f):
    return (f & _EXPANDED) == 0 or (f & _TERMINAL) != 0


@_tree_fn
def _available(f, pending):
    """May be chosen while descending: flags f, pending selections `pending`."""
    if f & (_PRUNED | _BLOCKED):
        return False
    return not (_is_leaf(f) and pending > 0)


@_tree_fn
def _descend(parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, flags,
             rule, c, w):
    """One descent from the root: (leaf or -1, number of nodes newly marked BLOCKED)."""
    C = parent.shape[0]
    node = ROOT_INDEX
    marked = 0
    if not _available(flags[node], virtual_loss[node]):
        return -1, marked
    while not _is_leaf(flags[node]):
        n_parent = float(visits[node]) + w * float(virtual_loss[node])
        # The same for every sibling, so computed once per parent (as tree.h does).
        parent_term = math.sqrt(n_parent) if rule == _PUCT else math.log(max(n_parent, 1.0))
        best, best_score = -1, -math.inf
        start = max(first_child[node], 0)
        for s in range(start, min(start + num_children[node], C)):
            if not _available(flags[s], virtual_loss[s]):
                continue
            n = float(visits[s]) + w * float(virtual_loss[s])
            q = value_sum[s] / n if n > 0 else float(reward[s])
            if rule == _PUCT:
                score = q + c * float(prior[s]) * parent_term / (1.0 + n)
            else:
                score = q + c * math.sqrt(parent_term / (1.0 + n))
            if best == -1 or score > best_score:
                best, best_score = s, score
        if best == -1:
            # Nothing selectable below: block this subtree for the rest of the call and back up one.
            flags[node] |= _BLOCKED
            marked += 1
            if node == ROOT_INDEX:
                return -1, marked
            node = parent[node]
            continue
        node = best
    return node, marked


@_tree_fn
def _select_tree(parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, flags,
                 n_nodes, out, rule, c, w):
    marked = 0
    for slot in range(out.shape[0]):  # out is -1 filled
        leaf, m = _descend(parent, first_child, num_children, visits, value_sum, prior, reward,
                           virtual_loss, flags, rule, c, w)
        marked += m
        if leaf < 0:
            break
        out[slot] = leaf
        node = leaf
        while node != NO_PARENT:
            virtual_loss[node] += 1
            node = parent[node]
    if marked:
        for s in range(min(n_nodes, flags.shape[0])):
            flags[s] &= _UNBLOCK


@_kernel
def _select_kernel(parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, flags,
                   num_nodes, out, rule, c, w):
    for b in numba.prange(parent.shape[0]):
        _select_tree(parent[b], first_child[b], num_children[b], visits[b], value_sum[b], prior[b], reward[b],
                     virtual_loss[b], flags[b], num_nodes[b], out[b], rule, c, w)


# ---------------------------------------------------------------------------------------------
# expand


@_tree_fn
def _expand_tree(parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, depth,
                 flags, n_nodes, leaves, counts, priors, rewards, terminal, out):
    """Returns (new num_nodes, whether an expansion did not fit)."""
    C = parent.shape[0]
    K = priors.shape[1]
    full = False
    for slot in range(leaves.shape[0]):  # out is -1 filled
        leaf, k = leaves[slot], counts[slot]
        if leaf < 0 or leaf >= n_nodes or leaf >= C or k < 0 or k > K:
            continue
        if flags[leaf] & (_EXPANDED | _TERMINAL):
            continue
        start = n_nodes
        if start + k > C:
            full = True
            continue
        for j in range(k):
            s = start + j
            parent[s] = leaf
            first_child[s] = -1
            num_children[s] = 0
            visits[s] = 0
            value_sum[s] = 0.0
            prior[s] = priors[slot, j]
            reward[s] = rewards[slot, j]
            virtual_loss[s] = 0
            depth[s] = depth[leaf] + 1
            flags[s] = _TERMINAL if terminal[slot, j] else 0
        first_child[leaf] = start
        num_children[leaf] = k
        flags[leaf] |= _EXPANDED
        n_nodes = start + k
        out[slot] = start
    return n_nodes, full


@_kernel
def _expand_kernel(parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, depth,
                   flags, num_nodes, full, leaves, counts, priors, rewards, terminal, out):
    for b in numba.prange(parent.shape[0]):
        n, became_full = _expand_tree(parent[b], first_child[b], num_children[b], visits[b], value_sum[b],
                                      prior[b], reward[b], virtual_loss[b], depth[b], flags[b], num_nodes[b],
                                      leaves[b], counts[b], priors[b], rewards[b], terminal[b], out[b])
        num_nodes[b] = n
        if became_full:
            full[b] = 1


# ---------------------------------------------------------------------------------------------
# backup


@_tree_fn
def _aggregate_children(first_child, num_children, visits, value_sum, node, rule):
    """max: Q = max over visited children of their Q; quality: sum of W / sum of N over them."""
    start = max(first_child[node], 0)
    best = -math.inf
    sum_w, sum_n = 0.0, 0
    for s in range(start, min(start + num_children[node], visits.shape[0])):
        n = visits[s]
        if n <= 0:
            continue
        w = value_sum[s]
        q = w / float(n)
        if q > best:  # Python's max(best, q) keeps `best` unless q is greater
            best = q
        sum_w += w
        sum_n += n
    if sum_n == 0:
        return
    q = best if rule == _MAX else sum_w / float(sum_n)
    value_sum[node] = float(visits[node]) * q


@_tree_fn
def _backup_tree(parent, first_child, num_children, visits, value_sum, virtual_loss, n_nodes, leaves, values,
                 rule):
    for slot in range(leaves.shape[0]):
        leaf = leaves[slot]
        if leaf < 0 or leaf >= n_nodes or leaf >= parent.shape[0]:
            continue
        v = values[slot]
        node = leaf
        while node != NO_PARENT:
            if virtual_loss[node] > 0:
                virtual_loss[node] -= 1
            visits[node] += 1
            if rule == _MEAN or node == leaf:
                value_sum[node] += v
            else:
                _aggregate_children(first_child, num_children, visits, value_sum, node, rule)
            node = parent[node]


@_kernel
def _backup_kernel(parent, first_child, num_children, visits, value_sum, virtual_loss, num_nodes, leaves, values,
                   rule):
    for b in numba.prange(parent.shape[0]):
        _backup_tree(parent[b], first_child[b], num_children[b], visits[b], value_sum[b], virtual_loss[b],
                     num_nodes[b], leaves[b], values[b], rule)


# ---------------------------------------------------------------------------------------------
# best_path, terminal_nodes


@_tree_fn
def _greedy_end(first_child, num_children, visits, value_sum, reward, flags, by):
    """Descend to the unpruned child with most visits (by visits) or highest Q (by q)."""
    C = visits.shape[0]
    node = ROOT_INDEX
    for _ in range(C):  # a path has at most C nodes
        if num_children[node] <= 0:
            break
        best, best_key = -1, -math.inf
        start = max(first_child[node], 0)
        for s in range(start, min(start + num_children[node], C)):
            if flags[s] & _PRUNED:
                continue
            n = visits[s]
            if by == _BY_VISITS:
                key = float(n)
            else:
                key = value_sum[s] / float(n) if n > 0 else float(reward[s])
            if best == -1 or key > best_key:
                best, best_key = s, key
        if best == -1:
            break
        node = best
    return node


@_tree_fn
def _best_reward_end(parent, num_children, reward, flags, n_nodes):
    """The childless, unpruned node with the highest reward product, terminal nodes preferred."""
    n_nodes = min(n_nodes, parent.shape[0])
    product = np.empty(max(n_nodes, 1), np.float64)
    product[0] = 1.0
    # Parents are allocated before their children, so one pass in id order suffices.
    for s in range(1, n_nodes):
        product[s] = product[parent[s]] * float(reward[s])
    best, best_key, best_terminal = ROOT_INDEX, -math.inf, False
    for s in range(n_nodes):
        f = flags[s]
        if num_children[s] > 0 or f & _PRUNED:
            continue
        terminal = (f & _TERMINAL) != 0
        if (terminal and not best_terminal) or (terminal == best_terminal and product[s] > best_key):
            best, best_key, best_terminal = s, product[s], terminal
    return best


@_tree_fn
def _best_path_tree(parent, first_child, num_children, visits, value_sum, reward, flags, n_nodes, out, by):
    if by == _BY_REWARD:
        end = _best_reward_end(parent, num_children, reward, flags, n_nodes)
    else:
        end = _greedy_end(first_child, num_children, visits, value_sum, reward, flags, by)
    length = 0
    node = end
    while node != NO_PARENT and length < parent.shape[0]:
        length += 1
        node = parent[node]
    node = end
    for i in range(length - 1, -1, -1):  # out is -1 filled
        if i < out.shape[0]:
            out[i] = node
        node = parent[node]


@_kernel
def _best_path_kernel(parent, first_child, num_children, visits, value_sum, reward, flags, num_nodes, out, by):
    for b in numba.prange(parent.shape[0]):
        _best_path_tree(parent[b], first_child[b], num_children[b], visits[b], value_sum[b], reward[b], flags[b],
                        num_nodes[b], out[b], by)


@_kernel
def _terminal_nodes_kernel(flags, num_nodes, counts, out):
    """counts[b] = number of terminal nodes of tree b; their ids fill out[b] as far as it reaches."""
    B, C = flags.shape
    T = out.shape[1]
    for b in numba.prange(B):
        count = 0
        for s in range(min(num_nodes[b], C)):
            if flags[b, s] & _TERMINAL:
                if count < T:
                    out[b, count] = s
                count += 1
        counts[b] = count


# ---------------------------------------------------------------------------------------------
# The operations, with reference.py's signatures (arguments already validated by ops.py).


# Each kernel has a serial twin (compiled on first use), for the one-thread default (native.py) and
# for a forked child: GNU OpenMP's thread pool does not survive fork(), and Numba's omp layer
# terminates a child (multiprocessing's default start method on Linux) that enters a parallel
# kernel after its parent did, so such a child runs the twins, as tree_cpu.cpp runs a serial loop.
_pool_pid: int | None = None  # the process that has run the parallel kernels
_serial_twins: dict = {}


def _serial_twin(kernel):
    """`kernel` compiled without parallel=True (prange runs as range), on first use."""
    twin = _serial_twins.get(kernel)
    if twin is None:
        # A copy of the function under its own name, so its disk cache is not the parallel one's.
        f = kernel.py_func
        copy = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial")
        copy.__qualname__ = copy.__name__
        twin = _serial_twins[kernel] = _tree_fn(copy)
    return twin


def _launch(kernel, num_trees: int, *args):
    """kernel(*args) on `native.threads_for(num_trees)` threads: its serial twin on one thread (the
    default), else the parallel kernel within Numba's thread count (restored afterwards)."""
    global _pool_pid
    wanted = min(threads_for(num_trees), numba.config.NUMBA_NUM_THREADS)
    if wanted == 1 or _pool_pid not in (None, os.getpid()):  # serial, or a forked child of a pool user
        return _serial_twin(kernel)(*args)
    _pool_pid = os.getpid()
    threads = numba.get_num_threads()
    numba.set_num_threads(wanted)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def select(forest: Forest, leaves_per_tree: int, rule: str = "puct", c: float = 1.0,
           virtual_loss: float = 1.0) -> np.ndarray:
    """See reference.select. Returns int32 [B, L]."""
    f = forest
    out = np.full((f.num_trees, leaves_per_tree), -1, np.int32)
    _launch(_select_kernel, f.num_trees, f.parent, f.first_child, f.num_children, f.visits, f.value_sum,
            f.prior, f.reward, f.virtual_loss, f.flags, f.num_nodes, out, SELECT_RULE_CODES[rule], float(c),
            float(virtual_loss))
    return out


def expand(forest: Forest, leaves: np.ndarray, counts: np.ndarray, priors: np.ndarray, rewards: np.ndarray,
           terminal: np.ndarray) -> np.ndarray:
    """See reference.expand. Returns int32 [B, L] first child ids."""
    f = forest
    out = np.full(leaves.shape, -1, np.int32)
    _launch(_expand_kernel, f.num_trees, f.parent, f.first_child, f.num_children, f.visits, f.value_sum,
            f.prior, f.reward, f.virtual_loss, f.depth, f.flags, f.num_nodes, f.full, leaves, counts, priors,
            rewards, terminal, out)
    return out


def backup(forest: Forest, leaves: np.ndarray, values: np.ndarray, rule: str = "mean") -> None:
    """See reference.backup."""
    f = forest
    _launch(_backup_kernel, f.num_trees, f.parent, f.first_child, f.num_children, f.visits, f.value_sum,
            f.virtual_loss, f.num_nodes, leaves, values, BACKUP_RULE_CODES[rule])


def best_path(forest: Forest, by: str = "visits") -> np.ndarray:
    """See reference.best_path. Returns int32 [B, 1 + max depth], -1 padded."""
    f = forest
    out = np.full((f.num_trees, int(f.depth.max(initial=0)) + 1), -1, np.int32)
    _launch(_best_path_kernel, f.num_trees, f.parent, f.first_child, f.num_children, f.visits, f.value_sum,
            f.reward, f.flags, f.num_nodes, out, BEST_PATH_CODES[by])
    return out


def terminal_nodes(forest: Forest) -> np.ndarray:
    """See reference.terminal_nodes. Returns int32 [B, T], -1 padded."""
    B = forest.num_trees
    counts = np.empty(B, np.int32)
    # First pass counts (into an out too narrow to hold any id), second fills.
    _launch(_terminal_nodes_kernel, B, forest.flags, forest.num_nodes, counts, np.empty((B, 0), np.int32))
    out = np.full((B, int(counts.max(initial=0))), -1, np.int32)
    _launch(_terminal_nodes_kernel, B, forest.flags, forest.num_nodes, counts, out)
    return out
