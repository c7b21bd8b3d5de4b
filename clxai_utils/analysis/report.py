"""Writing the report: Markdown tables, the files of outputs/report/, where the numbers came from.

The result tables of the README and docs/results.md are blocks copied from these files by
`python -m clxai_utils.tools.publish` (`make publish`), never typed by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from clxai_utils.analysis.tables import Results
from clxai_utils.core.registry import LOSSES, METHODS, ordered

PAPER_PROFILE = "paper"
PAPER_SEEDS = 5


def _markdown_cells(column: pd.Series, float_format: str) -> list[str]:
    if pd.api.types.is_float_dtype(column):
        texts = [("" if np.isnan(v) else float_format.format(v)) for v in column]
    else:
        texts = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in column]
    return [t.replace("|", "\\|").replace("\n", " ") for t in texts]


def markdown_table(table: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned, NaN left empty."""
    columns = [str(c).replace("|", "\\|") for c in table.columns]
    cells = [_markdown_cells(table[c], float_format) for c in table.columns]
    align = [
        "---:" if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]) else "---"
        for c in table.columns
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells)]
    return "\n".join(lines) + "\n"


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} name {name!r} must be a plain file stem (letters, digits, '_', '.', '-')")
    return name


def write_report(
    out_dir: str | os.PathLike, tables: Mapping[str, pd.DataFrame], figures: Mapping[str, plt.Figure]
) -> list[Path]:
    """Write each table as <name>.csv and <name>.md and each figure as <name>.png and <name>.svg, atomically."""
    from clxai_utils.core.artifacts import atomic_path, save_figure, write_csv  # here: core.artifacts loads torch

    out_dir = Path(out_dir)
    written = []
    for name, table in tables.items():
        stem = out_dir / _check_name(name, "table")
        flat = table if isinstance(table.index, pd.RangeIndex) else table.reset_index()
        written.append(write_csv(stem.with_suffix(".csv"), flat))
        with atomic_path(stem.with_suffix(".md")) as tmp:
            tmp.write_text(markdown_table(flat))
        written.append(stem.with_suffix(".md"))
    for name, fig in figures.items():
        stem = out_dir / _check_name(name, "figure")
        written += [save_figure(fig, stem.with_suffix(".png")), save_figure(fig, stem.with_suffix(".svg"))]
    return written


def describe_provenance(results: Results) -> str:
    """Which datasets, profiles, seeds, losses and methods produced the numbers, and how paper-like they are."""
    facets = results.facets
    lines = [f"Numbers from {len(results.files)} result tables:"]
    for (dataset, profile), group in facets.groupby(["dataset", "profile"]):
        seeds = sorted(group["seed"].unique())
        counts = group.groupby("seed")["image_id"].nunique()
        images = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
        lines.append(
            f"- {dataset}, profile '{profile}': seeds {', '.join(map(str, seeds))}; "
            f"losses {', '.join(ordered(group['loss'], LOSSES))}; "
            f"methods {', '.join(ordered(group['method'], METHODS))}; "
            f"{images} test images per run; "
            f"{int(group['map_all_zero'].sum())} of {len(group)} maps all zero (their metrics are NaN)."
        )
        if profile == PAPER_PROFILE and len(seeds) < PAPER_SEEDS:
            lines.append(f"  The paper trains {PAPER_SEEDS} seeds per loss; only {len(seeds)} here.")
    other = sorted(set(facets["profile"]) - {PAPER_PROFILE})
    if other:
        lines.append(
            f"Profile(s) {', '.join(repr(p) for p in other)} are not the paper's protocol (shorter training, "
            "narrower networks, fewer test images): these numbers show the pipeline and its tendencies, "
            "they are NOT paper-level results."
        )
    return "\n".join(lines)
