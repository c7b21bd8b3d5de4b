"""Publishing executed notebooks: papermill metadata dropped, errors and oversize refused, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from clxai_utils.tools.publish import PublishError, main, publish, sync_blocks, write_blocks


def _executed(path: Path, error: bool = False, padding: int = 0) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "print(1)",
        metadata={
            "tags": ["x"],
            "papermill": {"duration": 1.5},
            "execution": {"iopub.status.busy": "2026-11-22T10:00"},
        },
    )
    output = (
        nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])
        if error
        else nbformat.v4.new_output("stream", name="stdout", text="1\n" + "x" * padding)
    )
    cell.outputs = [output]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"input_path": "/home/someone/notebooks/a.ipynb", "duration": 3.0}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": {"value": "0%"}}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_published_notebook_keeps_outputs_and_tags_but_no_papermill_metadata(tmp_path: Path) -> None:
    dest = tmp_path / "notebooks"
    _executed(dest / "a.ipynb", padding=0)
    source = _executed(tmp_path / "run" / "a.ipynb")
    assert publish([source], dest) == [dest / "a.ipynb"]
    nb = json.loads((dest / "a.ipynb").read_text())
    assert "papermill" not in nb["metadata"] and nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"]
    assert nb["cells"][0]["metadata"] == {"tags": ["x"]}
    assert "".join(nb["cells"][0]["outputs"][0]["text"]) == "1\n"
    assert "/home/someone" not in (dest / "a.ipynb").read_text()


def test_errors_oversize_and_unknown_names_are_refused_before_anything_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "notebooks"
    for name in ("a", "b"):
        _executed(dest / f"{name}.ipynb")
    before = (dest / "a.ipynb").read_text()
    good = _executed(tmp_path / "run" / "a.ipynb", padding=10)
    with pytest.raises(PublishError, match="b.ipynb has an error output \\(ValueError\\)"):
        publish([good, _executed(tmp_path / "run" / "b.ipynb", error=True)], dest)
    with pytest.raises(PublishError, match="b.ipynb is 2 KB, above max_kb=1"):
        publish([_executed(tmp_path / "run" / "b.ipynb", padding=2000)], dest, max_kb=1)
    with pytest.raises(PublishError, match="c.ipynb does not replace a notebook"):
        publish([good, _executed(tmp_path / "run" / "c.ipynb")], dest)
    assert (dest / "a.ipynb").read_text() == before


def test_wide_figures_are_scaled_down_and_narrow_ones_kept() -> None:
    import base64
    import io

    from PIL import Image

    from clxai_utils.tools.publish import shrink_png

    def png(width: int, height: int) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    narrow = Image.open(io.BytesIO(base64.b64decode(shrink_png(png(300, 100), max_width=640))))
    assert narrow.size == (300, 100)
    shrunk = Image.open(io.BytesIO(base64.b64decode(shrink_png(png(1280, 400), max_width=640)))).convert("RGB")
    assert shrunk.size == (640, 200) and shrunk.getpixel((10, 10)) == (200, 30, 30)


def test_injected_parameters_are_folded_into_the_parameters_cell(tmp_path: Path) -> None:
    """A reader's edit of the parameters cell must not be overridden by a leftover injected cell."""
    params = nbformat.v4.new_code_cell(
        'profile: str = "quick"  # run profile\nseed: int = 0  # seed\nlosses: list = ["ce"]',
        metadata={"tags": ["parameters"]},
    )
    injected = nbformat.v4.new_code_cell(
        '# Parameters\nprofile = "smoke"\nlosses = ["ce", "supcon"]\n', metadata={"tags": ["injected-parameters"]}
    )
    nb = nbformat.v4.new_notebook(cells=[params, injected, nbformat.v4.new_code_cell("print(profile)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    dest = tmp_path / "notebooks"
    dest.mkdir()
    nbformat.write(nb, dest / "a.ipynb")
    nbformat.write(nb, tmp_path / "a.ipynb")
    publish([tmp_path / "a.ipynb"], dest)
    cells = json.loads((dest / "a.ipynb").read_text())["cells"]
    assert len(cells) == 2 and cells[0]["metadata"]["tags"] == ["parameters"]
    assert "".join(cells[0]["source"]) == (
        'profile: str = "smoke"  # run profile\nseed: int = 0  # seed\nlosses: list = ["ce", "supcon"]'
    )
    stray = nbformat.v4.new_code_cell("epochs = 3", metadata={"tags": ["injected-parameters"]})
    nb.cells = [params, stray]
    nbformat.write(nb, tmp_path / "a.ipynb")
    with pytest.raises(
        PublishError, match=r"run with parameters \['epochs'\] that its parameters cell does not define"
    ):
        publish([tmp_path / "a.ipynb"], dest)


def _notebook(path: Path, seed: int, prose: str) -> Path:
    params = nbformat.v4.new_code_cell(f"seed: int = {seed}  # seed", metadata={"tags": ["parameters"]})
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_markdown_cell(prose), nbformat.v4.new_code_cell("1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_a_copy_executed_from_older_text_is_refused_but_other_parameters_are_not(tmp_path: Path) -> None:
    """A resumed sweep's copies keep the text they ran with; publishing them would undo later edits."""
    committed = _notebook(tmp_path / "notebooks" / "a.ipynb", 0, "Five epochs, as edited since.")
    before = committed.read_text()
    stale = _notebook(tmp_path / "run" / "a.ipynb", 0, "Four epochs, as the run saw it.")
    with pytest.raises(PublishError, match=r"a.ipynb was executed from another version .* cell 1 .* \(markdown\)"):
        publish([stale], committed.parent)
    assert committed.read_text() == before
    other_seed = _notebook(tmp_path / "run" / "a.ipynb", 3, "Five epochs, as edited since.")
    publish([other_seed], committed.parent)
    assert "seed: int = 3" in committed.read_text()


def test_only_names_notebooks_that_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--run", str(tmp_path / "run"), "--report", str(tmp_path / "report"), "--only", "10_analysis", "nb"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "'nb'" in message and "00_data" in message and "10_analysis" in message


def test_document_blocks_are_rewritten_from_the_report_files(tmp_path: Path) -> None:
    (tmp_path / "table4.md").write_text("| a |\n|---|\n| 1 |\n")
    readme = "intro\n<!-- report: table4.md -->\nstale | old\n<!-- /report -->\nafter\n"
    assert (
        sync_blocks(readme, tmp_path)
        == "intro\n<!-- report: table4.md -->\n| a |\n|---|\n| 1 |\n<!-- /report -->\nafter\n"
    )
    path = tmp_path / "README.md"
    path.write_text(readme)
    assert write_blocks([path], [tmp_path], check=True) == 1 and path.read_text() == readme
    assert write_blocks([path], [tmp_path]) == 1
    assert write_blocks([path], [tmp_path], check=True) == 0
    with pytest.raises(FileNotFoundError, match="claims.md.*make report"):
        sync_blocks("<!-- report: claims.md -->\n<!-- /report -->", tmp_path)
