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
