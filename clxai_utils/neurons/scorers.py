"""The text-label scorers: SemanticLens, CSP and CLIP-Dissect, one interface.

Every scorer is called as `scorer(activations, image_embeddings, text_embeddings)` with
activations (images x units) of the probe images that positives and contrastive examples
are drawn from, their L2-normalised embeddings (images x d) and one embedding per label
(labels x d), and returns a (units x labels) score matrix; the label of a unit is its
argmax (`top_labels`). All are vectorised over units. Formulas and defaults are those of
docs/method.md, "Part II: neuron labels":

* SemanticLens: c_k = norm(mean_i e(p_i)) over the unit's first 30 positives; score c_k . t_j.
* CSP: each positive p_i gets its contrastive twin n_i, the image below the unit's mean
  activation most similar to it, s_i = e(p_i) . e(n_i); r_i = e(p_i) - gamma s_i e(n_i);
  c_k = norm(sum_i w_i r_i / sum_i w_i) with w_i = a_k(p_i); score c_k . t_j.
* CLIP-Dissect: soft-WPMI over the top 100 images (Oikarinen & Weng, 2022).

INVERT labels units with Boolean formulas over annotated concepts instead of text: see
`neurons.invert`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.core.validate import check_number, check_positive, check_positive_int
from clxai_utils.neurons.units import check_activations, top_positives

#: Elements of the largest similarity block (units x positives x images) built at once.
_BLOCK = 1 << 24


class Scorer(Protocol):
    """What 10 calls for every text scorer."""

    @property
    def name(self) -> str: ...

    def __call__(self, activations: Tensor, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor: ...


def check_embeddings(name: str, embeddings: Any, rows: int | None = None, dim: int | None = None) -> Tensor:
    """A finite 2-D float tensor, with `rows` rows and `dim` columns where given."""
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor, got {getattr(embeddings, 'shape', embeddings)!r}")
    if rows is not None and embeddings.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per image or unit), got {embeddings.shape[0]}")
    if dim is not None and embeddings.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the embedding size), got {embeddings.shape[1]}")
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} must hold finite values")
    return embeddings


def _check_inputs(activations: Tensor, image_embeddings: Tensor, text_embeddings: Tensor) -> tuple[Tensor, ...]:
    activations = check_activations(activations)
    image_embeddings = check_embeddings("image_embeddings", image_embeddings, rows=activations.shape[0])
    text_embeddings = check_embeddings("text_embeddings", text_embeddings, dim=image_embeddings.shape[1])
    return activations, image_embeddings, text_embeddings


def check_gamma(gamma: Any) -> float:
    """CSP's contrast strength, in [0, 1]: 0 is SemanticLens with activation weights, 1 removes the twin's direction."""
    return check_number("gamma", gamma, 0.0, 1.0)


# --------------------------------------------------------------------------- CSP's building blocks


def contrastive_set(activations: Tensor, image_embeddings: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    """(twins, similarities), each (units, n): for every positive, the most similar image below the unit's mean.

    The pool of a unit is every image whose activation is below the unit's mean over
    `activations`; twins may repeat and no similarity threshold applies (as in the authors' code).
    """
    below = (activations < activations.mean(0)).T  # (units, images)
    empty = ~below.any(1)
    if empty.any():
        raise ValueError(f"units {empty.nonzero().flatten().tolist()} have no image below their mean activation")
    n_units, n = positives.shape
    chunk = max(1, _BLOCK // (n * activations.shape[0]))
    twins, similarities = [], []
    for start in range(0, n_units, chunk):
        sims = image_embeddings[positives[start : start + chunk]] @ image_embeddings.T  # (chunk, n, images)
        sims = sims.masked_fill(~below[start : start + chunk, None, :], -torch.inf)
        best = sims.max(dim=2)
        similarities.append(best.values)
        twins.append(best.indices)
    return torch.cat(twins), torch.cat(similarities)


def project_contrastive(
    positives: Tensor, twins: Tensor, similarities: Tensor, weights: Tensor, gamma: float
) -> Tensor:
    """CSP directions (units, d): norm(sum_i w_i (e(p_i) - gamma s_i e(n_i)) / sum_i w_i).

    `positives` and `twins` are embeddings (units, n, d), `similarities` s_i and `weights`
    w_i are (units, n). A unit whose weights sum to 0 gets the zero direction (score 0).
    """
    gamma = check_gamma(gamma)
    residuals = positives - gamma * similarities[..., None] * twins
    total = weights.sum(1, keepdim=True)
    mean = (weights[..., None] * residuals).sum(1) / total.masked_fill(total == 0, 1.0)
    return F.normalize(mean, dim=1)


# --------------------------------------------------------------------------- scorers


@dataclass(frozen=True)
class SemanticLens:
    """SemanticLens: the unit's direction is the normalised mean embedding of its first `n_positives` positives."""

    n_positives: int = 30

    def __post_init__(self) -> None:
        check_positive_int("n_positives", self.n_positives)

    @property
    def name(self) -> str:
        return "SemanticLens"

    def directions(self, activations: Tensor, image_embeddings: Tensor) -> Tensor:
        """(units, d) unit directions c_k."""
        _, positives = top_positives(activations, self.n_positives)
        return F.normalize(image_embeddings[positives].mean(1), dim=1)

    def __call__(self, activations: Tensor, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        activations, image_embeddings, text_embeddings = _check_inputs(activations, image_embeddings, text_embeddings)
        return self.directions(activations, image_embeddings) @ text_embeddings.T


@dataclass(frozen=True)
class CSP:
    """Contrastive Semantic Projection: positives minus gamma times their projection on their contrastive twins."""

    gamma: float = 1.0
    n_positives: int = 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", check_gamma(self.gamma))
        check_positive_int("n_positives", self.n_positives)

    @property
    def name(self) -> str:
        return f"CSP (gamma={self.gamma:g})"

    def directions(self, activations: Tensor, image_embeddings: Tensor) -> Tensor:
        """(units, d) unit directions c_k."""
        weights, positives = top_positives(activations, self.n_positives)
        twins, similarities = contrastive_set(activations, image_embeddings, positives)
        return project_contrastive(
            image_embeddings[positives], image_embeddings[twins], similarities, weights, self.gamma
        )

    def __call__(self, activations: Tensor, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        activations, image_embeddings, text_embeddings = _check_inputs(activations, image_embeddings, text_embeddings)
        return self.directions(activations, image_embeddings) @ text_embeddings.T


@dataclass(frozen=True)
class CLIPDissect:
    """CLIP-Dissect's soft-WPMI, lambda = 1 (text embeddings of the bare labels, no template).

    P(t | x) = softmax_t(scale * cos(e(x), t)); the unit's top `n_top` images count with
    probabilities falling linearly from `p_first` to `p_last` by rank;
    log P(t | E_k) = sum_r log(1 - p_r + p_r P(t | x_r)); log P(t) = log-mean-exp over the
    units passed in (pass the whole layer); score = log P(t | E_k) - lam log P(t).
    """

    n_top: int = 100
    scale: float = 10.0
    lam: float = 1.0
    p_first: float = 0.998
    p_last: float = 0.97

    def __post_init__(self) -> None:
        check_positive_int("n_top", self.n_top)
        check_positive("scale", self.scale)
        check_number("lam", self.lam, 0.0)
        check_number("p_last", self.p_last, 0.0, 1.0)
        check_number("p_first", self.p_first, self.p_last, 1.0)

    @property
    def name(self) -> str:
        return "CLIP-Dissect"

    def __call__(self, activations: Tensor, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        activations, image_embeddings, text_embeddings = _check_inputs(activations, image_embeddings, text_embeddings)
        _, top = top_positives(activations, self.n_top, name="n_top")
        cos = F.normalize(image_embeddings, dim=1) @ F.normalize(text_embeddings, dim=1).T
        p_text = torch.softmax(self.scale * cos, dim=1)[top]  # (units, n_top, labels)
        p_in = torch.linspace(self.p_first, self.p_last, self.n_top, dtype=p_text.dtype)[None, :, None]
        log_given_unit = torch.log1p(p_in * (p_text - 1)).sum(1)  # (units, labels)
        log_prior = torch.logsumexp(log_given_unit, dim=0) - math.log(log_given_unit.shape[0])
        return log_given_unit - self.lam * log_prior


def top_labels(scores: Tensor, labels: Sequence[str], k: int = 5) -> list[list[str]]:
    """The `k` best labels of every unit, best first, from a (units x labels) score matrix."""
    scores = check_embeddings("scores", scores, dim=len(labels))
    k = check_positive_int("k", k)
    indices = scores.topk(min(k, len(labels)), dim=1).indices
    return [[labels[j] for j in row] for row in indices.tolist()]
