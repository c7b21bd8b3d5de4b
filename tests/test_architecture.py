"""The import contract of the package (run by `make lint`): the science never imports the machinery, no cycles.

The subpackages stand on floors; a module may import only its own floor's packages' modules
(without a cycle) and those of floors below. `tools` (sweeps, Slurm, launching, kernels,
publishing, benchmarks) is the top floor, so none of the stages or the science can depend on
it. The contract reads every module's imports with `ast`, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clxai_utils"

#: Bottom to top. A package may import packages of its own floor or below, never above.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("data", "analysis"),
    ("train",),
    ("explain", "neurons"),
    ("evaluate", "figures"),
    ("tools",),
)
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The clxai_utils modules `path` imports (absolute names), wherever in the file the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("clxai_utils")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clxai_utils"):
            modules = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {m for m in modules if _is_module(m)} or {node.module}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _package(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to: clxai_utils.train.trainer -> train."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_has_a_floor() -> None:
    packages = {_package(module) for module in import_graph()} - {""}
    assert packages <= set(FLOOR), f"give {sorted(packages - set(FLOOR))} a floor in FLOORS"


def test_no_module_imports_a_package_on_a_higher_floor() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _package(module) and _package(target) and FLOOR[_package(target)] > FLOOR[_package(module)]
    ]
    assert not upward, "imports against the floors:\n" + "\n".join(upward)


def test_the_science_never_imports_the_machinery() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _package(module) != "tools" and _package(target) == "tools"
    ]
    assert not offenders, "\n".join(offenders)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules_or_subpackages() -> None:
    graph = import_graph()
    assert (cycle := _cycle(graph)) is None, "module cycle: " + " -> ".join(cycle)
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module)
        )
    assert (cycle := _cycle(packages)) is None, "subpackage cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]), ({"a": {"b"}, "b": set()}, None)],
)
def test_the_cycle_finder_finds_a_planted_cycle(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert _cycle(graph) == expected
