"""The sweep command: run the pipeline notebooks with papermill over a grid of seeds.

    python -m clxai_utils.tools.sweep --dataset cifar10 --profile quick --losses ce supcon triplet --seeds 0 1 2
    python -m clxai_utils.tools.sweep --profile paper --seeds 0 1 2 3 4 --backend slurm --partition gpu --dry-run

Re-running the same command resumes a stopped sweep; `--dry-run` lists the jobs, cached
or to run. See `clxai_utils.tools.plan` for what counts as done. `--backend local`
(the default) runs here; the others submit through submitit (`clxai_utils.tools.cluster`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from clxai_utils.core.config import DATASETS
from clxai_utils.core.paths import report_dir as default_report_dir
from clxai_utils.core.paths import runs_root as default_runs_root
from clxai_utils.core.registry import LOSSES
from clxai_utils.core.validate import int_at_least
from clxai_utils.data.sources import DataError
from clxai_utils.tools.cluster import (
    CLUSTER_BACKENDS,
    Resources,
    add_resource_arguments,
    check_devices,
    resources_from_args,
    sweep_on_cluster,
)
from clxai_utils.tools.execute import JobResult, SweepResult, check_notebooks, run_sweep
from clxai_utils.tools.plan import PIPELINE, Job, Step, format_plan, plan
from clxai_utils.train.distributed import DEVICES_ENV


def _where(result: JobResult) -> str:
    job = result.job
    if result.status == "failed":
        return f"{job.executed} (log: {job.log})"
    if result.status in ("ok", "cached"):
        return str(job.executed)
    if result.status == "interrupted":
        return str(job.log)
    return result.reason


def format_summary(result: SweepResult) -> str:
    """End-of-sweep table: job, status, seconds, executed notebook (and log for failures)."""
    rows = [("job", "status", "seconds", "executed notebook / log")]
    for r in result.results:
        seconds = f"{r.seconds:.0f}" if r.status in ("ok", "failed") else "-"
        rows.append((r.job.name, r.status, seconds, _where(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows)


def _closing_advice(result: SweepResult, command: str) -> str:
    counts = Counter(result.statuses.values())
    finished = counts["ok"] + counts["cached"]
    if result.interrupted:
        return (
            f"Interrupted: {finished} of {len(result.results)} jobs finished; "
            "nothing was recorded for the stopped ones.\n"
            f"Resume by re-running the same command: {command}"
        )
    if counts["failed"] or counts["skipped"]:
        return (
            f"{counts['failed']} job(s) failed, {counts['skipped']} skipped. Fix the cause (see the logs) and re-run "
            f"the same command; finished jobs are cached: {command}"
        )
    return f"All {finished} jobs done ({counts['ok']} run, {counts['cached']} cached)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clxai_utils.tools.sweep",
        description="Run the pipeline notebooks over losses x seeds; re-run the same command to resume.",
    )
    parser.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)} (default cifar10)")
    parser.add_argument("--profile", default="quick", help="run profile in configs/profiles.yaml (default quick)")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), help=f"any of {' '.join(LOSSES)} (default all)")
    parser.add_argument("--seeds", nargs="+", type=int_at_least(0), default=[0], help="seeds >= 0 (default 0)")
    parser.add_argument(
        "--jobs",
        type=int_at_least(1),
        default=1,
        help="run up to N ready jobs at once (default 1); each gets 1/N of the CPU cores (OMP_NUM_THREADS). "
        "Float results depend on the thread count, so N > 1 gives slightly different numbers than N = 1.",
    )
    parser.add_argument("--runs-root", default=None, help="where run folders go (default outputs/runs)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the pipeline notebooks (default notebooks/)")
    parser.add_argument(
        "--data-source",
        default=None,
        help="'torchvision', a folder or a .tar.gz, for 00_data only (default: $CLXAI_DATA_SOURCE, else torchvision)",
    )
    parser.add_argument(
        "--mask-source",
        default=None,
        help="images with object masks, for 00_data only: CIFAR-10's real photographs (realmask32), or the "
        "ImageNetS50 folder of an ImageNet-1k data source (default: $CLXAI_MASK_SOURCE, else none)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, cached or to run; run nothing")
    parser.add_argument(
        "--backend",
        choices=("local", *CLUSTER_BACKENDS),
        default="local",
        help="local: run here (default); slurm: one job-array task per run through submitit; "
        "submitit-local / debug: submitit on this machine (subprocesses / this process), for tests",
    )
    add_resource_arguments(parser, per="run")
    parser.add_argument(
        "--report-dir", default=None, help="where the cluster sweep's 10_analysis writes (default outputs/report)"
    )
    return parser


def main(argv: list[str] | None = None, *, pipeline: Sequence[Step] = PIPELINE) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 failures, 130 interrupted).

    `pipeline` lets tests drive the whole command over toy notebooks.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        jobs = plan(
            args.dataset,
            args.profile,
            args.losses,
            args.seeds,
            runs_root=args.runs_root,
            data_source=args.data_source,
            mask_source=args.mask_source,
            pipeline=pipeline,
        )
        if args.backend != "local":
            return _cluster_sweep(args, jobs, pipeline[0].notebook)
        env = None
        if args.gpus is not None:
            resources = Resources(gpus=args.gpus)
            check_devices(resources, jobs, "local")
            env = {DEVICES_ENV: str(resources.devices)}
        if args.dry_run:
            print(format_plan(jobs))
            return 0
        check_notebooks(jobs, args.notebooks_dir)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, DataError) as error:
        parser.error(str(error))
    result = run_sweep(jobs, max_parallel=args.jobs, notebooks_dir=args.notebooks_dir, env=env)
    print(format_summary(result))
    print(_closing_advice(result, shlex.join([sys.executable, "-m", "clxai_utils.tools.sweep", *argv])))
    return result.exit_code


def _cluster_sweep(args: argparse.Namespace, jobs: Sequence[Job], first_step: str) -> int:
    """The sweep through submitit (see `clxai_utils.tools.cluster`)."""
    notebooks = check_notebooks([] if args.dry_run else jobs, args.notebooks_dir)
    return sweep_on_cluster(
        jobs,
        backend=args.backend,
        resources=resources_from_args(args, args.profile),
        notebooks_dir=notebooks,
        first_step=first_step,
        runs_root=Path(args.runs_root).resolve() if args.runs_root else default_runs_root(),
        report_dir=Path(args.report_dir).resolve() if args.report_dir else default_report_dir(),
        dry_run=args.dry_run,
    )


if __name__ == "__main__":
    raise SystemExit(main())
