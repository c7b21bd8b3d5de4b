"""Metric-learning losses: supervised contrastive (SupCon) and semi-hard triplet.

Both follow the paper's definitions (docs/method.md, "Losses") rather than the authors' code,
which hard-coded two views in SupCon and, for the triplet loss, averaged every semi-hard
triplet of the batch with a batch-wide fallback on raw backbone features. Mining is a
separate function on a distance matrix so that it can be checked on hand-made distances.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clxai_utils.core.validate import check_positive


def _check_ndim(name: str, value: Tensor, ndim: int, layout: str) -> None:
    """Require a tensor with `ndim` dimensions; `layout` names them in the error, e.g. "(N, D)"."""
    if not isinstance(value, Tensor) or value.ndim != ndim:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a tensor of shape {layout}, got {got}")


def _check_labels(labels: Tensor, n: int, against: str) -> None:
    """Require one label per row of `against` (shape (N,))."""
    _check_ndim("labels", labels, 1, "(N,)")
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries but {against} has N = {n} rows")


def _check_keys(keys: Tensor, key_labels: Tensor | None, offset: int, rows: int, dim: int) -> Tensor:
    """Validate the global batch a shard's anchors are compared with; returns its labels."""
    _check_ndim("keys", keys, 2, "(M, D)")
    if keys.shape[1] != dim:
        raise ValueError(f"keys has dimension D = {keys.shape[1]} but the anchors have D = {dim}")
    if key_labels is None:
        raise ValueError("key_labels must be given with keys (one label per row of keys)")
    _check_labels(key_labels, keys.shape[0], "keys")
    if not 0 <= offset <= keys.shape[0] - rows:
        raise ValueError(f"offset must place the {rows} anchors inside the {keys.shape[0]} keys, got {offset}")
    return key_labels


def _self_mask(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """(rows, cols) mask of each anchor's own column (offset + row) among the keys."""
    if rows == cols and offset == 0:
        return torch.eye(rows, dtype=torch.bool, device=device)
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    index = torch.arange(rows, device=device)
    mask[index, offset + index] = True
    return mask


def _label_counts(labels: Tensor) -> Tensor:
    """How often each entry's label occurs in `labels` (itself included)."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse]


def supcon_loss(
    z: Tensor,
    labels: Tensor,
    temperature: float = 0.07,
    *,
    keys: Tensor | None = None,
    key_labels: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Supervised contrastive loss of Khosla et al. (2020), the L_out form, for any V views.

    `z` is (N, V, D): N images, V views each, L2-normalised projections (the caller
    normalises; this function does not). Every one of the N*V views is an anchor i;
    A(i) = all other views, P(i) = those with the label of i. Per anchor,
    -1/|P(i)| sum_{p in P(i)} log softmax_{a in A(i)}(z_i.z_a / tau)[p], averaged over anchors.

    With V >= 2 every anchor has a positive (its own other views). With V == 1 an image
    whose label occurs once in the batch has |P(i)| = 0: such anchors are left out of the
    mean (their term is undefined). If no anchor has a positive the loss is a zero that
    still carries a gradient, so a training step never fails on a degenerate batch.

    Sharded batches (several processes, `clxai_utils.train.distributed`): `keys` (M, D) are
    the views of the whole batch, flattened, `key_labels` their labels, and the anchors are
    the rows offset .. offset + N*V - 1 of `keys`. The result is this shard's part of the
    whole batch's loss: the sum of its anchors' terms over the number of anchors with a
    positive in the whole batch, so the parts of all shards add up to the loss above.

    There is no `base_temperature` factor: the loss is exactly the paper's formula, i.e.
    tau / base_tau = 1 in the reference implementation. The log-softmax is computed with
    logsumexp over a row whose self-similarity is masked to -inf, which is stable at small tau.
    """
    _check_ndim("z", z, 3, "(N, V, D)")
    n_images, n_views, dim = z.shape
    _check_labels(labels, n_images, "z")
    check_positive("temperature", temperature)
    feats = z.reshape(n_images * n_views, dim)
    view_labels = labels.repeat_interleave(n_views)
    if keys is None:
        keys, key_labels = feats, view_labels
    else:
        key_labels = _check_keys(keys, key_labels, offset, feats.shape[0], dim)
    if keys.shape[0] < 2:
        raise ValueError(f"z must hold at least 2 views in total (N * V >= 2), got N={n_images}, V={n_views}")

    self_mask = _self_mask(feats.shape[0], keys.shape[0], offset, z.device)
    logits = (feats @ keys.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    positives = (view_labels[:, None] == key_labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    # where(), not a product: the masked diagonal holds -inf and 0 * -inf would be NaN.
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    has_pos = n_pos > 0
    anchors_with_positive = (_label_counts(key_labels) > 1).sum()  # over the whole batch
    if not bool(anchors_with_positive > 0):
        return z.sum() * 0.0
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).sum() / anchors_with_positive


def pairwise_distances(emb: Tensor, eps: float = 1e-12, *, keys: Tensor | None = None, offset: int = 0) -> Tensor:
    """Euclidean distances (N, M) from the rows of `emb` (N, D) to those of `keys` (M, D; default `emb`).

    Built from the Gram matrix (memory N*M, not N*M*D, so ResNet-50's 2048-d features at
    batch 512 still fit). sqrt has an infinite derivative at 0, so entries whose squared
    distance is <= `eps` (each row's own column offset + i, duplicate points) are set to
    exactly 0 with a zero gradient instead of producing NaN in backward.
    """
    _check_ndim("emb", emb, 2, "(N, D)")
    if keys is None:
        keys = emb
    else:
        _check_ndim("keys", keys, 2, "(M, D)")
    sq_rows = (emb * emb).sum(dim=1)
    sq_keys = sq_rows if keys is emb else (keys * keys).sum(dim=1)
    sq = (sq_rows[:, None] + sq_keys[None, :] - 2.0 * emb @ keys.T).clamp_min(0.0)
    zero = (sq <= eps) | _self_mask(emb.shape[0], keys.shape[0], offset, emb.device)
    return torch.sqrt(sq.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


class Triplets(NamedTuple):
    """Index tensors of mined triplets (all shape (T,)) and which were semi-hard.

    `anchor` indexes the rows of the distance matrix, `positive` and `negative` its columns.
    """

    anchor: Tensor
    positive: Tensor
    negative: Tensor
    semi_hard: Tensor


def mine_semi_hard(
    dist: Tensor, labels: Tensor, margin: float, *, key_labels: Tensor | None = None, offset: int = 0
) -> Triplets:
    """One negative per anchor-positive pair: the hardest semi-hard one, else the hardest.

    For every pair (a, p), a != p with the same label, the semi-hard negatives are those n
    of another label with d(a,p) < d(a,n) < d(a,p) + margin (Schroff et al. 2015); the one
    with the smallest d(a,n) is taken. A pair without one falls back, on its own, to the
    anchor's hardest negative (smallest d(a,n)), as in Hermans et al. (2017); other pairs of
    the same anchor keep their semi-hard negative. Pairs whose anchor has no negative are
    dropped. Only indices are returned, computed without gradient.

    Each anchor's negatives are sorted once (stably, so ties keep column order, as argmin
    would); a binary search then finds, for every column, the nearest negative beyond it.
    That is O(N M log M) work, where masking a (pairs x M) matrix was O(N M^2): at a batch
    of 256 it is what made a triplet step slower than a CE step.

    `dist` is (N, N), or (N, M) for a shard's anchors against the whole batch: then
    `key_labels` (M,) label the columns and anchor i sits at column offset + i.
    """
    _check_ndim("dist", dist, 2, "(N, N)" if key_labels is None else "(N, M)")
    if key_labels is None:
        if dist.shape[0] != dist.shape[1]:
            raise ValueError(f"dist must be a square (N, N) tensor, got {tuple(dist.shape)}")
        key_labels = labels
    else:
        _check_labels(key_labels, dist.shape[1], "the columns of dist")
    _check_labels(labels, dist.shape[0], "dist")
    check_positive("margin", margin)

    with torch.no_grad():
        d = dist.detach().contiguous()
        same = labels[:, None] == key_labels[None, :]
        own = _self_mask(d.shape[0], d.shape[1], offset, d.device)
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        neg_sorted, neg_order = torch.where(same, inf, d).sort(dim=1, stable=True)  # negatives first, nearest first
        beyond = torch.searchsorted(neg_sorted, d, right=True).clamp_max(d.shape[1] - 1)  # first negative > d(a, j)
        nearest_beyond = neg_sorted.gather(1, beyond)
        in_band = (nearest_beyond > d) & (nearest_beyond < d + margin)
        anchor, positive = (same & ~own).nonzero(as_tuple=True)
        semi_hard = in_band[anchor, positive]
        negative = torch.where(semi_hard, neg_order[anchor, beyond[anchor, positive]], neg_order[anchor, 0])
        keep = neg_sorted[anchor, 0] < inf  # the anchor has a negative
    return Triplets(anchor[keep], positive[keep], negative[keep], semi_hard[keep])


def triplet_loss(
    emb: Tensor,
    labels: Tensor,
    margin: float = 0.3,
    *,
    keys: Tensor | None = None,
    key_labels: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Triplet loss mean_{(a,p,n)} max(0, d(a,p) - d(a,n) + margin) over semi-hard-mined triplets.

    `emb` (N, D) should be the L2-normalised 128-d projection-head output, as the paper's
    head produces: on the unit sphere distances lie in [0, 2], so the fixed margin 0.3 has a
    fixed meaning. (The authors' code used raw backbone features, where the network can grow
    the feature norm until any margin is met.) Several views per image: flatten them into
    rows and repeat the labels before calling. Triplets come from `mine_semi_hard`, one per
    anchor-positive pair. A batch with no valid triplet (all labels distinct, or all equal)
    gives a zero that still carries a gradient, so the training step needs no special case.

    Sharded batches: with `keys`, `key_labels` (the whole batch) and `offset` (as in
    `supcon_loss`), the anchors are this shard's rows, positives and negatives come from the
    whole batch, and the result is this shard's part: its triplets' sum over the number of
    triplets of the whole batch.
    """
    _check_ndim("emb", emb, 2, "(N, D)")
    _check_labels(labels, emb.shape[0], "emb")
    check_positive("margin", margin)
    if keys is None:
        keys, key_labels = emb, labels
    else:
        key_labels = _check_keys(keys, key_labels, offset, emb.shape[0], emb.shape[1])

    dist = pairwise_distances(emb, keys=keys, offset=offset)
    trip = mine_semi_hard(dist, labels, margin, key_labels=key_labels, offset=offset)
    same = _label_counts(key_labels)
    n_triplets = ((same - 1) * (same < key_labels.shape[0])).sum()  # pairs whose anchor has a negative
    if trip.anchor.numel() == 0:
        return emb.sum() * 0.0
    d_ap = dist[trip.anchor, trip.positive]
    d_an = dist[trip.anchor, trip.negative]
    return torch.relu(d_ap - d_an + margin).sum() / n_triplets
