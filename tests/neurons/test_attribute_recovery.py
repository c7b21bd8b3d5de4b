"""Planted-concept recovery per attribute (issue 23): a pooled 0.50 may hide 1.0 for two attributes and 0 for two."""

from __future__ import annotations

import pandas as pd
import pytest

from clxai_utils.neurons.comparison import attribute_recovery
from clxai_utils.neurons.planted import recovery_table

ATTRIBUTES = ("red square patch", "green square patch", "stripes", "blue tint")
NAMED = {"red square patch": True, "green square patch": False, "stripes": True, "blue tint": False}


def hand_made_trials() -> pd.DataFrame:
    """CLIP-Dissect names stripes and the red patch in every trial, the others never; 2 rhos x 2 seeds each."""
    rows = [
        {
            "space": space,
            "attribute": attribute,
            "class": "cat",
            "rho": rho,
            "seed": seed,
            "scorer": "CLIP-Dissect",
            "label": attribute if NAMED[attribute] else "cat",
            "names_T": NAMED[attribute] and space == "stand-in",
            "names_C": not NAMED[attribute] and space == "stand-in" and rho == 1.0,
        }
        for space in ("stand-in", "blind")
        for attribute in ATTRIBUTES
        for rho in (0.0, 1.0)
        for seed in (0, 1)
    ]
    return pd.DataFrame(rows)


def test_pooled_half_is_two_attributes_always_and_two_never() -> None:
    trials = hand_made_trials()
    pooled = recovery_table(trials)
    assert set(pooled.loc[pooled["space"] == "stand-in", "names_T"]) == {0.5}
    table = attribute_recovery(trials, space="stand-in").set_index("attribute")
    assert list(table.index) == list(ATTRIBUTES)
    assert table["names_T"].to_dict() == {a: float(NAMED[a]) for a in ATTRIBUTES}
    assert table.loc["blue tint", "names_C"] == 0.5 and table.loc["stripes", "names_C"] == 0.0
    assert set(table["trials"]) == {4} and set(table["scorer"]) == {"CLIP-Dissect"}


def test_by_rho_and_every_space() -> None:
    trials = hand_made_trials()
    by_rho = attribute_recovery(trials, by_rho=True)
    assert len(by_rho) == 2 * len(ATTRIBUTES) * 2 and set(by_rho["trials"]) == {2}
    tint = by_rho[(by_rho["space"] == "stand-in") & (by_rho["attribute"] == "blue tint")].set_index("rho")
    assert tint["names_C"].to_dict() == {0.0: 0.0, 1.0: 1.0}
    assert set(attribute_recovery(trials).loc[lambda t: t["space"] == "blind", "names_T"]) == {0.0}


def test_wrong_tables_are_named() -> None:
    with pytest.raises(ValueError, match="no trials in space 'clip'"):
        attribute_recovery(hand_made_trials(), space="clip")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['attribute'"):
        attribute_recovery(recovery_table(hand_made_trials()))
