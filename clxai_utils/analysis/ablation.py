"""What each of the authors' deviations does to each claim: the verdicts of the protocol ablation (08_protocol).

`protocol_claims` decides every claim of `analysis.claims` once per protocol of the ablation
table, with the same paired tests, Holm correction and seed policy as the claims table,
on the same images. `claim_matrix` lays the verdicts out as claim x protocol, and
`deviation_effects` says in one sentence per claim whether it holds under both protocols,
exists only because of some deviation, or is hidden by one, naming every deviation that
changes the verdict on its own (or saying that none does).

`correct_only_average` changes no score; under it (and under "authors") only the images
classified correctly enter the tests and the means, as the authors' summary averaged them.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from clxai_utils.analysis.claims import claims
from clxai_utils.analysis.stats import compare_losses, compare_methods
from clxai_utils.analysis.tables import Results
from clxai_utils.core.config import ABLATION_PROTOCOLS, protocol_deviations
from clxai_utils.core.registry import ordered

#: The columns that identify one claim row (one verdict per protocol).
CLAIM_KEYS = ["claim", "dataset", "profile", "method", "metric"]
SUPPORTED = "supported"


def protocol_rows(ablation: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The ablation's rows of one protocol as its summaries read them (only correct ones under
    `correct_only_average`)."""
    rows = ablation[ablation["protocol"] == protocol]
    if "correct_only_average" in protocol_deviations(protocol):
        rows = rows[rows["correct"].astype(bool)]
    return rows.drop(columns="protocol").reset_index(drop=True)


def protocols_in(ablation: pd.DataFrame) -> list[str]:
    """The protocols the table holds, in the ablation's order."""
    return ordered(ablation["protocol"].unique(), ABLATION_PROTOCOLS)


def protocol_claims(ablation: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every claim's verdict under every protocol of the ablation table (the `claims` columns plus `protocol`)."""
    if ablation.empty:
        raise ValueError("the ablation table is empty: run notebooks/08_protocol.ipynb for each run (make run does)")
    blocks = []
    for protocol in protocols_in(ablation):
        rows = protocol_rows(ablation, protocol)
        verdicts = claims(compare_losses(rows), compare_methods(rows), alpha)
        blocks.append(verdicts.assign(protocol=protocol))
    return pd.concat(blocks, ignore_index=True)


def claim_matrix(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Claim x protocol -> verdict: one row per claim (data set, profile, method), one column per protocol."""
    matrix = verdicts.pivot_table(index=CLAIM_KEYS, columns="protocol", values="verdict", aggfunc="first", sort=False)
    return matrix[protocols_in(verdicts)].reset_index().rename_axis(columns=None)


def _names(deviations: list[str]) -> str:
    return ", ".join(f"`{d}`" for d in deviations)


def _sentence(label: str, corrected: str, authors: str, alone: dict[str, str]) -> str:
    """How the authors' protocol and each deviation alone move one claim's verdict, in one sentence."""
    changed = [d for d, v in alone.items() if v != corrected]
    if corrected == authors:
        if not changed:
            return f"{label}: {corrected} under both protocols; no deviation alone changes it."
        moves = "; ".join(f"{_names([d])} alone makes it {alone[d]}" for d in changed)
        return f"{label}: {corrected} under both protocols, though {moves}."
    if authors == SUPPORTED:
        makers = [d for d in changed if alone[d] == SUPPORTED]
        cause = (
            f"it exists only because of {_names(makers)}"
            if makers
            else "no single deviation makes it: it exists only through their combination"
        )
        return f"{label}: {corrected} under the corrected protocol, supported under the authors': {cause}."
    if corrected == SUPPORTED:
        hiders = [d for d in changed if alone[d] != SUPPORTED]
        cause = (
            f"it is hidden by {_names(hiders)}"
            if hiders
            else "no single deviation hides it: only their combination does"
        )
        return f"{label}: supported under the corrected protocol, {authors} under the authors': {cause}."
    by = _names(changed) if changed else "no single deviation (only their combination)"
    return f"{label}: {corrected} under the corrected protocol, {authors} under the authors'; changed by {by}."


def deviation_effects(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per claim row: the corrected and authors' verdicts, the deviations that alone change it, and a sentence.

    `changed_by` lists every deviation whose verdict alone differs from the corrected one
    ("none" where no deviation does); needs the "corrected" and "authors" protocols.
    """
    matrix = claim_matrix(verdicts)
    missing = [p for p in ("corrected", "authors") if p not in matrix]
    if missing:
        raise ValueError(f"the ablation lacks the protocol(s) {missing}: rerun 08_protocol with every protocol")
    deviations = [p for p in protocols_in(verdicts) if p not in ("corrected", "authors")]
    rows = []
    for _, row in matrix.iterrows():
        alone = {d: row[d] for d in deviations}
        label = f"“{row['claim']}” ({row['dataset']}, {row['method']}" + (
            ")" if row["metric"] == "all" else f", {row['metric']})"
        )
        changed = [d for d, v in alone.items() if v != row["corrected"]]
        rows.append(
            {
                **{k: row[k] for k in CLAIM_KEYS},
                "corrected": row["corrected"],
                "authors": row["authors"],
                "changed_by": ", ".join(changed) or "none",
                "sentence": _sentence(label, row["corrected"], row["authors"], alone),
            }
        )
    return pd.DataFrame(rows)


def with_protocol(results: Results, protocol: str = "authors") -> Results:
    """The results with the ablation's `protocol` rows added to the facets (protocol column "corrected" elsewhere).

    `analysis.paper.paper_comparison` then shows our numbers under both protocols; the
    added rows cover only the ablation's images, as summaries of that protocol read them.
    """
    if results.ablation.empty or protocol not in set(results.ablation["protocol"]):
        return results
    added = protocol_rows(results.ablation, protocol).assign(protocol=protocol)
    facets = pd.concat([results.facets.assign(protocol="corrected"), added], ignore_index=True)
    return dataclasses.replace(results, facets=facets)
