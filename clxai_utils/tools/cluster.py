"""Sweeps on a Slurm cluster through submitit: one job-array task per run, requeued when stopped.

The sweep's grid becomes three submissions, the way DINO's or MAE's `run_with_submitit` use
submitit (no daemon, no scheduler of our own):

1. *prepare*: the shared first step (00_data) of every run, one small job;
2. *runs*: a job array, one task per unfinished run, after *prepare* (whatever its outcome:
   a run whose 00 failed re-runs it in its own task and fails alone). A task runs its run's
   notebooks in order with the local scheduler, so finished jobs are skipped exactly as in
   a local sweep;
3. *report*: 10_analysis over every run below the runs root, after the array.

A task stopped by preemption or by its time limit is requeued by submitit with the same
arguments (`RunTask` is `Checkpointable`); the training notebooks resume from their
per-epoch checkpoints and the sweep's completion markers skip what had finished. A failed
task is reported with the log of the notebook that failed; the other tasks go on.

Backends: `slurm` (sbatch on a cluster), `submitit-local` (subprocesses on this machine,
with submitit's time limit and requeue; for tests) and `debug` (in this process).
Resources come from `configs/cluster.yaml` (per profile) and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch
import yaml

from clxai_utils.core.notebooks import REPORT_NOTEBOOK
from clxai_utils.core.paths import repo_root
from clxai_utils.core.validate import check_choice, check_positive, check_positive_int, int_at_least
from clxai_utils.tools.execute import papermill_call, run_sweep
from clxai_utils.tools.plan import Job, cached_names
from clxai_utils.train.distributed import DEVICES_ENV, check_world_size

CLUSTER_BACKENDS: tuple[str, ...] = ("slurm", "submitit-local", "debug")
RESOURCES_FILE = "configs/cluster.yaml"


@dataclass(frozen=True)
class Resources:
    """What one array task (one run) asks for; *prepare* and *report* get `aux_time_min` and no GPU."""

    partition: str | None = None
    account: str | None = None
    gpus: int = 1
    cpus: int = 8
    mem_gb: float = 32.0
    time_min: float = 1440.0
    aux_time_min: float = 120.0
    array_parallelism: int = 16
    signal_delay_s: int = 120
    max_requeues: int = 5
    sbatch: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise ValueError(f"resources: gpus must be an integer >= 0, got {self.gpus!r}")
        for name in ("cpus", "array_parallelism", "signal_delay_s", "max_requeues"):
            check_positive_int(f"resources: {name}", getattr(self, name))
        for name in ("mem_gb", "time_min", "aux_time_min"):
            check_positive(f"resources: {name}", getattr(self, name))
        if self.signal_delay_s >= self.time_min * 60:
            raise ValueError(
                f"resources: signal_delay_s={self.signal_delay_s} must be shorter than the time limit ({self.time_min} min)"
            )

    @property
    def devices(self) -> int:
        """Training processes per run: one per GPU, one on a CPU-only task."""
        return max(1, self.gpus)

    def describe(self, *, aux: bool = False) -> str:
        """One line for the dry run."""
        gpus = 0 if aux else self.gpus
        minutes = self.aux_time_min if aux else self.time_min
        where = f"partition {self.partition}" if self.partition else "the cluster's default partition"
        account = f", account {self.account}" if self.account else ""
        return f"gpus {gpus}, cpus {self.cpus}, mem {self.mem_gb:g} GB, time {minutes:g} min, {where}{account}"


def load_resources(profile: str, path: str | os.PathLike | None = None, **overrides: Any) -> Resources:
    """The profile's entry of the resources file, with command-line `overrides` (None = not given)."""
    file = Path(path) if path is not None else repo_root() / RESOURCES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"resources file {file} does not exist")
    table = yaml.safe_load(file.read_text()) or {}
    if not isinstance(table, dict) or profile not in table:
        raise ValueError(f"resources file {file} has no entry for profile {profile!r} (it has {sorted(table)})")
    values = dict(table[profile] or {})
    allowed = {f.name for f in dataclasses.fields(Resources)}
    if unknown := sorted(set(values) - allowed):
        raise ValueError(
            f"resources file {file}, profile {profile!r}: unknown keys {unknown}; allowed: {sorted(allowed)}"
        )
    values.update({key: value for key, value in overrides.items() if value is not None})
    values["setup"] = tuple(values.get("setup") or ())
    values["sbatch"] = dict(values.get("sbatch") or {})
    return Resources(**values)


def add_resource_arguments(parser: argparse.ArgumentParser, per: str) -> None:
    """The resource flags of the sweep (`per`="run") and of one multi-node training (`per`="node")."""
    gpus_help = {
        "run": "GPUs per run (more than 1: DDP training through torchrun); default from --resources, 0 on the local backend",
        "node": "GPUs per node, one training process each; default from --resources",
    }[per]
    parser.add_argument("--gpus", type=int_at_least(0), default=None, help=gpus_help)
    group = parser.add_argument_group("cluster resources (defaults: the profile's entry of --resources)")
    group.add_argument(
        "--resources", default=None, help=f"YAML file of resources per profile (default {RESOURCES_FILE})"
    )
    group.add_argument("--partition", default=None, help="Slurm partition (required where the cluster has no default)")
    group.add_argument("--account", default=None, help="Slurm account to charge")
    group.add_argument("--cpus", type=int_at_least(1), default=None, help=f"CPU cores per {per}")
    group.add_argument("--mem-gb", type=float, default=None, help=f"memory per {per}, GB")
    group.add_argument("--time-min", type=float, default=None, help="time limit of one job, minutes (then requeued)")
    group.add_argument("--array-parallelism", type=int_at_least(1), default=None, help="at most N runs at once")
    group.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option, e.g. constraint=a100"
    )


def _sbatch_options(pairs: Sequence[str]) -> dict[str, str] | None:
    """--sbatch KEY=VALUE flags as a dict (None when none given, so the resources file's apply)."""
    if not pairs:
        return None
    if bad := [p for p in pairs if "=" not in p or not p.split("=", 1)[0]]:
        raise ValueError(f"--sbatch takes KEY=VALUE, got {bad}")
    return dict(p.split("=", 1) for p in pairs)


def resources_from_args(args: argparse.Namespace, profile: str) -> Resources:
    """The profile's resources, with the flags of `add_resource_arguments` that were given."""
    return load_resources(
        profile,
        args.resources,
        partition=args.partition,
        account=args.account,
        gpus=args.gpus,
        cpus=args.cpus,
        mem_gb=args.mem_gb,
        time_min=args.time_min,
        array_parallelism=args.array_parallelism,
        sbatch=_sbatch_options(args.sbatch),
    )


def check_visible_gpus(gpus: int, backend: str) -> None:
    """Where jobs run on this machine (every backend but slurm), --gpus can be at most the visible GPUs."""
    if backend != "slurm" and gpus > torch.cuda.device_count():
        raise ValueError(
            f"--gpus={gpus} asks for more GPUs than the {torch.cuda.device_count()} visible on this machine"
        )


def check_devices(resources: Resources, jobs: Sequence[Job], backend: str) -> None:
    """GPUs per run: at most the visible ones where the run executes here, and dividing every batch."""
    check_visible_gpus(resources.gpus, backend)
    for run in {job.run for job in jobs}:
        for loss, cfg in run.settings.train.items():
            check_world_size(cfg.batch_size, resources.devices, "--gpus", f"of loss {loss} in profile {run.profile!r}")


# ------------------------------------------------------------------ what runs in a task


class RunTask(submitit.helpers.Checkpointable):
    """The notebooks of one run, in order, skipping finished ones; requeued as-is when stopped."""

    def __init__(self, notebooks_dir: Path, env: Mapping[str, str]) -> None:
        self.notebooks_dir, self.env = notebooks_dir, dict(env)

    def __call__(self, jobs: Sequence[Job]) -> dict[str, str]:
        log = _task_log(jobs[0].run.notebooks_dir)
        result = run_sweep(
            jobs,
            notebooks_dir=self.notebooks_dir,
            env=self.env,
            sigterm_stops=False,
            on_finish=lambda r: log(r.line()),
        )
        if result.exit_code:
            failed = [r for r in result.results if r.status != "ok" and r.status != "cached"]
            raise RuntimeError("; ".join(r.line() for r in failed))
        return result.statuses


def _task_log(folder: Path) -> Callable[[str], None]:
    """Appends to `<run>/notebooks/cluster.log`: the attempts of this run's task, what each finished."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cluster.log"

    def write(line: str) -> None:
        with open(path, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    try:
        env = submitit.JobEnvironment()
        write(f"task {env.job_id} on {socket.gethostname()}; submitit log: {env.paths.stdout}")
    except RuntimeError:  # not inside a submitit job (a direct call)
        write(f"task on {socket.gethostname()}")
    return write


def run_report(notebooks_dir: Path, runs_root: Path, report_dir: Path) -> None:
    """10_analysis over every run below `runs_root`, as the sweep's last step; raises if it fails."""
    report_dir.mkdir(parents=True, exist_ok=True)
    executed = report_dir / f"{REPORT_NOTEBOOK}.ipynb"
    parameters = {"runs_root": str(runs_root), "report_dir": str(report_dir)}
    cmd = papermill_call(notebooks_dir / f"{REPORT_NOTEBOOK}.ipynb", executed, parameters)
    with open(report_dir / f"{REPORT_NOTEBOOK}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"{REPORT_NOTEBOOK} failed (exit status {code}); see {report_dir / REPORT_NOTEBOOK}.log")


def _prepare(jobs: Sequence[Job], notebooks_dir: Path) -> dict[str, str]:
    """The shared first step of every run (00_data), before the array; failures are left to each run's task."""
    return run_sweep(jobs, notebooks_dir=notebooks_dir, sigterm_stops=False).statuses


# ------------------------------------------------------------------ the submission


@dataclass(frozen=True)
class ClusterPlan:
    """The three submissions of a sweep: the first-step jobs, one job list per unfinished run, the report."""

    prepare: tuple[Job, ...]
    runs: tuple[tuple[Job, ...], ...]
    finished: tuple[str, ...]
    cached: frozenset[str]
    runs_root: Path
    report_dir: Path

    def header(self, backend: str) -> str:
        """The first line of the dry run, also printed when the sweep is submitted."""
        return f"{backend} sweep: {len(self.runs)} run(s) to submit, {len(self.finished)} finished (skipped)"


def cluster_plan(jobs: Sequence[Job], first_step: str, runs_root: Path, report_dir: Path) -> ClusterPlan:
    """Group the sweep's jobs by run; runs whose every job is cached are left out (reported as finished)."""
    cached = cached_names(jobs)
    by_run: dict[str, list[Job]] = {}
    for job in jobs:
        by_run.setdefault(job.run.id, []).append(job)
    pending = {run: tuple(js) for run, js in by_run.items() if any(j.name not in cached for j in js)}
    prepare = tuple(j for js in pending.values() for j in js if j.notebook == first_step and j.name not in cached)
    finished = tuple(run for run in by_run if run not in pending)
    return ClusterPlan(prepare, tuple(pending.values()), finished, frozenset(cached), runs_root, report_dir)


def format_cluster_plan(plan: ClusterPlan, resources: Resources, backend: str) -> str:
    """The dry run: each submission, its resources, and one line per array task."""
    lines = [plan.header(backend)]
    if plan.prepare:
        lines.append(
            f"prepare: 1 job, {plan.prepare[0].notebook} of {len(plan.prepare)} run(s); {resources.describe(aux=True)}"
        )
    if plan.runs:
        lines.append(
            f"array: {len(plan.runs)} task(s), at most {resources.array_parallelism} at once, each {resources.describe()}, "
            f"{resources.devices} training process(es) per run; requeued on preemption and time limit "
            f"(at most {resources.max_requeues} time limits, signal {resources.signal_delay_s} s before)"
        )
        for index, run_jobs in enumerate(plan.runs):
            todo = [j.notebook for j in run_jobs if j.name not in plan.cached]
            lines.append(f"  [{index}] {run_jobs[0].run.id}: {' '.join(todo)}; logs in {run_jobs[0].run.notebooks_dir}")
    lines.append(f"report: {REPORT_NOTEBOOK} over {plan.runs_root} -> {plan.report_dir}, after the array")
    if resources.sbatch:
        lines.append("extra sbatch options: " + " ".join(f"--{k}={v}" for k, v in resources.sbatch.items()))
    if resources.setup:
        lines.append("setup before each job: " + " && ".join(resources.setup))
    return "\n".join(lines)


def default_partition(sinfo: Callable[[], str] | None = None) -> str | None:
    """The partition Slurm marks as default (`sinfo` lists it with a trailing '*'), or None."""
    text = (
        sinfo()
        if sinfo is not None
        else subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    )
    marked = [name.rstrip("*") for name in text.split() if name.endswith("*")]
    return marked[0] if marked else None


def check_slurm(resources: Resources, sinfo: Callable[[], str] | None = None) -> None:
    """Stop before submitting when this machine has no Slurm, or the cluster needs a partition we lack."""
    if sinfo is None and shutil.which("sbatch") is None:
        raise RuntimeError(
            "--backend slurm needs Slurm's sbatch on this machine's PATH: run the command on the cluster's login node "
            "(add --dry-run to see the jobs it would submit, or use --backend local here)"
        )
    if resources.partition is None and default_partition(sinfo) is None:
        partitions = (sinfo() if sinfo is not None else "").split()
        raise ValueError(
            "--partition is required: this cluster has no default partition"
            + (f" (partitions: {', '.join(partitions)})" if partitions else "")
        )


def make_executor(
    backend: str, folder: Path, resources: Resources, *, aux: bool = False, nodes: int = 1, tasks_per_node: int = 1
) -> submitit.Executor:
    """A submitit executor of `backend` asking for `resources`.

    `aux`: the small prepare/report jobs (no GPU, `aux_time_min`). `nodes` x `tasks_per_node`
    processes: one multi-node DDP training (`clxai_utils.tools.launch --submit`).
    """
    check_choice("backend", backend, CLUSTER_BACKENDS)
    minutes = resources.aux_time_min if aux else resources.time_min
    gpus = 0 if aux else resources.gpus
    if backend != "slurm" and nodes > 1:
        raise ValueError(
            f"--nodes={nodes}: the {backend} backend runs on this machine, one node; only Slurm spans several nodes"
        )
    if backend == "debug":
        if tasks_per_node > 1:
            raise ValueError("the debug backend runs one task in this process; use submitit-local for several")
        return submitit.DebugExecutor(folder)
    if backend == "submitit-local":
        local = submitit.LocalExecutor(folder, max_num_timeout=resources.max_requeues)
        local.update_parameters(
            timeout_min=minutes,
            gpus_per_node=gpus,
            tasks_per_node=tasks_per_node,
            signal_delay_s=resources.signal_delay_s,
        )
        return local
    slurm = submitit.SlurmExecutor(folder, max_num_timeout=resources.max_requeues)
    slurm.update_parameters(
        time=max(1, round(minutes)),
        nodes=nodes,
        ntasks_per_node=tasks_per_node,
        cpus_per_task=max(1, resources.cpus // tasks_per_node),
        mem=f"{resources.mem_gb:g}GB",
        signal_delay_s=resources.signal_delay_s,
        array_parallelism=resources.array_parallelism,
        additional_parameters=dict(resources.sbatch),
        setup=list(resources.setup),
        **({"gpus_per_node": gpus} if gpus else {}),
        **({"partition": resources.partition} if resources.partition else {}),
        **({"account": resources.account} if resources.account else {}),
    )
    return slurm


def _after(executor: submitit.Executor, job: submitit.Job | None) -> None:
    """Make the next Slurm submission wait for `job` (afterany: run even if it failed)."""
    if job is not None and isinstance(executor, submitit.SlurmExecutor):
        executor.update_parameters(dependency=f"afterany:{job.job_id.split('_')[0]}")


def submit(
    plan: ClusterPlan, backend: str, resources: Resources, notebooks_dir: Path, folder: Path
) -> tuple[list[str], int]:
    """Submit (slurm: and return) or run (submitit-local, debug: and wait); messages and the exit status."""
    messages: list[str] = []
    env = {DEVICES_ENV: str(resources.devices)}
    prepare = None
    if plan.prepare:
        prepare = make_executor(backend, folder, resources, aux=True).submit(_prepare, plan.prepare, notebooks_dir)
        messages.append(f"prepare: job {prepare.job_id}")
        if backend != "slurm":
            job_outcome(prepare)  # the array starts after it, as with Slurm's dependency
    tasks: list[submitit.Job] = []
    outcomes: list[str] = []  # here (not slurm): each task's error, "" when it succeeded
    if plan.runs:
        executor = make_executor(backend, folder, resources)
        _after(executor, prepare)
        # Slurm caps the array at array_parallelism; submitit's local executor would start every task at once.
        step = len(plan.runs) if backend == "slurm" else resources.array_parallelism
        for start in range(0, len(plan.runs), step):
            started = executor.map_array(RunTask(notebooks_dir, env), list(plan.runs[start : start + step]))
            outcomes += [] if backend == "slurm" else [job_outcome(task) for task in started]
            tasks += started
        messages.append(f"array: {len(tasks)} task(s), job {tasks[0].job_id.split('_')[0]}")
    report = make_executor(backend, folder, resources, aux=True)
    _after(report, tasks[-1] if tasks else None)
    if backend == "slurm":
        job = report.submit(run_report, notebooks_dir, plan.runs_root, plan.report_dir)
        messages.append(f"report: job {job.job_id}")
        messages.append(
            f"Submitted. Follow with: squeue -u $USER; submitit's logs are in {folder}, each run's in <run>/notebooks/. "
            "Re-run the same command after the array has ended to resubmit unfinished runs."
        )
        return messages, 0
    for task, run_jobs, error in zip(tasks, plan.runs, outcomes):
        run_id = run_jobs[0].run.id
        messages.append(
            f"[FAILED] {run_id}: {error} (submitit log: {task.paths.stdout})" if error else f"[ok] {run_id}"
        )
    report_error = job_outcome(report.submit(run_report, notebooks_dir, plan.runs_root, plan.report_dir))
    messages.append(
        f"[FAILED] report: {report_error}" if report_error else f"report: {plan.report_dir / REPORT_NOTEBOOK}.ipynb"
    )
    return messages, int(any(outcomes) or bool(report_error))


def job_outcome(job: submitit.Job) -> str:
    """Wait for `job`; the last line of its error, or "" when it succeeded.

    `exception()` rather than `result()`: the debug executor opens a debugger on a failed result.
    """
    error = job.exception()
    if error is None:
        return ""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def sweep_on_cluster(
    jobs: Sequence[Job],
    *,
    backend: str,
    resources: Resources,
    notebooks_dir: Path,
    first_step: str,
    runs_root: Path,
    report_dir: Path,
    dry_run: bool,
) -> int:
    """The sweep command's cluster path: print the plan (dry run) or submit it; returns the exit status."""
    check_choice("backend", backend, CLUSTER_BACKENDS)
    check_devices(resources, jobs, backend)
    plan = cluster_plan(jobs, first_step, runs_root, report_dir)
    if dry_run:
        print(format_cluster_plan(plan, resources, backend))
        return 0
    if not (notebooks_dir / f"{REPORT_NOTEBOOK}.ipynb").is_file():
        raise FileNotFoundError(
            f"notebooks_dir={str(notebooks_dir)!r} lacks {REPORT_NOTEBOOK}.ipynb, the sweep's last step"
        )
    if backend == "slurm":
        check_slurm(resources)
    print(plan.header(backend))
    messages, code = submit(plan, backend, resources, notebooks_dir, runs_root / "submitit")
    print("\n".join(messages))
    return code
