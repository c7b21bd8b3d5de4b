"""Paired statistics: alignment on image id, Wilcoxon with rank-biserial r, Holm, seed-level tests."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from fixtures import facets_block
from scipy import stats as sps

from clxai_utils.analysis import stats
from clxai_utils.core.registry import METRICS


def facets_table(values: dict[tuple[int, str, str], np.ndarray], n_images: int) -> pd.DataFrame:
    """A facets table in the 06_metrics schema; `values[(seed, loss, method)]` fills every metric column."""
    nan = np.full(n_images, np.nan)
    frames = [
        facets_block(
            seed, loss, method, {m: nan if (m == "contrastivity_ssim" and method == "eigencam") else v for m in METRICS}
        )
        for (seed, loss, method), v in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


def test_paired_aligns_on_keys_not_row_order() -> None:
    seeds, n = (0, 1), 8
    values = {
        (s, loss, m): np.arange(n) * (10.0 if loss == "supcon" else 1.0) + 100 * s + (0.5 if m == "eigencam" else 0)
        for s in seeds
        for loss in ("ce", "supcon")
        for m in ("gradcam", "eigencam")
    }
    table = facets_table(values, n)
    gone = (table["seed"] == 0) & (table["loss"] == "supcon") & (table["image_id"] == 3)
    table = table[~gone].copy()
    table.loc[(table["seed"] == 1) & (table["loss"] == "ce") & (table["image_id"] == 5), "pf_auc"] = np.nan
    shuffled = table.sample(frac=1.0, random_state=0)

    sample = stats.paired(shuffled, "pf_auc", "loss", "supcon", "ce", where={"method": "gradcam"})

    expected_keys = [(s, i) for s in seeds for i in range(n) if (s, i) not in {(0, 3), (1, 5)}]
    assert list(zip(sample.keys["seed"], sample.keys["image_id"])) == expected_keys
    np.testing.assert_array_equal(sample.a, [10.0 * i + 100 * s for s, i in expected_keys])
    np.testing.assert_array_equal(sample.b, [1.0 * i + 100 * s for s, i in expected_keys])
    assert (sample.n_pairs, sample.n_unmatched, sample.n_nan, sample.n_dropped) == (14, 1, 1, 2)


def test_paired_rejects_duplicate_keys_and_unknown_conditions() -> None:
    table = facets_table({(0, "ce", "gradcam"): np.ones(4), (0, "supcon", "gradcam"): np.zeros(4)}, 4)
    duplicated = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="share their keys"):
        stats.paired(duplicated, "pf_auc", "loss", "supcon", "ce")
    with pytest.raises(ValueError, match="no rows with loss == 'triplet'"):
        stats.paired(table, "pf_auc", "loss", "triplet", "ce")
    with pytest.raises(ValueError, match="lacks column"):
        stats.paired(table, "not_a_metric", "loss", "supcon", "ce")


@pytest.mark.parametrize(
    ("diff", "r"),
    [
        ([1, -2, 3, 4, 0], (8 - 2) / 10),  # ranks 1..4 of |d| after dropping the zero: W+ = 1+3+4, W- = 2
        ([1, -1, 2, 2], (8.5 - 1.5) / 10),  # ties: |d| ranks 1.5, 1.5, 3.5, 3.5
        ([-1, -2, -3], -1.0),
        ([0, 0], np.nan),
    ],
)
def test_rank_biserial_by_hand(diff: list[float], r: float) -> None:
    np.testing.assert_allclose(stats.rank_biserial(np.array(diff, dtype=float)), r)


def test_wilcoxon_matches_scipy_and_rank_biserial_loop() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = x - 0.3 + rng.normal(scale=0.5, size=40)
    y[:3] = x[:3]  # zero differences are discarded
    result = stats.wilcoxon_paired(x, y)
    reference = sps.wilcoxon(x, y, zero_method="wilcox")
    assert result.p == pytest.approx(reference.pvalue) and result.statistic == reference.statistic
    d = (x - y)[x != y]
    ranks = sps.rankdata(np.abs(d))
    w_plus = sum(rank for rank, di in zip(ranks, d) if di > 0)
    w_minus = sum(rank for rank, di in zip(ranks, d) if di < 0)
    assert result.r == pytest.approx((w_plus - w_minus) / (w_plus + w_minus))
    assert result.r > 0 and result.median_diff == pytest.approx(np.median(x - y))
    assert (result.n, result.n_nonzero) == (40, 37)


def test_wilcoxon_with_too_few_nonzero_pairs_gives_nan_with_reason() -> None:
    result = stats.wilcoxon_paired([1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 6, 7])
    assert np.isnan(result.p) and "5 non-zero" in result.reason
    assert result.r == 1.0
    empty = stats.wilcoxon_paired([], [])
    assert empty.reason == "no pairs" and np.isnan(empty.r) and np.isnan(empty.median_diff)
    with pytest.raises(ValueError, match="NaN"):
        stats.wilcoxon_paired([1.0, np.nan], [0.0, 1.0])


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # NaN is passed through and not counted: m = 2
    np.testing.assert_allclose(stats.holm([np.nan, 0.02, 0.6]), [np.nan, 0.04, 0.6])
    np.testing.assert_allclose(stats.holm([0.3, 0.5]), [0.6, 0.6])
    np.testing.assert_allclose(stats.holm([0.4, 0.5, 0.9]), [1.0, 1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])


def test_holm_is_monotone_in_the_raw_p_values() -> None:
    p = np.random.default_rng(2).uniform(0, 0.2, size=30)
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all() and (adjusted >= p).all() and (adjusted <= 1).all()


def test_cross_seed_means_and_tests() -> None:
    n = 10
    shift = {0: 0.1, 1: 0.3, 2: 0.2}
    values = {(s, "ce", "gradcam"): np.linspace(0, 1, n) + s for s in shift}
    values |= {(s, "supcon", "gradcam"): np.linspace(0, 1, n) + s - d for s, d in shift.items()}
    sample = stats.paired(facets_table(values, n), "pf_auc", "loss", "supcon", "ce")
    result = stats.cross_seed(sample)
    seed_a = [np.mean(np.linspace(0, 1, n) + s - d) for s, d in shift.items()]
    seed_b = [np.mean(np.linspace(0, 1, n) + s) for s in shift]
    reference = sps.ttest_rel(seed_a, seed_b)
    assert result.n_seeds == 3 and result.mean_diff == pytest.approx(-0.2)
    assert result.p_t == pytest.approx(reference.pvalue) and result.t == pytest.approx(reference.statistic)
    assert result.p_wilcoxon == pytest.approx(0.25)  # the floor of an exact test on 3 seeds

    one = stats.cross_seed(
        stats.paired(facets_table({k: v for k, v in values.items() if k[0] == 0}, n), "pf_auc", "loss", "supcon", "ce")
    )
    assert one.reason == "one seed" and np.isnan(one.p_t) and one.mean_diff == pytest.approx(-0.1)


def synthetic_comparison_facets(n: int = 60) -> pd.DataFrame:
    """SupCon = CE - 0.1 (+ noise) on every metric, triplet = CE exactly, two seeds, two methods."""
    rng = np.random.default_rng(3)
    values = {}
    for seed, method in itertools.product((0, 1), ("gradcam", "eigencam")):
        base = rng.uniform(0.3, 0.7, n)
        values[(seed, "ce", method)] = base
        values[(seed, "supcon", method)] = base - 0.1 + rng.normal(scale=0.01, size=n)
        values[(seed, "triplet", method)] = base
    return facets_table(values, n)


def test_compare_losses_rows_directions_and_holm() -> None:
    table = stats.compare_losses(synthetic_comparison_facets(), methods=["gradcam", "eigencam"])
    # 2 methods x 7 metrics x 3 pairs, minus eigencam's contrastivity (3 pairs)
    assert len(table) == 2 * 7 * 3 - 3
    assert not ((table["method"] == "eigencam") & (table["metric"] == "contrastivity_ssim")).any()
    np.testing.assert_allclose(table["p_holm"], stats.holm(table["p"]))

    supcon = table[(table["a"] == "supcon") & (table["b"] == "ce")].set_index(["method", "metric"])
    assert (supcon["n"] == 120).all() and (supcon["r"] == -1).all() and (supcon["p_holm"] < 1e-6).all()
    for (_, metric), row in supcon.iterrows():  # supcon is lower: better exactly for the "lower" metrics
        assert row["winner"] == ("supcon" if METRICS[metric].better == "lower" else "ce")
    tie = table[(table["a"] == "triplet") & (table["b"] == "ce")]
    assert (tie["direction"] == "no difference").all() and tie["p"].isna().all()
    assert (tie["reason"] == "0 non-zero paired differences (< 6)").all()


def test_compare_methods_skips_contrastivity_and_pairs_on_image() -> None:
    table = stats.compare_methods(synthetic_comparison_facets(), metrics=["pf_auc", "contrastivity_ssim"])
    assert set(table["metric"]) == {"pf_auc"} and sorted(table["loss"]) == ["ce", "supcon", "triplet"]
    assert (table["a"] == "gradcam").all() and (table["n"] == 120).all()
    assert (table["seed_reason"] == "").all() and (table["n_seeds"] == 2).all()
    with pytest.raises(ValueError, match="an entry of metrics='accuracy' is not allowed; choose one of: pf_auc, "):
        stats.compare_methods(synthetic_comparison_facets(), metrics=["accuracy"])
