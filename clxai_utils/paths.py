"""Where things live: every path is resolved from the repository root, never from the cwd.

Jupyter starts kernels in the notebook's folder while papermill keeps the caller's
folder, so relative paths would point at different places depending on how a notebook
is run. `repo_root()` finds the root by its marker file instead.
"""
from __future__ import annotations

import os
from pathlib import Path

_MARKER = "pyproject.toml"


def repo_root() -> Path:
    """The repository root: `CLXAI_ROOT` if set, else the first parent holding pyproject.toml."""
    if env := os.environ.get("CLXAI_ROOT"):
        return Path(env).resolve()
    for parent in [Path(__file__).resolve().parent, *Path(__file__).resolve().parents]:
        if (parent / _MARKER).is_file() and (parent / "clxai_utils").is_dir():
            return parent
    raise RuntimeError(
        "Cannot find the clxai repository root (a folder with pyproject.toml and clxai_utils/). "
        "Set CLXAI_ROOT to the repository folder."
    )


def outputs_dir() -> Path:
    """Root of every artefact the pipeline writes (`CLXAI_OUTPUTS` overrides it, e.g. for tests)."""
    if env := os.environ.get("CLXAI_OUTPUTS"):
        return Path(env).resolve()
    return repo_root() / "outputs"


def data_dir() -> Path:
    """Where data sets are downloaded or extracted (`CLXAI_DATA_DIR` overrides it)."""
    if env := os.environ.get("CLXAI_DATA_DIR"):
        return Path(env).resolve()
    return repo_root() / "data"


def manifest_path(dataset: str) -> Path:
    """The data manifest 00_data writes and every later notebook reads."""
    return outputs_dir() / "data" / dataset / "manifest.json"


def figures_dir(stage: str) -> Path:
    """Where a notebook saves its figures (PNG), e.g. `figures_dir("00_data")`."""
    return outputs_dir() / "figures" / stage


def model_dir(dataset: str, loss: str, seed: int) -> Path:
    """Checkpoint folder of one trained model: outputs/models/<dataset>/<loss>/seed<k>/."""
    return outputs_dir() / "models" / dataset / loss / f"seed{seed}"


def results_dir(dataset: str) -> Path:
    """Tables of results (accuracy, metrics) for one data set: outputs/results/<dataset>/."""
    return outputs_dir() / "results" / dataset


def explanation_path(dataset: str, loss: str, seed: int, method: str, kind: str = "test") -> Path:
    """Stored maps of one (model, method): outputs/explanations/<dataset>/<loss>/seed<k>/<method>[_mosaics].pt."""
    suffix = "" if kind == "test" else f"_{kind}"
    return outputs_dir() / "explanations" / dataset / loss / f"seed{seed}" / f"{method}{suffix}.pt"


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the repository (e.g. `outputs/...`, `../shared/...`) for printing in notebooks.

    Executed notebooks are committed and read on other machines: absolute paths would say
    nothing there. Non-path sources such as "torchvision" pass through unchanged.
    """
    text = os.fspath(path)
    return os.path.relpath(text, repo_root()) if os.path.isabs(text) else text
