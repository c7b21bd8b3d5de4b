"""The paper's claims as data, and the rule that turns a paired test into a verdict.

Each claim names the comparison it reads (metric, loss a vs loss b), the condition the
paper says is better, or None for a claim of no difference, and where the paper makes it
(section of feature_attribution_scl_paper.txt). `verdict` decides under one policy for
every claim (`SEED_POLICY`): the Holm-adjusted image-level test and, with several seeds,
the seed-level test must agree; the result is supported, not supported or inconclusive.
Two claims aggregate many comparisons by majority (`_majority_row`). `claim_definitions`
lists all of them with their decision rule in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from clxai_utils.analysis.tables import sort_runs
from clxai_utils.core.registry import METRICS, undefined_metrics


class Claim(NamedTuple):
    """A statement of the paper tested on one comparison row of `compare_losses`.

    `expected` is the condition claimed better, None for a claim of no difference;
    `section` is where the paper makes it.
    """

    claim: str
    statement: str
    metric: str
    a: str
    b: str
    expected: str | None
    section: str


class MajorityClaim(NamedTuple):
    """A claim decided by majority over several comparisons of `a` vs `b` (see `_majority_row`): `expected`
    (a or b) must be the significantly better one in most of them."""

    claim: str
    statement: str
    metrics: tuple[str, ...]
    a: str
    b: str
    expected: str
    scope: str
    section: str
    dataset: str | None = None  # the data set the claim is made for; None: every data set


LOSS_CLAIMS = (
    Claim(
        "SCL more faithful than CE",
        "lower PF AUC for SupCon than CE",
        "pf_auc",
        "supcon",
        "ce",
        "supcon",
        "§5, Table 4; §6",
    ),
    Claim(
        "SCL more continuous than CE",
        "higher continuity SSIM for SupCon",
        "continuity_ssim",
        "supcon",
        "ce",
        "supcon",
        "§5, Table 4; §6",
    ),
    Claim(
        "SCL less complex than CE (entropy)",
        "lower complexity entropy for SupCon",
        "complexity_entropy",
        "supcon",
        "ce",
        "supcon",
        "§5, Table 4 and Fig. 2; §6",
    ),
    Claim(
        "SCL less complex than CE (Gini)",
        "higher Gini sparseness for SupCon",
        "sparseness_gini",
        "supcon",
        "ce",
        "supcon",
        "§5, Table 4 and Fig. 2; §6",
    ),
    Claim(
        "SCL lower contrastivity than CE",
        "the paper finds SupCon's contrastivity WORSE: contrastivity SSIM higher for SupCon than CE, so CE is the better one",
        "contrastivity_ssim",
        "supcon",
        "ce",
        "ce",
        "§5, Table 4; §6",
    ),
    Claim(
        "coherence inconclusive (SCL vs CE)",
        "no significant pointing-game difference between SupCon and CE",
        "pointing_game",
        "supcon",
        "ce",
        None,
        "§5 (b), Table 4; §6",
    ),
    Claim(
        "coherence inconclusive (SCL vs CE)",
        "no significant attribution-localisation difference between SupCon and CE",
        "attribution_localisation",
        "supcon",
        "ce",
        None,
        "§5 (b), Table 4; §6",
    ),
)
TRIPLET_METRICS = ("pf_auc", "continuity_ssim", "complexity_entropy", "sparseness_gini")
METHOD_CLAIM = MajorityClaim(
    "Grad-CAM better than Eigen-CAM",
    "Grad-CAM significantly better in most (loss, metric) comparisons",
    tuple(m for m in METRICS if m not in undefined_metrics("eigencam")),
    "gradcam",
    "eigencam",
    "gradcam",
    "per data set, over every loss and metric",
    "§5, Table 4",
)
TRIPLET_CLAIMS = (
    MajorityClaim(
        "TL good on CIFAR-10",
        "Triplet significantly better than CE on most of PF AUC, continuity, entropy, Gini",
        TRIPLET_METRICS,
        "triplet",
        "ce",
        "triplet",
        "CIFAR-10 only, per method, over the metrics listed",
        "§5 (a), Table 4 and Fig. 2; §6",
        "cifar10",
    ),
    MajorityClaim(
        "TL poor on ImageNet-S50",
        "CE significantly better than triplet on most of PF AUC, continuity, entropy, Gini",
        TRIPLET_METRICS,
        "triplet",
        "ce",
        "ce",
        "ImageNet-S50 only, per method, over the metrics listed",
        "§5 (a), Table 4; §6",
        "imagenet_s50",
    ),
)


SEED_POLICY = (
    "Image-level and seed-level evidence must agree. A comparison is significant in a direction only when "
    "the image-level test (two-sided Wilcoxon signed-rank over the paired images of every seed, Holm-adjusted "
    "over the table) and, with two or more seeds, the seed-level test (paired t-test on the per-seed means) both "
    "reach p < alpha with the same winner; it is not significant when neither does; when they disagree the "
    "verdict is inconclusive. The conjunction can only remove significant results, so the family-wise error "
    "stays controlled by the Holm step. With one seed only the image-level test exists, and `basis` says so."
)
_DISAGREE = "disagree"


def decided_winner(p_holm: float, winner: str, alpha: float, seed_p: float = np.nan, seed_winner: str = "") -> str:
    """The significant winner under `SEED_POLICY`: a condition, "" for no significant difference, or "disagree".

    `seed_p` NaN (one seed, or no seed-level test) leaves the image-level decision alone.
    """
    image = winner if p_holm < alpha else ""
    if np.isnan(seed_p):
        return image
    seeds = seed_winner if seed_p < alpha else ""
    return image if image == seeds else _DISAGREE


def verdict(
    p_holm: float, winner: str, expected: str | None, alpha: float, seed_p: float = np.nan, seed_winner: str = ""
) -> str:
    """supported / not supported / inconclusive for one comparison (`SEED_POLICY`).

    A directional claim is supported when significant in the claimed direction, not
    supported when significant in the opposite one, inconclusive when not significant.
    A claim of no difference is supported when not significant and not supported when
    significant. An untestable comparison (p is NaN) and disagreeing image- and seed-level
    evidence are inconclusive.
    """
    if np.isnan(p_holm):
        return "inconclusive"
    decided = decided_winner(p_holm, winner, alpha, seed_p, seed_winner)
    if decided == _DISAGREE:
        return "inconclusive"
    if expected is None:
        return "not supported" if decided else "supported"
    if not decided:
        return "inconclusive"
    return "supported" if decided == expected else "not supported"


def _basis(n_seeds: int) -> str:
    return f"images and {n_seeds} seeds" if n_seeds >= 2 else "images only (1 seed)"


def _evidence(row: pd.Series | Mapping[str, Any]) -> str:
    if np.isnan(row["p_holm"]):
        return f"untestable: {row['reason'] or 'no p value'} (n = {row['n']})"
    text = (
        f"median diff ({row['a']} - {row['b']}) {row['median_diff']:+.3g}, r = {row['r']:+.2f}, "
        f"p_holm = {row['p_holm']:.2g}, n = {row['n']}"
    )
    if not np.isnan(row["seed_p_t"]):
        text += f"; seed means: t-test p = {row['seed_p_t']:.2g} over {row['n_seeds']} seeds"
    return text


#: The columns of `claims`' table (also when it has no row).
CLAIM_COLUMNS = (
    *("claim", "statement", "dataset", "profile", "method", "metric", "expected", "verdict", "basis", "n"),
    *("median_diff", "r", "p_holm", "n_seeds", "seed_p_t", "evidence"),
)


def _claim_rows(comparisons: pd.DataFrame, claim: Claim, alpha: float) -> list[dict[str, Any]]:
    match = sort_runs(
        comparisons[
            (comparisons["metric"] == claim.metric) & (comparisons["a"] == claim.a) & (comparisons["b"] == claim.b)
        ]
    )
    return [
        {
            "claim": claim.claim,
            "statement": claim.statement,
            "dataset": row["dataset"],
            "profile": row["profile"],
            "method": row["method"],
            "metric": claim.metric,
            "expected": claim.expected or "no difference",
            "verdict": verdict(
                row["p_holm"], row["winner"], claim.expected, alpha, row["seed_p_t"], row["seed_winner"]
            ),
            "basis": _basis(row["n_seeds"]),
            "n": row["n"],
            "median_diff": row["median_diff"],
            "r": row["r"],
            "p_holm": row["p_holm"],
            "n_seeds": row["n_seeds"],
            "seed_p_t": row["seed_p_t"],
            "evidence": _evidence(row),
        }
        for _, row in match.iterrows()
    ]


def _majority_row(
    rows: pd.DataFrame, claim: str, statement: str, expected: str, method: str, alpha: float
) -> dict[str, Any]:
    """Aggregate verdict: supported when `expected` wins significantly in more than half of the
    testable comparisons, not supported when the other side does, inconclusive otherwise."""
    testable = rows[rows["p_holm"].notna()]
    decided = [
        decided_winner(r["p_holm"], r["winner"], alpha, r["seed_p_t"], r["seed_winner"]) for _, r in testable.iterrows()
    ]
    wins = sum(d == expected for d in decided)
    losses = sum(d not in (expected, "", _DISAGREE) for d in decided)
    m = len(testable)
    result = "supported" if wins > m / 2 else "not supported" if losses > m / 2 else "inconclusive"
    first = rows.iloc[0]
    return {
        "claim": claim,
        "statement": statement,
        "dataset": first["dataset"],
        "profile": first["profile"],
        "method": method,
        "metric": "all",
        "expected": expected,
        "verdict": result,
        "basis": _basis(int(rows["n_seeds"].max())),
        "n": m,
        "median_diff": np.nan,
        "r": np.nan,
        "p_holm": np.nan,
        "n_seeds": int(rows["n_seeds"].max()),
        "seed_p_t": np.nan,
        "evidence": f"{expected} significantly better in {wins} of {m} testable comparisons, worse in {losses}",
    }


def claims(loss_comparisons: pd.DataFrame, method_comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One verdict per paper claim, dataset, profile and explanation method (see `verdict`).

    Loss claims (SupCon vs CE) read one row of `compare_losses` each. Two claims aggregate
    several comparisons by majority (see `_majority_row`): "Grad-CAM better than
    Eigen-CAM" over every (loss, metric) row of `compare_methods` of a dataset, and "TL
    good on CIFAR-10" over triplet-vs-CE on faithfulness, continuity and both complexity
    metrics, per method, and "TL poor on ImageNet-S50" over the same comparisons, where CE must be
    the better one. Significance follows `SEED_POLICY`.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rows = [r for claim in LOSS_CLAIMS for r in _claim_rows(loss_comparisons, claim, alpha)]
    for _, group in method_comparisons.groupby(["dataset", "profile"]):
        rows.append(
            _majority_row(
                group,
                METHOD_CLAIM.claim,
                METHOD_CLAIM.statement,
                METHOD_CLAIM.expected,
                f"{METHOD_CLAIM.a} vs {METHOD_CLAIM.b}",
                alpha,
            )
        )
    for claim in TRIPLET_CLAIMS:
        triplet = loss_comparisons[
            (loss_comparisons["dataset"] == claim.dataset)
            & (loss_comparisons["a"] == claim.a)
            & (loss_comparisons["b"] == claim.b)
            & loss_comparisons["metric"].isin(claim.metrics)
        ]
        for (_, method), group in sort_runs(triplet).groupby(["profile", "method"], sort=False):
            rows.append(_majority_row(group, claim.claim, claim.statement, claim.expected, str(method), alpha))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)  # no rows (one loss, one method): empty, with the columns


_SIGNIFICANT = "significant: p_holm < {alpha:g} over images and, with 2+ seeds, seed-level t-test p < {alpha:g}"


def _rule(expected: str | None, other: str, alpha: float) -> str:
    """`verdict`'s rule in words (`SEED_POLICY`)."""
    significant = _SIGNIFICANT.format(alpha=alpha)
    if expected is None:
        return (
            f"supported if neither test is significant; not supported if both are ({significant}); "
            "inconclusive if they disagree or untestable"
        )
    return (
        f"supported if {expected} is significantly better ({significant}, same winner); not supported if {other} "
        "is; inconclusive if not significant, if image and seed level disagree, or untestable"
    )


def _majority_rule(expected: str, other: str, alpha: float) -> str:
    """`_majority_row`'s rule in words, over the m comparisons with a p value."""
    return (
        f"of the m testable comparisons: supported if {expected} is significantly better "
        f"({_SIGNIFICANT.format(alpha=alpha)}) in more than m/2; not supported if {other} is in more than m/2; "
        "inconclusive otherwise"
    )


def claim_definitions(alpha: float = 0.05) -> pd.DataFrame:
    """One row per claim `claims` tests: where the paper makes it, what it reads and how it is decided.

    `expected` is the condition claimed better (as in `claims`' output), "no difference"
    for a claim decided by non-significance; `rule` states `verdict` or `_majority_row` in
    words at level `alpha`. An untestable comparison is one whose p is NaN.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rows = [
        {
            "claim": c.claim,
            "section": c.section,
            "statement": c.statement,
            "metrics": c.metric,
            "comparison": f"{c.a} vs {c.b}",
            "expected": c.expected or "no difference",
            "rule": _rule(c.expected, c.b if c.expected == c.a else c.a, alpha),
        }
        for c in LOSS_CLAIMS
    ]
    rows += [
        {
            "claim": c.claim,
            "section": c.section,
            "statement": c.statement,
            "metrics": ", ".join(c.metrics),
            "comparison": f"{c.a} vs {c.b}; {c.scope}",
            "expected": c.expected,
            "rule": _majority_rule(c.expected, c.b if c.expected == c.a else c.a, alpha),
        }
        for c in (METHOD_CLAIM, *TRIPLET_CLAIMS)
    ]
    return pd.DataFrame(rows)
