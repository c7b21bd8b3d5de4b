"""Issue 23's paper cuts in the analysis: a sweep of one loss, Table 4 as rendered Markdown, the figure legend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from clxai_utils import figures
from clxai_utils.analysis import claims, coherence, confound, stats
from clxai_utils.core.registry import METHODS, METRICS


def facet_rows(loss: str, method: str, seed: int, n: int = 12, epoch: int | None = None) -> pd.DataFrame:
    """One (loss, method, seed) block of a facets table: every metric drawn at random, paired by image id."""
    rng = np.random.default_rng(hash((loss, method, seed, epoch)) % 2**32)
    frame = pd.DataFrame(
        {"dataset": "cifar10", "profile": "smoke", "seed": seed, "loss": loss, "method": method, "image_id": range(n)}
    )
    for metric in METRICS:
        frame[metric] = rng.uniform(0, 1, n)
    if epoch is not None:
        frame["epoch"], frame["final"], frame["accuracy"] = epoch, epoch == 3, 0.3 + 0.1 * epoch + 0.01 * seed
    return frame


def one_loss_facets() -> pd.DataFrame:
    return pd.concat([facet_rows("ce", m, s) for m in METHODS for s in (0, 1)], ignore_index=True)


def test_one_loss_gives_empty_comparisons_with_their_columns_and_a_note() -> None:
    """`--losses ce`: no "facets hold none of the loss pairs" error; empty tables that later steps can read."""
    facets = one_loss_facets()
    note = stats.two_conditions_note(facets)
    assert "only the loss 'ce'" in note and "need two" in note
    tests = stats.compare_losses(facets)
    assert tests.empty and {"metric", "a", "b", "p", "p_holm", "winner", "seed_p_t"} <= set(tests.columns)
    methods = stats.compare_methods(facets)  # Grad-CAM vs Eigen-CAM still compares within the one loss
    assert set(methods["loss"]) == {"ce"} and len(methods) > 0
    verdicts = claims.claims(tests, methods)
    assert set(verdicts["metric"]) == {"all"}  # only the method claim: no loss claim is decided
    photo = coherence.photo_comparisons(facets)
    assert photo.empty
    assert coherence.agreement(tests, photo).empty
    assert claims.claims(tests, methods.iloc[0:0]).empty


def test_two_losses_have_no_note_and_unrequested_pairs_still_fail() -> None:
    facets = pd.concat([one_loss_facets(), facet_rows("supcon", "gradcam", 0)], ignore_index=True)
    assert stats.two_conditions_note(facets) == ""
    with pytest.raises(ValueError, match="hold none of the loss pairs"):
        stats.compare_losses(facets, pairs=[("triplet", "ce")])


def test_one_loss_snapshots_run_through_the_confound_steps() -> None:
    """07 and 09 on a one-loss run: no selection, no test, no claim, an empty survival table, and no error."""
    snapshots = pd.concat(
        [facet_rows("ce", m, s, epoch=e) for m in METHODS for s in (0, 1) for e in (1, 2, 3)], ignore_index=True
    )
    accuracy = snapshots.drop_duplicates(["seed", "loss", "epoch"])[
        ["dataset", "profile", "seed", "loss", "epoch", "final", "accuracy"]
    ]
    selection = confound.select_snapshots(accuracy)
    assert selection.empty
    tests = confound.compare_at_levels(snapshots, selection)
    assert tests.empty
    verdicts = confound.level_claims(tests)
    assert verdicts.empty and "level" in verdicts.columns
    survival = confound.survival(verdicts)
    assert survival.empty and {"claim", "final", "matched", "survives"} <= set(survival.columns)


def test_facets_vs_accuracy_legend_lists_each_loss_once() -> None:
    """Three seeds draw three lines per (loss, method); the legend names each loss and method once."""
    snapshots = pd.concat(
        [
            facet_rows(loss, method, seed, epoch=epoch)
            for loss in ("ce", "supcon", "triplet")
            for method in METHODS
            for seed in (0, 1, 2)
            for epoch in (1, 2, 3)
        ],
        ignore_index=True,
    )
    fig = figures.plot_facets_vs_accuracy(snapshots)
    legends = [legend for ax in fig.axes if (legend := ax.get_legend()) is not None]
    assert len(legends) == 1
    labels = [text.get_text() for text in legends[0].get_texts()]
    assert len(labels) == len(set(labels))
    assert labels[:3] == ["CE", "SCL", "TL"]
    assert len(labels) == 3 + len(METHODS) + 1  # losses, methods (line style), the final model's marker
    matplotlib.pyplot.close(fig)
