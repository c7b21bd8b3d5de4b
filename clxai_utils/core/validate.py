"""Every generic check of an argument, in one place: notebook parameters arrive untyped.

Each check returns the validated value (normalised where that helps, e.g. numpy ints to
int) or raises with a message that names the parameter and says what is allowed. Stage
functions call these instead of writing their own twins.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A profile file or a parameter does not match what the pipeline accepts."""


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return `value` if it is one of `allowed`, else raise naming the parameter."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return str(value)


def list_from_text(name: str, text: str, example: Sequence[str] = ()) -> list[Any]:
    """A list given as text, as papermill's `-p name value` delivers it: a JSON or YAML list
    ('["ce", "supcon"]', "[ce, supcon]") becomes that list, a single word ("ce") a list of it.

    Anything else (a mapping, a number, "ce supcon") is an error that says how to pass a list.
    """
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if isinstance(loaded, list):
        return loaded
    word = text.strip()
    if word and all(ch.isalnum() or ch in "_-." for ch in word):
        return [word]
    shown = list(example) or ["a", "b"]
    as_json = json.dumps(shown)
    raise ConfigError(
        f"{name} must be a list such as {as_json}, got the string {text!r}. With papermill give a list as "
        f"-y '{name}: {as_json}' (YAML, the list itself) or as -p/-r {name} '{as_json}' (a JSON string, read here); "
        f"a single value alone as -p {name} {shown[0]}"
    )


def check_choices(name: str, values: Iterable[str] | str, allowed: Iterable[str]) -> list[str]:
    """A non-empty list of distinct allowed values.

    A string is read as papermill's `-p losses '["ce"]'` delivers a list (`list_from_text`):
    '["ce", "supcon"]' and "ce" are accepted, as ["ce", "supcon"] and ["ce"].
    """
    allowed = tuple(allowed)
    if isinstance(values, str):
        values = list_from_text(name, values, allowed)
    values = list(values)
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{name} must be a non-empty list of distinct values from {list(allowed)}, got {values}")
    for value in values:
        check_choice(f"an entry of {name}", value, allowed)
    return values


def check_positive_int(name: str, value: Any) -> int:
    """`value` as an int >= 1, or an error naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_seed(seed: object) -> int:
    """`seed` as an int >= 0 (TypeError for a non-integer, ValueError for a negative one)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative integer, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """A non-empty sequence of distinct seeds."""
    if isinstance(seeds, (str, int)) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    return tuple(check_seed(seed) for seed in seeds)


def _as_number(name: str, value: Any) -> float:
    """`value` as a float; TypeError for anything but a (numpy) int or float, bools included."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """`value` as a float in [low, high] (TypeError for a non-number; NaN is never in range)."""
    number = _as_number(name, value)
    if not (low <= number <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return number


def check_fractions(name: str, values: Iterable[Any]) -> tuple[float, ...]:
    """A non-empty sequence of shares of the pixels, each in (0, 1]: a share of 0 removes nothing."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of numbers in (0, 1], got {values!r}")
    numbers = tuple(check_number(f"an entry of {name}", value) for value in values)
    if not numbers or any(not 0.0 < number <= 1.0 for number in numbers):
        raise ValueError(f"{name} must be a non-empty list of numbers in (0, 1], got {list(numbers)}")
    return numbers


def check_positive(name: str, value: Any) -> float:
    """`value` as a finite float > 0 (TypeError for a non-number)."""
    number = _as_number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return number


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an int >= minimum, so the error names the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse
