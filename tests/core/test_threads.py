"""How processes started side by side share the cores (`clxai_utils.core.threads`)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from clxai_utils.core import threads
from clxai_utils.core.threads import THREADS_ENV, available_cores, busy_elsewhere, share_of_cores, warn_if_busy


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


class _Readings:
    """/proc/stat and os.times() as two successive samples, for `busy_elsewhere`."""

    def __init__(self, stat: list[str], own_seconds: list[float]) -> None:
        self.stat, self.own = iter(stat), iter(own_seconds)

    def is_file(self) -> bool:
        return True

    def read_text(self) -> str:
        return next(self.stat)

    def times(self) -> SimpleNamespace:
        return SimpleNamespace(user=next(self.own), system=0.0)


def _fake(monkeypatch: pytest.MonkeyPatch, after: str, own_seconds: float) -> None:
    # user nice system idle iowait irq softirq steal: busy 150 of 1000 ticks before
    readings = _Readings(["cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 ...", after], [1.0, 1.0 + own_seconds])
    monkeypatch.setattr(threads, "PROC_STAT", readings)
    monkeypatch.setattr(threads.os, "times", readings.times)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)


def test_busy_cores_are_the_machines_share_less_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # 200 of the next 250 ticks busy on 2 CPUs: 1.6 cores; this process used 0.1 s of 0.25 s: 0.4 of them.
    _fake(monkeypatch, "cpu  250 0 100 850 50 0 0 0 0 0", own_seconds=0.1)
    assert busy_elsewhere(0.25) == pytest.approx(1.2)
    _fake(monkeypatch, "cpu  250 0 100 850 50 0 0 0 0 0", own_seconds=0.1)
    with pytest.warns(RuntimeWarning, match=r"ce training: other processes keep 1\.2 of this machine's 2 cores busy"):
        assert warn_if_busy("ce training", 0.25) == pytest.approx(1.2)


def test_an_idle_machine_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # 50 of 250 ticks busy: 0.4 cores, below the 0.5 that warns.
    _fake(monkeypatch, "cpu  130 0 70 1000 50 0 0 0 0 0", own_seconds=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_busy("benchmark", 0.25) == pytest.approx(0.4)


def test_a_backward_iowait_counter_cannot_make_more_cores_busy_than_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # iowait 50 -> 0 while 300 ticks go to user: busy grows by 300, all ticks by only 250.
    _fake(monkeypatch, "cpu  400 0 50 800 0 0 0 0 0 0", own_seconds=0.0)
    assert busy_elsewhere(0.25) == pytest.approx(2.0)


def test_busy_elsewhere_reads_this_machine() -> None:
    busy = busy_elsewhere(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1), busy
    with pytest.raises(ValueError, match="not a /proc/stat summary line"):
        threads._busy_and_total_ticks("intr 1 2 3")
