"""The one seeding helper: same seed and parameters give the same numbers on CPU."""

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
