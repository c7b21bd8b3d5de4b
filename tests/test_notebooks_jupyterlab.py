"""00-07 executed as a reader runs them in JupyterLab: no papermill, `profile` edited in each parameters cell.

Run by `make smoke-notebooks` (stage 2 of `make test`), with CLXAI_OUTPUTS pointing at
outputs/smoke/ so that a user's own runs in outputs/runs/ are left alone; the paths the
notebooks use come from the same `Run` as in JupyterLab. The executed copies land in
`<outputs>/notebooks/`, where nbval re-executes them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from clxai_utils.core.paths import outputs_dir, repo_root, runs_root
from clxai_utils.core.run import Run
from clxai_utils.data.sources import CIFAR10_CLASSES
from clxai_utils.neurons.encoders import TINY_MODEL
from clxai_utils.neurons.planted import ATTRIBUTES
from clxai_utils.pipeline.kernel import quiet_kernel_manager
from clxai_utils.pipeline.publish import set_parameters

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: A vocabulary file of the reader's own (08's `vocabulary`): the classes, the painted attributes and a few more.
SMOKE_VOCABULARY = ("# a short vocabulary for the smoke run", *CIFAR10_CLASSES, *ATTRIBUTES, "sky", "grass", "water")


def extra_parameters(notebook: str) -> dict[str, object]:
    """Parameters typed in besides the profile: 08 runs the real open_clip code path with an untrained small
    model, on a short vocabulary file (the shipped 193 labels x 6 templates take ~25 s to encode here), with
    3 planted trials per attribute and rho instead of 10 (plumbing, not numbers)."""
    if notebook != "08_neuron_labels":
        return {}
    vocabulary = outputs_dir() / "smoke_vocabulary.txt"
    vocabulary.parent.mkdir(parents=True, exist_ok=True)
    vocabulary.write_text("\n".join(SMOKE_VOCABULARY) + "\n")
    return {"clip_model": TINY_MODEL, "planted_seeds": 3, "vocabulary": str(vocabulary)}


def edit_parameters(notebook: nbformat.NotebookNode, **values: object) -> None:
    """Set `name = value` in the parameters cell, as a reader would type it (annotation and comment kept)."""
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, found = set_parameters(cell.source, {name: repr(value) for name, value in values.items()})
    if missing := sorted(set(values) - found):
        raise AssertionError(f"no parameter(s) {missing} in the parameters cell")


def execute(path: Path, out_dir: Path, **values: object) -> nbformat.NotebookNode:
    """Execute a copy of the notebook in its own folder (JupyterLab's kernel cwd) and save it to `out_dir`."""
    notebook = nbformat.read(path, as_version=4)
    assert not [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])], (
        f"{path.name} carries an injected-parameters cell: it would override the parameters cell"
    )
    edit_parameters(notebook, **values)
    client = NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        kernel_manager_class=quiet_kernel_manager(),
    )
    client.execute()
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_dir / path.name)
    return notebook


def text_outputs(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
    )  # fmt: skip


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_every_notebook_runs_the_profile_typed_into_its_parameters_cell_and_07_reports_that_run() -> None:
    smoke, quick = Run("cifar10", "smoke", 0), Run("cifar10", "quick", 0)
    assert smoke.root.parent == quick.root.parent == runs_root() and smoke.root != quick.root
    for run in (smoke, quick):
        shutil.rmtree(run.root, ignore_errors=True)
    out_dir = outputs_dir() / "notebooks"
    executed = {
        path.stem: execute(path, out_dir, profile="smoke", **extra_parameters(path.stem))
        for path in NOTEBOOKS
        if path.stem != "07_analysis"
    }
    assert smoke.facets_paths["table"].is_file() and smoke.accuracy_path.is_file()
    assert sorted(p.name for p in runs_root().iterdir()) == [smoke.id], (
        "a smoke run writes into its own run folder only"
    )
    report = execute(repo_root() / "notebooks" / "07_analysis.ipynb", out_dir)
    assert "cifar10, profile 'smoke': seeds 0;" in text_outputs(report), "07 finds the run made in JupyterLab"
    assert f"run {smoke.id}" in text_outputs(executed["00_data"])

    # The same notebook with `quick` typed in writes to another run folder and leaves the smoke run untouched.
    before = digest(smoke.root)
    execute(repo_root() / "notebooks" / "00_data.ipynb", outputs_dir() / "notebooks-quick", profile="quick")
    assert quick.manifest_path.is_file() and digest(smoke.root) == before
    shutil.rmtree(quick.root)
