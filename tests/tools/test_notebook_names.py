"""Every `module.name` a notebook calls on a clxai_utils module exists (issue 23: `figures.save_figure` had moved).

The restructuring that moved `save_figure` to `core.artifacts` left 22 notebook calls of
`figures.save_figure`; ruff cannot see such a name, and only running the notebook would.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from clxai_utils.core.notebooks import NOTEBOOKS
from clxai_utils.core.paths import repo_root


def module_attributes(name: str) -> list[tuple[str, str, str]]:
    """(alias, module, attribute) for each `alias.attribute` of a module imported from clxai_utils in the notebook."""
    cells = json.loads((repo_root() / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    trees = [ast.parse("".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    modules: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clxai_utils"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if _is_module(full):
                        modules[alias.asname or alias.name] = full
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("clxai_utils"):
                        modules[alias.asname or alias.name] = alias.name
    return [
        (node.value.id, modules[node.value.id], node.attr)
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
    ]


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS])
def test_every_module_attribute_a_notebook_uses_exists(name: str) -> None:
    missing = sorted(
        {
            f"{alias}.{attr}"
            for alias, module, attr in module_attributes(name)
            if not hasattr(importlib.import_module(module), attr)
        }
    )
    assert not missing, f"{name} calls names its modules lack: {missing}"


def test_figures_save_figure_writes_a_file(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clxai_utils import figures

    fig, _ = plt.subplots()
    path = figures.save_figure(fig, tmp_path / "f.png")
    assert path.is_file() and path.stat().st_size > 0
    plt.close(fig)
