"""SupCon and triplet losses against loop implementations, closed forms and hand-made distances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clxai_utils.train.losses import mine_semi_hard, pairwise_distances, supcon_loss, triplet_loss


# ---------------------------------------------------------------- reference implementations
def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def supcon_reference(z: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """The paper's formula, written out with explicit loops over anchors, positives and A(i)."""
    n, v, _ = z.shape
    views = [(z[i, k].double().tolist(), int(labels[i])) for i in range(n) for k in range(v)]
    per_anchor = []
    for i, (zi, yi) in enumerate(views):
        others = [j for j in range(len(views)) if j != i]
        positives = [j for j in others if views[j][1] == yi]
        if not positives:
            continue
        denom = sum(math.exp(dot(zi, views[a][0]) / tau) for a in others)
        terms = [math.log(math.exp(dot(zi, views[p][0]) / tau) / denom) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return sum(per_anchor) / len(per_anchor)


def triplet_reference(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[float, list]:
    """Loops over (a, p) and n: hardest semi-hard negative, else the anchor's hardest negative."""
    x = emb.double().tolist()
    y = labels.tolist()
    n = len(x)
    d = [[math.sqrt(sum((u - w) ** 2 for u, w in zip(x[i], x[j]))) for j in range(n)] for i in range(n)]
    losses, triplets = [], []
    for a in range(n):
        negatives = [k for k in range(n) if y[k] != y[a]]
        if not negatives:
            continue
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            semi = [k for k in negatives if d[a][p] < d[a][k] < d[a][p] + margin]
            pool = semi if semi else negatives
            neg = min(pool, key=lambda k: d[a][k])
            losses.append(max(0.0, d[a][p] - d[a][neg] + margin))
            triplets.append((a, p, neg, bool(semi)))
    return sum(losses) / len(losses), triplets


def random_unit(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ---------------------------------------------------------------- SupCon
@pytest.mark.parametrize("n_views", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_loop_reference(n_views: int, seed: int, tau: float) -> None:
    z = random_unit((7, n_views, 5), seed)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # repeated labels and a singleton
    got = supcon_loss(z, labels, temperature=tau)
    assert got.item() == pytest.approx(supcon_reference(z, labels, tau), rel=1e-10)


def test_supcon_float32_close_to_reference() -> None:
    z = random_unit((16, 2, 8), 3, dtype=torch.float32)
    labels = torch.arange(16) % 4
    assert supcon_loss(z, labels).item() == pytest.approx(supcon_reference(z, labels, 0.07), rel=1e-5)


def test_supcon_single_view_excludes_anchors_without_positive() -> None:
    z = random_unit((6, 1, 4), 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # image 5 has no positive
    got = supcon_loss(z, labels, temperature=0.2).item()
    assert got == pytest.approx(supcon_reference(z, labels, 0.2), rel=1e-10)
    # Excluding (not counting it as 0) matters: the mean over 6 anchors would differ.
    assert got != pytest.approx(supcon_reference(z, labels, 0.2) * 5 / 6, rel=1e-6)


@pytest.mark.parametrize("tau", [0.07, 0.3, 1.0])
def test_supcon_closed_form_orthogonal_images(tau: float) -> None:
    """Two images, two identical views each, on orthogonal axes.

    Each anchor sees its twin (similarity 1) and the other image's two views (similarity 0).
    Same label: all 3 are positives, loss = log(e^{1/tau} + 2) - 1/(3 tau).
    Different labels: only the twin is, loss = log(1 + 2 e^{-1/tau}).
    """
    e1, e2 = torch.eye(2, dtype=torch.float64)
    z = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    same = supcon_loss(z, torch.tensor([0, 0]), temperature=tau).item()
    diff = supcon_loss(z, torch.tensor([0, 1]), temperature=tau).item()
    assert same == pytest.approx(math.log(math.exp(1 / tau) + 2) - 1 / (3 * tau), rel=1e-12)
    assert diff == pytest.approx(math.log1p(2 * math.exp(-1 / tau)), rel=1e-12)


def test_supcon_closed_form_single_view_pair() -> None:
    """N=2, V=1, same label: A(i) = P(i) = {other}, so every log-ratio is log 1 = 0."""
    z = random_unit((2, 1, 3), 5)
    assert supcon_loss(z, torch.tensor([4, 4])).item() == pytest.approx(0.0, abs=1e-12)


def test_supcon_stable_at_tiny_temperature() -> None:
    z = random_unit((8, 2, 4), 6, dtype=torch.float32)
    loss = supcon_loss(z, torch.arange(8) % 3, temperature=1e-4)
    assert torch.isfinite(loss)


def test_supcon_gradient_flows() -> None:
    raw = torch.randn(6, 2, 5, generator=torch.Generator().manual_seed(7), requires_grad=True)
    loss = supcon_loss(F.normalize(raw, dim=-1), torch.tensor([0, 1, 0, 1, 2, 2]))
    loss.backward()
    assert torch.isfinite(raw.grad).all()
    assert raw.grad.abs().sum() > 0


def test_supcon_no_positive_anywhere_is_zero_with_gradient() -> None:
    raw = torch.randn(4, 1, 3, requires_grad=True)
    loss = supcon_loss(F.normalize(raw, dim=-1), torch.arange(4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(raw.grad, torch.zeros_like(raw))


# ---------------------------------------------------------------- distances
def test_pairwise_distances_match_cdist_and_have_safe_gradient() -> None:
    emb = random_unit((6, 4), 8)
    emb = torch.cat([emb, emb[:1]]).requires_grad_(True)  # row 6 duplicates row 0
    dist = pairwise_distances(emb)
    assert (dist - torch.cdist(emb.detach(), emb.detach())).abs().max() < 1e-7
    assert dist[0, 6].item() == 0.0 and torch.all(dist.diagonal() == 0)
    dist.sum().backward()
    assert torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- mining on hand-made distances
def symmetric(n: int, entries: dict[tuple[int, int], float], fill: float = 5.0) -> torch.Tensor:
    d = torch.full((n, n), fill, dtype=torch.float64)
    d.fill_diagonal_(0.0)
    for (i, j), value in entries.items():
        d[i, j] = d[j, i] = value
    return d


def as_set(trip) -> set[tuple[int, int, int, bool]]:
    return {(int(a), int(p), int(n), bool(s)) for a, p, n, s in zip(*trip)}


def test_mining_picks_hardest_semi_hard_and_skips_anchors_without_positive() -> None:
    # Labels: only images 0 and 1 share a label; anchors 2, 3, 4 have no positive.
    labels = torch.tensor([0, 0, 1, 2, 3])
    positive = {(0, 1): 0.5}
    from_0 = {(0, 2): 0.7, (0, 3): 0.6, (0, 4): 0.9}  # band (0.5, 0.8): 2 and 3, 3 is harder
    from_1 = {(1, 2): 0.65, (1, 3): 0.85, (1, 4): 0.55}  # band (0.5, 0.8): 2 and 4, 4 is harder
    dist = symmetric(5, {**positive, **from_0, **from_1})
    assert as_set(mine_semi_hard(dist, labels, margin=0.3)) == {(0, 1, 3, True), (1, 0, 4, True)}


def test_mining_falls_back_per_pair_not_per_batch() -> None:
    # Anchor 0 has positives 1 (d=0.5) and 2 (d=1.0); negatives 3 (d=0.75) and 4 (d=0.3).
    labels = torch.tensor([0, 0, 0, 1, 2])
    positives = {(0, 1): 0.5, (0, 2): 1.0, (1, 2): 0.2}
    negatives = {(0, 3): 0.75, (0, 4): 0.3, (1, 3): 1.5, (1, 4): 1.6, (2, 3): 1.7, (2, 4): 1.8}
    dist = symmetric(5, {**positives, **negatives})
    trip = as_set(mine_semi_hard(dist, labels, margin=0.3))
    assert (0, 1, 3, True) in trip  # 0.5 < 0.75 < 0.8: semi-hard
    assert (0, 2, 4, False) in trip  # band (1.0, 1.3) empty: anchor's hardest negative, 4
    assert len(trip) == 6  # every ordered positive pair of {0, 1, 2} gets one triplet
    # Pairs (1, 2) and (2, 1) have d(a,p)=0.2 and all negatives beyond d(a,p)+m: hardest fallback.
    assert (1, 2, 3, False) in trip and (2, 1, 3, False) in trip


def test_mining_lower_band_edge_is_exclusive() -> None:
    labels = torch.tensor([0, 0, 1, 2])
    dist = symmetric(4, {(0, 1): 0.5, (0, 2): 0.5, (0, 3): 0.7, (1, 2): 3.0, (1, 3): 3.0})
    # d(0,2) == d(0,1) is not semi-hard; 3 at 0.7 is.
    assert (0, 1, 3, True) in as_set(mine_semi_hard(dist, labels, margin=0.3))


def test_mining_empty_when_no_valid_triplet() -> None:
    dist = symmetric(3, {(0, 1): 0.4, (0, 2): 0.5, (1, 2): 0.6})
    assert as_set(mine_semi_hard(dist, torch.tensor([0, 1, 2]), 0.3)) == set()  # no positives
    assert as_set(mine_semi_hard(dist, torch.tensor([7, 7, 7]), 0.3)) == set()  # no negatives


# ---------------------------------------------------------------- triplet loss
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_triplet_loss_matches_loop_reference(seed: int) -> None:
    emb = random_unit((14, 6), seed)
    labels = torch.randint(0, 3, (14,), generator=torch.Generator().manual_seed(seed))
    expected, ref_triplets = triplet_reference(emb, labels, 0.3)
    assert triplet_loss(emb, labels, margin=0.3).item() == pytest.approx(expected, rel=1e-9)
    mined = as_set(mine_semi_hard(pairwise_distances(emb), labels, 0.3))
    assert mined == set(ref_triplets)


def mining_reference(dist: torch.Tensor, labels: torch.Tensor, key_labels: torch.Tensor, margin: float, offset: int):
    """Loops over (a, p) and the columns of a (rows x cols) distance matrix; ties go to the lower column."""
    d, y, k_y = dist.tolist(), labels.tolist(), key_labels.tolist()
    triplets = set()
    for a, row in enumerate(d):
        negatives = [k for k in range(len(row)) if k_y[k] != y[a]]
        for p in range(len(row)):
            if p == offset + a or k_y[p] != y[a] or not negatives:
                continue
            semi = [k for k in negatives if row[p] < row[k] < row[p] + margin]
            neg = min(semi or negatives, key=lambda k: row[k])  # min keeps the first of equal keys
            triplets.add((a, p, neg, bool(semi)))
    return triplets


@pytest.mark.parametrize("seed", range(6))
def test_mining_matches_loop_reference_with_ties_and_shards(seed: int) -> None:
    """Distances on a coarse grid (many ties, band edges hit exactly), square and as a shard of a batch."""
    g = torch.Generator().manual_seed(seed)
    key_labels = torch.randint(0, 4, (24,), generator=g)
    dist = torch.randint(0, 12, (24, 24), generator=g).double() / 10  # steps of 0.1, margin 0.3; float64 as Python
    dist = (dist + dist.T) / 2
    dist.fill_diagonal_(0.0)
    assert as_set(mine_semi_hard(dist, key_labels, 0.3)) == mining_reference(dist, key_labels, key_labels, 0.3, 0)
    rows = slice(8, 16)  # anchors 8-15 of the batch: offset 8
    got = mine_semi_hard(dist[rows], key_labels[rows], 0.3, key_labels=key_labels, offset=8)
    assert as_set(got) == mining_reference(dist[rows], key_labels[rows], key_labels, 0.3, 8)


def test_triplet_reference_cases_exercise_both_mining_branches() -> None:
    """Guards the test above: its random batches contain semi-hard and fallback triplets."""
    flags = [
        s
        for seed in range(4)
        for *_, s in triplet_reference(
            random_unit((14, 6), seed), torch.randint(0, 3, (14,), generator=torch.Generator().manual_seed(seed)), 0.3
        )[1]
    ]
    assert any(flags) and not all(flags)


def test_triplet_loss_float32_and_gradient() -> None:
    raw = torch.randn(12, 8, generator=torch.Generator().manual_seed(9), requires_grad=True)
    labels = torch.arange(12) % 3
    emb = F.normalize(raw, dim=1)
    loss = triplet_loss(emb, labels)
    assert loss.item() == pytest.approx(triplet_reference(emb.detach(), labels, 0.3)[0], rel=1e-5)
    loss.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0


@pytest.mark.parametrize("labels", [torch.arange(5), torch.zeros(5, dtype=torch.long)])
def test_triplet_loss_without_triplets_is_zero_with_gradient(labels: torch.Tensor) -> None:
    emb = random_unit((5, 4), 10).requires_grad_(True)
    loss = triplet_loss(emb, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: supcon_loss(torch.zeros(4, 8), torch.zeros(4)), "z"),
        (lambda: supcon_loss(torch.zeros(1, 1, 8), torch.zeros(1)), "z"),
        (lambda: supcon_loss(random_unit((4, 2, 3), 0), torch.zeros(3)), "labels"),
        (lambda: supcon_loss(random_unit((4, 2, 3), 0), torch.zeros(4, 1)), "labels"),
        (lambda: supcon_loss(random_unit((4, 2, 3), 0), torch.zeros(4), temperature=0.0), "temperature"),
        (lambda: supcon_loss(random_unit((4, 2, 3), 0), torch.zeros(4), temperature=-0.1), "temperature"),
        (lambda: triplet_loss(torch.zeros(4, 2, 3), torch.zeros(4)), "emb"),
        (lambda: triplet_loss(torch.zeros(4, 3), torch.zeros(5)), "labels"),
        (lambda: triplet_loss(torch.zeros(4, 3), torch.zeros(4), margin=0.0), "margin"),
        (lambda: triplet_loss(torch.zeros(4, 3), torch.zeros(4), margin=-1.0), "margin"),
        (lambda: pairwise_distances(torch.zeros(4)), "emb"),
        (lambda: mine_semi_hard(torch.zeros(4, 3), torch.zeros(4), 0.3), "dist"),
        (lambda: mine_semi_hard(torch.zeros(4, 4), torch.zeros(3), 0.3), "labels"),
        (lambda: mine_semi_hard(torch.zeros(4, 4), torch.zeros(4), 0.0), "margin"),
    ],
)
def test_bad_input_raises_naming_the_parameter(call, param: str) -> None:
    with pytest.raises(ValueError, match=rf"^{param}\b"):
        call()


def test_non_numeric_temperature_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="temperature"):
        supcon_loss(random_unit((4, 2, 3), 0), torch.zeros(4), temperature="0.1")  # type: ignore[arg-type]
