"""The one seeding helper: same seed and parameters give the same numbers on CPU.

`seed_everything` seeds the global generators once per stage; `splitmix64` and `mix_seed` key a
draw by what it is about (a seed and an image id, a seed, an epoch and an image) instead of by
the order in which draws happen, so batching, workers and resumption cannot change it.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from clxai_utils.core.validate import check_seed


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed `random`, NumPy and torch, and ask torch for deterministic kernels.

    Returns a CPU `torch.Generator` seeded with `seed`, for DataLoaders and samplers,
    so that data order does not depend on what else consumed the global RNG.
    """
    seed = check_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA initialises
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a bijective, well-mixed hash of uint64 values (wraps mod 2**64)."""
    z = z.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (seed, epoch, index, ...), the same in every process.

    Python's `hash` is salted per process for strings and too regular for ints (hash(k) == k),
    so nearby (epoch, index) pairs would get related generator states; SplitMix64 decorrelates them.
    """
    state = np.zeros(1, dtype=np.uint64)
    for part in parts:
        state = splitmix64(state ^ np.uint64(check_seed(part) % 2**64))
    return int(state[0]) >> 1
