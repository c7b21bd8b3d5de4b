"""One run trained on several devices: the entry point that torchrun or submitit starts in every process.

One node, G GPUs (what `run_training(run, loss, devices=G)` and the training notebooks do)::

    torchrun --standalone --nproc_per_node=G -m clxai_utils.train.launch \
        --dataset imagenet_s50 --profile paper --seed 0 --loss supcon

Several nodes, N x G GPUs: `--submit slurm` submits one job of N nodes x G tasks through
submitit, which starts `main` in every task after exporting RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT (`submitit.helpers.TorchDistributedEnvironment`)::

    python -m clxai_utils.train.launch --dataset imagenet_s50 --profile paper --seed 0 --loss supcon \
        --submit slurm --nodes 2 --gpus 4 --partition gpu

Every process builds the same `Run`, joins the process group (NCCL on GPUs, gloo on CPUs)
and calls `run_training` with its rank; rank 0 writes the checkpoint after every epoch, so
a stopped (requeued) job resumes where it was, and the training notebook or the sweep then
finds the finished model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import submitit
import torch
import torch.distributed as dist

from clxai_utils.core.config import DATASETS
from clxai_utils.core.precision import PRECISION_ENV, PRECISIONS
from clxai_utils.core.registry import LOSSES
from clxai_utils.core.run import Run
from clxai_utils.core.validate import int_at_least
from clxai_utils.pipeline.cluster import (
    CLUSTER_BACKENDS,
    add_resource_arguments,
    check_slurm,
    check_visible_gpus,
    job_outcome,
    make_executor,
    resources_from_args,
)
from clxai_utils.train.distributed import World, check_world_size, launch_arguments
from clxai_utils.train.trainer import run_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clxai_utils.train.launch",
        description="Train one loss of one run with DistributedDataParallel (start it with torchrun).",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--profile", required=True, help="run profile in configs/profiles.yaml")
    parser.add_argument("--seed", type=int_at_least(0), required=True)
    parser.add_argument("--loss", required=True, choices=LOSSES)
    parser.add_argument("--run-dir", default=None, help="the run's folder (default outputs/runs/<run id>)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--sync-batchnorm", action="store_true", help="synchronise BatchNorm statistics (CUDA only)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help=f"numeric precision (default ${PRECISION_ENV}, else auto: bf16 on CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--stop-after-epoch", type=int_at_least(1), default=None, help="stop after this epoch's checkpoint"
    )
    submit = parser.add_argument_group("submitting the training as one job (instead of starting it with torchrun)")
    submit.add_argument(
        "--submit", choices=CLUSTER_BACKENDS, default=None, help="slurm, or submitit-local to try it here"
    )
    submit.add_argument("--nodes", type=int_at_least(1), default=1, help="nodes of the job (default 1)")
    submit.add_argument(
        "--processes-per-node",
        type=int_at_least(1),
        default=None,
        help="training processes per node (default: one per GPU)",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the job's resources; submit nothing")
    add_resource_arguments(parser, per="node")
    return parser


class TrainingTask(submitit.helpers.Checkpointable):
    """One process of a submitted multi-node training: its rank from the job, then `main`; requeued as-is."""

    def __call__(self, argv: list[str]) -> int:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return main(argv)


def _submit(args: argparse.Namespace, run: Run) -> int:
    """Submit the training as one job of --nodes x --gpus processes (slurm), or run it so here (submitit-local)."""
    resources = resources_from_args(args, run.profile)
    check_visible_gpus(resources.gpus, args.submit)
    per_node = args.processes_per_node or resources.devices
    processes = args.nodes * per_node
    check_world_size(
        run.settings.train[args.loss].batch_size, processes, "processes (nodes x per node)", f"of loss {args.loss}"
    )
    line = f"{args.loss} of {run.id}: {args.nodes} node(s) x {per_node} process(es), each node {resources.describe()}"
    if args.dry_run:
        print(line)
        return 0
    if args.submit == "slurm":
        check_slurm(resources)
    folder = run.model_dir(args.loss) / "submitit"
    executor = make_executor(args.submit, folder, resources, nodes=args.nodes, tasks_per_node=per_node)
    argv = launch_arguments(
        run,
        args.loss,
        device=args.device,
        stop_after_epoch=args.stop_after_epoch,
        sync_batchnorm=args.sync_batchnorm,
        precision=args.precision,
    )
    job = executor.submit(TrainingTask(), argv)
    print(f"{line}\njob {job.job_id}; logs in {folder}")
    if args.submit == "slurm":
        return 0
    error = job_outcome(job)
    print(f"[FAILED] {error}" if error else f"[ok] model in {run.model_dir(args.loss)}")
    return int(bool(error))


def _device(choice: str, local_rank: int) -> torch.device:
    """This process's device: GPU `local_rank` under CUDA, else the CPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise ValueError(f"--device cuda: process {local_rank} of this node has no GPU ({visible} visible)")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def main(argv: list[str] | None = None) -> int:
    """Join the process group, train, leave it; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run = Run(args.dataset, args.profile, args.seed, **({"root": Path(args.run_dir)} if args.run_dir else {}))
        if args.submit:
            return _submit(args, run)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as error:
        parser.error(str(error))
    if "RANK" not in os.environ:
        parser.error("no process group: start this module with torchrun (or submitit), which sets RANK and WORLD_SIZE")
    device = _device(args.device, int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        world = World.current()
        run_training(
            run,
            args.loss,
            world=world,
            device=device,
            stop_after_epoch=args.stop_after_epoch,
            progress=world.is_main,
            sync_batchnorm=args.sync_batchnorm,
            precision=args.precision,
        )
        dist.barrier()  # rank 0 has written the model before anyone reports success
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
