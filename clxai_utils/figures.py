"""Every figure of the notebooks: image grids, overlays, training curves, embeddings, the gallery, report plots.

Figures are returned, not shown, so a notebook decides where they go; `save_figure` writes
them atomically.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from clxai_utils.core.registry import (
    ARROWS,
    CASCADE_THRESHOLD,
    FAITHFULNESS_MEASURES,
    LOSSES,
    METHODS,
    METRICS,
    display_name,
    ordered,
)
from clxai_utils.core.validate import check_positive_int

if TYPE_CHECKING:  # seaborn (with scipy.stats) and torch are imported where a figure needs them
    import torch

    from clxai_utils.explain.store import ExplanationSet

# Figures shown inline in the notebooks at 72 dpi keep the executed (committed) notebooks small;
# the files written by `save_figure` keep their own, higher resolution.
plt.rcParams["figure.dpi"] = 72
#: Line style per explanation method where colour shows the loss.
METHOD_STYLES: dict[Any, str] = dict(zip(METHODS, ("-", "--")))


def _loss_palette() -> dict[Any, Any]:
    """One colour per loss, the same in every figure (seaborn's default palette in the paper's order)."""
    import seaborn as sns

    return dict(zip(LOSSES, sns.color_palette(n_colors=len(LOSSES))))


def _loss_method_handles(losses: Sequence[str], methods: Sequence[str], palette: dict[Any, Any]) -> list[Line2D]:
    """Legend entries: one per loss (colour) and one per method (line style), however many lines each draws."""
    handles = [Line2D([], [], color=palette.get(loss), lw=1.5, label=display_name(loss)) for loss in losses]
    return handles + [
        Line2D([], [], color="0.35", lw=1, ls=METHOD_STYLES.get(method, ":"), label=display_name(method))
        for method in methods
    ]


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save `fig` atomically (`core.artifacts.save_figure`); the notebooks call it as `figures.save_figure`."""
    from clxai_utils.core.artifacts import save_figure as save  # imported here: core.artifacts loads torch

    return save(fig, path, dpi)


def to_display(images: torch.Tensor) -> np.ndarray:
    """uint8 (N,3,H,W) or float [0,1] images as an (N,H,W,3) float array for imshow."""
    import torch

    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def image_grid(
    rows: list[torch.Tensor], row_labels: list[str], col_labels: list[str] | None = None, scale: float = 1.1
) -> plt.Figure:
    """A grid with one row per image batch (all rows the same length), labelled on the left."""
    n_cols = len(rows[0])
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(scale * n_cols, scale * len(rows)), squeeze=False)
    for r, (batch, label) in enumerate(zip(rows, row_labels)):
        for c, img in enumerate(to_display(batch)):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels:
                ax.set_title(col_labels[c], fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(history: pd.DataFrame, title: str) -> plt.Figure:
    """Learning curves: training loss (and accuracy or semi-hard share when logged), learning rate, throughput."""
    extra = [c for c in ("train_acc", "semi_hard_frac") if c in history]
    panels = ["loss", *extra, "lr", "images_per_s"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8))
    for ax, column in zip(axes, panels):
        ax.plot(history["epoch"], history[column], marker="o")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(column.replace("_", " "))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """Project features onto their first two principal components (centred SVD)."""
    import torch

    centred = features - features.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def plot_embeddings(features: dict[str, torch.Tensor], labels: torch.Tensor, classes: list[str]) -> plt.Figure:
    """One PCA scatter per model of the features its classifier head sees, coloured by true class."""
    fig, axes = plt.subplots(1, len(features), figsize=(4 * len(features), 4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, feats) in zip(axes[0], features.items()):
        xy = pca_2d(feats).numpy()
        for c, cls in enumerate(classes):
            sel = (labels == c).numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(c % 10), label=cls, alpha=0.6)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1, 0.5), markerscale=3, fontsize=8)
    fig.tight_layout()
    return fig


def mask_examples(images: torch.Tensor, masks: torch.Tensor, titles: Sequence[str], scale: float = 1.3) -> plt.Figure:
    """Images (N, 3, H, W) above the same images with their object masks (N, H, W): object red, ignored grey."""
    shown = to_display(images)
    tinted = shown.copy()
    object_, ignored = (masks == 1).numpy(), (masks == -1).numpy()
    tinted[object_] = 0.5 * tinted[object_] + 0.5 * np.array([1.0, 0.0, 0.0])
    tinted[ignored] = 0.5 * tinted[ignored] + 0.5 * np.array([0.5, 0.5, 0.5])
    fig, axes = plt.subplots(2, len(shown), figsize=(scale * len(shown), 2 * scale), squeeze=False)
    for c, title in enumerate(titles):
        for r, picture in enumerate((shown, tinted)):
            axes[r, c].imshow(picture[c], interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[0, c].set_title(title, fontsize=7)
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("object mask", fontsize=8)
    fig.tight_layout()
    return fig


def overlay_grid(
    columns: Sequence[tuple[str, torch.Tensor | None, torch.Tensor | None]],
    row_labels: list[str] | None = None,
    scale: float = 1.3,
) -> plt.Figure:
    """Images with saliency overlays: each column is (title, images (N,3,H,W) in [0,1] or None, maps (N,H,W) or None).

    A column with both shows the map (jet, alpha 0.5) over the image; with only maps, the
    map alone on a fixed [0, 1] scale, so columns are comparable.
    """
    n_rows = len(next(t for _, i, m in columns for t in (i, m) if t is not None))
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(scale * len(columns), scale * n_rows), squeeze=False)
    for c, (title, images, maps) in enumerate(columns):
        shown = to_display(images) if images is not None else None
        for r in range(n_rows):
            ax = axes[r, c]
            if shown is not None:
                ax.imshow(shown[r], interpolation="nearest")
            if maps is not None:
                ax.imshow(
                    maps[r].float().numpy(),
                    cmap="jet",
                    vmin=0,
                    vmax=1,
                    alpha=0.5 if shown is not None else 1.0,
                    interpolation="bilinear",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def explanation_gallery(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    maps: dict[tuple[str, str], ExplanationSet],
    n_rows: int,
) -> plt.Figure:
    """The paper's Figure 2: the first test image of each of the first `n_rows` classes, then its
    map for every (loss, method) in `maps`; row labels give the true class and each loss's prediction.

    `images` (N, 3, H, W) in [0, 1] and `labels` (N,) are the explained split, in the order of the maps.
    """
    import torch

    if check_positive_int("n_gallery", n_rows) > len(class_names):
        raise ValueError(f"n_gallery must be at most the number of classes ({len(class_names)}), got {n_rows}")
    rows = torch.stack([(labels == c).nonzero()[0, 0] for c in range(n_rows)])
    columns = [("image", images[rows], None)] + [
        (f"{display_name(loss)} · {display_name(method)}", images[rows], m.maps[rows])
        for (loss, method), m in maps.items()
    ]
    predicted = {loss: m.predictions[rows] for (loss, _), m in maps.items()}  # the same for both methods of a loss
    row_labels = [
        f"{class_names[int(labels[r])]}\n(" + ", ".join(class_names[int(p[i])][:5] for p in predicted.values()) + ")"
        for i, r in enumerate(rows)
    ]
    return overlay_grid(columns, row_labels)


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
    fig, axes = plt.subplots(nrows, min(n, ncols), figsize=(size * min(n, ncols), size * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, axes.flat[:n]


def _finish_grid(fig: plt.Figure, axes: np.ndarray, legend_title: str, handles: Sequence[Any] | None = None) -> None:
    """Tight layout, then one shared legend beside the last panel, one entry per label.

    After tight_layout, so the legend takes an empty grid cell (or widens the saved figure)
    instead of a panel's room. `handles` (artists with labels) replace the first panel's.
    """
    fig.tight_layout()
    if handles is None:
        found, labels = axes[0].get_legend_handles_labels()
        unique = dict(zip(labels, found))  # a label drawn once per seed is listed once
        handles, labels = list(unique.values()), list(unique)
    else:
        labels = [h.get_label() for h in handles]
    axes[-1].legend(
        handles,
        labels,
        fontsize=7,
        title=legend_title,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
    )


def plot_metric_distributions(
    facets: pd.DataFrame, dataset: str | None = None, profile: str | None = None
) -> plt.Figure:
    """Per metric, the distribution over images (all seeds) per loss, coloured by method.

    Box plots without fliers; the binary pointing game is shown as the hit rate (bar,
    ± standard error) because a box of 0/1 values says nothing.
    """
    import seaborn as sns

    data = _select(facets, dataset, profile)
    metrics = [m for m in METRICS if data[m].notna().any()]
    losses, methods = ordered(data["loss"], LOSSES), ordered(data["method"], METHODS)
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
    _finish_grid(fig, axes, "method")
    return fig


def plot_pf_curves(pf_curves: pd.DataFrame, dataset: str | None = None, profile: str | None = None) -> plt.Figure:
    """Mean pixel-flipping curve per loss, one panel per method: mean over seeds, band ± 1 std across seeds.

    With one seed there is no band (the per-image spread lives in the table's `std`).
    """
    import seaborn as sns

    data = _select(pf_curves, dataset, profile)
    methods = ordered(data["method"], METHODS)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 2.8), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.lineplot(
            data=data[data["method"] == method],
            x="fraction",
            y="mean",
            hue="loss",
            hue_order=ordered(data["loss"], LOSSES),
            estimator="mean",
            errorbar="sd",
            ax=ax,
        )
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel("softmax of explained class")
    n_seeds = data["seed"].nunique()
    fig.suptitle(
        f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): pixel flipping, {n_seeds} seed(s)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_accuracy_vs_metric(
    seed_means: pd.DataFrame, method: str, dataset: str | None = None, profile: str | None = None
) -> plt.Figure:
    """Per metric, the per-seed mean metric against accuracy (`tables.seed_level`): one point per (loss, seed)."""
    import seaborn as sns

    data = _select(seed_means, dataset, profile)
    metrics = [m for m in METRICS if data[m].notna().any()]
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        sns.scatterplot(
            data=data, x="accuracy", y=metric, hue="loss", hue_order=ordered(data["loss"], LOSSES), ax=ax, s=30
        )
        ax.set_title(f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}", fontsize=9)
        ax.set_ylabel("")
        ax.get_legend().remove()
    fig.suptitle(
        f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}), {method}: per-seed means vs accuracy", fontsize=10
    )
    _finish_grid(fig, axes, "loss")
    return fig


def plot_snapshot_accuracy(
    accuracy: pd.DataFrame, dataset: str | None = None, profile: str | None = None
) -> plt.Figure:
    """Test accuracy of every kept snapshot against its epoch, one line per (loss, seed) (07's accuracy table)."""
    data = _select(accuracy, dataset, profile)
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    palette = _loss_palette()
    for (loss, _), group in data.groupby(["loss", "seed"], sort=False):
        group = group.sort_values("epoch")
        ax.plot(group["epoch"], 100 * group["accuracy"], marker="o", ms=3, color=palette.get(loss), label=str(loss))
        ax.scatter(group["epoch"].iloc[-1], 100 * group["accuracy"].iloc[-1], s=40, color=palette.get(loss))
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), [display_name(name) for name in unique], fontsize=7, title="loss", title_fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): accuracy of the kept snapshots", fontsize=9)
    fig.tight_layout()
    return fig


def plot_facets_vs_accuracy(
    snapshots: pd.DataFrame, dataset: str | None = None, profile: str | None = None
) -> plt.Figure:
    """Per metric, the mean over images of every snapshot against its accuracy (07's per-image table).

    One line per (loss, method, seed) through the kept epochs, colour = loss, solid =
    Grad-CAM, dashed = Eigen-CAM; the large marker is the final model. Curves of two losses
    that overlap at the same accuracy say their final models differ by accuracy only.
    """
    data = _select(snapshots, dataset, profile)
    metrics = [m for m in METRICS if data[m].notna().any()]
    keys = ["loss", "method", "seed", "epoch"]
    means = data.groupby(keys, sort=False).agg(
        {"accuracy": "first", "final": "first", **dict.fromkeys(metrics, "mean")}
    )
    means = means.reset_index()
    palette = _loss_palette()
    losses, methods = ordered(means["loss"], LOSSES), ordered(means["method"], METHODS)
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        for (loss, method, _), group in means.groupby(["loss", "method", "seed"], sort=False):
            group = group.sort_values("epoch")
            if group[metric].isna().all():
                continue
            ax.plot(
                100 * group["accuracy"], group[metric], METHOD_STYLES.get(method, ":"), color=palette.get(loss), lw=1
            )
            last = group[group["final"]]
            ax.scatter(100 * last["accuracy"], last[metric], s=25, color=palette.get(loss))
        ax.set_title(f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}", fontsize=9)
        ax.set_xlabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=8)
    handles = _loss_method_handles(losses, methods, palette)
    handles.append(Line2D([], [], color="0.35", marker="o", ms=5, ls="", label="final model"))
    fig.suptitle(
        f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): facets of every snapshot vs its accuracy", fontsize=10
    )
    _finish_grid(fig, axes, "loss, method", handles)
    return fig


def plot_protocol_means(ablation: pd.DataFrame, method: str = "gradcam") -> plt.Figure:
    """Per metric, the mean over images of each loss under every protocol of 08's table, for one method.

    One row of dots per protocol (the corrected one on top), colour = loss: where a deviation moves
    the dots of two losses past each other, it changes which loss the metric favours.
    """
    data = ablation[ablation["method"] == method]
    protocols = list(dict.fromkeys(data["protocol"]))
    metrics = [m for m in METRICS if data[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.3 * len(metrics), 0.3 * len(protocols) + 1.2), sharey=True)
    palette = _loss_palette()
    means = data.groupby(["protocol", "loss"], sort=False)[metrics].mean()
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for loss in ordered(data["loss"], LOSSES):
            values = [means.loc[(p, loss), metric] for p in protocols]
            ax.scatter(values, range(len(protocols)), s=18, color=palette[loss], label=display_name(loss))
        ax.set_title(f"{METRICS[metric].label} {ARROWS[METRICS[metric].better]}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", lw=0.3)
    first = np.atleast_1d(axes)[0]
    first.set_yticks(range(len(protocols)), protocols)
    first.invert_yaxis()
    first.legend(fontsize=7, title="loss", title_fontsize=7, loc="best")
    fig.suptitle(f"{display_name(method)}: mean per loss under each protocol", fontsize=9)
    fig.tight_layout()
    return fig


def plot_recovery(recovery: pd.DataFrame) -> plt.Figure:
    """10's planted-concept result: share of trials naming T (solid) and C (dashed) against rho, a panel per space."""
    import seaborn as sns

    spaces = list(dict.fromkeys(recovery["space"]))
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.6 * len(spaces), 3.4), squeeze=False, sharey=True)
    palette = dict(zip(dict.fromkeys(recovery["scorer"]), sns.color_palette("tab10")))
    for ax, space in zip(axes[0], spaces):
        for scorer, rows in recovery[recovery["space"] == space].groupby("scorer", sort=False):
            ax.plot(rows["rho"], rows["names_T"], "-o", ms=3, color=palette[scorer], label=f"{scorer}: T")
            ax.plot(rows["rho"], rows["names_C"], "--", color=palette[scorer], alpha=0.6, label=f"{scorer}: C")
        ax.set_title(space, fontsize=9)
        ax.set_xlabel(r"$\rho = P(C \mid T)$")
        ax.set_ylim(-0.03, 1.03)
    axes[0, 0].set_ylabel("share of trials")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_unit_scores(units: pd.DataFrame, scores: Sequence[str]) -> plt.Figure:
    """10's per-unit scores, one panel each, a box and the units as points per loss."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores), 3.2), squeeze=False)
    order = [loss for loss in LOSSES if loss in set(units["loss"])]
    for ax, score in zip(axes[0], scores):
        sns.boxplot(data=units, x="loss", y=score, order=order, ax=ax, color="0.9", fliersize=0)
        sns.stripplot(data=units, x="loss", y=score, order=order, ax=ax, size=2.5, alpha=0.6)
        ax.set_title(score, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def unit_gallery(units: Sequence[tuple[str, torch.Tensor, torch.Tensor]], scale: float = 1.0) -> plt.Figure:
    """10's gallery: per unit (title, positives, contrastive twins), its top positives above their twins."""
    n_cols = len(units[0][1])
    fig = plt.figure(figsize=(scale * n_cols, 2.4 * scale * len(units)))
    # One subfigure per unit, so that its title may be wider than an image without squeezing the grid.
    subfigures = fig.subfigures(len(units), 1, squeeze=False)[:, 0]
    for sub, (title, positives, twins) in zip(subfigures, units):
        axes = sub.subplots(2, n_cols, squeeze=False)
        sub.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.02, wspace=0.06, hspace=0.06)
        sub.suptitle(title, x=0.07, ha="left", fontsize=8)
        for row, (batch, label) in zip(axes, ((positives, "positives"), (twins, "twins"))):
            for ax, img in zip(row, to_display(batch)):
                ax.imshow(img, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            row[0].set_ylabel(label, fontsize=8)
    return fig


def _curve_title(kind: str) -> str:
    """A measure's label and better direction; a curve kind that is no registered measure, as it is."""
    metric = FAITHFULNESS_MEASURES.get(kind)
    return f"{metric.label} {ARROWS[metric.better]}" if metric else kind.replace("_", " ")


def plot_faithfulness_curves(
    curves: pd.DataFrame, dataset: str | None = None, profile: str | None = None
) -> plt.Figure:
    """One panel per curve kind of the faithfulness stage (deletion and insertion read-outs, ROAD, F-Fidelity).

    One line per (loss, method): colour = loss, solid = Grad-CAM, dashed = Eigen-CAM; each
    point is the mean over the images of every seed (the seeds' means weighted by their n).
    The panel title's arrow is the direction in which the curve's area is better.
    """
    data = _select(curves, dataset, profile)
    pooled = (
        data.assign(total=data["mean"] * data["n"])
        .groupby(["curve", "loss", "method", "fraction"], as_index=False)[["total", "n"]]
        .sum()
    )
    pooled["mean"] = pooled["total"] / pooled["n"]
    kinds = ordered(pooled["curve"], tuple(FAITHFULNESS_MEASURES))
    losses, methods = ordered(pooled["loss"], LOSSES), ordered(pooled["method"], METHODS)
    palette = _loss_palette()
    fig, axes = _grid(len(kinds), ncols=3, size=2.6)
    for ax, kind in zip(axes, kinds):
        for (loss, method), line in pooled[pooled["curve"] == kind].groupby(["loss", "method"], sort=False):
            ax.plot(line["fraction"], line["mean"], METHOD_STYLES.get(method, ":"), color=palette.get(loss), lw=1.2)
        ax.set_title(_curve_title(kind), fontsize=9)
        ax.set_xlabel("fraction of pixels", fontsize=8)
        ax.tick_params(labelsize=8)
    n_seeds = data["seed"].nunique()
    fig.suptitle(
        f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): faithfulness curves, {n_seeds} seed(s)", fontsize=10
    )
    _finish_grid(fig, axes, "loss, method", _loss_method_handles(losses, methods, palette))
    return fig


def plot_randomisation(
    randomisation: pd.DataFrame,
    dataset: str | None = None,
    profile: str | None = None,
    threshold: float = CASCADE_THRESHOLD,
) -> plt.Figure:
    """Mean similarity (SSIM, Spearman) of the maps to the trained model's as the cascade randomises layer after layer.

    One line per (loss, method), mean over the images of every seed; step 0 is the trained
    model. A method whose last-step SSIM stays above the dotted `threshold` fails the check.
    """
    data = _select(randomisation, dataset, profile)
    means = data.groupby(["loss", "method", "step"], as_index=False)[["ssim", "spearman"]].mean()
    layers = data.groupby("step")["layer"].first()
    losses, methods = ordered(means["loss"], LOSSES), ordered(means["method"], METHODS)
    palette = _loss_palette()
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.0), sharey=True, squeeze=False)
    for ax, similarity in zip(axes[0], ("ssim", "spearman")):
        for (loss, method), line in means.groupby(["loss", "method"], sort=False):
            style = METHOD_STYLES.get(method, ":")
            ax.plot(line["step"], line[similarity], style, marker="o", ms=3, color=palette.get(loss), lw=1.2)
        ax.axhline(threshold, color="0.3", lw=0.8, ls=":")
        ax.set_xticks(layers.index, [name.removeprefix("backbone.") for name in layers], rotation=45, fontsize=7)
        ax.set_title(f"{'SSIM' if similarity == 'ssim' else 'Spearman'} to the trained maps", fontsize=9)
        ax.set_xlabel("randomised down to", fontsize=8)
    handles = _loss_method_handles(losses, methods, palette)
    handles.append(Line2D([], [], color="0.3", lw=0.8, ls=":", label=f"threshold {threshold:g}"))
    fig.suptitle(f"{data['dataset'].iloc[0]} ({data['profile'].iloc[0]}): cascading randomisation", fontsize=10)
    _finish_grid(fig, axes[0], "loss, method", handles)
    return fig


def plot_cascade_maps(
    maps: torch.Tensor, layers: Sequence[str], row_labels: list[str] | None = None, scale: float = 1.1
) -> plt.Figure:
    """The maps of k images (rows) as the cascade randomises layer after layer (columns), from (steps+1, k, H, W).

    `layers` names the columns (the first is the trained model), as `CascadeResult.layers`.
    """
    if maps.ndim != 4 or maps.shape[0] != len(layers):
        raise ValueError(
            f"maps must be (steps+1, k, H, W) with one step per layer {list(layers)}, got {tuple(maps.shape)}"
        )
    columns = [(name.removeprefix("backbone."), None, step) for name, step in zip(layers, maps)]
    return overlay_grid(columns, row_labels, scale)
