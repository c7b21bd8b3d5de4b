"""Paired statistics behind the loss and method comparisons of 10_analysis (no file I/O).

Every comparison is paired: two conditions (e.g. loss "supcon" vs "ce") are matched on
the same test image of the same run (dataset, profile, seed, image_id), by a join on
those keys, never by row order. The authors' script paired rows by position after
dropping NaNs independently in each column, which silently mis-pairs images; it also
used no multiple-comparison correction and a single seed. Here:

- image level: two-sided Wilcoxon signed-rank test on the paired differences, with the
  matched-pairs rank-biserial correlation as effect size (a t-test would assume normal
  differences, which bounded scores such as SSIM or the 0/1 pointing game are not);
- seed level: the per-seed means of both conditions, paired by seed, compared with a
  paired t-test and an exact Wilcoxon test. The image-level test treats the trained
  models as fixed; only the seed-level test speaks to the randomness of training;
- Holm-Bonferroni over the whole family of comparisons a table reports.

The image-level test pools the pairs of all seeds: it asks whether the trained models
differ on these test images; with a single seed it is the only test available.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from clxai_utils.core.registry import METHOD_REGISTRY, METRICS, Metric, undefined_metrics
from clxai_utils.core.validate import check_choices

KEYS = ("dataset", "profile", "seed", "image_id")
RUN_KEYS = ("dataset", "profile", "seed")
LOSS_PAIRS = (("supcon", "ce"), ("triplet", "ce"), ("supcon", "triplet"))
METHOD_PAIRS = (("gradcam", "eigencam"),)
# An exact two-sided Wilcoxon test on n non-zero pairs cannot give p below 2 / 2**n:
# 0.0625 for n = 5, 0.03125 for n = 6, so fewer than 6 pairs can never reach p < 0.05.
MIN_NONZERO_PAIRS = 6
ZERO_METHOD = "wilcox"


@dataclass(frozen=True)
class PairedSample:
    """Values of one metric for conditions a and b on the same units, aligned row by row.

    `keys` holds the key values of each pair in the order of `a` and `b`. `n_unmatched`
    counts rows of either condition without a partner, `n_nan` matched pairs dropped
    because either value is NaN (e.g. an all-zero map or an image not scored on coherence).
    """

    a: np.ndarray
    b: np.ndarray
    keys: pd.DataFrame
    n_unmatched: int
    n_nan: int

    @property
    def n_pairs(self) -> int:
        return len(self.a)

    @property
    def n_dropped(self) -> int:
        return self.n_unmatched + self.n_nan


@dataclass(frozen=True)
class WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of x - y, with its effect size.

    `statistic` is scipy's W = min(W+, W-); `r` is the matched-pairs rank-biserial
    correlation (W+ - W-) / (W+ + W-): +1 when every x exceeds its y, -1 when every y
    exceeds its x. `reason` says why `p` is NaN, and is empty otherwise.
    """

    n: int
    n_nonzero: int
    median_diff: float
    mean_diff: float
    statistic: float
    p: float
    r: float
    reason: str = ""


@dataclass(frozen=True)
class SeedComparison:
    """Per-seed means of a and b (over the paired images), compared across seeds.

    With 3 seeds an exact two-sided Wilcoxon test cannot go below p = 2 / 2**3 = 0.25
    (0.0625 with 5), so the paired t-test on the seed means is reported alongside it.
    """

    n_seeds: int
    mean_diff: float
    t: float
    p_t: float
    p_wilcoxon: float
    reason: str = ""


def _check_columns(table: pd.DataFrame, columns: Iterable[str], name: str = "table") -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(table.columns)}")


def _subset(table: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    """Rows of `table` whose columns equal the values in `where`."""
    if not where:
        return table
    _check_columns(table, where, "table (for `where`)")
    mask = np.logical_and.reduce([(table[col] == value).to_numpy() for col, value in where.items()])
    return table[mask]


def _condition(table: pd.DataFrame, by: str, value: Any, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """The key and metric columns of one condition; a repeated key is an error."""
    rows = table.loc[table[by] == value, [*keys, *metrics]]
    if rows.empty:
        present = sorted(map(str, table[by].unique()))
        raise ValueError(f"no rows with {by} == {value!r} in the selected subset; present: {present}")
    duplicated = rows.duplicated(keys, keep=False)
    if duplicated.any():
        example = rows.loc[duplicated, keys].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} rows with {by} == {value!r} share their keys {keys}, e.g. {example}")
    return rows


def _align(
    table: pd.DataFrame, metrics: list[str], by: str, a: Any, b: Any, keys: list[str], where: Mapping[str, Any] | None
) -> tuple[pd.DataFrame, int]:
    """Rows of a and b joined on `keys` (columns <metric>_a, <metric>_b), sorted by key,
    and the number of rows of either condition without a partner."""
    _check_columns(table, [*keys, *metrics, by])
    if a == b:
        raise ValueError(f"a and b must be different conditions of {by!r}, got {a!r} twice")
    subset = _subset(table, where)
    left = _condition(subset, by, a, keys, metrics)
    right = _condition(subset, by, b, keys, metrics)
    # an outer merge sorts the keys lexicographically and tells which rows found a partner
    merged = left.merge(right, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    matched = merged[merged["_merge"] == "both"]
    return matched, len(merged) - len(matched)


def _sample(matched: pd.DataFrame, metric: str, keys: list[str], n_unmatched: int) -> PairedSample:
    """The pairs of one metric from `_align`'s join, without those holding a NaN."""
    values = matched[[f"{metric}_a", f"{metric}_b"]].to_numpy(dtype=float)
    finite = ~np.isnan(values).any(axis=1)
    return PairedSample(
        a=values[finite, 0],
        b=values[finite, 1],
        keys=matched.loc[finite, keys].reset_index(drop=True),
        n_unmatched=n_unmatched,
        n_nan=int((~finite).sum()),
    )


def paired(
    table: pd.DataFrame,
    metric: str,
    by: str,
    a: Any,
    b: Any,
    keys: Sequence[str] = KEYS,
    where: Mapping[str, Any] | None = None,
) -> PairedSample:
    """Align `metric` of rows with `by == a` and `by == b` on `keys`, within the subset `where`.

    Rows are matched by a join on the keys, so the order of the table is irrelevant; pairs
    are sorted by key. Rows without a partner and pairs with a NaN value are dropped and
    counted. A key repeated within a condition is an error.
    """
    keys = list(keys)
    matched, n_unmatched = _align(table, [metric], by, a, b, keys, where)
    return _sample(matched, metric, keys, n_unmatched)


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-) of non-zero differences.

    Zero differences are discarded, as in the Wilcoxon test with zero_method="wilcox";
    tied |differences| get their average rank. NaN when every difference is zero.
    """
    from scipy import stats  # imported here: scipy.stats takes 1-2 s, and 10 uses only holm and permutation_test

    diff = np.asarray(diff, dtype=float)
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return float("nan")
    ranks = stats.rankdata(np.abs(nonzero))
    w_plus, w_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return float((w_plus - w_minus) / (w_plus + w_minus))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def _as_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("x and y must not contain NaN; build them with `paired`, which drops NaN pairs")
    return x, y


def wilcoxon_paired(x: Any, y: Any) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of the paired differences x - y.

    Zero differences are dropped before ranking (zero_method="wilcox"), and the
    rank-biserial r is computed on the same non-zero differences, so test and effect size
    agree. For the 0/1 pointing game this makes the test a sign test on the discordant
    images (hit under one condition, miss under the other), like McNemar's test.
    scipy picks the exact null distribution for small samples without ties and the
    normal approximation otherwise. Fewer than MIN_NONZERO_PAIRS non-zero differences
    give p = NaN with a reason rather than a p value that could never be small.
    """
    from scipy import stats  # imported here: scipy.stats takes 1-2 s, and 10 uses only holm and permutation_test

    x, y = _as_pairs(x, y)
    diff = x - y
    n_nonzero = int(np.count_nonzero(diff))
    base = partial(
        WilcoxonResult,
        n=len(diff),
        n_nonzero=n_nonzero,
        median_diff=_median(diff),
        mean_diff=float(diff.mean()) if len(diff) else float("nan"),
        r=rank_biserial(diff),
    )
    if n_nonzero < MIN_NONZERO_PAIRS:
        reason = f"{n_nonzero} non-zero paired differences (< {MIN_NONZERO_PAIRS})" if len(diff) else "no pairs"
        return base(statistic=float("nan"), p=float("nan"), reason=reason)
    result = stats.wilcoxon(diff, zero_method=ZERO_METHOD, alternative="two-sided")
    return base(statistic=float(result.statistic), p=float(result.pvalue))


def seed_means(sample: PairedSample, run_keys: Sequence[str] = RUN_KEYS) -> pd.DataFrame:
    """Mean of a and b per run (one row per seed), over the images paired in that run."""
    _check_columns(sample.keys, run_keys, "sample.keys")
    frame = sample.keys[list(run_keys)].assign(a=sample.a, b=sample.b)
    return frame.groupby(list(run_keys), as_index=False)[["a", "b"]].mean()


def cross_seed(sample: PairedSample, run_keys: Sequence[str] = RUN_KEYS) -> SeedComparison:
    """Paired t-test and Wilcoxon test (exact for these few seeds) on the per-seed means of a and b."""
    from scipy import stats  # imported here: scipy.stats takes 1-2 s, and 10 uses only holm and permutation_test

    means = seed_means(sample, run_keys)
    diff = (means["a"] - means["b"]).to_numpy()
    n = len(diff)
    nan = float("nan")
    if n < 2:
        return SeedComparison(n, float(diff.mean()) if n else nan, nan, nan, nan, "one seed" if n else "no pairs")
    if np.allclose(diff, diff.mean(), rtol=1e-9, atol=1e-12):  # a t statistic would divide by ~0
        return SeedComparison(n, float(diff.mean()), nan, nan, nan, "identical difference in every seed")
    t = stats.ttest_rel(means["a"], means["b"])
    w = stats.wilcoxon(diff, zero_method=ZERO_METHOD) if np.count_nonzero(diff) else None
    return SeedComparison(
        n, float(diff.mean()), float(t.statistic), float(t.pvalue), float(w.pvalue) if w is not None else nan
    )


def holm(pvalues: Any) -> np.ndarray:
    """Holm-Bonferroni adjusted p values, in the input order.

    The k-th smallest of m p values is multiplied by (m - k + 1), a running maximum keeps
    the adjusted values monotone in the raw ones, and they are capped at 1. NaN entries
    (untestable comparisons) stay NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError("pvalues must lie in [0, 1] (or be NaN)")
    adjusted = np.full_like(p, np.nan)
    order = np.argsort(p[valid], kind="stable")
    m = len(order)
    scaled = p[valid][order] * (m - np.arange(m))
    out = np.empty(m)
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted[valid] = out
    return adjusted


def _direction(r: float, better: str) -> str:
    """'a better' / 'b better' from the sign of r (a - b) and the metric's better direction."""
    if np.isnan(r) or r == 0:
        return "no difference"
    return "a better" if (r > 0) == (better == "higher") else "b better"


def _comparison_row(
    sample: PairedSample,
    metric: str,
    a: str,
    b: str,
    where: dict[str, Any],
    registry: Mapping[str, Metric] = METRICS,
) -> dict[str, Any]:
    """One comparison row; `registry` gives the metric's facet and better direction."""
    test = wilcoxon_paired(sample.a, sample.b)
    seeds = cross_seed(sample)
    better = registry[metric].better
    direction = _direction(test.r, better)
    seed_direction = _direction(seeds.mean_diff, better) if not np.isnan(seeds.p_t) else "no difference"
    return {
        **where,
        "metric": metric,
        "facet": registry[metric].facet,
        "better": better,
        "a": a,
        "b": b,
        "n": sample.n_pairs,
        "n_dropped": sample.n_dropped,
        "median_a": _median(sample.a),
        "median_b": _median(sample.b),
        "median_diff": test.median_diff,
        "mean_diff": test.mean_diff,
        "W": test.statistic,
        "p": test.p,
        "r": test.r,
        "direction": direction,
        "winner": {"a better": a, "b better": b}.get(direction, ""),
        "reason": test.reason,
        "n_seeds": seeds.n_seeds,
        "seed_mean_diff": seeds.mean_diff,
        "seed_t": seeds.t,
        "seed_p_t": seeds.p_t,
        "seed_p_wilcoxon": seeds.p_wilcoxon,
        "seed_winner": {"a better": a, "b better": b}.get(seed_direction, ""),
        "seed_reason": seeds.reason,
    }


#: The columns of a comparison table after the `within` columns (`_comparison_row`'s, with p_holm after p).
COMPARISON_COLUMNS = (
    *("metric", "facet", "better", "a", "b", "n", "n_dropped", "median_a", "median_b", "median_diff", "mean_diff"),
    *("W", "p", "p_holm", "r", "direction", "winner", "reason", "n_seeds", "seed_mean_diff", "seed_t", "seed_p_t"),
    *("seed_p_wilcoxon", "seed_winner", "seed_reason"),
)


def two_conditions_note(table: pd.DataFrame, by: str = "loss") -> str:
    """The empty string when `table` holds two or more values of `by` (losses, methods) to compare, else the sentence saying so.

    A sweep of one loss (`--losses ce`) is a valid run: its tables are reported as they are,
    and the comparisons (their tests, claims and verdicts) come out empty with this note.
    """
    present = sorted(map(str, table[by].dropna().unique())) if by in table.columns else []
    if len(present) >= 2:
        return ""
    held = f"only the {by} {present[0]!r}" if present else f"no {by} at all"
    plural = {"loss": "losses"}.get(by, f"{by}s")
    return (
        f"These results hold {held}: comparisons of {plural} need two of them, so the paired tests, "
        f"claims and verdicts below are empty; the tables of the {by} present are reported as they are."
    )


def _compare(
    facets: pd.DataFrame,
    by: str,
    pairs: Sequence[tuple[str, str]],
    within: list[str],
    metrics: list[str],
    registry: Mapping[str, Metric] = METRICS,
) -> pd.DataFrame:
    """One comparison row per group of `within`, metric and pair present; Holm over all rows.

    `registry` names each metric's facet and better direction (the faithfulness measures of
    `analysis.faithfulness` have their own).

    With fewer than two values of `by` in `facets` (one loss swept) there is nothing to compare:
    an empty table with the comparison columns (`two_conditions_note` says why). Two or more
    values of which no pair is asked for is an error.
    """
    _check_columns(facets, [*KEYS, by, *within, *metrics], "facets")
    if two_conditions_note(facets, by):
        return pd.DataFrame(columns=[*within, *COMPARISON_COLUMNS])
    rows = []
    for group, subset in facets.groupby(within, sort=True):
        where = dict(zip(within, group))
        present = set(subset[by])
        for a, b in pairs:
            if not {a, b} <= present:
                continue
            agnostic = {
                m for name in (where.get("method"), a, b) if name in METHOD_REGISTRY for m in undefined_metrics(name)
            }
            tested = [m for m in metrics if m not in agnostic]
            matched, n_unmatched = _align(subset, tested, by, a, b, list(KEYS), None)
            rows += [
                _comparison_row(_sample(matched, m, list(KEYS), n_unmatched), m, a, b, where, registry) for m in tested
            ]
    if not rows:
        raise ValueError(
            f"facets hold none of the {by} pairs {list(pairs)} to compare; "
            f"present: {sorted(map(str, facets[by].unique()))}"
        )
    table = pd.DataFrame(rows)
    table.insert(list(table.columns).index("p") + 1, "p_holm", holm(table["p"]))
    return table


def compare_losses(
    facets: pd.DataFrame,
    metrics: Iterable[str] = tuple(METRICS),
    methods: Iterable[str] | None = None,
    pairs: Sequence[tuple[str, str]] = LOSS_PAIRS,
    within: Sequence[str] = ("dataset", "profile", "method"),
    registry: Mapping[str, Metric] = METRICS,
) -> pd.DataFrame:
    """Loss a vs loss b, paired on (seed, image id), per group of `within` (and metric, pair).

    Differences, median_diff and r are of a - b (r > 0: a tends to be larger). Pairs whose
    losses were not both run are skipped; p_holm is adjusted over every row returned.
    `direction` reads "a better"/"b better" by the metric's better direction and the sign
    of r (the median difference is 0 for most pointing-game pairs); `winner` names that
    loss. The seed_* columns compare per-seed means (`cross_seed`); `seed_winner` is the
    loss whose seed means are better, where the seed-level t-test has a p value. `within`
    takes extra grouping columns, e.g. the accuracy level of `analysis.confound`. `registry`
    holds the metrics that may be asked for, with their better direction.
    """
    selected = facets if methods is None else facets[facets["method"].isin(list(methods))]
    return _compare(selected, "loss", pairs, list(within), check_choices("metrics", metrics, registry), registry)


def compare_methods(facets: pd.DataFrame, metrics: Iterable[str] = tuple(METRICS)) -> pd.DataFrame:
    """Grad-CAM vs Eigen-CAM, paired on image id, per (dataset, profile, loss, metric).

    contrastivity_ssim is skipped: Eigen-CAM is class-agnostic, so it is NaN by design.
    """
    return _compare(
        facets, "method", METHOD_PAIRS, ["dataset", "profile", "loss"], check_choices("metrics", metrics, METRICS)
    )


def permutation_test(x: Any, y: Any, n_permutations: int = 9999, seed: int = 0) -> tuple[float, float]:
    """(mean(x) - mean(y), two-sided p) of an unpaired permutation test on the difference of means.

    For two groups without a pairing (say the units of two networks): the pooled values are
    relabelled `n_permutations` times at random, all at once, and p = (1 + #{|d*| >= |d|}) /
    (1 + n_permutations), which never reaches 0 (Phipson & Smyth, 2010).
    """
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if len(a) < 2 or len(b) < 2 or np.isnan(a).any() or np.isnan(b).any():
        raise ValueError(f"x and y must hold at least 2 values each and no NaN, got {len(a)} and {len(b)}")
    if not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    shuffled = np.random.default_rng(seed).permuted(np.tile(pooled, (n_permutations, 1)), axis=1)
    null = shuffled[:, : len(a)].mean(1) - shuffled[:, len(a) :].mean(1)
    exceed = np.count_nonzero(np.abs(null) >= abs(observed) - 1e-12)
    return float(observed), float((1 + exceed) / (1 + n_permutations))
