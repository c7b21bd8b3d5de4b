"""One training process of a run trained on several devices: what torchrun starts in every process.

    torchrun --standalone --nproc_per_node=G -m clxai_utils.train.worker \
        --dataset imagenet_s50 --profile paper --seed 0 --loss supcon

`run_training(run, loss, devices=G)` starts it so (`clxai_utils.train.processes`), and a job
submitted by `python -m clxai_utils.tools.launch --submit slurm` runs `main` in every task.
Every process builds the same `Run`, joins the process group (NCCL on GPUs, gloo on CPUs)
and calls `run_training` with its rank; rank 0 writes the checkpoint after every epoch, so a
stopped (requeued) job resumes where it was.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from clxai_utils.core.compute import DEVICE_ENV, Compute, resolve_compute
from clxai_utils.core.config import DATASETS
from clxai_utils.core.precision import PRECISION_ENV, PRECISIONS
from clxai_utils.core.registry import LOSSES
from clxai_utils.core.run import Run
from clxai_utils.core.validate import ConfigError, int_at_least
from clxai_utils.train.distributed import World
from clxai_utils.train.trainer import run_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clxai_utils.train.worker",
        description="Train one loss of one run with DistributedDataParallel (start it with torchrun).",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--profile", required=True, help="run profile in configs/profiles.yaml")
    parser.add_argument("--seed", type=int_at_least(0), required=True)
    parser.add_argument("--loss", required=True, choices=LOSSES)
    parser.add_argument("--run-dir", default=None, help="the run's folder (default outputs/runs/<run id>)")
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        default="auto",
        help=f"auto: ${DEVICE_ENV}, else CUDA if available, else the CPU",
    )
    parser.add_argument("--sync-batchnorm", action="store_true", help="synchronise BatchNorm statistics (CUDA only)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help=f"numeric precision (default ${PRECISION_ENV}, else auto: bf16 where native, else float32)",
    )
    parser.add_argument(
        "--stop-after-epoch", type=int_at_least(1), default=None, help="stop after this epoch's checkpoint"
    )
    return parser


def _compute(device: str, precision: str | None, local_rank: int) -> Compute:
    """This process's `Compute`: GPU `local_rank` under CUDA, else the CPU, in the resolved precision."""
    compute = resolve_compute(None if device == "auto" else device, precision)
    if compute.device.type == "cpu":
        return compute
    if compute.device.type != "cuda":
        raise ConfigError(
            f"--device {device} resolved to {compute.device.type}: processes train together on CUDA or CPU only"
        )
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise ValueError(f"--device cuda: process {local_rank} of this node has no GPU ({visible} visible)")
    torch.cuda.set_device(local_rank)
    return Compute(torch.device("cuda", local_rank), compute.precision)


def main(argv: list[str] | None = None) -> int:
    """Join the process group, train, leave it; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = Run(args.dataset, args.profile, args.seed, **({"root": Path(args.run_dir)} if args.run_dir else {}))
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as error:
        parser.error(str(error))
    if "RANK" not in os.environ:
        parser.error("no process group: start this module with torchrun (or submitit), which sets RANK and WORLD_SIZE")
    try:
        compute = _compute(args.device, args.precision, int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as error:  # ConfigError included: no such device here, a precision it cannot compute
        parser.error(str(error))
    dist.init_process_group("nccl" if compute.device.type == "cuda" else "gloo")
    try:
        world = World.current()
        run_training(
            run,
            args.loss,
            world=world,
            compute=compute,
            stop_after_epoch=args.stop_after_epoch,
            progress=world.is_main,
            sync_batchnorm=args.sync_batchnorm,
        )
        dist.barrier()  # rank 0 has written the model before anyone reports success
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
