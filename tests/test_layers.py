"""The import graph of the package, read from its own files with `ast`: one direction of imports.

    mcts.core <- mcts.{grading, problems, files, options} <- mcts.{policy, envs} <- mcts.{answers, traces, search,
    baselines, algorithms} <- prm <- treesearch (the edge: loaders, executor, results, cli)
    <- selftrain

A module may import its own layer and the layers below it, never one above; the graph has no
cycle; and no module imports another's private (underscore) name. Imports inside functions count
(a lazy import is still an edge); only a module's `if __name__ == "__main__":` block is left out,
since it runs only when the file is a script (`python -m mcts.search` forwards to the edge there).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mcts", "prm", "selftrain", "treesearch")
# (prefix, layer): the longest matching prefix names a module's layer.
LAYERS = (
    ("mcts.core", 0),
    ("mcts.grading", 1), ("mcts.problems", 1), ("mcts.files", 1), ("mcts.options", 1),
    ("mcts.policy", 2), ("mcts.envs", 2),
    ("mcts", 3),
    ("prm", 4),
    ("treesearch", 5),
    ("selftrain", 6),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module a dotted import name lands in (a package's __init__ for a package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every project import outside __main__."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    script_only = {id(node) for top in tree.body
                   if isinstance(top, ast.If) and ast.unparse(top.test) == "__name__ == '__main__'"
                   for node in ast.walk(top)}
    found = []
    for node in ast.walk(tree):
        if id(node) in script_only:
            continue
        if isinstance(node, ast.Import):
            found += [(owner, "", node.lineno) for alias in node.names if (owner := _owner(alias.name))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, "", node.lineno))
                elif owner := _owner(node.module):
                    found.append((owner, alias.name, node.lineno))
    return found


def _layer(module: str) -> int:
    """The layer of the longest prefix in LAYERS that `module` starts with."""
    for prefix, layer in sorted(LAYERS, key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return -1


GRAPH = {name: [(target, imported, line) for target, imported, line in _imports(path) if target != name]
         for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert all(_layer(name) >= 0 for name in MODULES)


def test_no_module_imports_a_layer_above_it():
    upward = [f"{MODULES[name].relative_to(ROOT)}:{line}: {name} (layer {_layer(name)}) imports {target} "
              f"(layer {_layer(target)})"
              for name, edges in GRAPH.items() for target, _, line in edges if _layer(target) > _layer(name)]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target, _, _ in GRAPH[name]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (cycle := visit(name)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_module_imports_a_private_name_of_another():
    private = [f"{MODULES[name].relative_to(ROOT)}:{line}: {name} imports {target}.{imported}"
               for name, edges in GRAPH.items() for target, imported, line in edges
               if imported.startswith("_") and not imported.startswith("__")]
    assert not private, "\n".join(private)


MAX_LINES = 600  # a module longer than this has grown a second concept: split it by concept


def test_no_module_passes_the_line_limit():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in MODULES.values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)
