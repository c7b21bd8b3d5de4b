"""The accuracy confound: snapshot selection at matched accuracy, and the claims decided at each level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clxai_utils.analysis import claims, confound
from clxai_utils.core.registry import METRICS


def history(loss: str, accuracies: list[float], seed: int = 0) -> pd.DataFrame:
    """One run's snapshot accuracies of one loss, epochs 1..k, the last one final."""
    k = len(accuracies)
    return pd.DataFrame(
        {
            "dataset": "cifar10",
            "profile": "quick",
            "seed": seed,
            "loss": loss,
            "epoch": range(1, k + 1),
            "final": [e == k for e in range(1, k + 1)],
            "accuracy": accuracies,
        }
    )


# CE passes 0.50 .. 0.82; SupCon ends at 0.66, between CE's epochs 3 (0.63) and 4 (0.67).
CE = [0.50, 0.56, 0.63, 0.67, 0.70, 0.82]
SUPCON = [0.40, 0.52, 0.58, 0.61, 0.64, 0.66]


def test_closest_epoch_and_its_tie_rule() -> None:
    hist = history("ce", CE)
    assert confound.closest_epoch(hist, 0.66)["epoch"] == 4  # |0.67 - 0.66| < |0.63 - 0.66|
    assert confound.closest_epoch(hist, 0.0)["epoch"] == 1
    tied = history("ce", [0.5, 0.6, 0.7])
    assert confound.closest_epoch(tied, 0.65)["epoch"] == 3  # 0.6 and 0.7 equally close: the later epoch
    with pytest.raises(ValueError, match="no snapshot"):
        confound.closest_epoch(tied.iloc[0:0], 0.5)


def test_selection_at_each_level_on_a_hand_made_history() -> None:
    accuracy = pd.concat([history("ce", CE), history("supcon", SUPCON)])
    selection = confound.select_snapshots(accuracy, pairs=[("supcon", "ce")]).set_index("level")
    assert list(selection.index) == ["final", "matched", "common"]
    assert (selection.loc["final", "epoch_a"], selection.loc["final", "epoch_b"]) == (6, 6)
    # SupCon is the weaker: its final model (0.66) against CE's epoch closest to 0.66, epoch 4 (0.67).
    matched = selection.loc["matched"]
    assert (matched["epoch_a"], matched["epoch_b"], matched["target"]) == (6, 4, 0.66)
    # Overlap of the ranges: [max(0.50, 0.40), min(0.82, 0.66)] = [0.50, 0.66], middle 0.58:
    # SupCon epoch 3 (0.58 exactly), CE epoch 2 (0.56, closer than 0.63).
    common = selection.loc["common"]
    assert common["target"] == pytest.approx(0.58)
    assert (common["epoch_a"], common["epoch_b"]) == (3, 2)


def test_the_stronger_loss_is_matched_whichever_side_it_is_on() -> None:
    accuracy = pd.concat([history("ce", SUPCON), history("supcon", CE)])  # now SupCon is the stronger
    matched = confound.select_snapshots(accuracy, pairs=[("supcon", "ce")]).set_index("level").loc["matched"]
    assert (matched["epoch_a"], matched["epoch_b"]) == (4, 6)


def test_no_common_level_without_overlap() -> None:
    accuracy = pd.concat([history("ce", [0.7, 0.8]), history("supcon", [0.3, 0.4])])
    levels = confound.select_snapshots(accuracy, pairs=[("supcon", "ce")])["level"].tolist()
    assert levels == ["final", "matched"]


def snapshot_rows(loss: str, epoch: int, seed: int, values: np.ndarray, accuracy: float) -> pd.DataFrame:
    n = len(values)
    frame = pd.DataFrame(
        {
            "dataset": "cifar10",
            "profile": "quick",
            "seed": seed,
            "loss": loss,
            "method": "gradcam",
            "epoch": epoch,
            "final": epoch == 3,
            "accuracy": accuracy,
            "image_id": range(n),
        }
    )
    for metric in METRICS:
        frame[metric] = values if metric == "pf_auc" else np.nan
    return frame


def test_selected_rows_pair_the_chosen_epochs() -> None:
    """At the matched level CE's epoch 2 rows meet SupCon's final rows, and the faithfulness test reads them."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 40)
    blocks, accuracies = [], {("ce", 1): 0.5, ("ce", 2): 0.6, ("ce", 3): 0.8, ("supcon", 1): 0.4}
    accuracies |= {("supcon", 2): 0.5, ("supcon", 3): 0.6}
    for seed in (0, 1):
        for (loss, epoch), acc in accuracies.items():
            # CE gets less faithful (higher PF AUC) as it trains; SupCon stays put
            shift = 0.1 * epoch if loss == "ce" else 0.2
            blocks.append(snapshot_rows(loss, epoch, seed, base + shift + rng.normal(0, 0.01, 40), acc))
    table = pd.concat(blocks, ignore_index=True)
    selection = confound.select_snapshots(
        table.drop_duplicates(["seed", "loss", "epoch"])[
            ["dataset", "profile", "seed", "loss", "epoch", "final", "accuracy"]
        ],
        pairs=[("supcon", "ce")],
    )
    rows = confound.selected_rows(table, selection)
    matched = rows[rows["level"] == "matched"]
    assert set(matched.loc[matched["loss"] == "ce", "epoch"]) == {2}
    assert set(matched.loc[matched["loss"] == "supcon", "epoch"]) == {3}
    tests = confound.compare_at_levels(table, selection).query("metric == 'pf_auc'").set_index("level")
    # final: CE epoch 3 (shift 0.3) is less faithful than SupCon (0.2); matched: CE epoch 2 ties SupCon.
    assert tests.loc["final", "winner"] == "supcon" and tests.loc["final", "p_holm"] < 0.01
    assert tests.loc["matched", "p_holm"] > 0.05


@pytest.mark.parametrize(
    ("p", "winner", "seed_p", "seed_winner", "expected", "result"),
    [
        (0.001, "supcon", np.nan, "", "supcon", "supported"),  # one seed: image level alone
        (0.001, "supcon", 0.01, "supcon", "supcon", "supported"),  # both agree
        (0.001, "supcon", 0.30, "supcon", "supcon", "inconclusive"),  # seeds do not confirm
        (0.001, "supcon", 0.01, "ce", "supcon", "inconclusive"),  # opposite winners
        (0.001, "ce", 0.01, "ce", "supcon", "not supported"),
        (0.300, "ce", 0.30, "ce", "supcon", "inconclusive"),
        (0.300, "ce", 0.30, "ce", None, "supported"),  # no difference at either level
        (0.001, "ce", 0.01, "ce", None, "not supported"),
        (0.001, "ce", 0.30, "ce", None, "inconclusive"),  # a difference over images only
        (np.nan, "", 0.01, "ce", "supcon", "inconclusive"),  # untestable
    ],
)
def test_seed_policy(p: float, winner: str, seed_p: float, seed_winner: str, expected: str | None, result: str) -> None:
    assert claims.verdict(p, winner, expected, 0.05, seed_p, seed_winner) == result


def test_survival_table() -> None:
    verdicts = pd.DataFrame(
        [
            {"claim": c, "dataset": "cifar10", "profile": "quick", "method": "gradcam", "metric": "pf_auc"}
            | {"level": level, "verdict": v}
            for c, per_level in {
                "survives": {"final": "supported", "matched": "supported", "common": "inconclusive"},
                "falls": {"final": "supported", "matched": "inconclusive", "common": "supported"},
                "never": {"final": "not supported", "matched": "supported"},
            }.items()
            for level, v in per_level.items()
        ]
    )
    table = confound.survival(verdicts).set_index("claim")
    assert table.loc["survives", "survives"] == "yes"
    assert table.loc["falls", "survives"] == "no"
    assert table.loc["never", "survives"] == "not supported for the final models"
    assert table.loc["never", "common"] == "not measured"
