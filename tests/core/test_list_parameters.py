"""`losses` given through papermill's -p arrives as a string (issue 23): check_choices reads it."""

from __future__ import annotations

import pytest

from clxai_utils.core.registry import LOSSES
from clxai_utils.core.validate import ConfigError, check_choices, list_from_text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ('["ce"]', ["ce"]),  # -p losses '["ce"]'
        ('["ce", "supcon"]', ["ce", "supcon"]),
        ("[ce, triplet]", ["ce", "triplet"]),  # YAML flow list
        ("ce", ["ce"]),  # -p losses ce
        (" supcon ", ["supcon"]),
        (["ce", "supcon"], ["ce", "supcon"]),  # -y 'losses: [ce, supcon]' gives the list itself
        (("triplet",), ["triplet"]),
    ],
)
def test_losses_as_papermill_delivers_them(given: object, expected: list[str]) -> None:
    assert check_choices("losses", given, LOSSES) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["ce supcon", "{ce: 1}", "ce;supcon", ""])
def test_other_strings_say_how_to_pass_a_list(given: str) -> None:
    with pytest.raises(ConfigError, match=r"losses must be a list such as .*-y 'losses: .*-p/-r losses"):
        check_choices("losses", given, LOSSES)


def test_a_parsed_list_is_still_checked_entry_by_entry() -> None:
    with pytest.raises(ConfigError, match="an entry of losses='lime' is not allowed"):
        check_choices("losses", '["ce", "lime"]', LOSSES)
    with pytest.raises(ConfigError, match="distinct"):
        check_choices("losses", '["ce", "ce"]', LOSSES)
    assert list_from_text("gammas", "[1.0, 0.5]") == [1.0, 0.5]
