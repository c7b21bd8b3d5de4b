"""The trained models' own units, labelled with what runs offline, and the three losses compared.

For every loss: the units of the layer are selected on the probe images (`units.select_units`),
then each gets

* INVERT's best formula over the CIFAR-10 classes (and their AND / OR / NOT compositions) and
  its AUROC: how well the unit detects its best class concept;
* class selectivity (Morcos et al., 2018): (mu_max - mu_rest) / (mu_max + mu_rest), mu_max the
  largest class-mean activation and mu_rest the mean of the other class means; 0 when the
  unit responds to every class alike, 1 when to one class only (activations are >= 0);
* clarity and polysemanticity of its positives in the stand-in space;
* the SemanticLens and CSP labels in the stand-in space, whose labels are the classes.

`compare_losses` tests every pair of losses on each of these per-unit scores with an
unpaired permutation test (units of different networks are not paired), Holm-corrected.
With a real CLIP, `text_labels` labels the units with the vocabulary's text and scores each
label by its simulation correlation on the held-out images.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.analysis.stats import holm, permutation_test
from clxai_utils.neurons.encoders import ConceptMeanStandIn
from clxai_utils.neurons.faithfulness import simulation_correlation
from clxai_utils.neurons.interpretability import clarity, polysemanticity
from clxai_utils.neurons.invert import Invert
from clxai_utils.neurons.scorers import Scorer, top_labels
from clxai_utils.neurons.units import ProbeSplit, check_count, select_units, top_positives

#: Per-unit scores that `compare_losses` tests, with the direction a reader would call "more interpretable".
UNIT_SCORES: dict[str, str] = {
    "invert_auroc": "higher",
    "selectivity": "higher",
    "clarity": "higher",
    "polysemanticity": "lower",
}
#: The CSP authors' counts, for probe sets of ImageNet size (tens of thousands of images).
AUTHOR_COUNTS = {"n_positives": 30, "top_count": 100, "min_firing": 100}


@dataclass(frozen=True)
class UnitCounts:
    """How many images define a unit: its positives, the top images that rank it, the images it must fire on."""

    n_positives: int
    top_count: int
    min_firing: int


def unit_counts(n_images: int, share: float = 0.1) -> UnitCounts:
    """The authors' counts, capped at `share` of the probe images (at least 2) for a small probe set.

    The cap keeps positives a small top slice of the probe images, as they are on ImageNet:
    the quick profile's 1,400 images keep 30 / 100 / 100; the smoke profile's 56 get 5 each.
    """
    cap = max(2, int(share * n_images))
    return UnitCounts(**{name: check_count(name, min(value, cap), n_images) for name, value in AUTHOR_COUNTS.items()})


def class_means(activations: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(classes, units) mean activation of every unit on the images of each class (0 for an empty class)."""
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).to(activations.dtype)
    return (F.one_hot(labels, n_classes).to(activations.dtype).T @ activations) / counts[:, None]


def class_selectivity(means: Tensor) -> Tensor:
    """(units,) Morcos et al.'s class selectivity index from `class_means`; NaN for a unit silent on every class."""
    top = means.max(0).values
    rest = (means.sum(0) - top) / (means.shape[0] - 1)
    total = top + rest
    return (top - rest) / total.masked_fill(total == 0, torch.nan)


def class_embeddings(embeddings: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(classes, d) stand-in label embeddings: the normalised mean embedding of each class's images."""
    return ConceptMeanStandIn.label_embeddings(embeddings, F.one_hot(labels, n_classes).bool())


def unit_table(
    loss: str,
    activations: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    embeddings: Tensor,
    label_embeddings: Tensor,
    scorers: Sequence[Scorer],
    counts: UnitCounts,
    n_units: int = 200,
    invert: Invert | None = None,
) -> pd.DataFrame:
    """One row per selected unit of one network (probe images = the 70 % select split), best units first."""
    chosen = select_units(activations, n_units, counts.top_count, counts.min_firing)
    acts = activations[:, chosen]
    best = (invert or Invert())(acts, F.one_hot(labels, len(classes)).bool(), list(classes))
    _, positives = top_positives(acts, counts.n_positives)
    examples = embeddings[positives]
    means = class_means(acts, labels, len(classes))
    table = pd.DataFrame(
        {
            "loss": loss,
            "unit": chosen.tolist(),
            "invert_formula": list(best.formulas),
            "invert_auroc": best.auroc.tolist(),
            "selectivity": class_selectivity(means).tolist(),
            "top_class": [classes[i] for i in means.argmax(0).tolist()],
            "clarity": clarity(examples).tolist(),
            "polysemanticity": polysemanticity(examples).tolist(),
        }
    )
    for scorer in scorers:
        table[scorer.name] = [row[0] for row in top_labels(scorer(acts, embeddings, label_embeddings), classes, k=1)]
    return table


def loss_summary(units: pd.DataFrame, scorers: Sequence[str] = ()) -> pd.DataFrame:
    """Per loss: the number of units, the mean of every per-unit score, and how often each named scorer's label
    is the unit's top class (the class of its largest class-mean activation)."""
    by_loss = units.groupby("loss", sort=False)
    table = by_loss[list(UNIT_SCORES)].mean()
    table.insert(0, "units", by_loss.size())
    for scorer in scorers:
        table[f"{scorer} = top class"] = (units[scorer] == units["top_class"]).groupby(units["loss"], sort=False).mean()
    return table.reset_index()


def compare_losses(
    units: pd.DataFrame, scores: Mapping[str, str] = UNIT_SCORES, n_permutations: int = 9999, seed: int = 0
) -> pd.DataFrame:
    """Every pair of losses on every per-unit score: means, difference, permutation p and Holm-adjusted p."""
    losses = list(dict.fromkeys(units["loss"]))
    rows = []
    for score, better in scores.items():
        for a, b in itertools.combinations(losses, 2):
            x, y = (units.loc[units["loss"] == loss, score].dropna().to_numpy() for loss in (a, b))
            diff, p = permutation_test(x, y, n_permutations, seed)
            rows.append(
                {"score": score, "better": better, "a": a, "b": b, "n_a": len(x), "n_b": len(y),
                 "mean_a": x.mean(), "mean_b": y.mean(), "difference": diff, "p": p}
            )  # fmt: skip
    columns = ["score", "better", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "difference", "p"]
    table = pd.DataFrame(rows, columns=columns)  # no rows for a single loss, the columns all the same
    table["p_holm"] = holm(table["p"].to_numpy())
    return table


def text_labels(
    loss: str,
    units: Tensor,
    select: tuple[Tensor, Tensor],
    held_out: tuple[Tensor, Tensor],
    label_embeddings: Tensor,
    labels: Sequence[str],
    scorers: Sequence[Scorer],
) -> pd.DataFrame:
    """Text labels of the given units under every scorer, with their simulation correlation on held-out images.

    `select` and `held_out` are (activations of all units, image embeddings) of the two
    splits; positives and contrastive examples come from `select` only.
    """
    rows = []
    for scorer in scorers:
        scores = scorer(select[0][:, units], select[1], label_embeddings)
        best = scores.argmax(1)
        scs = simulation_correlation(held_out[0][:, units], held_out[1], label_embeddings[best])
        rows += [
            {"loss": loss, "unit": int(u), "scorer": scorer.name, "label": labels[j], "scs": float(c)}
            for u, j, c in zip(units.tolist(), best.tolist(), scs.tolist())
        ]
    return pd.DataFrame(rows)


def clip_unit_labels(
    units: pd.DataFrame,
    activations: Mapping[str, Tensor],
    split: ProbeSplit,
    image_embeddings: Tensor,
    scorers: Sequence[tuple[Scorer, Tensor]],
    labels: Sequence[str],
) -> pd.DataFrame:
    """`text_labels` of every loss's selected units (`units`, from `unit_table`), for every (scorer, its label embeddings).

    `activations` are each loss's activations on the whole probe set, `image_embeddings` the
    probe images' embeddings; CLIP-Dissect takes the bare labels' embeddings, the others CSP's templates.
    """
    tables = []
    for loss, acts in activations.items():
        chosen = torch.tensor(units.loc[units["loss"] == loss, "unit"].tolist())
        select = acts[split.select], image_embeddings[split.select]
        held_out = acts[split.held_out], image_embeddings[split.held_out]
        for scorer, label_embeddings in scorers:
            tables.append(text_labels(loss, chosen, select, held_out, label_embeddings, labels, [scorer]))
    return pd.concat(tables, ignore_index=True)


def attribute_recovery(trials: pd.DataFrame, space: str | None = None, by_rho: bool = False) -> pd.DataFrame:
    """Per (space, scorer, attribute): the share of planted-concept trials whose label names T and C.

    `trials` is `planted.run_trials`' table (one row per trial and scorer). `recovery_table` pools
    the attributes, which hides a scorer that names some attributes almost always and others
    rarely (a pooled 0.50 may be two attributes at 1.0 and two at 0.0); this keeps them apart.
    Pooled over seeds, and over rho unless `by_rho`; `space` keeps the trials of one space.
    """
    missing = sorted({"space", "scorer", "attribute", "rho", "names_T", "names_C"} - set(trials.columns))
    if missing:
        raise ValueError(f"trials lacks column(s) {missing}; pass planted.run_trials' table")
    if space is not None:
        if space not in set(trials["space"]):
            raise ValueError(f"no trials in space {space!r}; present: {list(dict.fromkeys(trials['space']))}")
        trials = trials[trials["space"] == space]
    keys = ["space", "scorer", "attribute", *(["rho"] if by_rho else [])]
    grouped = trials.groupby(keys, sort=False)
    table = grouped.agg(names_T=("names_T", "mean"), names_C=("names_C", "mean"), trials=("names_T", "size"))
    return table.reset_index()
