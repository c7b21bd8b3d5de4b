"""What the committed notebooks show (issue 23): Table 4 rendered, counts computed, progress lines labelled."""

from __future__ import annotations

import json
from typing import Any

from clxai_utils.core.paths import repo_root


def cells(name: str) -> list[dict[str, Any]]:
    return json.loads((repo_root() / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]


def code_cell(name: str, text: str) -> dict[str, Any]:
    found = [c for c in cells(name) if c["cell_type"] == "code" and text in "".join(c["source"])]
    assert len(found) == 1, f"{name}: {len(found)} code cells contain {text!r}"
    return found[0]


def test_table4_is_shown_as_markdown_not_as_a_dataframe_with_asterisks() -> None:
    cell = code_cell("10_analysis", "table4 = tables.table4(results)")
    assert "Markdown(report.markdown_table(table4))" in "".join(cell["source"])
    for output in cell["outputs"]:
        data = output.get("data", {})
        assert "text/html" not in data, "a DataFrame shows **bold** as literal asterisks"
        if "text/markdown" in data:
            assert "| **" in "".join(data["text/markdown"]), "the best cells are bold in Markdown"


def test_the_photographs_class_count_is_computed_from_the_data() -> None:
    cell = code_cell("00_data", "external images with masks")
    source = "".join(cell["source"])
    assert "len(full.mask_set.classes)" not in source and "mask_set.labels.unique()" in source
    printed = "".join("".join(o.get("text", "")) for o in cell["outputs"])
    assert "1990 in 7 classes" in printed  # realmask32 has photographs of 7 of CIFAR-10's 10 classes


def test_the_explanation_progress_lines_name_loss_method_and_kind() -> None:
    cell = code_cell("05_explanations", "stored = run_explanations(run, losses")
    lines = ["".join(o["data"]["text/plain"]) for o in cell["outputs"] if o["output_type"] == "display_data"]
    assert lines and len({line.split(":")[0] for line in lines}) == len(lines)
    assert all(len(line.split(":")[0].split()) == 3 for line in lines), lines[:3]


def test_notebooks_that_take_losses_read_a_string_list() -> None:
    notebooks = ("04_linear_probe", "05_explanations", "06_metrics", "07_accuracy_confound", "08_protocol")
    for name in (*notebooks, "11_neuron_labels"):
        assert 'losses = check_choices("losses", losses' in "".join(
            "".join(c["source"]) for c in cells(name) if c["cell_type"] == "code"
        ), name
