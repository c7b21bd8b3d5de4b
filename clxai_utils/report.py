"""The analysis stage (07): load every run's result tables, build Table 4, test the paper's claims, draw, write.

`load_results` gathers the tables that 04_linear_probe and 06_metrics wrote under each run
root; `table4` summarises them as the paper's Table 4; `claims` turns the paired tests of
`clxai_utils.stats` into a verdict per claim; `write_report` saves tables (CSV and
Markdown) and figures (PNG and SVG) atomically.

Table 4 pools the images of all seeds: a cell reads "mean ± std over images", and, with
two or more seeds, "(± std of the per-seed means)", which is the spread due to training
randomness. Every statement of the paper becomes a claim with a verdict read off a
Holm-adjusted paired test, so "SCL is more faithful" is either backed by a significant
difference in the claimed direction, contradicted by one, or left open.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning

from .artifacts import atomic_path, write_csv
from .config import LOSSES
from .plots import save_figure
from .stats import METRICS

METHOD_ORDER = ("gradcam", "eigencam")
PAPER_PROFILE = "paper"
PAPER_SEEDS = 5
ARROWS = {"lower": "↓", "higher": "↑"}


class TableKind(NamedTuple):
    """One kind of result table: its file pattern, required columns and the key that identifies a run's part."""

    pattern: str
    columns: tuple[str, ...]
    run_key: tuple[str, ...]


KINDS = {
    "facets": TableKind(
        "facets_seed*.csv",
        ("dataset", "profile", "seed", "loss", "method", "image_id", "label", "prediction", "correct",
         "map_all_zero", *METRICS),
        ("dataset", "profile", "seed", "loss", "method"),
    ),
    "accuracy": TableKind(
        "accuracy_seed*.csv",
        ("dataset", "profile", "loss", "seed", "head", "test_images", "accuracy"),
        ("dataset", "profile", "seed", "loss"),
    ),
    "pf_curves": TableKind(
        "pf_curves_seed*.csv",
        ("dataset", "profile", "seed", "loss", "method", "step", "fraction", "mean", "std", "n"),
        ("dataset", "profile", "seed", "loss", "method"),
    ),
}


@dataclass(frozen=True)
class Results:
    """Every run's tables, concatenated; `files` lists what was read."""

    facets: pd.DataFrame
    accuracy: pd.DataFrame
    pf_curves: pd.DataFrame
    files: tuple[Path, ...]


def _read_kind(root: Path, name: str, kind: TableKind) -> tuple[pd.DataFrame, list[Path]]:
    """Read and concatenate every table of one kind; a run part found in two files is an error."""
    files = sorted(root.rglob(kind.pattern))
    frames, seen = [], {}
    for path in files:
        frame = pd.read_csv(path, dtype={"dataset": str, "profile": str, "loss": str, "method": str})
        missing = [c for c in kind.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks the {name} column(s) {missing} (see the schema in 06_metrics)")
        for key in frame[list(kind.run_key)].drop_duplicates().itertuples(index=False, name=None):
            if key in seen:
                where = dict(zip(kind.run_key, key))
                raise ValueError(f"{name} for {where} found twice: in {seen[key]} and in {path}; "
                                 "keep one run root per (dataset, profile, seed) below the results root")
            seen[key] = path
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(kind.columns)).astype({"seed": int}), files
    return pd.concat(frames, ignore_index=True), files


def load_results(root: str | os.PathLike) -> Results:
    """Every facets, accuracy and pf_curves table found recursively under `root`."""
    root = Path(root)
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


def _ordered(values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    """Distinct values in the paper's order, unknown ones after them, alphabetically."""
    values = set(values)
    return [v for v in known if v in values] + sorted(values - set(known))


def _paper_order(column: pd.Series) -> pd.Series:
    """Sort key: losses and methods in the paper's order, any other column as it is."""
    known = {"loss": LOSSES, "method": METHOD_ORDER}.get(column.name)
    if known is None:
        return column
    return column.map({v: i for i, v in enumerate(_ordered(column, known))})


def _sort_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Sort by dataset and profile, then methods and losses in the paper's order."""
    columns = [c for c in ("dataset", "profile", "method", "loss", "metric") if c in table]
    return table.sort_values(columns, key=_paper_order, kind="stable").reset_index(drop=True)


def _metric_summary(facets: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over images pooled across seeds, and the std of the per-seed means."""
    group = ["dataset", "profile", "loss", "method", "metric"]
    long = facets.melt(id_vars=[*group[:-1], "seed"], value_vars=[m for m in METRICS if m in facets],
                       var_name="metric", value_name="value")
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
    summary = pd.concat([_metric_summary(results.facets), _accuracy_summary(results.accuracy, results.facets)],
                        ignore_index=True)
    summary["metric"] = pd.Categorical(summary["metric"], ["accuracy", *METRICS])
    summary = _sort_runs(summary)
    summary["metric"] = summary["metric"].astype(str)
    summary["best"] = _mark_best(summary)
    columns = ["dataset", "profile", "method", "loss", "metric", "mean", "std_images", "std_seeds",
               "n_images", "n_seeds", "best"]
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
    wide = _sort_runs(wide[metrics].reset_index())
    return wide.rename(columns={m: _header(m) for m in metrics}).rename_axis(columns=None)


class Claim(NamedTuple):
    """A statement of the paper tested on one comparison row of `compare_losses`.

    `expected` is the condition claimed better, None for a claim of no difference.
    """

    claim: str
    statement: str
    metric: str
    a: str
    b: str
    expected: str | None


LOSS_CLAIMS = (
    Claim("SCL more faithful than CE", "lower PF AUC for SupCon than CE", "pf_auc", "supcon", "ce", "supcon"),
    Claim("SCL more continuous than CE", "higher continuity SSIM for SupCon", "continuity_ssim", "supcon", "ce", "supcon"),
    Claim("SCL less complex than CE (entropy)", "lower complexity entropy for SupCon", "complexity_entropy", "supcon", "ce", "supcon"),
    Claim("SCL less complex than CE (Gini)", "higher Gini sparseness for SupCon", "sparseness_gini", "supcon", "ce", "supcon"),
    Claim("SCL lower contrastivity than CE",
          "the paper finds SupCon's contrastivity WORSE: contrastivity SSIM higher for SupCon than CE, so CE is the better one",
          "contrastivity_ssim", "supcon", "ce", "ce"),
    Claim("coherence inconclusive (SCL vs CE)", "no significant pointing-game difference between SupCon and CE",
          "pointing_game", "supcon", "ce", None),
    Claim("coherence inconclusive (SCL vs CE)", "no significant attribution-localisation difference between SupCon and CE",
          "attribution_localisation", "supcon", "ce", None),
)
TRIPLET_METRICS = ("pf_auc", "continuity_ssim", "complexity_entropy", "sparseness_gini")


def verdict(p_holm: float, winner: str, expected: str | None, alpha: float) -> str:
    """supported / not supported / inconclusive for one comparison, from its Holm-adjusted p.

    A directional claim is supported when significant in the claimed direction, not
    supported when significant in the opposite one, inconclusive when not significant.
    A claim of no difference is supported when not significant and not supported when
    significant. An untestable comparison (p is NaN) is inconclusive.
    """
    if np.isnan(p_holm):
        return "inconclusive"
    significant = p_holm < alpha
    if expected is None:
        return "not supported" if significant else "supported"
    if not significant:
        return "inconclusive"
    return "supported" if winner == expected else "not supported"


def _evidence(row: Mapping[str, Any]) -> str:
    if np.isnan(row["p_holm"]):
        return f"untestable: {row['reason'] or 'no p value'} (n = {row['n']})"
    text = (f"median diff ({row['a']} - {row['b']}) {row['median_diff']:+.3g}, r = {row['r']:+.2f}, "
            f"p_holm = {row['p_holm']:.2g}, n = {row['n']}")
    if not np.isnan(row["seed_p_t"]):
        text += f"; seed means: t-test p = {row['seed_p_t']:.2g} over {row['n_seeds']} seeds"
    return text


def _claim_rows(comparisons: pd.DataFrame, claim: Claim, alpha: float) -> list[dict[str, Any]]:
    match = _sort_runs(comparisons[(comparisons["metric"] == claim.metric) & (comparisons["a"] == claim.a)
                                   & (comparisons["b"] == claim.b)])
    return [{
        "claim": claim.claim, "statement": claim.statement, "dataset": row["dataset"], "profile": row["profile"],
        "method": row["method"], "metric": claim.metric, "expected": claim.expected or "no difference",
        "verdict": verdict(row["p_holm"], row["winner"], claim.expected, alpha),
        "n": row["n"], "median_diff": row["median_diff"], "r": row["r"], "p_holm": row["p_holm"],
        "n_seeds": row["n_seeds"], "seed_p_t": row["seed_p_t"], "evidence": _evidence(row),
    } for _, row in match.iterrows()]


def _majority_row(rows: pd.DataFrame, claim: str, statement: str, expected: str, method: str, alpha: float) -> dict[str, Any]:
    """Aggregate verdict: supported when `expected` wins significantly in more than half of the
    testable comparisons, not supported when the other side does, inconclusive otherwise."""
    testable = rows[rows["p_holm"].notna()]
    significant = testable[testable["p_holm"] < alpha]
    wins = int((significant["winner"] == expected).sum())
    losses = len(significant) - wins
    m = len(testable)
    result = "supported" if wins > m / 2 else "not supported" if losses > m / 2 else "inconclusive"
    first = rows.iloc[0]
    return {
        "claim": claim, "statement": statement, "dataset": first["dataset"], "profile": first["profile"],
        "method": method, "metric": "all", "expected": expected, "verdict": result, "n": m,
        "median_diff": np.nan, "r": np.nan, "p_holm": np.nan, "n_seeds": int(rows["n_seeds"].max()),
        "seed_p_t": np.nan,
        "evidence": f"{expected} significantly better in {wins} of {m} testable comparisons, worse in {losses}",
    }


def claims(loss_comparisons: pd.DataFrame, method_comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One verdict per paper claim, dataset, profile and explanation method (see `verdict`).

    Loss claims (SupCon vs CE) read one row of `compare_losses` each. Two claims aggregate
    several comparisons by majority (see `_majority_row`): "Grad-CAM better than
    Eigen-CAM" over every (loss, metric) row of `compare_methods` of a dataset, and "TL
    good on CIFAR-10" over triplet-vs-CE on faithfulness, continuity and both complexity
    metrics, per method. Significance is always the Holm-adjusted image-level p.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rows = [r for claim in LOSS_CLAIMS for r in _claim_rows(loss_comparisons, claim, alpha)]
    for _, group in method_comparisons.groupby(["dataset", "profile"]):
        rows.append(_majority_row(group, "Grad-CAM better than Eigen-CAM",
                                  "Grad-CAM significantly better in most (loss, metric) comparisons",
                                  "gradcam", "gradcam vs eigencam", alpha))
    triplet = loss_comparisons[(loss_comparisons["dataset"] == "cifar10") & (loss_comparisons["a"] == "triplet")
                               & (loss_comparisons["b"] == "ce") & loss_comparisons["metric"].isin(TRIPLET_METRICS)]
    for (_, method), group in _sort_runs(triplet).groupby(["profile", "method"], sort=False):
        rows.append(_majority_row(group, "TL good on CIFAR-10",
                                  "Triplet significantly better than CE on most of PF AUC, continuity, entropy, Gini",
                                  "triplet", method, alpha))
    return pd.DataFrame(rows)


def _select(frame: pd.DataFrame, dataset: str | None, profile: str | None) -> pd.DataFrame:
    """The rows of one (dataset, profile); which one must be given when there are several."""
    runs = frame[["dataset", "profile"]].drop_duplicates()
    if dataset is not None:
        runs = runs[runs["dataset"] == dataset]
    if profile is not None:
        runs = runs[runs["profile"] == profile]
    if len(runs) != 1:
        available = sorted(frame[["dataset", "profile"]].drop_duplicates().itertuples(index=False, name=None))
        raise ValueError(f"dataset={dataset!r}, profile={profile!r} must select exactly one of {available}")
    ds, pr = runs.iloc[0]
    return frame[(frame["dataset"] == ds) & (frame["profile"] == pr)]


def _grid(n: int, ncols: int = 4, size: float = 2.4) -> tuple[plt.Figure, np.ndarray]:
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, min(n, ncols), figsize=(size * min(n, ncols), size * nrows),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, axes.flat[:n]


def plot_metric_distributions(facets: pd.DataFrame, dataset: str | None = None, profile: str | None = None) -> plt.Figure:
    """Per metric, the distribution over images (all seeds) per loss, coloured by method.

    Box plots without fliers; the binary pointing game is shown as the hit rate (bar,
    ± standard error) because a box of 0/1 values says nothing.
    """
    data = _select(facets, dataset, profile)
    metrics = [m for m in METRICS if data[m].notna().any()]
    losses, methods = _ordered(data["loss"], LOSSES), _ordered(data["method"], METHOD_ORDER)
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        common = dict(data=data, x="loss", y=metric, hue="method", order=losses, hue_order=methods, ax=ax)
        if metric == "pointing_game":
            sns.barplot(**common, errorbar="se")
        else:
            with warnings.catch_warnings():  # seaborn 0.13 still passes `vert`, deprecated in Matplotlib 3.11
                warnings.filterwarnings("ignore", "vert: bool was deprecated", MatplotlibDeprecationWarning)
                sns.boxplot(**common, showfliers=False)
        ax.set_title(f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(labelsize=8)
        ax.get_legend().remove()
    fig.suptitle(f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): metric distributions", fontsize=10)
    fig.tight_layout()
    # after tight_layout, so the legend takes an empty grid cell (or widens the saved figure) instead of a panel's room
    axes[-1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, title="method", title_fontsize=7,
                    loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def plot_pf_curves(pf_curves: pd.DataFrame, dataset: str | None = None, profile: str | None = None) -> plt.Figure:
    """Mean pixel-flipping curve per loss, one panel per method: mean over seeds, band ± 1 std across seeds.

    With one seed there is no band (the per-image spread lives in the table's `std`).
    """
    data = _select(pf_curves, dataset, profile)
    methods = _ordered(data["method"], METHOD_ORDER)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 2.8), sharey=True,
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.lineplot(data=data[data["method"] == method], x="fraction", y="mean", hue="loss",
                     hue_order=_ordered(data["loss"], LOSSES), estimator="mean", errorbar="sd", ax=ax)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel("softmax of explained class")
    n_seeds = data["seed"].nunique()
    fig.suptitle(f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): pixel flipping, {n_seeds} seed(s)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def seed_level(results: Results, method: str = "gradcam") -> pd.DataFrame:
    """Per (dataset, profile, loss, seed): accuracy and the mean of each metric over images, for one method."""
    facets = results.facets[results.facets["method"] == method]
    if facets.empty:
        raise ValueError(f"method {method!r} has no rows; present: {sorted(results.facets['method'].unique())}")
    keys = ["dataset", "profile", "loss", "seed"]
    means = facets.groupby(keys)[list(METRICS)].mean().reset_index()
    return means.merge(results.accuracy[[*keys, "accuracy"]], on=keys, how="left")


def plot_accuracy_vs_metric(results: Results, method: str = "gradcam", dataset: str | None = None,
                            profile: str | None = None) -> plt.Figure:
    """Per metric, the per-seed mean metric against accuracy: one point per (loss, seed)."""
    data = _select(seed_level(results, method), dataset, profile)
    metrics = [m for m in METRICS if data[m].notna().any()]
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        sns.scatterplot(data=data, x="accuracy", y=metric, hue="loss", hue_order=_ordered(data["loss"], LOSSES),
                        ax=ax, s=30)
        ax.set_title(f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}", fontsize=9)
        ax.set_ylabel("")
        ax.get_legend().remove()
    fig.suptitle(f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}), {method}: per-seed means vs accuracy",
                 fontsize=10)
    fig.tight_layout()
    # after tight_layout, so the legend takes an empty grid cell (or widens the saved figure) instead of a panel's room
    axes[-1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, title="loss", title_fontsize=7,
                    loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


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
    align = ["---:" if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]) else "---"
             for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells)]
    return "\n".join(lines) + "\n"


_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} name {name!r} must be a plain file stem (letters, digits, '_', '.', '-')")
    return name


def write_report(out_dir: str | os.PathLike, tables: Mapping[str, pd.DataFrame],
                 figures: Mapping[str, plt.Figure]) -> list[Path]:
    """Write each table as <name>.csv and <name>.md and each figure as <name>.png and <name>.svg, atomically."""
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
            f"losses {', '.join(_ordered(group['loss'], LOSSES))}; "
            f"methods {', '.join(_ordered(group['method'], METHOD_ORDER))}; "
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
