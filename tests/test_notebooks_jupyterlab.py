"""Every notebook executed as a reader runs them in JupyterLab: no papermill, `profile` edited in each parameters cell.

Run by `make smoke-notebooks` (a stage of `make test`), with CLXAI_OUTPUTS pointing at
outputs/smoke/ so that a user's own runs in outputs/runs/ are left alone; the paths the
notebooks use come from the same `Run` as in JupyterLab. The executed copies land in
`<outputs>/notebooks/`, where nbval re-executes them. The kernels compute in float32 (tests/conftest.py), so
the smoke results are the same on CPUs with and without native bf16; they get the mask source make exported
(CIFAR-10's real photographs) explicitly, from the `given_mask_source` fixture.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from clxai_utils.core.paths import outputs_dir, repo_root, runs_root
from clxai_utils.core.run import Run
from clxai_utils.data.datasets import MASK_SOURCE_ENV
from clxai_utils.data.sources import CIFAR10_CLASSES
from clxai_utils.neurons.encoders import TINY_MODEL
from clxai_utils.neurons.planted import ATTRIBUTES
from clxai_utils.tools.kernel import quiet_kernel_manager
from clxai_utils.tools.publish import set_parameters

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: A vocabulary file of the reader's own (11's `vocabulary`): the classes, the painted attributes and a few more.
SMOKE_VOCABULARY = ("# a short vocabulary for the smoke run", *CIFAR10_CLASSES, *ATTRIBUTES, "sky", "grass", "water")


@pytest.fixture(autouse=True)
def mask_source_for_the_kernels(given_mask_source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels inherit this environment: 00 and 06 then use make's mask source, as `make run` does."""
    if given_mask_source:
        monkeypatch.setenv(MASK_SOURCE_ENV, given_mask_source)


def extra_parameters(notebook: str) -> dict[str, object]:
    """Parameters typed in besides the profile: 11 runs the real open_clip code path with an untrained small
    model, on a short vocabulary file (the shipped 193 labels x 6 templates take ~25 s to encode here), with
    3 planted trials per attribute and rho instead of 10 (plumbing, not numbers)."""
    if notebook != "11_neuron_labels":
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


def test_every_notebook_runs_the_profile_typed_into_its_parameters_cell_and_10_reports_that_run() -> None:
    smoke, quick = Run("cifar10", "smoke", 0), Run("cifar10", "quick", 0)
    assert smoke.root.parent == quick.root.parent == runs_root() and smoke.root != quick.root
    for run in (smoke, quick):
        shutil.rmtree(run.root, ignore_errors=True)
    out_dir = outputs_dir() / "notebooks"
    executed = {
        path.stem: execute(path, out_dir, profile="smoke", **extra_parameters(path.stem))
        for path in NOTEBOOKS
        if path.stem != "10_analysis"
    }
    assert smoke.facets_paths["table"].is_file() and smoke.accuracy_path.is_file()
    assert sorted(p.name for p in runs_root().iterdir()) == [smoke.id], (
        "a smoke run writes into its own run folder only"
    )
    report = execute(repo_root() / "notebooks" / "10_analysis.ipynb", out_dir)
    assert "cifar10, profile 'smoke': seeds 0;" in text_outputs(report), "10 finds the run made in JupyterLab"
    assert f"run {smoke.id}" in text_outputs(executed["00_data"])

    # The same notebook with `quick` typed in writes to another run folder and leaves the smoke run untouched.
    before = digest(smoke.root)
    execute(repo_root() / "notebooks" / "00_data.ipynb", outputs_dir() / "notebooks-quick", profile="quick")
    assert quick.manifest_path.is_file() and digest(smoke.root) == before
    shutil.rmtree(quick.root)


#: What a data set other than CIFAR-10 runs: its data path, a per-image loss (CE) and a two-view loss (SupCon),
#: and every stage after them. The triplet loss adds no data-set-specific path (CIFAR-10 runs it), and 10's
#: planted attributes and vocabulary are CIFAR-10's.
OTHER_LOSSES = ["ce", "supcon"]
OTHER_DATA_SETS = tuple(
    path for path in NOTEBOOKS if path.stem not in ("03_train_triplet", "10_analysis", "11_neuron_labels")
)
#: 08 and 09 on an image folder would repeat CIFAR-10's run (the same network family, no masks); ImageNet-S50
#: runs them at 64 px on ResNet-50, with the authors' coherence on its masks.
SKIPPED_BY = {"imagefolder": ("08_protocol", "09_faithfulness")}


def run_other(dataset: str, source: Path) -> Run:
    """00-09 of `dataset` (CE and SupCon) on the smoke profile, the data set and its folder typed into the cells."""
    run = Run(dataset, "smoke", 0)
    shutil.rmtree(run.root, ignore_errors=True)
    for path in OTHER_DATA_SETS:
        if path.stem in SKIPPED_BY.get(dataset, ()):
            continue
        values: dict[str, object] = {"profile": "smoke", "dataset": dataset}
        if path.stem == "00_data":
            values |= {"data_source": str(source), "mask_source": ""}
        elif not path.stem.startswith(("01_", "02_")):
            values["losses"] = OTHER_LOSSES
        execute(path, outputs_dir() / f"notebooks-{dataset}", **values)
    return run


def five_classes_at_48px(root: Path, per_class: tuple[int, int] = (24, 12)) -> Path:
    """An image folder of 5 CIFAR-10 classes at 48x48 (bicubic upscaling), made from the run's CIFAR-10 source."""
    from PIL import Image

    from clxai_utils.data.datasets import load_dataset

    cifar = load_dataset("cifar10", "auto")
    for split, count in zip(("train", "test"), per_class):
        images = cifar.split(split)
        for label, name in enumerate(cifar.classes[:5]):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(torch.nonzero(images.labels == label)[:count, 0].tolist()):
                pixels = images.images[index].permute(1, 2, 0).numpy()
                Image.fromarray(pixels).resize((48, 48), Image.Resampling.BICUBIC).save(folder / f"{i:04d}.png")
    return root


def test_an_image_folder_of_5_classes_at_48px_runs_with_its_own_normalisation() -> None:
    from clxai_utils.data.datasets import SPECS
    from clxai_utils.data.prepare import Manifest

    folder = five_classes_at_48px(outputs_dir() / "imagefolder-48px")
    run = run_other("imagefolder", folder)
    manifest = Manifest.load(run.manifest_path)
    assert (manifest.image_size, len(manifest.classes), manifest.train_on_disk) == (48, 5, False)
    assert manifest.normalisation.startswith("computed from") and manifest.mean != list(SPECS["cifar10"].mean)
    assert run.facets_paths["table"].is_file() and run.snapshot_paths["table"].is_file()


def test_imagenet_s50_runs_on_the_official_layout_and_10_reports_every_data_set() -> None:
    import pandas as pd
    from fixtures import write_imagenet_s50_fixture

    from clxai_utils.data.prepare import Manifest

    fixture = write_imagenet_s50_fixture(outputs_dir() / "imagenet_s50-fixture")
    run = run_other("imagenet_s50", fixture.parent)
    manifest = Manifest.load(run.manifest_path)
    assert (
        manifest.train_on_disk and manifest.image_size == 64 and manifest.test_masks == len(manifest.subset_ids["test"])
    )
    facets = pd.read_csv(run.facets_paths["table"])
    assert facets["pointing_game"].notna().any(), "coherence scored against the validation masks"
    report = text_outputs(execute(repo_root() / "notebooks" / "10_analysis.ipynb", outputs_dir() / "notebooks"))
    for dataset in ("cifar10", "imagenet_s50", "imagefolder"):
        assert f"{dataset}, profile 'smoke': seeds 0;" in report, f"10 reports the {dataset} run"
