"""Every test computes on the CPU in float32 and reads no mask source from the environment, whichever tests run.

`clxai_utils.core.precision` resolves ``auto`` to bf16 on CPUs with native bf16, and bf16 changes values in
their third significant digit; the comparisons with quantus, scikit-image and pytorch-grad-cam, and the
hand-computed cases, are exact in float32, and the smoke notebooks and the multi-process tests give the same
results on hosts with and without native bf16 only when all of them compute in float32. So one session-wide
fixture sets ``CLXAI_PRECISION=float32`` before any fixture trains (module fixtures of test_stages.py do), for
every test and the subprocesses and kernels they start. Tests of the precision switch itself set their own
value with `monkeypatch`. ``CLXAI_DEVICE=cpu`` keeps a GPU machine's tests the same as everyone's
(the device switch has tests of its own, with the device queries faked).

`make` exports $CLXAI_MASK_SOURCE (CIFAR-10's real photographs) for its pipelines. The same fixture removes it,
so no test depends on what the shell happened to export; a test that wants it asks for the `given_mask_source`
fixture and sets it itself (the smoke notebooks do).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from clxai_utils.core.compute import DEVICE_ENV
from clxai_utils.core.precision import PRECISION_ENV
from clxai_utils.data.datasets import MASK_SOURCE_ENV

#: $CLXAI_MASK_SOURCE as the session found it (make's), before the fixture below removes it.
GIVEN_MASK_SOURCE = os.environ.get(MASK_SOURCE_ENV, "")


@pytest.fixture(scope="session", autouse=True)
def float32_and_no_mask_source() -> Iterator[None]:
    """Session-scoped, so it is in place before module- and session-scoped fixtures that train or explain."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PRECISION_ENV, "float32")
        patch.setenv(DEVICE_ENV, "cpu")
        patch.delenv(MASK_SOURCE_ENV, raising=False)
        yield


@pytest.fixture(scope="session")
def given_mask_source() -> str:
    """The mask source the caller (make) exported, or "" for none."""
    return GIVEN_MASK_SOURCE
