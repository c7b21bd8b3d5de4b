"""One training loop for the three losses, with resumable, atomic per-epoch checkpoints.

* CE trains backbone + linear head on one CE-augmented view per image.
* SupCon and the triplet loss train backbone + projection head on, as in the paper, two
  independent SupCon-augmented views per image; the triplet loss sees the views as
  separate samples of the same label, so every anchor has an in-batch positive. A profile
  may set another plan (`TrainConfig.views`, `.augment`): the CPU-sized quick profile uses
  one CE-augmented view, where the positives are the other images of the class.

After every epoch the model, optimiser, scheduler, both random generators (data order
and augmentation) and the history go into `checkpoint.pt` atomically. Restarting with
the same arguments resumes from it and ends with the same weights (on CPU) as an
uninterrupted run. The last epoch's model is the result: no checkpoint is selected on
test data (the authors chose CE checkpoints on the test set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from clxai_utils.core.artifacts import save_torch, write_csv
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.config import TrainConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import LOSSES
from clxai_utils.core.run import Run
from clxai_utils.core.seeding import seed_everything
from clxai_utils.core.threads import warn_if_busy
from clxai_utils.core.validate import check_choice
from clxai_utils.data import augment
from clxai_utils.data.datasets import DatasetInfo
from clxai_utils.data.prepare import load_prepared
from clxai_utils.data.sources import FileSplit, ImageSplit
from clxai_utils.data.stream import RandomResizedCropStream, make_loader
from clxai_utils.train.checkpoints import (
    CHECKPOINT,
    HISTORY,
    MODEL,
    RunIdentity,
    TrainResult,
    load_resumable,
    snapshot_path,
)
from clxai_utils.train.distributed import (
    World,
    check_world_size,
    global_supcon_loss,
    global_triplet_loss,
    mean_over_ranks,
)
from clxai_utils.train.losses import mine_semi_hard, pairwise_distances
from clxai_utils.train.models import ModelSpec, build_training_model
from clxai_utils.train.processes import resolve_devices, train_in_processes

SINGLE_PROCESS = World()
#: Augmentation streams of ranks 1, 2, ... start this far apart (rank 0 keeps the single-process stream).
RANK_SEED_STRIDE = 10_007


def build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimisers of the paper's Table 2."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled_weight_decay=True)
    raise ValueError(f"optimizer={cfg.optimizer!r} is not one of: sgd, adamw, radam")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    """Linear warm-up from 0 to 1 over `warmup_steps`, then cosine or linear decay to 0 at `total_steps`.

    Linear warm-up and linear decay together are the one-cycle schedule the quick profile uses:
    on a budget of a few epochs it reaches a higher accuracy than the paper's cosine.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: warm-up for `cfg.warmup_epochs`, then `cfg.schedule` for the rest."""
    warmup, total = round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total, cfg.schedule))


def compute_loss(
    model: nn.Module,
    loss: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    world: World = SINGLE_PROCESS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch of already-augmented, normalised images ((N,C,H,W) for CE, (N,V,C,H,W) otherwise).

    Under several processes `images` is this rank's share; SupCon and the triplet loss then
    span the whole batch (`clxai_utils.train.distributed`).
    """
    if loss == "ce":
        logits = model(images)
        value = F.cross_entropy(logits.float(), labels)
        return value, {"train_acc": (logits.argmax(1) == labels).float().mean().item()}
    n, v = images.shape[:2]
    z = model(images.flatten(0, 1)).float().view(n, v, -1)  # losses in float32 even under autocast
    # load_profile requires these settings > 0 for their loss; the loss functions check them again.
    if loss == "supcon":
        return global_supcon_loss(z, labels, cast(float, cfg.temperature), world), {}
    margin = cast(float, cfg.margin)
    emb, emb_labels = z.flatten(0, 1), labels.repeat_interleave(v)
    with torch.no_grad():  # this rank's anchors among its own rows: a statistic, not the loss
        semi = mine_semi_hard(pairwise_distances(emb), emb_labels, margin).semi_hard.float().mean().item()
    return global_triplet_loss(emb, emb_labels, margin, world), {"semi_hard_frac": semi}


def augment_batch(
    loss: str, cfg: TrainConfig, x_uint8: torch.Tensor, info: DatasetInfo, generator: torch.Generator
) -> torch.Tensor:
    """Augment and normalise a uint8 batch the way `loss` is trained (docs/method.md, "Training").

    CE gets one CE-augmented view (N, C, H, W); SupCon/triplet get `views` independent
    views (N, V, C, H, W), by default two SupCon views (`TrainConfig.view_plan`).
    """
    n_views, name = cfg.view_plan(loss)
    if loss == "ce":
        return augment.normalize(augment.get_augment(name)(x_uint8, generator), info.mean, info.std)
    views = augment.make_views(x_uint8, augment.get_augment(name), generator, n_views)
    return augment.normalize(views.flatten(0, 1), info.mean, info.std).view_as(views)


def epoch_batches(
    loss: str,
    cfg: TrainConfig,
    split: ImageSplit | FileSplit,
    info: DatasetInfo,
    order: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    seed_epoch: tuple[int, int],
    workers: int = 0,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's augmented, normalised batches (images, labels) in `order`, shaped as `augment_batch` returns.

    In memory (CIFAR-10, small image folders): `augment_batch` on each batch. On disk
    (ImageNet-S50): DataLoader workers decode each image and cut its RandomResizedCrop and
    flip (`clxai_utils.data.stream`, random draws keyed by (seed, epoch, image)); the uint8
    crops then move to `device` (a GPU's, where training runs there), where the colour half
    of the SupCon augmentation runs on the whole batch, drawn from `generator`.
    """
    if isinstance(split, ImageSplit):
        for idx in order.split(batch_size):
            yield augment_batch(loss, cfg, split.images[idx], info, generator), split.labels[idx]
        return
    n_views, name = cfg.view_plan(loss)
    crops = RandomResizedCropStream(split.records(), info.image_size, n_views, seed=seed_epoch[0])
    for views, labels in make_loader(crops, batch_size, workers, order=order.tolist(), epoch=seed_epoch[1]):
        x = views.flatten(0, 1).to(device or views.device, non_blocking=True)
        x = augment.imagenet_supcon_colour(x, generator) if name == "supcon" else augment.to_float_images(x)
        x = augment.normalize(x, info.mean, info.std).view(views.shape)
        yield (x[:, 0] if loss == "ce" else x), labels


def _epoch_order(n: int, epoch: int, seed: int, shuffle_gen: torch.Generator, world: World) -> torch.Tensor:
    """This rank's image order in one epoch.

    One process: a permutation from the run's shuffle generator. Several: torch's
    DistributedSampler, seeded by the run seed and the epoch (so resuming needs no state),
    gives each rank its own share.
    """
    if world.size == 1:
        return torch.randperm(n, generator=shuffle_gen)
    indices = cast(Dataset, range(n))  # the sampler only needs len()
    sampler: DistributedSampler[int] = DistributedSampler(
        indices, world.size, world.rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def _all_ranks(value: Any, world: World) -> list[Any]:
    """`value` of every rank, in rank order (the augmentation states that rank 0 checkpoints)."""
    if world.size == 1:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def _prepare_model(spec: ModelSpec, compute: Compute, sync_batchnorm: bool) -> nn.Module:
    """The model to train on `compute.device`: channels-last under bf16, SyncBatchNorm if asked (CUDA only)."""
    model = build_training_model(spec)
    if sync_batchnorm:
        if compute.device.type != "cuda":
            raise ValueError(
                f"sync_batchnorm=True needs CUDA devices (SyncBatchNorm cannot run on {compute.device.type}); "
                "leave it off on CPU"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return compute.model_to_layout(model)


def train(
    spec: ModelSpec,
    cfg: TrainConfig,
    split: ImageSplit | FileSplit,
    info: DatasetInfo,
    out_dir: str | Path,
    *,
    identity: RunIdentity,
    seed: int,
    compute: Compute | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    world: World = SINGLE_PROCESS,
    sync_batchnorm: bool = False,
    workers: int = 0,
) -> TrainResult:
    """Train `spec` with `cfg` on `split`, resuming from `out_dir/checkpoint.pt` when present.

    `stop_after_epoch` ends the call early (after that epoch's checkpoint), to simulate an
    interruption or to spread a long run over several sessions. Under several processes
    (`world`, see `clxai_utils.tools.launch`) every rank calls this with its own device;
    each trains on its share of every batch and rank 0 writes the files. `compute` (None:
    `resolve_compute()`) is the device and precision it trains in; the checkpoint and the
    model file record them (the model file the device type). Under fp16 a gradient scaler
    keeps small gradients from underflowing. The model file also records the CPU threads of
    the last epoch (float sums depend on them: `clxai_utils.core.threads`).
    `workers` processes decode a split kept on disk (`epoch_batches`).
    """
    check_choice("loss", spec.loss, LOSSES)
    out_dir = Path(out_dir)
    compute = compute_or_resolve(compute)
    device = compute.device
    local_batch = check_world_size(cfg.batch_size, world.size, "number of training processes")
    shuffle_gen = seed_everything(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1_000_003 + RANK_SEED_STRIDE * world.rank)
    model = _prepare_model(spec, compute, sync_batchnorm)
    on_gpu = device.type == "cuda"
    steps_per_epoch = len(split) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={cfg.batch_size} exceeds the {len(split)} training images; lower it in the profile"
        )
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=compute.precision == "fp16")  # a no-op otherwise
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if state := load_resumable(out_dir / CHECKPOINT, identity, world.size, compute.precision):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle_gen.set_state(state["shuffle_gen"])
        aug_gen.set_state(state["aug_gens"][world.rank])
        history, start_epoch = state["history"], state["epoch"]
    net = model if world.size == 1 else DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)
    resumed_from = start_epoch
    last_epoch = cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)
    # One redraw a second at most (progress_bar): a redraw per step floods a notebook's output channel.
    bar = progress_bar(
        total=(cfg.epochs - start_epoch) * steps_per_epoch,
        desc=f"{spec.loss} training",
        disable=not (progress and world.is_main) or start_epoch >= last_epoch,  # nothing left to train: no empty bar
        unit="step",
    )
    for epoch in range(start_epoch, last_epoch):
        net.train()
        t0, total = time.perf_counter(), 0.0
        extras: dict[str, float] = {}
        order = _epoch_order(len(split), epoch, seed, shuffle_gen, world)[: steps_per_epoch * local_batch]
        batches = epoch_batches(
            spec.loss, cfg, split, info, order, local_batch, aug_gen, (seed, epoch), workers, device
        )
        for x, y in batches:
            x, y = compute.to_layout(x), y.to(device)
            with compute.autocast():
                value, stats = compute_loss(net, spec.loss, x, y, cfg, world)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += value.item()
            for key, val in stats.items():
                extras[key] = extras.get(key, 0.0) + val
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{value.item():.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        means = mean_over_ranks(
            {"loss": total / steps_per_epoch} | {k: v / steps_per_epoch for k, v in extras.items()}, world
        )
        row = {
            "epoch": epoch + 1,
            "loss": means.pop("loss"),
            "lr": scheduler.get_last_lr()[0],
            "seconds": seconds,
            "images_per_s": steps_per_epoch * cfg.batch_size / seconds,
        }
        history.append(row | means)
        aug_states = _all_ranks(aug_gen.get_state(), world)
        if world.is_main:
            save_torch(
                out_dir / CHECKPOINT,
                {
                    "identity": asdict(identity),
                    "world_size": world.size,
                    **compute.to_dict(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "shuffle_gen": shuffle_gen.get_state(),
                    "aug_gens": aug_states,
                    "history": history,
                },
            )
            write_csv(out_dir / HISTORY, pd.DataFrame(history))
            model_file = {"spec": spec.to_dict(), "identity": asdict(identity), "world_size": world.size}
            model_file |= compute.to_dict() | {"threads": torch.get_num_threads(), "epoch": epoch + 1}
            model_file["state_dict"] = model.state_dict()
            if epoch + 1 == cfg.epochs:
                save_torch(out_dir / MODEL, model_file)
            elif cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
                save_torch(snapshot_path(out_dir, epoch + 1), model_file)
    bar.close()
    return TrainResult(model.cpu().eval(), spec, pd.DataFrame(history), out_dir, resumed_from)


def run_training(
    run: Run,
    loss: str,
    *,
    devices: int | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    world: World = SINGLE_PROCESS,
    compute: Compute | None = None,
    sync_batchnorm: bool = False,
) -> TrainResult:
    """The training notebooks' one call: the run's profile settings and 00_data's subset -> `run.model_dir(loss)`.

    With `devices` > 1 (or $CLXAI_DEVICES) the run trains with DistributedDataParallel in that
    many processes, started by torchrun (`clxai_utils.tools.launch`); this call waits for them
    and returns what they wrote; `world` and each process's `compute` are set by that entry point.
    `compute` (None: `resolve_compute()`, from $CLXAI_DEVICE and $CLXAI_PRECISION, else auto)
    is the device and precision it trains in.
    """
    check_choice("loss", loss, LOSSES)
    if stop_after_epoch is not None and (not isinstance(stop_after_epoch, int) or stop_after_epoch < 1):
        raise ValueError(f"stop_after_epoch must be None or an integer >= 1, got {stop_after_epoch!r}")
    settings = run.settings
    cfg = settings.train[loss]
    n_devices = resolve_devices(devices) if world.size == 1 else world.size
    check_world_size(cfg.batch_size, n_devices, "devices")
    data, manifest = load_prepared(run)
    spec = ModelSpec(settings.model.arch, settings.model.width, data.num_classes, loss)
    compute = compute_or_resolve(compute)
    if world.size == 1 and compute.device.type == "cpu":  # its ranks, if any, are started from here
        warn_if_busy(f"{loss} training")
    if world.size == 1 and n_devices > 1:
        return train_in_processes(run, loss, spec, n_devices, stop_after_epoch, sync_batchnorm, compute)
    identity = RunIdentity(run.dataset, run.profile, run.seed, manifest.checksums["train"], spec.to_dict(), asdict(cfg))
    return train(
        spec,
        cfg,
        data.train,
        data.info,
        run.model_dir(loss),
        identity=identity,
        seed=run.seed,
        compute=compute,
        stop_after_epoch=stop_after_epoch,
        progress=progress,
        world=world,
        sync_batchnorm=sync_batchnorm,
        workers=settings.data.workers,
    )
