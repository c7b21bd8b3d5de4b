"""Several processes, one batch: the process group, a gather that carries gradients, the global losses.

Under DistributedDataParallel each process (rank) sees 1/W of the batch and DDP averages
the parameter gradients over the W ranks. That is exact for cross-entropy, whose loss is a
mean over images, but SupCon and the triplet loss compare every image with every other
image of the batch: each rank needs the embeddings of all ranks, *with* their gradients.

`gather_with_grad` is that all-gather. Its backward sums the incoming gradient over the
ranks (every rank's loss depends on every rank's embeddings) and returns this rank's
slice. Each rank's loss is its anchors' part of the whole batch's loss times W, so that
DDP's average over ranks gives exactly the gradient of the single-process loss of the
full batch (tests/test_distributed.py checks this on two CPU processes). A gather without
gradients (MoCo's `concat_all_gather`) would silently drop the cross-rank terms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from clxai_utils.train.losses import supcon_loss, triplet_loss

#: The number of training processes of a run when the caller gives none (a sweep sets it per run).
DEVICES_ENV = "CLXAI_DEVICES"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank, number of ranks, rank on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> World:
        """The initialised process group's world, or a single process when there is none."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress."""
        return self.rank == 0


def check_world_size(batch_size: int, world_size: int, option: str = "world size", of: str = "") -> int:
    """The per-rank batch; every rank must hold the same number of images (the gather needs equal shards).

    `of` says whose batch it is in the message, e.g. "of loss ce in profile 'paper'".
    """
    if world_size < 1 or batch_size % world_size:
        raise ValueError(
            f"{option}={world_size} does not divide the batch size {batch_size}{' ' + of if of else ''}: "
            f"choose a number of processes that divides {batch_size}, or change batch_size in the profile"
        )
    return batch_size // world_size


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward = all_reduce(sum) of the gradient, then this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        x = x.contiguous()  # all_gather of non-contiguous tensors has given wrong results
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """The rows of every rank, in rank order, differentiable with respect to this rank's rows."""
    return _GatherWithGrad.apply(x)


def gather(x: Tensor) -> Tensor:
    """The rows of every rank, in rank order, without gradient (labels)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def global_supcon_loss(z: Tensor, labels: Tensor, temperature: float, world: World) -> Tensor:
    """SupCon over the batch of all ranks; `z` (N, V, D) and `labels` (N,) are this rank's share."""
    if world.size == 1:
        return supcon_loss(z, labels, temperature)
    rows = z.shape[0] * z.shape[1]
    keys = gather_with_grad(z.flatten(0, 1))
    key_labels = gather(labels.repeat_interleave(z.shape[1]))
    part = supcon_loss(z, labels, temperature, keys=keys, key_labels=key_labels, offset=world.rank * rows)
    return world.size * part


def global_triplet_loss(emb: Tensor, labels: Tensor, margin: float, world: World) -> Tensor:
    """Semi-hard triplet loss over the batch of all ranks; `emb` (N, D), `labels` (N,) are this rank's rows."""
    if world.size == 1:
        return triplet_loss(emb, labels, margin)
    keys, key_labels = gather_with_grad(emb), gather(labels)
    part = triplet_loss(emb, labels, margin, keys=keys, key_labels=key_labels, offset=world.rank * emb.shape[0])
    return world.size * part


def mean_over_ranks(values: dict[str, float], world: World) -> dict[str, float]:
    """Per-epoch statistics averaged over the ranks (a rank's loss part times W averages to the batch loss)."""
    if world.size == 1 or not values:
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces only CUDA tensors
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return dict(zip(values, (tensor / world.size).cpu().tolist()))
