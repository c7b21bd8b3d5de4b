"""Where things live: every path is resolved from the repository root, never from the cwd.

Jupyter starts kernels in the notebook's folder while papermill keeps the caller's
folder, so relative paths would point at different places depending on how a notebook
is run. `repo_root()` finds the root by its marker file instead. The paths of a run's
artefacts are spelled in one place only: `clxai_utils.core.run.Run`.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = "pyproject.toml"


def repo_root() -> Path:
    """The repository root: `CLXAI_ROOT` if set, else the first parent holding pyproject.toml."""
    if env := os.environ.get("CLXAI_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / _MARKER).is_file() and (parent / "clxai_utils").is_dir():
            return parent
    raise RuntimeError(
        "Cannot find the clxai repository root (a folder with pyproject.toml and clxai_utils/). "
        "Set CLXAI_ROOT to the repository folder."
    )


def outputs_dir() -> Path:
    """Root of everything the pipeline writes (`CLXAI_OUTPUTS` overrides it, e.g. for the smoke tests)."""
    if env := os.environ.get("CLXAI_OUTPUTS"):
        return Path(env).resolve()
    return repo_root() / "outputs"


def runs_root() -> Path:
    """The folder holding one folder per run, `<outputs>/runs/` (`CLXAI_RUNS` overrides it)."""
    if env := os.environ.get("CLXAI_RUNS"):
        return Path(env).resolve()
    return outputs_dir() / "runs"


def report_dir() -> Path:
    """Where 10_analysis writes the tables and figures that span runs."""
    return outputs_dir() / "report"


def data_dir() -> Path:
    """Where data sets are downloaded or extracted (`CLXAI_DATA_DIR` overrides it)."""
    if env := os.environ.get("CLXAI_DATA_DIR"):
        return Path(env).resolve()
    return repo_root() / "data"


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` relative to the repository (e.g. `outputs/...`) for printing in notebooks.

    Executed notebooks are committed and read on other machines: absolute paths would say
    nothing there, so a path outside the repository shows only its name. Non-path sources
    such as "torchvision" pass through unchanged.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    relative = os.path.relpath(text, repo_root())
    return f"{Path(text).name} (outside the repository)" if relative.startswith("..") else relative
