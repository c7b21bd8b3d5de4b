"""Unit tests compute in float32, the reference precision, whatever the CPU offers, and read no mask source
from the environment.

`clxai_utils.core.precision` resolves ``auto`` to bf16 on CPUs with native bf16, and bf16
changes values in their third significant digit; the comparisons with quantus, scikit-image
and pytorch-grad-cam, and the hand-computed cases, are exact in float32. Tests of the switch
itself set their own precision. The notebook, multi-process and pinned stages keep ``auto``,
as `make run` does, so that the models they train and reuse agree on one precision: the
switch is set for the whole session (module fixtures train before any test runs) when no
collected test belongs to those stages. `make` exports $CLXAI_MASK_SOURCE (CIFAR-10's real
photographs) for its pipelines; unit tests give their runs a mask source explicitly or none.
"""

from __future__ import annotations

import os

import pytest

from clxai_utils.core.precision import PRECISION_ENV
from clxai_utils.data.datasets import MASK_SOURCE_ENV

STAGES_WITH_AUTO_PRECISION = ("notebooks", "cluster", "pinned")


def pytest_collection_finish(session: pytest.Session) -> None:
    """After `-m` deselected what does not run: float32 for a session of unit tests only."""
    items = session.items
    staged = any(item.get_closest_marker(mark) for item in items for mark in STAGES_WITH_AUTO_PRECISION)
    if items and not staged:
        os.environ[PRECISION_ENV] = "float32"
        os.environ.pop(MASK_SOURCE_ENV, None)
