"""The front door stays true: README size, links, generated tables, the notebook list, no citation of missing files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clxai_utils.core.notebooks import NOTEBOOKS, RUN_NOTEBOOKS, footer
from clxai_utils.core.paths import display_path
from clxai_utils.tools.plan import PIPELINE
from clxai_utils.tools.publish import artefacts_markdown, notebooks_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _notebook_text(path: Path) -> str:
    return "".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])


def test_the_readme_fits_three_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("path", [*DOCUMENTS, *sorted((ROOT / "notebooks").glob("*.ipynb"))], ids=lambda p: p.name)
def test_nothing_cites_a_file_the_repository_does_not_ship(path: Path) -> None:
    text = _notebook_text(path) if path.suffix == ".ipynb" else path.read_text()
    assert not re.search(r"METHOD\.md|\.\./shared|original_code_notes", text)
    base = path.parent
    missing = [
        link
        for link in LINK.findall(text)
        if not re.match(r"[a-z]+:", link) and not (base / link).exists()  # not a URL
    ]
    assert not missing, f"{path.name} links to files that do not exist: {missing}"


def test_the_artefact_page_is_generated_from_the_run() -> None:
    assert (ROOT / "docs" / "artefacts.md").read_text() == artefacts_markdown(), "run make publish"


def test_the_readme_notebook_table_is_the_notebook_list() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- report: notebooks.md -->\n", 1)[1].split("<!-- /report -->", 1)[0]

    def without_seconds(table: str) -> list[str]:
        return [line.rsplit("|", 2)[0] for line in table.splitlines()]

    assert without_seconds(block) == without_seconds(notebooks_markdown())


def test_the_notebook_files_are_the_list_in_order_and_link_to_their_neighbours() -> None:
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == [nb.name for nb in NOTEBOOKS]
    assert [nb.number for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]
    for nb in NOTEBOOKS:
        cells = json.loads((ROOT / "notebooks" / nb.file).read_text())["cells"]
        assert "".join(cells[-1]["source"]).rstrip().endswith(footer(nb.name)), nb.name


def test_the_sweep_runs_the_list_in_its_order() -> None:
    assert tuple(step.notebook for step in PIPELINE) == RUN_NOTEBOOKS


def test_paths_outside_the_repository_print_as_their_name_only(tmp_path: Path) -> None:
    assert display_path(ROOT / "outputs" / "runs") == "outputs/runs"
    assert display_path(tmp_path / "cifar10_jpeg.tar.gz") == "cifar10_jpeg.tar.gz (outside the repository)"
    assert display_path("torchvision") == "torchvision"
