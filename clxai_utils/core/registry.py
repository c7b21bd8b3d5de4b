"""The names the whole pipeline shares: losses, explanation methods, metrics, faithfulness measures.

One registry each, so that no module keeps its own copy of the method names or of a
metric's better direction; the sanity checks' thresholds stand here for the same reason.
Importing this module is cheap (no torch, no grad-cam), so the sweep and the analysis can
use it too.
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

#: The faithfulness stage's measures (issue 25) beside `pf_auc`, per image: the read-outs of
#: `evaluate.faithfulness` and F-Fidelity's of `evaluate.ffidelity`. Their better direction lives
#: here, where the analysis can read it without loading torch.
FAITHFULNESS_MEASURES: dict[str, Metric] = {
    "deletion_probability": Metric(
        "faithfulness", "deletion (probability)", "lower", "area under p(class) while the top pixels are removed"
    ),
    "deletion_logit": Metric(
        "faithfulness", "deletion (logit)", "lower", "area under the class logit while the top pixels are removed"
    ),
    "deletion_normalised": Metric(
        "faithfulness", "deletion (normalised)", "lower", "deletion area of p(class) divided by the intact p(class)"
    ),
    "insertion_probability": Metric(
        "faithfulness", "insertion (probability)", "higher", "area under p(class) while the top pixels are restored"
    ),
    "insertion_logit": Metric(
        "faithfulness", "insertion (logit)", "higher", "area under the class logit while the top pixels are restored"
    ),
    "insertion_normalised": Metric(
        "faithfulness", "insertion (normalised)", "higher", "insertion area of p(class) divided by the intact p(class)"
    ),
    "road_morf": Metric("faithfulness", "ROAD (MoRF)", "lower", "mean p(class), most relevant pixels imputed first"),
    "road_lerf": Metric("faithfulness", "ROAD (LeRF)", "higher", "mean p(class), least relevant pixels imputed first"),
    "road": Metric("faithfulness", "ROAD", "higher", "ROAD LeRF minus MoRF: removing the top pixels hurts more"),
    "ffid_plus": Metric(
        "faithfulness",
        "F-Fidelity (FFid+)",
        "higher",
        "score drop when top-ranked pixels are removed (fine-tuned model)",
    ),
    "ffid_minus": Metric(
        "faithfulness",
        "F-Fidelity (FFid-)",
        "lower",
        "score drop when bottom-ranked pixels are removed (fine-tuned model)",
    ),
}

ARROWS: dict[str, str] = {"lower": "↓", "higher": "↑"}

#: Sanity checks (`evaluate.randomisation`): a method fails the cascade when the mean similarity of its
#: maps after the last randomised layer to the trained model's is above CASCADE_THRESHOLD; a class map
#: and a random class's map with SSIM above NEAR_IDENTICAL_SSIM are near-identical, and a method fails
#: the random-logit check when more than MAX_NEAR_IDENTICAL_SHARE of its pairs are.
CASCADE_THRESHOLD = 0.5
NEAR_IDENTICAL_SSIM = 0.95
MAX_NEAR_IDENTICAL_SHARE = 0.5


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
