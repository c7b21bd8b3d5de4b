"""Submit one run's training as a single multi-node job (Slurm through submitit), or try it here.

    python -m clxai_utils.tools.launch --dataset imagenet_s50 --profile paper --seed 0 --loss supcon \
        --submit slurm --nodes 2 --gpus 4 --partition gpu

submitit starts `clxai_utils.train.worker` in every task after exporting RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT (`submitit.helpers.TorchDistributedEnvironment`);
without --submit this is the worker itself (what torchrun starts). Rank 0 writes the
checkpoint after every epoch, so a requeued job resumes, and the training notebook or the
sweep then finds the finished model.
"""

from __future__ import annotations

import argparse
import sys

import submitit

from clxai_utils.core.run import Run
from clxai_utils.core.validate import int_at_least
from clxai_utils.tools.cluster import (
    CLUSTER_BACKENDS,
    add_resource_arguments,
    check_slurm,
    check_visible_gpus,
    job_outcome,
    make_executor,
    resources_from_args,
)
from clxai_utils.train import worker
from clxai_utils.train.distributed import check_world_size
from clxai_utils.train.processes import launch_arguments


def build_parser() -> argparse.ArgumentParser:
    """The worker's options and the job's: nodes, processes per node, resources."""
    parser = worker.build_parser()
    parser.prog = "python -m clxai_utils.tools.launch"
    parser.description = (
        "Train one loss of one run as one submitted job of nodes x processes (or start it with torchrun)."
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
        return worker.main(argv)


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


def main(argv: list[str] | None = None) -> int:
    """Submit the training (--submit), else run this process as a worker; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.submit:
        return worker.main(argv)
    try:
        return _submit(
            args, Run(args.dataset, args.profile, args.seed, **({"root": args.run_dir} if args.run_dir else {}))
        )
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as error:
        parser.error(str(error))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
