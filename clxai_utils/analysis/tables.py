"""The analysis stage (10): gather every run's result tables and summarise them as the paper's Table 4.

`load_results` reads the tables that 04_linear_probe and 06_metrics wrote in every run
folder below the runs root (by default `outputs/runs/`, found from the repository root,
never from the cwd); `table4` summarises them. Claims and their verdicts are in
`clxai_utils.analysis.claims`, the report files in `clxai_utils.analysis.report`.

Table 4 pools the images of all seeds: a cell reads "mean ± std over images", and, with
two or more seeds, "(± std of the per-seed means)", which is the spread due to training
randomness.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from clxai_utils.core.paths import runs_root
from clxai_utils.core.registry import ARROWS, LOSSES, METHODS, METRICS, ordered
from clxai_utils.core.run import RESULT_TABLES


class TableKind(NamedTuple):
    """One kind of result table: its file pattern, required columns and the key that identifies a run's part."""

    pattern: str
    columns: tuple[str, ...]
    run_key: tuple[str, ...]


_RUN_PART = ("dataset", "profile", "seed", "loss", "method")
#: The columns of a per-image table: which run part, which image, what the model made of it.
_PER_IMAGE = (*_RUN_PART, "image_id", "label", "prediction", "correct", "map_all_zero")

KINDS = {
    "facets": TableKind(RESULT_TABLES["facets"], (*_PER_IMAGE, *METRICS), _RUN_PART),
    "accuracy": TableKind(
        RESULT_TABLES["accuracy"],
        ("dataset", "profile", "loss", "seed", "head", "test_images", "accuracy"),
        ("dataset", "profile", "seed", "loss"),
    ),
    "pf_curves": TableKind(
        RESULT_TABLES["pf_curves"],
        (*_RUN_PART, "step", "fraction", "mean", "std", "n"),
        _RUN_PART,
    ),
    "coherence_masks": TableKind(
        RESULT_TABLES["coherence_masks"], (*_PER_IMAGE, "pointing_game", "attribution_localisation"), _RUN_PART
    ),
    "snapshots": TableKind(
        RESULT_TABLES["snapshots"],
        (*_RUN_PART, "epoch", "final", "accuracy", "image_id", *METRICS),
        (*_RUN_PART, "epoch"),
    ),
    "ablation": TableKind(RESULT_TABLES["ablation"], (*_PER_IMAGE, *METRICS, "protocol"), (*_RUN_PART, "protocol")),
    # the faithfulness stage: one column per configured measure after the per-image columns
    "faithfulness": TableKind(RESULT_TABLES["faithfulness"], _PER_IMAGE, _RUN_PART),
    "faithfulness_curves": TableKind(
        RESULT_TABLES["faithfulness_curves"], (*_RUN_PART, "curve", "point", "fraction", "mean", "std", "n"), _RUN_PART
    ),
    "randomisation": TableKind(
        RESULT_TABLES["randomisation"],
        (*_RUN_PART, "step", "layer", "image_id", "zero_map", "ssim", "spearman"),
        _RUN_PART,
    ),
    "random_logit": TableKind(
        RESULT_TABLES["random_logit"], (*_RUN_PART, "image_id", "ssim", "spearman", "near_identical"), _RUN_PART
    ),
}


@dataclass(frozen=True)
class Results:
    """Every run's tables, concatenated; `files` lists what was read. `coherence_masks` (06 with a mask source),
    `snapshots` (07), `ablation` (08_protocol: the facets under every protocol) and the faithfulness stage's
    tables (per-image measures, mean curves, cascading randomisation, random-logit check) may be empty."""

    facets: pd.DataFrame
    accuracy: pd.DataFrame
    pf_curves: pd.DataFrame
    coherence_masks: pd.DataFrame
    snapshots: pd.DataFrame
    files: tuple[Path, ...]
    ablation: pd.DataFrame = field(default_factory=pd.DataFrame)
    faithfulness: pd.DataFrame = field(default_factory=pd.DataFrame)
    faithfulness_curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    randomisation: pd.DataFrame = field(default_factory=pd.DataFrame)
    random_logit: pd.DataFrame = field(default_factory=pd.DataFrame)

    def runs_of(self, table: pd.DataFrame) -> list[tuple[str, str]]:
        """The (dataset, profile) pairs present in one of the tables, sorted: figures draw one each."""
        return sorted(table[["dataset", "profile"]].drop_duplicates().itertuples(index=False, name=None))

    @property
    def snapshot_accuracy(self) -> pd.DataFrame:
        """One row per (dataset, profile, seed, loss, epoch) of 07's snapshots: its accuracy, and whether final."""
        keys = ["dataset", "profile", "seed", "loss", "epoch", "final", "accuracy"]
        return self.snapshots[keys].drop_duplicates().reset_index(drop=True)


def _read_kind(root: Path, name: str, kind: TableKind) -> tuple[pd.DataFrame, list[Path]]:
    """Read and concatenate every table of one kind; a run part found in two files is an error."""
    files = sorted(root.rglob(kind.pattern))
    frames: list[pd.DataFrame] = []
    seen: dict[tuple[object, ...], Path] = {}
    for path in files:
        frame = pd.read_csv(path, dtype={"dataset": str, "profile": str, "loss": str, "method": str})
        missing = [c for c in kind.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks the {name} column(s) {missing} (see the schema in 06_metrics)")
        for key in frame[list(kind.run_key)].drop_duplicates().itertuples(index=False, name=None):
            if key in seen:
                where = dict(zip(kind.run_key, key))
                raise ValueError(
                    f"{name} for {where} found twice: in {seen[key]} and in {path}; "
                    "keep one run root per (dataset, profile, seed) below the results root"
                )
            seen[key] = path
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(kind.columns)).astype({"seed": int}), files
    return pd.concat(frames, ignore_index=True), files


def load_results(root: str | os.PathLike[str] | None = None) -> Results:
    """Every table of `KINDS` found recursively under `root` (default: the runs root)."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        raise FileNotFoundError(f"results root {root} does not exist; run the pipeline first (`make run`)")
    tables, files = {}, []
    for name, kind in KINDS.items():
        tables[name], found = _read_kind(root, name, kind)
        files += found
    if tables["facets"].empty:
        raise FileNotFoundError(
            f"no {KINDS['facets'].pattern} below {root}: run 06_metrics for each run (or `make run`) first"
        )
    return Results(**tables, files=tuple(files))


def _paper_order(column: pd.Series) -> pd.Series:
    """Sort key: losses and methods in the paper's order, any other column as it is."""
    known = {"loss": LOSSES, "method": METHODS}.get(column.name) if isinstance(column.name, str) else None
    if known is None:
        return column
    return column.map({v: i for i, v in enumerate(ordered(column, known))})


def sort_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Sort by dataset and profile, then methods and losses in the paper's order."""
    columns = [c for c in ("dataset", "profile", "method", "loss", "metric") if c in table]
    return table.sort_values(columns, key=_paper_order, kind="stable").reset_index(drop=True)


def _metric_summary(facets: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over images pooled across seeds, and the std of the per-seed means."""
    group = ["dataset", "profile", "loss", "method", "metric"]
    long = facets.melt(
        id_vars=[*group[:-1], "seed"],
        value_vars=[m for m in METRICS if m in facets],
        var_name="metric",
        value_name="value",
    )
    pooled = long.groupby(group)["value"].agg(mean="mean", std_images="std", n_images="count")
    per_seed = long.groupby([*group, "seed"])["value"].mean()
    across = per_seed.groupby(group).agg(std_seeds="std", n_seeds="count")
    return pooled.join(across).reset_index()


def _accuracy_summary(accuracy: pd.DataFrame, facets: pd.DataFrame) -> pd.DataFrame:
    """Accuracy across seeds, repeated for each explanation method so it sits in every Table 4 row."""
    group = ["dataset", "profile", "loss"]
    acc = accuracy.groupby(group)["accuracy"].agg(mean="mean", std_seeds="std", n_seeds="count").reset_index()
    methods = facets[[*group, "method"]].drop_duplicates()
    return methods.merge(acc, on=group, how="left").assign(metric="accuracy", std_images=np.nan, n_images=np.nan)


def _mark_best(summary: pd.DataFrame) -> pd.Series:
    """True for the loss(es) with the best mean per (dataset, profile, method, metric), given >= 2 losses."""
    better = summary["metric"].map(lambda m: METRICS[m].better if m in METRICS else "higher")
    signed = summary["mean"].where(better == "higher", -summary["mean"])
    groups = signed.groupby([summary[c] for c in ("dataset", "profile", "method", "metric")])
    return (signed == groups.transform("max")) & (groups.transform("count") >= 2)


def table4_numeric(results: Results) -> pd.DataFrame:
    """Table 4 in long numeric form: one row per (dataset, profile, method, loss, metric).

    mean: over every image of every seed (NaN values, e.g. all-zero maps, skipped);
    std_images: std (ddof=1) over those pooled images; std_seeds: std (ddof=1) of the
    per-seed means, NaN with one seed. Accuracy (a metric row too) has only std_seeds.
    `best` marks the best loss per (dataset, profile, method, metric).
    """
    summary = pd.concat(
        [_metric_summary(results.facets), _accuracy_summary(results.accuracy, results.facets)], ignore_index=True
    )
    summary["metric"] = pd.Categorical(summary["metric"], ["accuracy", *METRICS])
    summary = sort_runs(summary)
    summary["metric"] = summary["metric"].astype(str)
    summary["best"] = _mark_best(summary)
    columns = [
        "dataset",
        "profile",
        "method",
        "loss",
        "metric",
        "mean",
        "std_images",
        "std_seeds",
        "n_images",
        "n_seeds",
        "best",
    ]
    return summary[columns]


def _header(metric: str) -> str:
    if metric == "accuracy":
        return "Accuracy (%) ↑"
    return f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}"


def _cell(row: pd.Series, bold: bool) -> str:
    """'mean ± std over images (± std of seed means)'; accuracy in percent with only the seed part."""
    if np.isnan(row["mean"]):
        return "–"
    scale, digits = (100, 1) if row["metric"] == "accuracy" else (1, 3)
    text = f"{row['mean'] * scale:.{digits}f}"
    if not np.isnan(row["std_images"]):
        text += f" ± {row['std_images'] * scale:.{digits}f}"
    if row["n_seeds"] >= 2 and not np.isnan(row["std_seeds"]):
        text += f" (± {row['std_seeds'] * scale:.{digits}f})"
    return f"**{text}**" if bold and row["best"] else text


def table4(results: Results, bold: bool = True) -> pd.DataFrame:
    """The paper's Table 4 for display: one row per (dataset, profile, method, loss), one column per metric.

    Each cell reads "mean ± std over images", followed by "(± std of the per-seed means)"
    when at least two seeds exist; accuracy is in percent and has only the seed part.
    Headers carry the better direction (↓ lower is better, ↑ higher is better); with
    `bold`, the best loss of each (dataset, profile, method, metric) is in Markdown bold.
    The numbers behind it are `table4_numeric`.
    """
    numeric = table4_numeric(results)
    cells = numeric.assign(cell=[_cell(row, bold) for _, row in numeric.iterrows()])
    wide = cells.pivot(index=["dataset", "profile", "method", "loss"], columns="metric", values="cell")
    metrics = [m for m in ["accuracy", *METRICS] if m in wide.columns]
    wide = sort_runs(wide[metrics].reset_index())
    return wide.rename(columns={m: _header(m) for m in metrics}).rename_axis(columns=None)


def seed_level(results: Results, method: str = "gradcam") -> pd.DataFrame:
    """Per (dataset, profile, loss, seed): accuracy and the mean of each metric over images, for one method."""
    facets = results.facets[results.facets["method"] == method]
    if facets.empty:
        raise ValueError(f"method {method!r} has no rows; present: {sorted(results.facets['method'].unique())}")
    keys = ["dataset", "profile", "loss", "seed"]
    means = facets.groupby(keys)[list(METRICS)].mean().reset_index()
    return means.merge(results.accuracy[[*keys, "accuracy"]], on=keys, how="left")


def accuracy_by_run(results: Results) -> pd.DataFrame:
    """Test accuracy (%) of every run, one column per loss: the spread across seeds at a glance."""
    wide = results.accuracy.pivot_table(index=["dataset", "profile", "seed"], columns="loss", values="accuracy")
    wide = wide[ordered(wide.columns, LOSSES)] * 100
    return wide.round(2).reset_index().rename_axis(columns=None)
