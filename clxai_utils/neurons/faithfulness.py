"""Is a label faithful to its unit? Simulation correlation and the planted-copy analogue of CoSy.

* Simulation correlation (after Oikarinen & Weng, 2024): on held-out images (never those the
  positives or contrastive examples came from), the label simulates the unit as
  pred(x) = e(x) . t_label, and SCS_k = Pearson(a_k(x), pred(x)) over those images.
* CoSy (Kopf et al., 2024) compares a unit's activations on images generated from the label
  (A1) with those on control images (A0). Offline, where the concept can be planted into
  images (a patch, a tint, stripes), the planted copies play A1 and the originals A0:
  AUC = ROC-AUC(A0 vs A1) (the chance that a copy activates the unit more than an
  original, ties one half) and MAD = (mean A1 - mean A0) / std A0 (population std).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clxai_utils.neurons.invert import auroc
from clxai_utils.neurons.scorers import check_embeddings
from clxai_utils.neurons.units import check_activations


def pearson_columns(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation of every column of `x` with the same column of `y`; NaN for a constant column."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    denominator = (xc.pow(2).sum(0) * yc.pow(2).sum(0)).sqrt()
    return (xc * yc).sum(0) / denominator.masked_fill(denominator == 0, torch.nan)


def simulation_correlation(activations: Tensor, image_embeddings: Tensor, label_embeddings: Tensor) -> Tensor:
    """(units,) SCS: Pearson, over held-out images, of each unit's activations and e(x) . t of its label.

    `activations` (images, units) and `image_embeddings` (images, d) are of the held-out
    images only; row k of `label_embeddings` (units, d) is the text embedding of unit k's label.
    """
    activations = check_activations(activations)
    if activations.shape[0] < 2:
        raise ValueError("activations must cover at least 2 held-out images for a correlation")
    image_embeddings = check_embeddings("image_embeddings", image_embeddings, rows=activations.shape[0])
    label_embeddings = check_embeddings(
        "label_embeddings", label_embeddings, rows=activations.shape[1], dim=image_embeddings.shape[1]
    )
    return pearson_columns(activations.double(), (image_embeddings @ label_embeddings.T).double()).float()


class PlantedCopyScores(NamedTuple):
    """CoSy's two scores per unit, with planted copies as A1 and the originals as A0."""

    auc: Tensor
    mad: Tensor


def planted_copy_scores(original: Tensor, planted: Tensor) -> PlantedCopyScores:
    """AUC and MAD per unit from activations (images, units) on the originals (A0) and the planted copies (A1)."""
    original, planted = check_activations(original), check_activations(planted)
    if original.shape[1] != planted.shape[1]:
        raise ValueError(
            f"original and planted must cover the same units, got {original.shape[1]} and {planted.shape[1]}"
        )
    labels = torch.cat([torch.zeros(len(original), dtype=torch.bool), torch.ones(len(planted), dtype=torch.bool)])
    auc = auroc(torch.cat([original, planted]), labels[:, None])[:, 0].float()
    std = original.double().std(0, correction=0)
    mad = (planted.double().mean(0) - original.double().mean(0)) / std.masked_fill(std == 0, torch.nan)
    return PlantedCopyScores(auc, mad.float())
