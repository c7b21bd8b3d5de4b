"""CPU threads: how processes started side by side on one machine share its cores.

torch gives each process one thread per core it may use. Two such processes on the same
cores oversubscribe them and both slow down far more than twice. Measured on 2 cores of an
AMD EPYC (Zen 3), one float32 epoch of the quick profile's training:

- CE alone, 2 threads: 323 images/s;
- CE and triplet at once, 2 threads each: 87 and 85 images/s (0.53x of one alone);
- CE and triplet at once, 1 thread each: 185 and 181 images/s (1.13x of one alone).

So whatever starts several processes at once (a sweep's notebooks, torchrun's training
ranks) gives each its share of the cores through ``OMP_NUM_THREADS``, which torch reads
at start-up. Float sums depend on the number of threads, so results are reproducible for
a given thread count; the trained model records the count it was trained with.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from clxai_utils.core.validate import check_positive_int

THREADS_ENV = "OMP_NUM_THREADS"


def available_cores() -> int:
    """The cores this process may use: $OMP_NUM_THREADS when set (a share its parent gave it), else its CPUs.

    Its CPUs are those of its affinity mask (what Slurm or `taskset` granted), not the
    machine's.
    """
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{THREADS_ENV}={text!r} must be a whole number of threads >= 1 (or unset)")
        return int(text)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_of_cores(processes: int) -> dict[str, str]:
    """Environment giving each of `processes` processes started at once an equal share of the cores (>= 1 thread)."""
    return {THREADS_ENV: str(max(1, available_cores() // check_positive_int("processes", processes)))}


PROC_STAT = Path("/proc/stat")
BUSY_WARNING_CORES = 0.5  # what other processes may use before a stage that takes every core warns


def _busy_and_total_ticks(text: str) -> tuple[int, int]:
    """Busy and total clock ticks of all CPUs from /proc/stat's first line (idle and iowait are not busy)."""
    fields = text.splitlines()[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"not a /proc/stat summary line: {fields[:1]}")
    ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_elsewhere(interval: float = 0.25) -> float | None:
    """How many cores other processes kept busy during `interval` seconds (None where /proc/stat is missing).

    This process sleeps meanwhile, so what the machine spent is what the others spent; its own
    CPU time in the interval (another thread of it) is subtracted all the same. The busy share
    is capped at 1: Linux's iowait counter can run backwards, which would put it above.
    """
    if not PROC_STAT.is_file():
        return None
    own, (busy, total) = os.times(), _busy_and_total_ticks(PROC_STAT.read_text())
    time.sleep(interval)
    own_after, (busy_after, total_after) = os.times(), _busy_and_total_ticks(PROC_STAT.read_text())
    if total_after <= total:
        return None
    cpus = os.cpu_count() or 1
    own_cores = (own_after.user + own_after.system - own.user - own.system) / interval
    share = min(1.0, (busy_after - busy) / (total_after - total))
    return max(0.0, cpus * share - own_cores)


def warn_if_busy(stage: str, interval: float = 0.25) -> float | None:
    """Warn when other processes already use the cores that `stage` is about to take all of.

    torch gives the stage a thread per core; sharing them with another busy process slows both
    by far more than the share (5 to 30 times for two torch processes on 2 cores), which
    looks like a hang and spoils any timing. Returns the cores busy elsewhere.
    """
    busy = busy_elsewhere(interval)
    if busy is not None and busy >= BUSY_WARNING_CORES:
        warnings.warn(
            f"{stage}: other processes keep {busy:.1f} of this machine's {os.cpu_count()} cores busy, and this"
            f" stage runs {available_cores()} threads: both will run several times slower (and its timings mean"
            f" little). Let them finish first, or give each process its share ({THREADS_ENV}).",
            RuntimeWarning,
            stacklevel=2,
        )
    return busy
