"""Is "SCL more faithful than CE" a property of the maps, or of Pixel Flipping? (issue 25)

The paper decides faithfulness on one measure, Pixel Flipping's AUC, whose perturbed images
leave the training distribution: a loss whose softmax survives broken images looks less
faithful for reasons that have nothing to do with its maps. The faithfulness stage scores
the same maps with deletion and insertion read-outs, ROAD and F-Fidelity. Here

- `faithfulness_claims` decides the claim once per measure, with exactly the claims table's
  statistics (paired Wilcoxon over the images of all seeds, Holm over the table, seed-level
  t-test, `claims.verdict` under `claims.SEED_POLICY`);
- `measure_agreement` asks whether two measures rank the images' maps alike (Spearman, both
  oriented so that higher is better), `claim_agreement` whether they give the same verdict,
  and `supporting_measures` says which measures support the claim, for the report;
- `sanity_checks` reports the randomisation checks: a map that barely changes when the
  weights are randomised earns its faithfulness without the model, and a class-specific map
  that barely changes with the class does not explain the class.

The measures' better directions and the sanity thresholds come from `core.registry`, so
that this module, like the rest of the analysis, loads no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clxai_utils.analysis.claims import CLAIM_COLUMNS, LOSS_CLAIMS, Claim, _claim_rows
from clxai_utils.analysis.stats import _check_columns, compare_losses, two_conditions_note
from clxai_utils.analysis.tables import sort_runs
from clxai_utils.core.registry import (
    CASCADE_THRESHOLD,
    FAITHFULNESS_MEASURES,
    MAX_NEAR_IDENTICAL_SHARE,
    METHOD_REGISTRY,
    METRICS,
    NEAR_IDENTICAL_SSIM,
    Metric,
    display_name,
)

#: Every faithfulness measure the analysis compares, Pixel Flipping's first (facet "faithfulness").
MEASURE_REGISTRY: dict[str, Metric] = {"pf_auc": METRICS["pf_auc"], **FAITHFULNESS_MEASURES}
#: The keys of one image's map: run, loss, method, image.
IMAGE_KEYS = ["dataset", "profile", "seed", "loss", "method", "image_id"]
#: One set of maps pooled over seeds.
GROUP_KEYS = ["dataset", "profile", "loss", "method"]
#: The paper's faithfulness claim: its section, and its wording for any pair of losses.
PAPER_CLAIM = next(c for c in LOSS_CLAIMS if c.metric == "pf_auc")
#: `faithfulness_claims`' columns: the claims table's, the measure's label, and the claim without it.
FAITHFULNESS_CLAIM_COLUMNS = (*CLAIM_COLUMNS, "measure", "base_claim")
VERDICTS = ("supported", "not supported", "inconclusive")


def measure_table(faithfulness: pd.DataFrame, facets: pd.DataFrame | None = None) -> pd.DataFrame:
    """The faithfulness rows, with `pf_auc` of 06's `facets` joined on the run, loss, method and image id.

    A left join: an image the facets lack gets NaN, and its pairs are counted as dropped.
    """
    if facets is None or faithfulness.empty:  # no faithfulness stage: nothing to join to
        return faithfulness
    _check_columns(facets, [*IMAGE_KEYS, "pf_auc"], "facets")
    return faithfulness.merge(facets[[*IMAGE_KEYS, "pf_auc"]], on=IMAGE_KEYS, how="left", validate="one_to_one")


def measures_in(table: pd.DataFrame) -> list[str]:
    """The measures of `MEASURE_REGISTRY` that `table` holds a value of, in the registry's order."""
    return [m for m in MEASURE_REGISTRY if m in table and table[m].notna().any()]


def _claim(measure: str, a: str, b: str) -> Claim:
    """The claim "<a> more faithful than <b> (<measure>)": a is expected better, by the measure's direction."""
    metric = MEASURE_REGISTRY[measure]
    return Claim(
        f"{_base_claim(a, b)} ({metric.label})",
        f"{metric.better} {metric.label} for {display_name(a)} than {display_name(b)}",
        measure,
        a,
        b,
        a,
        PAPER_CLAIM.section,
    )


def _base_claim(a: str, b: str) -> str:
    return f"{display_name(a)} more faithful than {display_name(b)}"


def faithfulness_claims(
    faithfulness: pd.DataFrame,
    facets: pd.DataFrame | None = None,
    alpha: float = 0.05,
    pairs: Sequence[tuple[str, str]] = (("supcon", "ce"),),
) -> pd.DataFrame:
    """The faithfulness claim decided once per measure, pair of losses, dataset, profile and method.

    Each measure present (pf_auc from `facets` when given) is compared between the losses of
    each pair by `stats.compare_losses` and decided by `claims.verdict` under `SEED_POLICY`;
    Holm adjusts over every row of the table, as in the claims table. The columns are the
    claims table's plus `measure` (its label) and `base_claim` ("SCL more faithful than CE").
    One loss swept, or no measure scored: no rows.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    table = measure_table(faithfulness, facets)
    measures = measures_in(table)
    if not measures or two_conditions_note(table):
        return pd.DataFrame(columns=FAITHFULNESS_CLAIM_COLUMNS)
    comparisons = compare_losses(table, measures, pairs=pairs, registry=MEASURE_REGISTRY)
    rows = [
        {**row, "measure": MEASURE_REGISTRY[measure].label, "base_claim": _base_claim(a, b)}
        for a, b in pairs
        for measure in measures
        for row in _claim_rows(comparisons, _claim(measure, a, b), alpha)
    ]
    return pd.DataFrame(rows, columns=FAITHFULNESS_CLAIM_COLUMNS)


# ----------------------------------------------------------------------------- agreement


def oriented(table: pd.DataFrame, measures: Sequence[str]) -> pd.DataFrame:
    """The measures' columns with the lower-is-better ones negated: higher is better in every column."""
    signs = [1.0 if MEASURE_REGISTRY[m].better == "higher" else -1.0 for m in measures]
    return table[list(measures)].astype(float) * signs


def _pairwise(values: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho and n of every pair of columns, over the rows where both are defined."""
    rho = values.corr(method="spearman").to_numpy()
    defined = values.notna().to_numpy(dtype=float)
    n = defined.T @ defined
    i, j = np.triu_indices(values.shape[1], k=1)
    columns = np.asarray(values.columns)
    return pd.DataFrame({"measure_a": columns[i], "measure_b": columns[j], "spearman": rho[i, j], "n": n[i, j]})


def measure_agreement(faithfulness: pd.DataFrame, facets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, profile, loss, method): the Spearman correlation over images of every pair of measures.

    Both measures are oriented so that higher is better (`oriented`), so rho > 0 says the
    two rank the images' maps alike, whichever direction each is reported in. Images of all
    seeds are pooled; `n` counts the images where both measures are defined. Columns:
    dataset, profile, loss, method, measure_a, measure_b, spearman, n.
    """
    table = measure_table(faithfulness, facets)
    measures = measures_in(table)
    columns = [*GROUP_KEYS, "measure_a", "measure_b", "spearman", "n"]
    if len(measures) < 2:
        return pd.DataFrame(columns=columns)
    values = oriented(table, measures)
    blocks = {key: _pairwise(group) for key, group in values.groupby([table[k] for k in GROUP_KEYS], sort=False)}
    result = pd.concat(blocks, names=[*GROUP_KEYS, None]).reset_index(level=GROUP_KEYS).astype({"n": int})
    return sort_runs(result[columns])


def _listing(labels: Sequence[str]) -> str:
    """Labels joined as "a", "a and b" or "a, b and c"."""
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _agreement_sentence(label: str, by_verdict: dict[str, list[str]]) -> str:
    """Which measures support the claim, which contradict it, which leave it open, in one sentence."""
    verbs = {
        "supported": ("supports it", "support it"),
        "not supported": ("does not", "do not"),
        "inconclusive": ("is inconclusive", "are inconclusive"),
    }
    parts = [
        f"{_listing(measures)} {verbs[verdict][len(measures) > 1]}"
        for verdict, measures in by_verdict.items()
        if measures
    ]
    return f"{label}: {'; '.join(parts)}."


def claim_agreement(claims: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, profile, method, base claim) of `faithfulness_claims`: do all measures give one verdict?

    Columns: the keys, `n_measures`, the count of each verdict (`n_supported`,
    `n_not_supported`, `n_inconclusive`), `unanimous`, `verdict` (the common one, "mixed"
    otherwise), the measures of each verdict (`supported_by`, ...) and a `sentence`.
    """
    keys = ["dataset", "profile", "method", "base_claim"]
    columns = [
        *keys,
        "n_measures",
        *(f"n_{v.replace(' ', '_')}" for v in VERDICTS),
        "unanimous",
        "verdict",
        *(f"{v.replace(' ', '_')}_by" for v in VERDICTS),
        "sentence",
    ]
    rows = []
    for key, group in claims.groupby(keys, sort=False):  # in the order of the claims, measures in theirs
        where = dict(zip(keys, key))
        by_verdict = {v: group.loc[group["verdict"] == v, "measure"].tolist() for v in VERDICTS}
        counts = {v: len(m) for v, m in by_verdict.items()}
        unanimous = max(counts.values()) == len(group)
        label = (
            f"“{where['base_claim']}” ({where['dataset']}, {where['profile']}, {display_name(str(where['method']))})"
        )
        rows.append(
            {
                **where,
                "n_measures": len(group),
                **{f"n_{v.replace(' ', '_')}": n for v, n in counts.items()},
                "unanimous": unanimous,
                "verdict": group["verdict"].iloc[0] if unanimous else "mixed",
                **{f"{v.replace(' ', '_')}_by": ", ".join(m) for v, m in by_verdict.items()},
                "sentence": _agreement_sentence(label, by_verdict),
            }
        )
    return pd.DataFrame(rows, columns=columns)  # no claims (one loss swept): empty, with the columns


def supporting_measures(claims: pd.DataFrame, base_claim: str = PAPER_CLAIM.claim) -> str:
    """For the report: one line per (dataset, profile, method) naming the measures that support `base_claim`."""
    agreement = claim_agreement(claims)
    if agreement.empty or base_claim not in set(agreement["base_claim"]):
        return f"No faithfulness measure decides “{base_claim}”: the faithfulness tables hold no such comparison."
    return "\n".join(f"- {s}" for s in agreement.loc[agreement["base_claim"] == base_claim, "sentence"])


# ----------------------------------------------------------------------------- sanity checks


def _cascade_summary(randomisation: pd.DataFrame) -> pd.DataFrame:
    """Per set of maps: the mean similarities after its last cascade step, pooled over seeds."""
    last = randomisation[randomisation["step"] == randomisation.groupby(GROUP_KEYS)["step"].transform("max")]
    return last.groupby(GROUP_KEYS, as_index=False).agg(
        last_layer=("layer", "first"),
        cascade_ssim=("ssim", "mean"),
        cascade_spearman=("spearman", "mean"),
        zero_share=("zero_map", "mean"),
        n_seeds=("seed", "nunique"),
        n_images=("image_id", "nunique"),
    )


def _random_logit_summary(random_logit: pd.DataFrame) -> pd.DataFrame:
    """Per set of maps: the share of near-identical class / random-class map pairs."""
    return random_logit.groupby(GROUP_KEYS, as_index=False).agg(
        near_identical_share=("near_identical", "mean"), n_pairs=("near_identical", "size")
    )


def _flag(row: pd.Series, logit_fails: bool, threshold: float, max_share: float) -> str:
    """The sentence naming what the maps of one row barely depend on, or ""."""
    name = f"{display_name(row['method'])} ({display_name(row['loss'])})"
    flags = []
    if row["cascade_fails"]:
        zeros = f", {row['zero_share']:.0%} of them all-zero" if row["zero_share"] > 0 else ""
        flags.append(
            f"{name} maps barely change under randomisation: mean SSIM {row['cascade_ssim']:.2f} > {threshold:g} "
            f"to the trained maps after randomising down to {row['last_layer']}{zeros}"
        )
    if logit_fails:
        flags.append(
            f"{name} maps barely depend on the class: {row['near_identical_share']:.0%} of class / random-class "
            f"pairs near-identical (SSIM > {NEAR_IDENTICAL_SSIM:g}), more than {max_share:.0%}"
        )
    return "; ".join(flags)


def sanity_checks(
    randomisation: pd.DataFrame,
    random_logit: pd.DataFrame,
    threshold: float = CASCADE_THRESHOLD,
    max_share: float = MAX_NEAR_IDENTICAL_SHARE,
) -> pd.DataFrame:
    """Per (dataset, profile, loss, method): the cascade and random-logit checks, pooled over seeds.

    The cascade fails, as in `evaluate.randomisation.randomisation_verdict`, when the mean
    SSIM to the trained maps after the last step is above `threshold`; the random-logit
    check fails when more than `max_share` of the pairs are near-identical. A class-agnostic
    method (Eigen-CAM) has no random-logit check: NaN share, "n/a" verdict. Columns: the
    keys, last_layer, cascade_ssim, cascade_spearman, zero_share (all-zero maps at the last
    step, whose SSIM is 1 whatever the weights), n_seeds, n_images, cascade_fails,
    near_identical_share, n_pairs, random_logit_fails (True, False or "n/a"), flag.
    """
    _check_columns(randomisation, [*GROUP_KEYS, "seed", "step", "layer", "image_id", "zero_map", "ssim", "spearman"])
    _check_columns(random_logit, [*GROUP_KEYS, "near_identical"], "random_logit")
    table = _cascade_summary(randomisation).merge(_random_logit_summary(random_logit), on=GROUP_KEYS, how="left")
    table["cascade_fails"] = table["cascade_ssim"] > threshold
    specific = table["method"].isin([m for m, method in METHOD_REGISTRY.items() if method.class_specific])
    checked = specific & table["near_identical_share"].notna()
    table["near_identical_share"] = table["near_identical_share"].where(specific)
    table["n_pairs"] = table["n_pairs"].where(specific).astype("Int64")
    logit_fails = checked & (table["near_identical_share"] > max_share)
    table["random_logit_fails"] = logit_fails.astype(object).where(checked, "n/a")
    table["flag"] = [_flag(row, fails, threshold, max_share) for (_, row), fails in zip(table.iterrows(), logit_fails)]
    return sort_runs(table)
