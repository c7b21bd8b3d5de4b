"""INVERT (Bykov et al., NeurIPS 2023): label a unit with the Boolean concept formula it best detects.

The score of a formula phi over annotated concepts is AUROC(a_k(x), 1[phi(x)]): how well
the unit's activation ranks the images where phi holds above the others. Formulas are
grown by beam search as in the authors' code: the literals are the concepts and their
negations; the beam starts with the best `beam_size` literals whose concept fraction (the
share of images where the formula holds) lies in [min_fraction, max_fraction]; every step
extends each beam formula by AND / OR with every literal and keeps the best `beam_size` of
the old and new formulas, up to `max_length` literals. No CLIP is involved: on CIFAR-10 the
concepts are the classes and any planted attributes.

Vectorised over units: AUROCs come from rank sums, sum_{phi(x)} rank_k(x), which for all
extensions of all beams are one matrix product (the rank sum of `f OR l` is that of `f`
plus that of `l` minus that of `f AND l`). Formulas that hold on the same images are kept once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clxai_utils.core.validate import check_number, check_positive_int
from clxai_utils.neurons.units import check_activations

#: Grid that formula fingerprints (sums of N(0, 1) image weights) are rounded to before comparing them:
#: far above float64 rounding, far below the gap between two different sets.
_FINGERPRINT_GRID = 1e-6


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks along dim 0 in float64, tied values sharing their mean rank (scipy's `rankdata`)."""
    columns = values.T.contiguous()
    ordered = columns.sort(dim=1).values
    low = torch.searchsorted(ordered, columns, right=False)
    high = torch.searchsorted(ordered, columns, right=True)
    return ((low + high + 1).double() / 2).T


def _auroc_from_rank_sums(rank_sums: Tensor, positives: Tensor, n_images: int) -> Tensor:
    """Mann-Whitney AUROC from the rank sum of the positive images; NaN where a class is empty."""
    negatives = n_images - positives
    auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return auc.masked_fill((positives == 0) | (negatives == 0), torch.nan)


def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """(units, K) AUROC of every column of `scores` (images, units) against every column of `labels` (images, K), bool.

    Ties count one half, as in sklearn's `roc_auc_score`; NaN where a label column is constant.
    """
    scores = check_activations(scores)
    if labels.dtype != torch.bool or labels.ndim != 2 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must be a bool tensor of shape ({scores.shape[0]}, K), got {labels.dtype} {tuple(labels.shape)}"
        )
    y = labels.double()
    return _auroc_from_rank_sums(average_ranks(scores).T @ y, y.sum(0), scores.shape[0])


@dataclass(frozen=True)
class InvertResult:
    """The best formula of every unit: its text, AUROC, concept fraction, number of literals and where it holds."""

    formulas: tuple[str, ...]
    auroc: Tensor  # (units,)
    fraction: Tensor  # (units,)
    length: Tensor  # (units,)
    holds: Tensor  # (units, images) bool


@dataclass
class _Beam:
    """Per unit, `width` formulas: where they hold, their rank sums, counts, fingerprints, scores and texts."""

    holds: Tensor  # (units, width, images) bool
    rank_sums: Tensor  # (units, width) float64
    counts: Tensor
    fingerprints: Tensor
    scores: Tensor  # AUROC, -inf for no formula
    length: Tensor  # (units, width) int64
    texts: list[list[str]]


@dataclass(frozen=True)
class Invert:
    """INVERT's beam search; the defaults follow the authors' code where it has them (fractions 0 and 0.5)."""

    max_length: int = 3
    beam_size: int = 5
    min_fraction: float = 0.0
    max_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_positive_int("max_length", self.max_length)
        check_positive_int("beam_size", self.beam_size)
        check_number("max_fraction", self.max_fraction, 0.0, 1.0)
        check_number("min_fraction", self.min_fraction, 0.0, self.max_fraction)

    @property
    def name(self) -> str:
        return "INVERT"

    def __call__(self, activations: Tensor, concepts: Tensor, concept_names: Sequence[str]) -> InvertResult:
        """Best formula per unit over `concepts` (images, C) bool, named by `concept_names`."""
        activations = check_activations(activations)
        literals, names = _literals(concepts, concept_names, activations.shape[0])
        ranks = average_ranks(activations).T.contiguous()  # (units, images)
        weights = torch.randn(activations.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        lit = literals.double()  # (images, 2C)
        lit_stats = (ranks @ lit, lit.sum(0).expand(len(ranks), -1), (weights @ lit).expand(len(ranks), -1))
        beam = self._first_beam(literals, names, lit_stats)
        for _ in range(2, self.max_length + 1):
            beam = self._extend(beam, literals, names, lit_stats, ranks, weights)
        return InvertResult(
            formulas=tuple(texts[0] for texts in beam.texts),
            auroc=beam.scores[:, 0].float(),
            fraction=(beam.counts[:, 0] / activations.shape[0]).float(),
            length=beam.length[:, 0],
            holds=beam.holds[:, 0],
        )

    def _scores(self, rank_sums: Tensor, counts: Tensor, n_images: int) -> Tensor:
        """AUROC where the concept fraction is allowed (and both classes non-empty), else -inf."""
        fraction = counts / n_images
        allowed = (fraction >= self.min_fraction) & (fraction <= self.max_fraction) & (counts > 0) & (counts < n_images)
        return _auroc_from_rank_sums(rank_sums, counts, n_images).masked_fill(~allowed, -torch.inf)

    def _first_beam(self, literals: Tensor, names: list[str], lit_stats: tuple[Tensor, Tensor, Tensor]) -> _Beam:
        rank_sums, counts, fingerprints = lit_stats
        scores = self._scores(rank_sums, counts, literals.shape[0])
        if (scores == -torch.inf).all():
            raise ValueError(
                f"no concept or negated concept holds on a fraction of the images within "
                f"[min_fraction, max_fraction] = [{self.min_fraction}, {self.max_fraction}]"
            )
        width = min(self.beam_size, scores.shape[1])
        scores, chosen = _top_unique(scores, fingerprints, width)
        return _Beam(
            holds=literals.T[chosen],
            rank_sums=rank_sums.gather(1, chosen),
            counts=counts.gather(1, chosen),
            fingerprints=fingerprints.gather(1, chosen),
            scores=scores,
            length=torch.ones_like(chosen),
            texts=[[names[j] for j in row] for row in chosen.tolist()],
        )

    def _extend(
        self,
        beam: _Beam,
        literals: Tensor,
        names: list[str],
        lit_stats: tuple[Tensor, Tensor, Tensor],
        ranks: Tensor,
        weights: Tensor,
    ) -> _Beam:
        """One beam-search step: the old beam plus every (beam formula) AND / OR (literal), best `beam_size` kept."""
        n_images, n_literals = literals.shape
        width = beam.scores.shape[1]
        holds = beam.holds.double()  # (units, width, images)
        lit = literals.double()
        both = (holds * ranks[:, None, :]) @ lit, holds @ lit, (holds * weights) @ lit  # f AND l: (units, width, 2C)
        old = beam.rank_sums, beam.counts, beam.fingerprints
        either = [o[..., None] + s[:, None, :] - b for o, s, b in zip(old, lit_stats, both)]  # f OR l
        stats = [torch.cat([o, b.flatten(1), e.flatten(1)], dim=1) for o, b, e in zip(old, both, either)]
        scores = self._scores(stats[0], stats[1], n_images)
        scores[:, :width] = beam.scores
        dead = (beam.scores == -torch.inf)[..., None].expand(-1, -1, n_literals).flatten(1)
        scores[:, width:] = scores[:, width:].masked_fill(torch.cat([dead, dead], dim=1), -torch.inf)
        scores, chosen = _top_unique(scores, stats[2], min(self.beam_size, scores.shape[1]))
        # Decode candidate c: c < width is old formula c; else (op, parent formula, literal).
        new = (chosen - width).clamp_min(0)
        op_and, parent, lit_index = (
            new < width * n_literals,
            (new % (width * n_literals)) // n_literals,
            new % n_literals,
        )
        is_old = chosen < width
        parent = torch.where(is_old, chosen, parent)
        parent_holds = beam.holds.gather(1, parent[..., None].expand(-1, -1, n_images))
        lit_holds = literals.T[lit_index]
        extended = torch.where(op_and[..., None], parent_holds & lit_holds, parent_holds | lit_holds)
        parent_length = beam.length.gather(1, parent)
        texts = _formula_texts(beam.texts, names, is_old, parent, lit_index, op_and, parent_length)
        return _Beam(
            holds=torch.where(is_old[..., None], parent_holds, extended),
            rank_sums=stats[0].gather(1, chosen),
            counts=stats[1].gather(1, chosen),
            fingerprints=stats[2].gather(1, chosen),
            scores=scores,
            length=torch.where(is_old, parent_length, parent_length + 1),
            texts=texts,
        )


def _formula_texts(
    texts: list[list[str]],
    names: list[str],
    is_old: Tensor,
    parent: Tensor,
    lit_index: Tensor,
    op_and: Tensor,
    parent_length: Tensor,
) -> list[list[str]]:
    """The texts of the chosen formulas: a kept one as it was, an extension as `(parent) OP literal`.

    Bookkeeping only, `beam_size` strings per unit; no image is looked at here.
    """
    rows = zip(texts, *(t.tolist() for t in (is_old, parent, lit_index, op_and, parent_length)))
    result = []
    for unit_texts, kept, parents, literals, conjunctions, lengths in rows:
        row = []
        for keep, p, j, conj, n in zip(kept, parents, literals, conjunctions, lengths):
            left = unit_texts[p] if n == 1 else f"({unit_texts[p]})"
            row.append(unit_texts[p] if keep else f"{left} {'AND' if conj else 'OR'} {names[j]}")
        result.append(row)
    return result


def _literals(concepts: Any, concept_names: Sequence[str], n_images: int) -> tuple[Tensor, list[str]]:
    """(images, 2C) bool: the concepts, then their negations, with their names."""
    if not isinstance(concepts, Tensor) or concepts.dtype != torch.bool or concepts.ndim != 2:
        raise ValueError(
            f"concepts must be a 2-D bool tensor (images, concepts), got {getattr(concepts, 'shape', concepts)!r}"
        )
    if concepts.shape[0] != n_images:
        raise ValueError(f"concepts must have one row per image ({n_images}), got {concepts.shape[0]}")
    names = [str(name) for name in concept_names]
    if len(names) != concepts.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"concept_names must hold {concepts.shape[1]} distinct names, got {names}")
    return torch.cat([concepts, ~concepts], dim=1), names + [f"NOT {name}" for name in names]


def _top_unique(scores: Tensor, fingerprints: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The `width` best candidates per unit (earlier first on ties), a formula holding on the same images only once.

    Candidates are the same set of images when their rounded fingerprints agree; only allowed
    candidates (finite scores) are compared, so a disallowed one never hides an allowed one.
    """
    key = torch.round(fingerprints / _FINGERPRINT_GRID).masked_fill(
        scores == -torch.inf, torch.nan
    )  # NaN equals nothing
    order = key.argsort(dim=1, stable=True)
    sorted_key = key.gather(1, order)
    repeat = torch.zeros_like(scores, dtype=torch.bool)
    repeat.scatter_(1, order[:, 1:], sorted_key[:, 1:] == sorted_key[:, :-1])
    best = scores.masked_fill(repeat, -torch.inf).sort(dim=1, descending=True, stable=True)
    return best.values[:, :width], best.indices[:, :width]
