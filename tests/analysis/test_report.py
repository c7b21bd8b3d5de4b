"""Analysis stage: loading run tables, Table 4, claim verdicts, figures and report files."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from fixtures import accuracy_block as accuracy_rows
from fixtures import facets_block as facets_rows

from clxai_utils import figures
from clxai_utils.analysis import claims, report, stats, tables
from clxai_utils.analysis.tables import Results
from clxai_utils.core.registry import METRICS
from clxai_utils.core.run import Run


def pf_rows(seed: int, curves: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    frames = [
        pd.DataFrame(
            {
                "dataset": "cifar10",
                "profile": "quick",
                "seed": seed,
                "loss": loss,
                "method": method,
                "step": np.arange(len(c)),
                "fraction": np.linspace(0, 1, len(c)),
                "mean": c,
                "std": 0.1,
                "n": 60,
            }
        )
        for (loss, method), c in curves.items()
    ]
    return pd.concat(frames, ignore_index=True)


def small_results() -> Results:
    """Two seeds, CE and SupCon, Grad-CAM, three images plus one all-zero map (NaN metrics) per run."""
    images = {
        (0, "ce"): [0.1, 0.2, 0.3],
        (1, "ce"): [0.5, 0.6, 0.7],
        (0, "supcon"): [0.1, 0.1, 0.1],
        (1, "supcon"): [0.3, 0.3, 0.3],
    }
    blocks = []
    for (seed, loss), v in images.items():
        block = facets_rows(seed, loss, "gradcam", {m: np.array([*v, np.nan]) for m in METRICS if m != "pointing_game"})
        block.loc[3, "map_all_zero"] = True
        blocks.append(block)
    accuracy = pd.concat([accuracy_rows(0, {"ce": 0.9, "supcon": 0.7}), accuracy_rows(1, {"ce": 0.8, "supcon": 0.7})])
    curves = pd.concat([pf_rows(s, {("ce", "gradcam"): [1, 0.5, 0]}) for s in (0, 1)])
    return Results(
        pd.concat(blocks, ignore_index=True),
        accuracy.reset_index(drop=True),
        curves,
        pd.DataFrame(),
        pd.DataFrame(),
        (),
    )


def test_table4_numbers_by_hand() -> None:
    numeric = tables.table4_numeric(small_results()).set_index(["loss", "metric"])
    ce, supcon = numeric.loc[("ce", "pf_auc")], numeric.loc[("supcon", "pf_auc")]
    # CE pooled [.1 .2 .3 .5 .6 .7]: mean .4, squares of deviations sum to .28 -> std sqrt(.28/5); seed means .2, .6
    assert ce["mean"] == pytest.approx(0.4) and ce["std_images"] == pytest.approx(np.sqrt(0.28 / 5))
    assert ce["std_seeds"] == pytest.approx(np.sqrt(0.08)) and (ce["n_images"], ce["n_seeds"]) == (6, 2)
    # SupCon pooled [.1 .1 .1 .3 .3 .3]: mean .2, std sqrt(.06/5); seed means .1, .3
    assert supcon["mean"] == pytest.approx(0.2) and supcon["std_images"] == pytest.approx(np.sqrt(0.06 / 5))
    assert supcon["std_seeds"] == pytest.approx(np.sqrt(0.02))
    assert supcon["best"] and not ce["best"]  # PF AUC: lower is better
    assert numeric.loc[("ce", "continuity_ssim"), "best"]  # continuity: higher is better
    acc = numeric.loc[("ce", "accuracy")]
    assert acc["mean"] == pytest.approx(0.85) and acc["std_seeds"] == pytest.approx(np.sqrt(0.005))

    display = tables.table4(small_results()).set_index("loss")
    assert display.loc["supcon", "PF AUC ↓"] == "**0.200 ± 0.110 (± 0.141)**"
    assert display.loc["ce", "PF AUC ↓"] == "0.400 ± 0.237 (± 0.283)"
    assert display.loc["ce", "Accuracy (%) ↑"] == "**85.0 (± 7.1)**"
    assert display.loc["supcon", "Accuracy (%) ↑"] == "70.0 (± 0.0)"
    assert display.loc["ce", "Pointing game ↑"] == "–"
    assert list(display.columns[:4]) == ["dataset", "profile", "method", "Accuracy (%) ↑"]


def signed(metric: str, amount: float) -> float:
    """`amount` in the metric's better direction."""
    return amount if METRICS[metric].better == "higher" else -amount


def claims_facets(n: int = 60) -> pd.DataFrame:
    """Built so every claim's verdict is known: see the comments per metric."""
    rng = np.random.default_rng(0)
    symmetric = np.repeat(np.arange(1, n // 2 + 1) * 0.002, 2) * np.tile([1, -1], n // 2)  # W+ = W-: p = 1
    blocks = []
    for seed in (0, 1):
        ce = {m: rng.uniform(0.3, 0.7, n) for m in METRICS}
        ce["pointing_game"] = (np.arange(n) % 2).astype(float)
        noise = {m: rng.normal(scale=0.01, size=n) for m in METRICS}
        supcon = {
            "pf_auc": ce["pf_auc"] - 0.1 + noise["pf_auc"],  # better: supported
            "continuity_ssim": ce["continuity_ssim"] - 0.1 + noise["continuity_ssim"],  # worse: not supported
            "complexity_entropy": ce["complexity_entropy"] + symmetric,  # no difference: inconclusive
            "sparseness_gini": ce["sparseness_gini"] + 0.1 + noise["sparseness_gini"],  # better: supported
            "contrastivity_ssim": ce["contrastivity_ssim"] + 0.1 + noise["contrastivity_ssim"],  # paper: SSIM higher
            "pointing_game": 1 - ce["pointing_game"],  # as many hits gained as lost: p = 1, supported
            "attribution_localisation": ce["attribution_localisation"] + 0.1,  # differs: not supported
        }
        triplet = {m: ce[m] + signed(m, 0.1) + noise[m] for m in METRICS}  # better everywhere
        for loss, values in (("ce", ce), ("supcon", supcon), ("triplet", triplet)):
            blocks.append(facets_rows(seed, loss, "gradcam", values))
            worse = {
                m: v - signed(m, 0.1) + rng.normal(scale=0.01, size=n)
                for m, v in values.items()
                if m != "contrastivity_ssim"
            }
            worse["pointing_game"] = values["pointing_game"] * (np.arange(n) % 3 != 0)  # Eigen-CAM loses hits
            blocks.append(facets_rows(seed, loss, "eigencam", worse))
    return pd.concat(blocks, ignore_index=True)


def test_claims_verdicts_on_built_data() -> None:
    facets = claims_facets()
    table = claims.claims(stats.compare_losses(facets), stats.compare_methods(facets))
    gradcam = table[table["method"] == "gradcam"].set_index("metric")
    expected = {
        "pf_auc": "supported",
        "continuity_ssim": "not supported",
        "complexity_entropy": "inconclusive",
        "sparseness_gini": "supported",
        "contrastivity_ssim": "supported",
        "pointing_game": "supported",
        "attribution_localisation": "not supported",
    }
    assert gradcam.loc[list(expected), "verdict"].to_dict() == expected
    assert gradcam.loc["complexity_entropy", "p_holm"] == pytest.approx(1.0)
    assert gradcam.loc["pf_auc", "n"] == 120 and gradcam.loc["pf_auc", "r"] == -1
    assert "contrastivity_ssim" not in set(table.loc[table["method"] == "eigencam", "metric"])

    aggregate = table[table["metric"] == "all"].set_index("claim")
    assert aggregate.loc["Grad-CAM better than Eigen-CAM", "verdict"] == "supported"
    assert aggregate.loc["Grad-CAM better than Eigen-CAM", "n"] == 3 * 6  # 3 losses x 6 metrics
    tl = table[table["claim"] == "TL good on CIFAR-10"]
    assert list(tl["verdict"]) == ["supported", "supported"] and list(tl["n"]) == [4, 4]


def test_method_claim_majority_rule() -> None:
    facets = claims_facets()
    swapped = facets.assign(method=facets["method"].map({"gradcam": "eigencam", "eigencam": "gradcam"}))
    swapped.loc[swapped["method"] == "eigencam", "contrastivity_ssim"] = np.nan
    same = pd.concat(
        [facets[facets["method"] == "gradcam"], facets[facets["method"] == "gradcam"].assign(method="eigencam")],
        ignore_index=True,
    )
    for data, verdict in ((swapped, "not supported"), (same, "inconclusive")):
        table = claims.claims(stats.compare_losses(data, metrics=["pf_auc"]), stats.compare_methods(data))
        row = table[table["claim"] == "Grad-CAM better than Eigen-CAM"].iloc[0]
        assert row["verdict"] == verdict


@pytest.mark.parametrize(
    ("p", "winner", "expected", "verdict"),
    [
        (0.01, "supcon", "supcon", "supported"),
        (0.01, "ce", "supcon", "not supported"),
        (0.2, "ce", "supcon", "inconclusive"),
        (np.nan, "", "supcon", "inconclusive"),
        (0.2, "ce", None, "supported"),
        (0.01, "ce", None, "not supported"),
        (np.nan, "", None, "inconclusive"),
    ],
)
def test_verdict_rule(p: float, winner: str, expected: str | None, verdict: str) -> None:
    assert claims.verdict(p, winner, expected, alpha=0.05) == verdict


def test_claim_definitions_state_the_claims_and_their_rules() -> None:
    table = claims.claim_definitions()
    assert list(table.columns) == ["claim", "section", "statement", "metrics", "comparison", "expected", "rule"]
    assert list(table["claim"]) == [c.claim for c in claims.LOSS_CLAIMS] + [
        "Grad-CAM better than Eigen-CAM",
        "TL good on CIFAR-10",
        "TL poor on ImageNet-S50",
    ]
    assert table["section"].str.startswith("§5").all()  # every claim is made in the Results section
    for claim, row in zip(claims.LOSS_CLAIMS, table.to_dict("records")):
        assert (row["metrics"], row["comparison"], row["section"]) == (claim.metric, "supcon vs ce", claim.section)
        assert row["expected"] == (claim.expected or "no difference")
        # the words say what `verdict` does, outcome by outcome
        assert claims.verdict(np.nan, "", claim.expected, 0.05) == "inconclusive" and row["rule"].endswith("untestable")
        significant = "(significant: p_holm < 0.05 over images and, with 2+ seeds, seed-level t-test p < 0.05"
        assert significant in row["rule"]
        if claim.expected is None:
            assert claims.verdict(0.2, "ce", None, 0.05, 0.3, "ce") == "supported"
            assert row["rule"].startswith("supported if neither test is significant; not supported if both are")
            assert claims.verdict(0.01, "ce", None, 0.05, 0.3, "ce") == "inconclusive"
            assert "inconclusive if they disagree" in row["rule"]
        else:
            other = "ce" if claim.expected == "supcon" else "supcon"
            assert claims.verdict(0.01, claim.expected, claim.expected, 0.05, 0.01, claim.expected) == "supported"
            assert row["rule"].startswith(f"supported if {claim.expected} is significantly better")
            assert claims.verdict(0.01, other, claim.expected, 0.05, 0.01, other) == "not supported"
            assert f"not supported if {other} is;" in row["rule"]
            assert claims.verdict(0.01, claim.expected, claim.expected, 0.05, 0.3, claim.expected) == "inconclusive"
            assert "if image and seed level disagree, or untestable" in row["rule"]
    rows = table.set_index("metrics")
    assert rows.loc["contrastivity_ssim", "expected"] == "ce"  # the paper finds SupCon's contrastivity worse
    assert rows.loc["pointing_game", "expected"] == rows.loc["attribution_localisation", "expected"] == "no difference"

    method, triplet, poor = table.iloc[-3], table.iloc[-2], table.iloc[-1]
    assert poor["expected"] == "ce" and poor["comparison"].startswith("triplet vs ce; ImageNet-S50 only")
    assert poor["rule"].startswith("of the m testable comparisons: supported if ce is significantly better")
    assert method["metrics"].split(", ") == list(dict.fromkeys(stats.compare_methods(claims_facets())["metric"]))
    assert "contrastivity_ssim" not in method["metrics"] and method["comparison"].startswith("gradcam vs eigencam")
    assert triplet["metrics"].split(", ") == list(claims.TRIPLET_METRICS) and triplet["comparison"].startswith(
        "triplet vs ce"
    )
    assert (method["expected"], triplet["expected"]) == ("gradcam", "triplet")
    # "more than m/2" is strict, as in `_majority_row`: 2 significant wins of 4 is inconclusive, 3 is supported
    assert "in more than m/2" in triplet["rule"] and "ce is in more than m/2" in triplet["rule"]
    for wins, verdict in ((2, "inconclusive"), (3, "supported")):
        group = pd.DataFrame(
            {
                "dataset": "cifar10",
                "profile": "quick",
                "n_seeds": 1,
                "p_holm": [0.01] * wins + [0.5] * (4 - wins),
                "winner": ["triplet"] * 4,
                "seed_p_t": np.nan,
                "seed_winner": "",
            }
        )
        assert claims._majority_row(group, "c", "s", "triplet", "gradcam", 0.05)["verdict"] == verdict

    assert "p_holm < 0.01" in claims.claim_definitions(alpha=0.01)["rule"].iloc[0]
    assert not claims.claim_definitions(alpha=0.01)["rule"].str.contains("0.05").any()
    with pytest.raises(ValueError, match="alpha"):
        claims.claim_definitions(alpha=1.0)


def write_run(root: Path, seed: int) -> Path:
    """One run root as 04_linear_probe and 06_metrics leave it."""
    results_dir = Run("cifar10", "quick", seed, root=root / Run("cifar10", "quick", seed).id).accuracy_path.parent
    results_dir.mkdir(parents=True)
    facets = pd.concat(
        [
            facets_rows(seed, loss, method, {m: np.full(3, seed + 0.5) for m in METRICS})
            for loss, method in itertools.product(("ce", "supcon"), ("gradcam", "eigencam"))
        ]
    )
    facets.to_csv(results_dir / "facets.csv", index=False)
    accuracy_rows(seed, {"ce": 0.9, "supcon": 0.8}).to_csv(results_dir / "accuracy.csv", index=False)
    pf_rows(seed, {("ce", "gradcam"): [1, 0.4, 0.1]}).to_csv(results_dir / "pf_curves.csv", index=False)
    return results_dir


def test_load_results_concatenates_run_roots_and_rejects_duplicates(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path / "runs", seed) for seed in (0, 1)]
    results = tables.load_results(tmp_path / "runs")
    assert len(results.facets) == 2 * 12 and len(results.accuracy) == 4 and len(results.pf_curves) == 6
    assert len(results.files) == 6
    by_seed = results.facets.groupby("seed")["pf_auc"].unique().to_dict()
    assert {k: list(v) for k, v in by_seed.items()} == {0: [0.5], 1: [1.5]}
    assert results.facets["correct"].dtype == bool and results.facets["image_id"].dtype == np.int64

    copy = tmp_path / "runs" / "rerun" / "results"
    copy.mkdir(parents=True)
    shutil.copy(dirs[0] / "facets.csv", copy / "facets.csv")
    with pytest.raises(ValueError, match="found twice") as error:
        tables.load_results(tmp_path / "runs")
    assert str(dirs[0] / "facets.csv") in str(error.value) and str(copy / "facets.csv") in str(error.value)


def test_load_results_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="06_metrics"):
        tables.load_results(tmp_path / "empty")
    results_dir = write_run(tmp_path / "runs", 0)
    pd.read_csv(results_dir / "facets.csv").drop(columns="pf_auc").to_csv(results_dir / "facets.csv")
    with pytest.raises(ValueError, match=r"lacks the facets column\(s\) \['pf_auc'\]"):
        tables.load_results(tmp_path / "runs")


def test_markdown_table_by_hand() -> None:
    table = pd.DataFrame({"name": ["a|b", "c"], "x": [1.23456, np.nan], "n": [1, 2], "ok": [True, False]})
    assert report.markdown_table(table) == (
        "| name | x | n | ok |\n|---|---:|---:|---|\n| a\\|b | 1.235 | 1 | True |\n| c |  | 2 | False |\n"
    )


def test_write_report_writes_every_format(tmp_path: Path) -> None:
    table = pd.DataFrame({"loss": ["ce", "supcon"], "pf_auc": [0.25, 0.125]})
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    paths = report.write_report(tmp_path / "report", {"table4": table}, {"pf": fig})
    plt.close(fig)
    names = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert names == ["pf.png", "pf.svg", "table4.csv", "table4.md"] and sorted(p.name for p in paths) == names
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "report" / "table4.csv"), table, check_dtype=False)
    assert (tmp_path / "report" / "table4.md").read_text().splitlines()[2] == "| ce | 0.25 |"
    assert (tmp_path / "report" / "pf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "report" / "pf.svg").read_text()
    with pytest.raises(ValueError, match="plain file stem"):
        report.write_report(tmp_path, {"../escape": table}, {})


def test_pf_curve_figure_averages_seeds() -> None:
    curves = pd.concat(
        [
            pf_rows(
                0,
                {
                    ("ce", "gradcam"): [1, 0.5, 0.0],
                    ("supcon", "gradcam"): [1, 0.2, 0.0],
                    ("ce", "eigencam"): [1, 0.6, 0.1],
                },
            ),
            pf_rows(
                1,
                {
                    ("ce", "gradcam"): [0.8, 0.3, 0.2],
                    ("supcon", "gradcam"): [0.6, 0.2, 0.0],
                    ("ce", "eigencam"): [1, 0.6, 0.1],
                },
            ),
        ]
    )
    fig = figures.plot_pf_curves(curves)
    gradcam, eigencam = fig.axes
    assert gradcam.get_title() == "gradcam" and eigencam.get_title() == "eigencam"
    np.testing.assert_allclose(gradcam.lines[0].get_ydata(), [0.9, 0.4, 0.1])  # CE, mean of the two seeds
    np.testing.assert_allclose(gradcam.lines[1].get_ydata(), [0.8, 0.2, 0.0])
    assert fig.get_size_inches()[0] <= 8
    plt.close(fig)


def test_distribution_and_accuracy_figures() -> None:
    results = small_results()
    fig = figures.plot_metric_distributions(results.facets)
    assert len(fig.axes) == 6  # pointing game has no values in these results
    plt.close(fig)
    fig = figures.plot_accuracy_vs_metric(tables.seed_level(results), "gradcam")
    points = fig.axes[0].collections[0].get_offsets()
    assert sorted(map(tuple, np.round(points, 6))) == [(0.7, 0.1), (0.7, 0.3), (0.8, 0.6), (0.9, 0.2)]
    plt.close(fig)
    with pytest.raises(ValueError, match="must select exactly one"):
        figures.plot_metric_distributions(results.facets, dataset="imagenet_s50")


def test_provenance_flags_non_paper_profiles() -> None:
    text = report.describe_provenance(small_results())
    assert "cifar10, profile 'quick': seeds 0, 1; losses ce, supcon; methods gradcam" in text
    assert "; 4 test images per run; 4 of 16 maps all zero" in text and "NOT paper-level" in text
    paper = small_results()
    paper = Results(
        paper.facets.assign(profile="paper"),
        paper.accuracy,
        paper.pf_curves,
        paper.coherence_masks,
        paper.snapshots,
        (),
    )
    text = report.describe_provenance(paper)
    assert "NOT paper-level" not in text and "only 2 here" in text


def test_accuracy_by_run_in_percent() -> None:
    table = tables.accuracy_by_run(small_results())
    assert list(table.columns) == ["dataset", "profile", "seed", "ce", "supcon"]
    assert (
        table["seed"].tolist() == [0, 1]
        and table["ce"].tolist() == [90.0, 80.0]
        and table["supcon"].tolist() == [70.0, 70.0]
    )
