"""Loads the native extensions and resolves `backend=` once, so call sites never try/except.

Backends, fastest first: "cuda" (device arrays only), "cpp" (mcts._core, OpenMP), "numba",
"numpy" (the reference). "auto" picks the first available one that fits the forest's arrays.
Tests force a path with `override_backend`.

Threads: the C++ and Numba backends run the trees on ONE thread unless TREESEARCH_NUM_THREADS asks
for more (0: every core). A tree costs well under a microsecond per operation, so threads gain
little (about 1.3x at 1024 trees on two idle cores), and a search shares its cores with a model:
there, a parallel region waits at its barrier for a worker the OS has descheduled, which was
measured at 30-70x slower than one thread. Even when asked, a thread gets at least
MIN_TREES_PER_THREAD trees.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from types import ModuleType
from typing import Any, Iterator

import numpy as np

from .forest import TERMINAL, Forest

SELECT_RULE_CODES = {"uct": 0, "puct": 1, "mcts_star": 2}
BACKUP_RULE_CODES = {"mean": 0, "max": 1, "quality": 2}
BEST_PATH_CODES = {"visits": 0, "q": 1, "reward": 2}
BACKENDS = ("cuda", "cpp", "numba", "numpy")


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken build must fall back, not crash the import
        return None


MIN_TREES_PER_THREAD = 128  # as kMinTreesPerThread in csrc/tree_cpu.cpp

_core = _try_import("mcts._core")
_core_cuda = _try_import("mcts._core_cuda")
_override: str | None = None


def cpp_available() -> bool:
    return _core is not None


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when the CUDA extension is built and a CUDA device is visible (asked once)."""
    if _core_cuda is None:
        return False
    try:
        return bool(_core_cuda.device_count() > 0)
    except Exception:  # noqa: BLE001
        return False


def numba_available() -> bool:
    return _numba_ops() is not None


@functools.lru_cache(maxsize=None)
def _numba_ops() -> ModuleType | None:
    # Imported once: a failed import is not retried on every call.
    if os.environ.get("TREESEARCH_DISABLE_NUMBA"):
        return None
    return _try_import("mcts.core.numba_ops")


@functools.lru_cache(maxsize=None)
def _available() -> tuple[str, ...]:
    found = {"cuda": cuda_available(), "cpp": cpp_available(), "numba": numba_available(), "numpy": True}
    return tuple(name for name in BACKENDS if found[name])


def available_backends() -> list[str]:
    return list(_available())


def num_threads() -> int:
    """Threads the C++ and Numba backends may use: TREESEARCH_NUM_THREADS (0: every core), 1 when
    it is unset (see the module docstring)."""
    value = os.environ.get("TREESEARCH_NUM_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"TREESEARCH_NUM_THREADS must be an integer >= 0 (0: every core), got {value!r}")
    return n if n > 0 else (os.cpu_count() or 1)


def threads_for(num_trees: int) -> int:
    """Threads for one operation on `num_trees` trees: num_threads(), at least MIN_TREES_PER_THREAD
    trees each, at least 1."""
    return max(1, min(num_threads(), num_trees // MIN_TREES_PER_THREAD))


@contextlib.contextmanager
def override_backend(name: str | None) -> Iterator[None]:
    """Force `backend="auto"` to resolve to `name` inside the block (for tests)."""
    global _override
    previous, _override = _override, name
    try:
        yield
    finally:
        _override = previous


def _is_device_forest(forest: Forest) -> bool:
    return hasattr(forest.parent, "__cuda_array_interface__")


def resolve_backend(backend: str, forest: Forest | None = None) -> str:
    """The concrete backend name for `backend` ("auto" or one of BACKENDS) and this forest."""
    if backend == "auto" and _override is not None:
        backend = _override
    on_device = forest is not None and _is_device_forest(forest)
    if backend == "auto":
        if on_device:
            backend = "cuda"
        else:
            backend = next(b for b in _available() if b != "cuda")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if backend not in _available():
        raise RuntimeError(f"backend {backend!r} is not available here; available: {available_backends()}")
    if on_device != (backend == "cuda"):
        where = "device" if on_device else "host"
        raise TypeError(f"backend {backend!r} cannot work on a {where} forest")
    return backend


def get_ops(backend: str) -> Any:
    """The module-like object holding select/expand/backup/best_path/terminal_nodes for a
    concrete backend name."""
    if backend == "numpy":
        from . import reference

        return reference
    if backend == "numba":
        return _numba_ops()
    if backend == "cpp":
        return _CppOps
    if backend == "cuda":
        return _CudaOps
    raise ValueError(backend)


def _host_args(forest: Forest) -> tuple:
    f = forest
    return (f.parent, f.first_child, f.num_children, f.visits, f.value_sum, f.prior, f.reward,
            f.virtual_loss, f.depth, f.flags, f.num_nodes, f.full)


def _terminal_count(flags: np.ndarray, num_nodes: np.ndarray) -> int:
    if flags.shape[0] == 0:
        return 0
    allocated = np.arange(flags.shape[1])[None, :] < num_nodes[:, None]
    return int((((flags & TERMINAL) != 0) & allocated).sum(axis=1).max())


class _CppOps:
    """mcts._core: works in place on the forest's NumPy arrays (no copies)."""

    @staticmethod
    def select(forest, leaves_per_tree, rule, c, virtual_loss):
        out = np.empty((forest.num_trees, leaves_per_tree), np.int32)
        _core.select(*_host_args(forest), out, SELECT_RULE_CODES[rule], float(c), float(virtual_loss),
                     num_threads())
        return out

    @staticmethod
    def expand(forest, leaves, counts, priors, rewards, terminal):
        out = np.empty(leaves.shape, np.int32)
        _core.expand(*_host_args(forest), leaves, counts, priors, rewards, terminal, out, num_threads())
        return out

    @staticmethod
    def backup(forest, leaves, values, rule):
        _core.backup(*_host_args(forest), leaves, values, BACKUP_RULE_CODES[rule], num_threads())

    @staticmethod
    def best_path(forest, by):
        depth = int(forest.depth.max(initial=0)) + 1
        out = np.empty((forest.num_trees, depth), np.int32)
        _core.best_path(*_host_args(forest), out, BEST_PATH_CODES[by], num_threads())
        return out

    @staticmethod
    def terminal_nodes(forest):
        out = np.empty((forest.num_trees, _terminal_count(forest.flags, forest.num_nodes)), np.int32)
        _core.terminal_nodes(*_host_args(forest), out, num_threads())
        return out


# ---------------------------------------------------------------------------------------------
# CUDA: arrays are anything exposing __cuda_array_interface__ (torch, CuPy, numba.cuda). The
# extension takes raw device pointers, so it is not built against any array library.

def _device_ptr(a: Any, dtype: np.dtype, shape: tuple[int, ...], name: str) -> int:
    cai = a.__cuda_array_interface__
    got = np.dtype(cai["typestr"])
    if got != np.dtype(dtype) or tuple(cai["shape"]) != tuple(shape):
        raise TypeError(f"{name} must be {np.dtype(dtype)} {list(shape)} on the device, got {got} {list(cai['shape'])}")
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != tuple(np.empty(shape, dtype).strides):
        raise TypeError(f"{name} must be C-contiguous on the device")
    return int(cai["data"][0])


def _device_args(forest: Forest) -> tuple:
    from .forest import NODE_FIELDS, TREE_FIELDS

    B, C = forest.num_trees, forest.capacity
    ptrs = [_device_ptr(getattr(forest, n), dt, (B, C), f"Forest.{n}") for n, dt in NODE_FIELDS.items()]
    ptrs += [_device_ptr(getattr(forest, n), dt, (B,), f"Forest.{n}") for n, dt in TREE_FIELDS.items()]
    return (B, C, *ptrs)


def _empty_like_device(forest: Forest, shape: tuple[int, ...], dtype) -> Any:
    """A device array of the same library as the forest's arrays."""
    ref = forest.parent
    mod = type(ref).__module__.split(".")[0]
    if mod == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=ref.device)
    if mod == "cupy":
        import cupy

        return cupy.empty(shape, dtype)
    from numba import cuda

    return cuda.device_array(shape, dtype)


class _CudaOps:
    """mcts._core_cuda: one thread per tree, all arrays stay on the device."""

    @staticmethod
    def select(forest, leaves_per_tree, rule, c, virtual_loss):
        B = forest.num_trees
        out = _empty_like_device(forest, (B, leaves_per_tree), np.int32)
        _core_cuda.select(*_device_args(forest), _device_ptr(out, np.int32, (B, leaves_per_tree), "out"),
                          leaves_per_tree, SELECT_RULE_CODES[rule], float(c), float(virtual_loss))
        return out

    @staticmethod
    def expand(forest, leaves, counts, priors, rewards, terminal):
        B, L = leaves.shape[0], leaves.shape[1]
        K = priors.shape[2]
        out = _empty_like_device(forest, (B, L), np.int32)
        _core_cuda.expand(*_device_args(forest), _device_ptr(leaves, np.int32, (B, L), "leaves"),
                          _device_ptr(counts, np.int32, (B, L), "counts"),
                          _device_ptr(priors, np.float32, (B, L, K), "priors"),
                          _device_ptr(rewards, np.float32, (B, L, K), "rewards"),
                          _device_ptr(terminal, np.uint8, (B, L, K), "terminal"),
                          _device_ptr(out, np.int32, (B, L), "out"), L, K)
        return out

    @staticmethod
    def backup(forest, leaves, values, rule):
        B, L = leaves.shape[0], leaves.shape[1]
        _core_cuda.backup(*_device_args(forest), _device_ptr(leaves, np.int32, (B, L), "leaves"),
                          _device_ptr(values, np.float64, (B, L), "values"), L, BACKUP_RULE_CODES[rule])

    @staticmethod
    def best_path(forest, by):
        B = forest.num_trees
        depth = int(forest.depth.max()) + 1 if B else 1
        out = _empty_like_device(forest, (B, depth), np.int32)
        _core_cuda.best_path(*_device_args(forest), _device_ptr(out, np.int32, (B, depth), "out"), depth,
                             BEST_PATH_CODES[by])
        return out

    @staticmethod
    def terminal_nodes(forest):
        B = forest.num_trees
        count = int(_core_cuda.max_terminal_count(*_device_args(forest))) if B else 0
        out = _empty_like_device(forest, (B, count), np.int32)
        _core_cuda.terminal_nodes(*_device_args(forest), _device_ptr(out, np.int32, (B, count), "out"), count)
        return out
