"""Figures shared by the notebooks: image grids, overlays and saving."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .artifacts import atomic_path


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
