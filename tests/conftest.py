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
from fixtures import SMOKE_LOSSES

from clxai_utils.core.compute import DEVICE_ENV
from clxai_utils.core.precision import PRECISION_ENV
from clxai_utils.core.run import Run
from clxai_utils.data.datasets import MASK_SOURCE_ENV
from clxai_utils.data.prepare import prepare_data
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.evaluate.facets import FacetResults, evaluate_facets
from clxai_utils.explain.store import run_explanations
from clxai_utils.train.probe import probe_and_evaluate
from clxai_utils.train.trainer import run_training

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


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A smoke run: data, CE and SupCon models with a probe, and their stored maps (05); one per test module.

    The stage tests (05-08 in tests/test_stages.py, the faithfulness stage in tests/evaluate/) build on it.
    """
    root = tmp_path_factory.mktemp("stages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLXAI_OUTPUTS", str(root / "out"))
        mp.setenv("CLXAI_DATA_DIR", str(root / "datadir"))
        run = Run("cifar10", "smoke", 0)
        assert run.root == root / "out" / "runs" / "cifar10-smoke-seed0"
        prepare_data(run, str(write_synthetic_imagefolder(root / "tree")))
        for loss in SMOKE_LOSSES:
            run_training(run, loss, progress=False)
        probe_and_evaluate(run, SMOKE_LOSSES, progress=False)
        first = run_explanations(run, SMOKE_LOSSES, progress=False)
        assert not first["reused"].any() and len(first) == 2 * 2 * 2  # losses x methods x (test, mosaics)
        yield run


@pytest.fixture(scope="module")
def results(run: Run) -> FacetResults:
    """06 on the smoke run."""
    return evaluate_facets(run, SMOKE_LOSSES, progress=False, n_examples=2)
