"""How processes started side by side share the cores (`clxai_utils.core.threads`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clxai_utils.core.threads import THREADS_ENV, available_cores, share_of_cores


def test_cores_are_the_affinity_mask_unless_a_parent_gave_a_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, " 6 ")
    assert available_cores() == 6


@pytest.mark.parametrize(("processes", "each"), [(1, "6"), (2, "3"), (4, "1"), (12, "1")])
def test_each_process_gets_an_equal_share_and_at_least_one_thread(
    monkeypatch: pytest.MonkeyPatch, processes: int, each: str
) -> None:
    monkeypatch.setenv(THREADS_ENV, "6")
    assert share_of_cores(processes) == {THREADS_ENV: each}


@pytest.mark.parametrize("text", ["abc", "0", "4,2", "-1"])
def test_a_malformed_thread_count_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(THREADS_ENV, text)
    with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS='{text}' must be a whole number of threads >= 1"):
        share_of_cores(2)


def test_processes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="processes must be an integer >= 1, got 0"):
        share_of_cores(0)


def test_torch_in_a_started_process_uses_its_share() -> None:
    """The mechanism the sweep and torchrun rely on: torch reads the variable at start-up."""
    env = {**os.environ, THREADS_ENV: "1"}
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
