"""Figures shared by the notebooks: image grids, overlays and saving."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch

from .artifacts import atomic_path
from .config import check_positive_int

if TYPE_CHECKING:
    import pandas as pd

    from .explain import ExplanationSet

SHORT_NAMES = {"ce": "CE", "supcon": "SCL", "triplet": "TL", "gradcam": "Grad-CAM", "eigencam": "Eigen-CAM"}

# Figures shown inline in the notebooks at 72 dpi keep the executed (committed) notebooks small;
# the files written by `save_figure` keep their own, higher resolution.
plt.rcParams["figure.dpi"] = 72


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save `fig` as PNG atomically (a killed run leaves no truncated image)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path


def to_display(images: torch.Tensor) -> np.ndarray:
    """uint8 (N,3,H,W) or float [0,1] images as an (N,H,W,3) float array for imshow."""
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


def plot_history(history: "pd.DataFrame", title: str) -> plt.Figure:
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


def overlay_grid(
    columns: list[tuple[str, torch.Tensor | None, torch.Tensor | None]], row_labels: list[str] | None = None, scale: float = 1.3
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
                ax.imshow(maps[r].float().numpy(), cmap="jet", vmin=0, vmax=1, alpha=0.5 if shown is not None else 1.0,
                          interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def explanation_gallery(
    images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
    maps: dict[tuple[str, str], ExplanationSet], n_rows: int,
) -> plt.Figure:
    """The paper's Figure 2: the first test image of each of the first `n_rows` classes, then its
    map for every (loss, method) in `maps`; row labels give the true class and each loss's prediction.

    `images` (N, 3, H, W) in [0, 1] and `labels` (N,) are the explained split, in the order of the maps.
    """
    if check_positive_int("n_gallery", n_rows) > len(class_names):
        raise ValueError(f"n_gallery must be at most the number of classes ({len(class_names)}), got {n_rows}")
    rows = torch.stack([(labels == c).nonzero()[0, 0] for c in range(n_rows)])
    columns = [("image", images[rows], None)] + [
        (f"{SHORT_NAMES[loss]} · {SHORT_NAMES[method]}", images[rows], m.maps[rows]) for (loss, method), m in maps.items()]
    predicted = {loss: m.predictions[rows] for (loss, _), m in maps.items()}  # the same for both methods of a loss
    row_labels = [f"{class_names[int(labels[r])]}\n(" + ", ".join(class_names[int(p[i])][:5] for p in predicted.values()) + ")"
                  for i, r in enumerate(rows)]
    return overlay_grid(columns, row_labels)
