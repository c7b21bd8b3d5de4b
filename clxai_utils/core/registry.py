"""The names the whole pipeline shares: losses, explanation methods and metrics.

One registry each, so that no module keeps its own copy of the method names or of a
metric's better direction. Importing this module is cheap (no torch, no grad-cam), so the
sweep and the analysis can use it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple


class Loss(NamedTuple):
    """A training loss: its short label in figures (the paper's) and its full name."""

    label: str
    title: str


class Method(NamedTuple):
    """An explanation method; `class_specific` says whether its map depends on the explained class."""

    label: str
    class_specific: bool


class Metric(NamedTuple):
    """A metric column of the per-image facets table, and which direction is better."""

    facet: str
    label: str
    better: Literal["lower", "higher"]
    description: str
    needs_class_specific_method: bool = False


#: In the paper's order (Table 4).
LOSS_REGISTRY: dict[str, Loss] = {
    "ce": Loss("CE", "cross-entropy"),
    "supcon": Loss("SCL", "supervised contrastive"),
    "triplet": Loss("TL", "triplet"),
}
LOSSES: tuple[str, ...] = tuple(LOSS_REGISTRY)

METHOD_REGISTRY: dict[str, Method] = {
    "gradcam": Method("Grad-CAM", class_specific=True),
    "eigencam": Method("Eigen-CAM", class_specific=False),
}
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)

FACETS: tuple[str, ...] = ("faithfulness", "continuity", "contrastivity", "complexity", "coherence")

METRICS: dict[str, Metric] = {
    "pf_auc": Metric(
        "faithfulness", "PF AUC", "lower", "Pixel Flipping AUC of the explained class's softmax probability"
    ),
    "continuity_ssim": Metric(
        "continuity", "Continuity SSIM", "higher", "SSIM between the maps of the image and of its noisy copy"
    ),
    "contrastivity_ssim": Metric(
        "contrastivity",
        "Contrastivity SSIM",
        "lower",
        "SSIM between the maps of the predicted and of another class (class-specific methods only)",
        needs_class_specific_method=True,
    ),
    "sparseness_gini": Metric("complexity", "Sparseness (Gini)", "higher", "Gini index of the map (Sparseness)"),
    "complexity_entropy": Metric(
        "complexity", "Complexity (entropy)", "lower", "entropy of the map as a distribution (Complexity)"
    ),
    "pointing_game": Metric(
        "coherence", "Pointing game", "higher", "1 if the mosaic map's maximum lies in the image's quadrant"
    ),
    "attribution_localisation": Metric(
        "coherence", "Attribution localisation", "higher", "share of the mosaic map inside the image's quadrant"
    ),
}

ARROWS: dict[str, str] = {"lower": "↓", "higher": "↑"}


def undefined_metrics(method: str) -> tuple[str, ...]:
    """Metrics that are NaN by design for `method` (contrastivity of a class-agnostic map)."""
    if METHOD_REGISTRY[method].class_specific:
        return ()
    return tuple(name for name, metric in METRICS.items() if metric.needs_class_specific_method)


def display_name(name: str) -> str:
    """The display label of a loss or method ("SCL", "Grad-CAM"); other names pass through."""
    if name in LOSS_REGISTRY:
        return LOSS_REGISTRY[name].label
    if name in METHOD_REGISTRY:
        return METHOD_REGISTRY[name].label
    return name


def ordered(values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    """Distinct values in the paper's order, unknown ones after them, alphabetically."""
    values = set(values)
    return [v for v in known if v in values] + sorted(values - set(known))
