"""The package's structure: no import cycles, a schema that depends on nothing, layers.

The import graph is read from the source with :mod:`ast` (nothing is imported to
build it): every ``import trkx_ray...`` and ``from trkx_ray... import`` (or relative
import) anywhere in a module, at module level, inside functions and under
``if TYPE_CHECKING``, is an edge from that module to the module it names
(``from trkx_ray.pipeline import edges`` names the submodule
``trkx_ray.pipeline.edges``). The implicit import of a parent package's
``__init__`` is not an edge: Python initialises the parent before the child
whatever the child imports, so it cannot form a cycle of its own.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trkx_ray"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from pkg import sub` names the submodule when there is one
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import trkx_ray.a.b` binds the package but loads a.b: take the longest known prefix
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_graph_reader_sees_function_level_imports():
    # the reader itself: a cycle through a function-level import is found
    graph = import_graph()
    assert "trkx_ray.pipeline.config" in graph["trkx_ray.pipeline.edges"]
    assert "trkx_ray.pipeline.models" in graph["trkx_ray.pipeline.export"]  # in a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_config_is_a_schema_that_imports_nothing_of_the_package():
    path = PACKAGE / "pipeline" / "config.py"
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] == "trkx_ray"
        ):
            bad.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''}")
        if isinstance(node, ast.Import):
            bad += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "trkx_ray"
            ]
    assert not bad, f"trkx_ray/pipeline/config.py imports the package: {bad}"
    assert import_graph()["trkx_ray.pipeline.config"] == set()


@pytest.mark.parametrize(
    ("layer", "allowed"),
    [
        # events is the base; pipeline builds on it (and on hardware facts)
        ("trkx_ray.events", {"trkx_ray.events"}),
        ("trkx_ray.pipeline", {"trkx_ray.pipeline", "trkx_ray.events", "trkx_ray.hardware"}),
    ],
)
def test_layers(layer, allowed):
    graph = import_graph()
    bad = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    }
    assert not bad, f"{layer} reaches above its layer: {sorted(bad)}"


def test_backends_are_declared_once_and_implemented():
    from trkx_ray.pipeline import config, edges, labeling

    assert set(edges.EDGE_BACKENDS) == set(config.EDGE_BACKEND_OPTIONS)
    assert set(labeling.LABEL_BACKENDS) == set(config.LABEL_BACKEND_OPTIONS)
    assert labeling.PRUNE_MODES is config.PRUNE_MODES
    # the stages keep no option tables of their own
    for module in (edges, labeling):
        declared = (config.EDGE_BACKEND_OPTIONS, config.LABEL_BACKEND_OPTIONS)
        tables = [
            n
            for n, v in vars(module).items()
            if n.endswith("OPTIONS") and isinstance(v, dict) and not any(v is d for d in declared)
        ]
        assert tables == [], f"{module.__name__} declares option tables {tables}"


def test_bench_and_test_helpers_live_outside_the_library():
    from trkx_ray.pipeline import edges, labeling

    for module, names in (
        (edges, ("time_backends",)),
        (labeling, ("time_backends", "synthetic_scored_graph")),
    ):
        for helper in names:
            assert not hasattr(module, helper), f"{module.__name__}.{helper}"
    assert not (PACKAGE / "pipeline" / "_testpoints.py").exists()
    graph = import_graph()
    users = sorted(m for m, targets in graph.items() if "trkx_ray.bench" in targets)
    assert set(users) <= {"trkx_ray.cli"}, f"library modules import the bench: {users}"
