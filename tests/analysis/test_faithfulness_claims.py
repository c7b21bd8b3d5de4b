"""Issue 25's analysis on hand-made tables: verdicts per measure, agreement, sanity flags, figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import facets_block
from scipy import stats

from clxai_utils import figures
from clxai_utils.analysis import faithfulness as F
from clxai_utils.analysis.stats import compare_losses, holm
from clxai_utils.core import registry
from clxai_utils.evaluate import faithfulness as measures_module
from clxai_utils.evaluate import randomisation as R

N = 20
SEEDS = (0, 1, 2)
LOSSES = ("ce", "supcon")
# ffid: 2 images per seed differ, |differences| all distinct, sums 0.07, 0.07, 0.075 per seed
FFID_DIFF = {0: (0.01, 0.06), 1: (0.02, 0.05), 2: (0.03, 0.045)}
# six non-zero positive differences among zeros: scipy's normal approximation, W+ = 21, mean 10.5, var 22.75
P_SIX = 2 * stats.norm.sf(10.5 / np.sqrt(22.75))


def _faithfulness(seeds: tuple[int, ...] = SEEDS, methods: tuple[str, ...] = ("gradcam",)) -> pd.DataFrame:
    """SupCon better than CE on deletion, worse on insertion, equal on ROAD, a little better on both F-Fidelities."""
    blocks = []
    for seed in seeds:
        ce = np.linspace(0.2, 0.8, N) + 0.01 * seed
        shift = 0.1 + 0.01 * seed  # seed means differ, so the seed-level t-test has a p value
        ffid = np.zeros(N)
        ffid[:2] = FFID_DIFF[seed]
        for method in methods:
            for loss in LOSSES:
                supcon = loss == "supcon"
                blocks.append(
                    pd.DataFrame(
                        {
                            "dataset": "cifar10",
                            "profile": "quick",
                            "seed": seed,
                            "loss": loss,
                            "method": method,
                            "image_id": np.arange(N),
                            "label": 0,
                            "prediction": 0,
                            "correct": True,
                            "map_all_zero": False,
                            "deletion_probability": ce - shift * supcon,
                            "insertion_probability": ce - shift * supcon,
                            "road": ce,
                            "ffid_plus": ce + ffid * supcon,
                            "ffid_minus": ce - ffid * supcon,
                        }
                    )
                )
    return pd.concat(blocks, ignore_index=True)


def _verdicts(claims: pd.DataFrame) -> dict[str, str]:
    return dict(zip(claims["metric"], claims["verdict"]))


# ----------------------------------------------------------------------------- claims


def test_one_verdict_per_measure_with_holm_over_the_table() -> None:
    claims = F.faithfulness_claims(_faithfulness())
    assert list(claims.columns) == list(F.FAITHFULNESS_CLAIM_COLUMNS)
    assert _verdicts(claims) == {
        "deletion_probability": "supported",
        "insertion_probability": "not supported",
        "road": "inconclusive",  # every difference is zero: untestable
        "ffid_plus": "inconclusive",  # raw p < 0.05, not after Holm
        "ffid_minus": "inconclusive",
    }
    row = claims.set_index("metric").loc
    assert row["road", "p_holm"] != row["road", "p_holm"]  # NaN, and not counted by Holm
    assert row["ffid_plus", "claim"] == "SCL more faithful than CE (F-Fidelity (FFid+))"
    assert row["ffid_plus", "base_claim"] == "SCL more faithful than CE"
    assert row["ffid_plus", "measure"] == "F-Fidelity (FFid+)"
    assert row["ffid_plus", "n"] == N * len(SEEDS)
    # 4 testable rows: the two tiny p values, then P_SIX twice, multiplied by 2 and 1 with a running maximum
    assert row["ffid_plus", "p_holm"] == pytest.approx(2 * P_SIX)
    assert row["ffid_minus", "p_holm"] == pytest.approx(2 * P_SIX)
    assert 2 * P_SIX > 0.05 > P_SIX
    assert row["ffid_plus", "seed_p_t"] < 0.05  # so Holm alone keeps it inconclusive
    assert (claims["basis"] == "images and 3 seeds").all()


def test_without_the_second_small_effect_holm_lets_the_first_through() -> None:
    claims = F.faithfulness_claims(_faithfulness().drop(columns="ffid_minus"))
    row = claims.set_index("metric").loc
    assert row["ffid_plus", "p_holm"] == pytest.approx(P_SIX)
    assert row["ffid_plus", "verdict"] == "supported"


def test_p_holm_is_holm_over_every_row_of_both_methods() -> None:
    comparisons = F.faithfulness_claims(_faithfulness(methods=("gradcam", "eigencam")))
    assert len(comparisons) == 10
    raw = compare_losses(
        _faithfulness(methods=("gradcam", "eigencam")),
        F.measures_in(_faithfulness()),
        pairs=(("supcon", "ce"),),
        registry=F.MEASURE_REGISTRY,
    )
    np.testing.assert_allclose(raw["p_holm"], holm(raw["p"]))
    assert set(comparisons["method"]) == {"gradcam", "eigencam"}


def test_pf_auc_joins_from_the_facets_by_run_and_image() -> None:
    table = _faithfulness(seeds=(0, 1))
    facets = pd.concat(
        [
            facets_block(seed, loss, "gradcam", {"pf_auc": np.linspace(0.3, 0.6, N) - 0.1 * (loss == "supcon")})
            for seed in (0, 1)
            for loss in LOSSES
        ],
        ignore_index=True,
    )
    facets = facets[facets["image_id"] != 3]  # one image without a PF AUC: its pairs are dropped
    claims = F.faithfulness_claims(table, facets)
    pf = claims[claims["metric"] == "pf_auc"].iloc[0]
    assert (pf["claim"], pf["verdict"], pf["n"]) == ("SCL more faithful than CE (PF AUC)", "supported", 2 * (N - 1))
    assert claims["metric"].iloc[0] == "pf_auc"  # Pixel Flipping first


def test_triplet_pairs_and_a_single_loss() -> None:
    table = _faithfulness()
    triplet = table[table["loss"] == "supcon"].assign(loss="triplet")
    claims = F.faithfulness_claims(pd.concat([table, triplet]), pairs=(("supcon", "ce"), ("triplet", "ce")))
    assert set(claims["base_claim"]) == {"SCL more faithful than CE", "TL more faithful than CE"}
    assert _verdicts(claims[claims["base_claim"] == "TL more faithful than CE"])["deletion_probability"] == "supported"
    alone = F.faithfulness_claims(table[table["loss"] == "ce"])
    assert alone.empty and list(alone.columns) == list(F.FAITHFULNESS_CLAIM_COLUMNS)


# ----------------------------------------------------------------------------- agreement


def test_agreement_orients_every_measure_so_that_higher_is_better() -> None:
    x = np.tile(np.linspace(0.0, 1.0, N) ** 2, 2)  # the same images under both losses
    table = _faithfulness(seeds=(0,))[["dataset", "profile", "seed", "loss", "method", "image_id"]].assign(
        deletion_probability=x,  # lower is better
        insertion_probability=-x,  # its negation-oriented twin: higher is better
        road_morf=x,  # lower is better, like deletion
        road=x,  # higher is better: it ranks the maps the other way round
    )
    table.loc[table.index[0], "road"] = np.nan
    agreement = F.measure_agreement(table).set_index(["loss", "measure_a", "measure_b"])
    ce = agreement.loc["ce"]
    assert ce.loc[("deletion_probability", "insertion_probability"), "spearman"] == pytest.approx(1.0)
    assert ce.loc[("deletion_probability", "road_morf"), "spearman"] == pytest.approx(1.0)
    assert ce.loc[("deletion_probability", "road"), "spearman"] == pytest.approx(-1.0)
    assert ce.loc[("deletion_probability", "road"), "n"] == N - 1
    assert ce.loc[("deletion_probability", "road_morf"), "n"] == N
    assert len(ce) == 6  # every pair of the 4 measures once


def test_claim_agreement_names_the_measures_of_each_verdict() -> None:
    agreement = F.claim_agreement(F.faithfulness_claims(_faithfulness()))
    row = agreement.iloc[0]
    assert (row["n_measures"], row["n_supported"], row["n_not_supported"], row["n_inconclusive"]) == (5, 1, 1, 3)
    assert (row["unanimous"], row["verdict"]) == (False, "mixed")
    assert row["sentence"] == (
        "“SCL more faithful than CE” (cifar10, quick, Grad-CAM): deletion (probability) supports it; "
        "insertion (probability) does not; ROAD, F-Fidelity (FFid+) and F-Fidelity (FFid-) are inconclusive."
    )
    assert row["supported_by"] == "deletion (probability)"


def test_a_unanimous_claim_and_the_report_statement() -> None:
    claims = pd.DataFrame(
        {
            "dataset": "cifar10",
            "profile": "quick",
            "method": "eigencam",
            "base_claim": "SCL more faithful than CE",
            "measure": ["PF AUC", "ROAD", "deletion (logit)"],
            "verdict": "supported",
        }
    )
    row = F.claim_agreement(claims).iloc[0]
    assert (row["unanimous"], row["verdict"], row["n_supported"]) == (True, "supported", 3)
    expected = "“SCL more faithful than CE” (cifar10, quick, Eigen-CAM): PF AUC, ROAD and deletion (logit) support it."
    assert row["sentence"] == expected
    assert F.supporting_measures(claims) == f"- {expected}"
    assert F.supporting_measures(claims.iloc[:0]).startswith("No faithfulness measure decides")


# ----------------------------------------------------------------------------- sanity checks

LAYERS = ("none", "head", "backbone.stem")


def _cascade(last_ssim: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """Two seeds, 3 images each; the last step's SSIM per (loss, method) is given (6 values: seed 0, then seed 1)."""
    rows = []
    for (loss, method), values in last_ssim.items():
        for seed in (0, 1):
            for step, layer in enumerate(LAYERS):
                for image in range(3):
                    last = values[3 * seed + image]
                    ssim = (1.0, 0.8, last)[step]
                    rows.append((seed, loss, method, step, layer, image, last == 1.0 and step == 2, ssim, ssim - 0.1))
    columns = ["seed", "loss", "method", "step", "layer", "image_id", "zero_map", "ssim", "spearman"]
    return pd.DataFrame(rows, columns=columns).assign(dataset="cifar10", profile="quick")


def _random_logit(near: dict[tuple[str, str], list[bool]]) -> pd.DataFrame:
    rows = [
        (seed, loss, method, image, 0.99 if flag else 0.5, 0.4, flag)
        for (loss, method), flags in near.items()
        for seed in (0, 1)
        for image, flag in enumerate(flags[3 * seed : 3 * seed + 3])
    ]
    columns = ["seed", "loss", "method", "image_id", "ssim", "spearman", "near_identical"]
    return pd.DataFrame(rows, columns=columns).assign(dataset="cifar10", profile="quick")


def test_sanity_flags_at_and_around_the_threshold() -> None:
    cascade = _cascade(
        {
            ("ce", "gradcam"): [0.25, 0.75, 0.5, 0.5, 0.5, 0.5],  # mean exactly 0.5: not above, passes
            ("supcon", "gradcam"): [0.5, 0.5, 0.5, 0.5, 0.5, 0.506],  # mean 0.501: fails
            ("ce", "eigencam"): [1.0, 1.0, 1.0, 0.9, 0.9, 0.9],  # fails, half its maps all-zero
        }
    )
    logit = _random_logit(
        {
            ("ce", "gradcam"): [True, True, True, False, False, False],  # share 0.5: not above, passes
            ("supcon", "gradcam"): [True, True, True, True, False, False],  # 4 of 6: fails
        }
    )
    table = F.sanity_checks(cascade, logit).set_index(["loss", "method"])
    assert table.loc[("ce", "gradcam"), "cascade_ssim"] == pytest.approx(0.5)
    assert not table.loc[("ce", "gradcam"), "cascade_fails"]
    assert table.loc[("supcon", "gradcam"), "cascade_fails"]
    assert table.loc[("ce", "gradcam"), "random_logit_fails"] is False
    assert table.loc[("supcon", "gradcam"), "random_logit_fails"] is True
    assert table.loc[("supcon", "gradcam"), "near_identical_share"] == pytest.approx(4 / 6)
    assert table.loc[("ce", "gradcam"), "flag"] == ""
    flag = table.loc[("supcon", "gradcam"), "flag"]
    assert flag.startswith("Grad-CAM (SCL) maps barely change under randomisation: mean SSIM 0.50 > 0.5")
    assert "barely depend on the class: 67% of class / random-class pairs near-identical" in flag
    eigencam = table.loc[("ce", "eigencam")]
    assert (eigencam["n_seeds"], eigencam["n_images"], eigencam["last_layer"]) == (2, 3, "backbone.stem")
    assert eigencam["zero_share"] == pytest.approx(0.5)
    assert "50% of them all-zero" in eigencam["flag"]
    # the same rule as `randomisation_verdict` on the pooled table of each set of maps
    for (loss, method), group in cascade.groupby(["loss", "method"]):
        assert table.loc[(loss, method), "cascade_fails"] == R.randomisation_verdict(group).fails


def test_random_logit_is_not_applicable_to_eigencam() -> None:
    cascade = _cascade({("ce", "eigencam"): [0.2] * 6, ("ce", "gradcam"): [0.2] * 6})
    logit = _random_logit({("ce", "eigencam"): [True] * 6})  # even rows present are not read
    table = F.sanity_checks(cascade, logit).set_index("method")
    assert table.loc["eigencam", "random_logit_fails"] == "n/a"
    assert np.isnan(table.loc["eigencam", "near_identical_share"])
    assert table.loc["gradcam", "random_logit_fails"] == "n/a"  # class-specific, but no pairs scored
    assert (table["flag"] == "").all()


def test_the_stages_read_the_registry() -> None:
    """core.registry holds what the torch-free analysis reads; the stages take it from there."""
    assert set(measures_module.MEASURES) | {"ffid_plus", "ffid_minus"} == set(registry.FAITHFULNESS_MEASURES)
    for name, measure in measures_module.MEASURES.items():
        assert registry.FAITHFULNESS_MEASURES[name].better == ("higher" if measure.higher_is_better else "lower")
        assert measure.family in ("deletion", "insertion", "road")
    assert R.CASCADE_THRESHOLD is registry.CASCADE_THRESHOLD


# ----------------------------------------------------------------------------- figures


def _curves() -> pd.DataFrame:
    fractions = np.linspace(0, 1, 5)
    rows = [
        (seed, loss, method, curve, point, fraction, 1 - fraction * (1 + i), 0.1, 10)
        for seed in (0, 1)
        for i, loss in enumerate(LOSSES)
        for method in ("gradcam", "eigencam")
        for curve in ("ffid_plus", "deletion_probability", "road_morf")
        for point, fraction in enumerate(fractions)
    ]
    columns = ["seed", "loss", "method", "curve", "point", "fraction", "mean", "std", "n"]
    return pd.DataFrame(rows, columns=columns).assign(dataset="cifar10", profile="quick")


def test_faithfulness_curves_figure() -> None:
    fig = figures.plot_faithfulness_curves(_curves())
    assert [ax.get_title() for ax in fig.axes] == ["deletion (probability) ↓", "ROAD (MoRF) ↓", "F-Fidelity (FFid+) ↑"]
    for ax in fig.axes:
        assert len(ax.lines) == 4  # 2 losses x 2 methods, seeds pooled
        assert len({line.get_color() for line in ax.lines}) == 2  # one colour per loss
        assert {line.get_linestyle() for line in ax.lines} == {"-", "--"}
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), 1 - np.linspace(0, 1, 5))
    plt.close(fig)


def test_randomisation_figures() -> None:
    cascade = _cascade({(loss, method): [0.3] * 6 for loss in LOSSES for method in ("gradcam", "eigencam")})
    fig = figures.plot_randomisation(cascade)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 5  # 2 losses x 2 methods, and the threshold
        assert ax.lines[-1].get_ydata()[0] == registry.CASCADE_THRESHOLD
        assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "head", "stem"]
    plt.close(fig)
    fig = figures.plot_cascade_maps(torch.rand(3, 2, 8, 8), LAYERS, ["a", "b"])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["none", "head", "stem"]
    plt.close(fig)
    with pytest.raises(ValueError, match="one step per layer"):
        figures.plot_cascade_maps(torch.rand(2, 2, 8, 8), LAYERS)


def test_one_loss_gives_empty_tables_with_their_columns() -> None:
    """A sweep of one loss has no comparison: the claims and their agreement are empty but keep their columns,
    so the notebooks can select from them (09 reads `claim_agreement(...)["sentence"]`)."""
    agreement = F.claim_agreement(F.faithfulness_claims(_faithfulness().query("loss == 'ce'")))
    assert agreement.empty and {"sentence", "verdict", "unanimous"} <= set(agreement.columns)
