"""The paper's published numbers: the YAML, its checks, the comparison with our runs and the paper's verdicts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures import accuracy_block, facets_block

from clxai_utils.analysis import claims, paper
from clxai_utils.analysis.tables import Results
from clxai_utils.core.registry import METRICS


def raw_published() -> dict[str, Any]:
    return yaml.safe_load(paper.published_path().read_text())


def one(table: pd.DataFrame, **where: str) -> pd.Series:
    """The single row of `table` whose columns hold the values of `where`."""
    mask = np.logical_and.reduce([table[column] == value for column, value in where.items()])
    rows = table[mask]
    assert len(rows) == 1, f"{len(rows)} rows for {where}"
    return rows.iloc[0]


def test_the_yaml_holds_the_published_numbers() -> None:
    published = paper.load_published()
    assert "companion repository" in published.source and "not checked against the PDF" in published.source
    acc = one(published.table, dataset="cifar10", method="", metric="accuracy", loss="ce")
    assert (acc["mean"], acc["std"], acc["std_over"], acc["n_runs"]) == (95.32, 0.10, "runs", 5)
    pf = one(published.table, dataset="imagenet_s50", method="gradcam", metric="pf_auc", loss="triplet")
    assert (pf["mean"], pf["std"], pf["std_over"]) == (0.19, 0.01, "runs")
    pointing = one(published.table, dataset="imagenet_s50", method="gradcam", metric="pointing_game", loss="ce")
    assert (pointing["mean"], pointing["std"], pointing["std_over"]) == (0.84, 0.37, "images")
    eigen = one(published.table, dataset="cifar10", method="eigencam", metric="continuity_ssim", loss="triplet")
    assert eigen["mean"] == 0.80 and np.isnan(eigen["std"]) and eigen["std_over"] == ""
    assert len(published.accuracy) == 6 and set(published.accuracy["loss"]) == {"ce", "supcon", "triplet"}
    # 4 Grad-CAM metrics on both data sets, coherence (2) on ImageNet-S50, one Eigen-CAM row; 3 losses each
    assert len(published.metrics) == (4 * 2 + 2 + 1) * 3
    assert set(published.metrics["metric"]) <= set(METRICS)


def broken(edit: str) -> dict[str, Any]:
    raw = raw_published()
    cifar = raw["datasets"]["cifar10"]
    if edit == "dataset":
        raw["datasets"]["cifar100"] = raw["datasets"].pop("cifar10")
    elif edit == "metric":
        cifar["table4"]["gradcam"]["pf_aucc"] = cifar["table4"]["gradcam"].pop("pf_auc")
    elif edit == "loss":
        cifar["accuracy"]["scl"] = cifar["accuracy"].pop("supcon")
    elif edit == "mean":
        del cifar["table4"]["gradcam"]["pf_auc"]["ce"]["mean"]
    elif edit == "std_over":
        cifar["table4"]["gradcam"]["pf_auc"]["ce"]["std_over"] = "seeds"
    elif edit == "std_over_alone":
        cifar["table4"]["eigencam"]["continuity_ssim"]["ce"] = {"mean": 0.49, "std_over": "runs"}
    elif edit == "number":
        cifar["accuracy"]["ce"]["mean"] = "95.32"
    elif edit == "method":
        cifar["table4"]["gradcam++"] = copy.deepcopy(cifar["table4"]["gradcam"])
    return raw


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("dataset", r"datasets\.cifar100: unknown data set 'cifar100'; allowed: cifar10, imagenet_s50"),
        ("metric", r"gradcam\.pf_aucc: unknown metric 'pf_aucc'; allowed: pf_auc, continuity_ssim"),
        ("loss", r"cifar10\.accuracy\.scl: unknown loss 'scl'; allowed: ce, supcon, triplet"),
        ("mean", r"datasets\.cifar10\.table4\.gradcam\.pf_auc\.ce\.mean is missing"),
        ("std_over", r"pf_auc\.ce\.std_over='seeds' is not allowed; choose one of: runs, images"),
        ("std_over_alone", r"continuity_ssim\.ce\.std_over is given without a std"),
        ("number", r"accuracy\.ce\.mean must be a finite number, got '95\.32'"),
        ("method", r"table4\.gradcam\+\+: unknown explanation method 'gradcam\+\+'; allowed: gradcam, eigencam"),
    ],
)
def test_bad_content_is_refused_naming_the_field(edit: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paper.parse_published(broken(edit))


def test_load_published_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(broken("loss")))
    with pytest.raises(ValueError, match=r"^mine\.yaml\.datasets\.cifar10\.accuracy\.scl: unknown loss"):
        paper.load_published(path)


# ---------------------------------------------------------------- comparison on a hand-made Results


def facets_rows(
    dataset: str, seed: int, loss: str, values: dict[str, list[float]], protocol: str | None = None
) -> pd.DataFrame:
    """One (seed, loss, Grad-CAM) block of the paper profile, tagged with `protocol` when given."""
    frame = facets_block(seed, loss, "gradcam", values, profile="paper", dataset=dataset)
    if protocol is not None:
        frame["protocol"] = protocol
    return frame


def accuracy_rows(dataset: str, seed: int, accuracy: dict[str, float]) -> pd.DataFrame:
    return accuracy_block(seed, accuracy, profile="paper", dataset=dataset)


def small_results(protocols: bool = False) -> Results:
    """Two seeds of CE and SupCon on CIFAR-10 (PF AUC), one seed of CE on ImageNet-S50 (pointing game)."""
    blocks = [
        facets_rows("cifar10", 0, "ce", {"pf_auc": [0.36, 0.38]}),
        facets_rows("cifar10", 1, "ce", {"pf_auc": [0.38, 0.40]}),
        facets_rows("cifar10", 0, "supcon", {"pf_auc": [0.20, 0.30]}),
        facets_rows("cifar10", 1, "supcon", {"pf_auc": [0.30, 0.40]}),
        facets_rows("imagenet_s50", 0, "ce", {"pointing_game": [1.0, 0.0, 1.0, 1.0]}),
    ]
    if protocols:
        for block in blocks:
            block["protocol"] = "corrected"
        authors = facets_rows("cifar10", 0, "ce", {"pf_auc": [0.40, 0.42]}, protocol="authors")
        blocks.append(authors)
    accuracy = pd.concat(
        [
            accuracy_rows("cifar10", 0, {"ce": 0.95, "supcon": 0.94}),
            accuracy_rows("cifar10", 1, {"ce": 0.96, "supcon": 0.94}),
            accuracy_rows("imagenet_s50", 0, {"ce": 0.90}),
        ],
        ignore_index=True,
    )
    return Results(pd.concat(blocks, ignore_index=True), accuracy, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), ())


def test_paper_comparison_by_hand() -> None:
    table = paper.paper_comparison(small_results())
    assert list(table.columns[-4:]) == [
        "ours_mean_corrected",
        "ours_std_corrected",
        "n_seeds_corrected",
        "gap_corrected",
    ]
    assert set(table[["dataset", "metric", "loss"]].itertuples(index=False, name=None)) == {
        ("cifar10", "accuracy", "ce"),
        ("cifar10", "accuracy", "supcon"),
        ("cifar10", "pf_auc", "ce"),
        ("cifar10", "pf_auc", "supcon"),
        ("imagenet_s50", "accuracy", "ce"),
        ("imagenet_s50", "pointing_game", "ce"),
    }
    # CE PF AUC: seed means .37 and .39 -> mean .38, std sqrt(2 * .01^2 / 1); paper 0.37 (0.01) -> gap +1
    ce = one(table, dataset="cifar10", metric="pf_auc", loss="ce")
    assert ce["ours_mean_corrected"] == pytest.approx(0.38) and ce["ours_std_corrected"] == pytest.approx(np.sqrt(2e-4))
    assert ce["n_seeds_corrected"] == 2 and ce["gap_corrected"] == pytest.approx(1.0)
    assert (ce["paper_mean"], ce["paper_std"], ce["paper_std_over"], ce["paper_n_runs"]) == (0.37, 0.01, "runs", 5)
    # SupCon PF AUC: mean .30, seed means .25 and .35; the paper's std is 0.00 as printed -> no gap
    supcon = one(table, dataset="cifar10", metric="pf_auc", loss="supcon")
    assert supcon["ours_mean_corrected"] == pytest.approx(0.30) and supcon["ours_std_corrected"] == pytest.approx(
        np.sqrt(0.005)
    )
    assert np.isnan(supcon["gap_corrected"])
    # accuracy in percent: CE 95 and 96 -> 95.5 ± sqrt(.5); paper 95.32 (0.10) -> gap +1.8; method ""
    acc = one(table, dataset="cifar10", metric="accuracy", loss="ce")
    assert acc["method"] == "" and acc["ours_mean_corrected"] == pytest.approx(95.5)
    assert acc["ours_std_corrected"] == pytest.approx(np.sqrt(0.5)) and acc["gap_corrected"] == pytest.approx(1.8)
    # pointing game: a std over images is no yardstick -> no gap; one seed -> no std over seeds
    pointing = one(table, dataset="imagenet_s50", metric="pointing_game", loss="ce")
    assert pointing["ours_mean_corrected"] == pytest.approx(0.75) and pointing["paper_std_over"] == "images"
    assert np.isnan(pointing["gap_corrected"]) and np.isnan(pointing["ours_std_corrected"])
    assert pointing["n_seeds_corrected"] == 1
    # order: per data set, accuracy first, then the metrics; losses in the paper's order
    assert list(table["metric"][:4]) == ["accuracy", "accuracy", "pf_auc", "pf_auc"]
    assert list(table["loss"][:2]) == ["ce", "supcon"]


def test_one_ours_column_per_protocol() -> None:
    table = paper.paper_comparison(small_results(protocols=True))
    assert paper.table_protocols(table) == ["corrected", "authors"]
    ce = one(table, dataset="cifar10", metric="pf_auc", loss="ce")
    assert ce["ours_mean_corrected"] == pytest.approx(0.38)
    assert ce["ours_mean_authors"] == pytest.approx(0.41) and ce["gap_authors"] == pytest.approx(4.0)
    assert ce["n_seeds_authors"] == 1
    supcon = one(table, dataset="cifar10", metric="pf_auc", loss="supcon")
    assert np.isnan(supcon["ours_mean_authors"])  # SupCon has no authors-protocol run
    text = paper.paper_markdown(table)
    assert text.splitlines()[0] == (
        "| metric | data set | loss | paper | ours (corrected) | ours (authors) "
        "| gap (paper std, corrected) | gap (paper std, authors) |"
    )
    assert "| PF AUC ↓ | cifar10 | SCL | 0.27 (0.00) | 0.300 ± 0.071 (2 seeds) | – | – | – |" in text


def test_paper_markdown_cells() -> None:
    comparison = paper.paper_comparison(small_results())
    assert paper.paper_display(comparison).shape == (len(comparison), 6)
    lines = paper.paper_markdown(comparison).splitlines()
    assert lines[0] == "| metric | data set | loss | paper | ours (corrected) | gap (paper std) |"
    assert "| Accuracy (%) ↑ | cifar10 | CE | 95.32 (0.10) | 95.50 ± 0.71 (2 seeds) | +1.8 |" in lines
    assert "| PF AUC ↓ | cifar10 | CE | 0.37 (0.01) | 0.380 ± 0.014 (2 seeds) | +1.0 |" in lines
    assert "| Pointing game ↑ | imagenet_s50 | CE | 0.84 (0.37 over images) | 0.750 (1 seed) | – |" in lines
    note = paper.paper_note()
    assert "(ours - paper) / paper std" in note and "not checked against the PDF" in note


# ---------------------------------------------------------------- the paper's own verdicts


def test_paper_verdicts_cover_every_claim_and_join_on_its_keys() -> None:
    verdicts = paper.paper_verdicts()
    names = (
        {c.claim for c in claims.LOSS_CLAIMS} | {claims.METHOD_CLAIM.claim} | {c.claim for c in claims.TRIPLET_CLAIMS}
    )
    assert set(verdicts["claim"]) == names
    assert set(claims.claim_definitions()["claim"]) == names
    assert not verdicts.duplicated(["claim", "dataset", "metric"]).any()
    assert set(verdicts["paper_verdict"]) <= {"supported", "not supported", "inconclusive", "not addressed"}
    assert (verdicts["paper_says"] != "the paper's text does not state this claim").all()  # every claim has its words


def test_paper_verdicts_from_the_published_means() -> None:
    verdicts = paper.paper_verdicts()
    faithful = one(verdicts, claim="SCL more faithful than CE", dataset="cifar10", metric="pf_auc")
    assert faithful["paper_verdict"] == "supported" and faithful["from_published_means"] == "supported"
    assert "SCL 0.27 vs CE 0.37 PF AUC, lower is better" in faithful["reason"]
    contrast = one(
        verdicts, claim="SCL lower contrastivity than CE", dataset="imagenet_s50", metric="contrastivity_ssim"
    )
    assert contrast["from_published_means"] == "supported"  # CE 0.20 is the better (lower) SSIM
    gini = one(verdicts, claim="SCL less complex than CE (Gini)", dataset="cifar10", metric="sparseness_gini")
    assert (gini["paper_verdict"], gini["from_published_means"], gini["basis"]) == (
        "supported",
        "no numbers",
        "text only",
    )
    coherence = one(verdicts, claim="coherence inconclusive (SCL vs CE)", dataset="cifar10", metric="pointing_game")
    assert coherence["paper_verdict"] == "not addressed"
    coherence = one(
        verdicts, claim="coherence inconclusive (SCL vs CE)", dataset="imagenet_s50", metric="pointing_game"
    )
    assert (coherence["paper_verdict"], coherence["from_published_means"]) == ("supported", "inconclusive")
    # TL vs CE on ImageNet-S50: CE better only on PF AUC (0.17 vs 0.19), worse on continuity and entropy
    poor = one(verdicts, claim="TL poor on ImageNet-S50", dataset="imagenet_s50", metric="all")
    assert poor["from_published_means"] == "not supported" and "CE better in 1 of the 3" in poor["reason"]
    good = one(verdicts, claim="TL good on CIFAR-10", dataset="cifar10", metric="all")
    assert good["from_published_means"] == "supported" and good["basis"] == "Table 4 (3 of 4 comparisons) and text"
    # the one Eigen-CAM row: Grad-CAM better for CE only (0.54 vs 0.49), worse for SCL and TL
    method = one(verdicts, claim="Grad-CAM better than Eigen-CAM", dataset="cifar10", metric="all")
    assert method["from_published_means"] == "not supported" and "1 of the 3" in method["reason"]
    assert (
        one(verdicts, claim="Grad-CAM better than Eigen-CAM", dataset="imagenet_s50", metric="all")[
            "from_published_means"
        ]
        == "no numbers"
    )
