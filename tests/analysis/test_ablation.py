"""Verdicts per protocol, the claim x protocol table and its sentences, on tables whose verdicts are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures import accuracy_block, facets_block

from clxai_utils.analysis import ablation as AB
from clxai_utils.analysis.tables import Results
from clxai_utils.core.config import ABLATION_PROTOCOLS
from clxai_utils.core.validate import ConfigError

N = 40
FAITHFUL = "SCL more faithful than CE"


def _block(seed: int, loss: str, method: str, pf: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    other = {m: rng.uniform(0.2, 0.8, N) for m in ("continuity_ssim", "complexity_entropy", "sparseness_gini")}
    return facets_block(seed, loss, method, {"pf_auc": pf, **other})


def _protocol(protocol: str, supcon_shift: float, seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    """SupCon's PF AUC = CE's + `supcon_shift` (+ small noise) on every image; everything else unrelated."""
    blocks = []
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        ce = rng.uniform(0.3, 0.5, N)
        for method in ("gradcam", "eigencam"):
            blocks.append(_block(seed, "ce", method, ce))
            blocks.append(_block(seed, "supcon", method, ce + supcon_shift + rng.normal(0, 0.005, N)))
    return pd.concat(blocks, ignore_index=True).assign(protocol=protocol)


def _ablation(shifts: dict[str, float]) -> pd.DataFrame:
    return pd.concat([_protocol(p, shifts.get(p, shifts["corrected"])) for p in ABLATION_PROTOCOLS], ignore_index=True)


def _faithful_row(effects: pd.DataFrame) -> pd.Series:
    rows = effects[(effects["claim"] == FAITHFUL) & (effects["method"] == "gradcam")]
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_claim_hidden_by_one_deviation_is_named() -> None:
    """SupCon better (lower PF AUC) in the corrected protocol, worse under pf_true_label and so under the authors'."""
    verdicts = AB.protocol_claims(_ablation({"corrected": -0.1, "pf_true_label": 0.1, "authors": 0.1}))
    row = _faithful_row(AB.deviation_effects(verdicts))
    assert (row["corrected"], row["authors"], row["changed_by"]) == ("supported", "not supported", "pf_true_label")
    assert "hidden by `pf_true_label`" in row["sentence"]
    matrix = AB.claim_matrix(verdicts)
    assert list(matrix.columns[-len(ABLATION_PROTOCOLS) :]) == list(ABLATION_PROTOCOLS)


def test_a_claim_that_exists_only_because_of_a_deviation() -> None:
    verdicts = AB.protocol_claims(_ablation({"corrected": 0.1, "clamped_noise": -0.1, "authors": -0.1}))
    row = _faithful_row(AB.deviation_effects(verdicts))
    assert (row["corrected"], row["authors"]) == ("not supported", "supported")
    assert "exists only because of `clamped_noise`" in row["sentence"]


def test_a_claim_no_deviation_moves_says_so() -> None:
    verdicts = AB.protocol_claims(_ablation({"corrected": -0.1}))
    row = _faithful_row(AB.deviation_effects(verdicts))
    assert row["changed_by"] == "none"
    assert row["sentence"].endswith("supported under both protocols; no deviation alone changes it.")


def test_only_the_combination_changes_a_verdict() -> None:
    verdicts = AB.protocol_claims(_ablation({"corrected": -0.1, "authors": 0.1}))
    row = _faithful_row(AB.deviation_effects(verdicts))
    assert row["changed_by"] == "none" and "only their combination" in row["sentence"]


def test_correct_only_average_drops_the_misclassified_rows() -> None:
    """Under `correct_only_average` (and "authors") a misclassified image leaves the tests and the means."""
    table = _ablation({"corrected": -0.1})
    table.loc[table["image_id"] == 3, "correct"] = False
    for protocol, kept in (("corrected", N), ("correct_only_average", N - 1), ("authors", N - 1)):
        rows = AB.protocol_rows(table, protocol)
        assert rows.groupby(["seed", "loss", "method"]).size().eq(kept).all(), protocol
    assert "protocol" not in AB.protocol_rows(table, "corrected")


def test_the_authors_rows_join_the_facets_for_the_paper_comparison() -> None:
    table = _ablation({"corrected": -0.1})
    accuracy = pd.concat([accuracy_block(s, {"ce": 0.8, "supcon": 0.7}) for s in (0, 1, 2)])
    corrected = AB.protocol_rows(table, "corrected")
    results = Results(corrected, accuracy, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), (), ablation=table)
    joined = AB.with_protocol(results).facets
    assert sorted(joined["protocol"].unique()) == ["authors", "corrected"]
    assert (joined["protocol"] == "authors").sum() == len(AB.protocol_rows(table, "authors"))
    empty = Results(corrected, accuracy, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), ())
    assert AB.with_protocol(empty) is empty


def test_unknown_protocols_and_missing_ones_are_refused() -> None:
    table = _ablation({"corrected": -0.1})
    with pytest.raises(
        ConfigError, match="protocol='bogus' is not allowed; choose one of: corrected, authors, clamped_noise"
    ):
        AB.protocol_rows(table.assign(protocol="bogus"), "bogus")
    verdicts = AB.protocol_claims(table[table["protocol"] != "authors"])
    with pytest.raises(ValueError, match=r"lacks the protocol\(s\) \['authors'\]"):
        AB.deviation_effects(verdicts)
    with pytest.raises(ValueError, match="run notebooks/08_protocol.ipynb"):
        AB.protocol_claims(table.iloc[:0])
