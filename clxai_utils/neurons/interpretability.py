"""How interpretable a unit is, from the embeddings of its examples (SemanticLens's scores).

* clarity: mean pairwise cosine of the unit's examples; near 1 when they all look alike;
* polysemanticity: 1 - cos of the two k-means (k = 2) centres of its examples; near 0
  when they form one group, large when they split into two different ones.

Both take `examples`, the (units, n, d) embeddings of every unit's positives (for instance
`image_embeddings[top_positives(activations, 30)[1]]`), and are vectorised over units.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.core.validate import check_positive_int


def check_examples(examples: Any) -> Tensor:
    """A finite (units, n >= 2, d) float tensor, rows normalised to unit length."""
    if not isinstance(examples, Tensor) or examples.ndim != 3 or not examples.is_floating_point():
        raise ValueError(f"examples must be a (units, n, d) float tensor, got {getattr(examples, 'shape', examples)!r}")
    if examples.shape[1] < 2 or not torch.isfinite(examples).all():
        raise ValueError(f"examples must hold at least 2 finite examples per unit, got shape {tuple(examples.shape)}")
    return F.normalize(examples, dim=2)


def clarity(examples: Tensor) -> Tensor:
    """(units,) mean cosine over the n(n-1) ordered pairs of distinct examples: (||sum e_i||^2 - n) / (n(n-1))."""
    e = check_examples(examples)
    n = e.shape[1]
    return (e.sum(1).pow(2).sum(1) - n) / (n * (n - 1))


def polysemanticity(examples: Tensor, max_iter: int = 100) -> Tensor:
    """(units,) 1 - cos of the two centres of a batched 2-means (Lloyd) on every unit's examples.

    Deterministic start: the first example (the top positive) and the example farthest from
    it. A centre whose cluster empties keeps its place.
    """
    e = check_examples(examples)
    max_iter = check_positive_int("max_iter", max_iter)
    first = e[:, 0]
    farthest = torch.cdist(first[:, None], e).squeeze(1).argmax(1)
    centres = torch.stack([first, e[torch.arange(len(e)), farthest]], dim=1)  # (units, 2, d)
    assignment = None
    for _ in range(max_iter):
        new_assignment = torch.cdist(e, centres).argmin(2)  # (units, n)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        members = F.one_hot(assignment, 2).to(e.dtype)  # (units, n, 2)
        counts = members.sum(1)[..., None]  # (units, 2, 1)
        sums = members.transpose(1, 2) @ e
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return 1 - F.cosine_similarity(centres[:, 0], centres[:, 1], dim=1)
