"""Executing a planned sweep: papermill subprocesses, a dependency-aware scheduler, Ctrl-C and SIGTERM.

Jobs whose needs succeeded (or were cached) start, up to `max_parallel` at a time; a failed
job's dependants are skipped while the other runs go on; stopping the sweep stops the
running notebooks too and leaves no job marked done that did not finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml
from tqdm.std import tqdm

from clxai_utils.core.artifacts import write_json
from clxai_utils.core.threads import THREADS_ENV, share_of_cores
from clxai_utils.core.validate import check_positive_int
from clxai_utils.tools.plan import ENV_PARAMETERS, INTERRUPTED_EXIT, Job, cached_names, default_notebooks_dir


@dataclass(frozen=True)
class JobResult:
    """What became of one job: ok | cached | failed | skipped | interrupted | not run (| running, in flight)."""

    job: Job
    status: str
    seconds: float = 0.0
    reason: str = ""

    def line(self) -> str:
        """The progress line printed when the job finishes."""
        name, secs = self.job.name, f"{self.seconds:.0f} s"
        match self.status:
            case "ok":
                return f"[ok] {name} {secs}"
            case "failed":
                return f"[FAILED] {name} {secs}: {self.reason}; see {self.job.log}"
            case "skipped":
                return f"[skipped] {name} ({self.reason})"
            case _:
                return f"[{self.status}] {name}"


@dataclass(frozen=True)
class SweepResult:
    """Per-job outcomes in plan order, and whether the sweep was interrupted."""

    results: tuple[JobResult, ...]
    interrupted: bool = False

    @property
    def statuses(self) -> dict[str, str]:
        return {r.job.name: r.status for r in self.results}

    @property
    def exit_code(self) -> int:
        """130 if interrupted, 1 if any job failed or was skipped, else 0."""
        if self.interrupted:
            return INTERRUPTED_EXIT
        return int(any(r.status in ("failed", "skipped") for r in self.results))


def papermill_call(notebook: Path, executed: Path, parameters: dict[str, Any]) -> list[str]:
    """papermill's command line with quiet kernels (see `kernel`); `--cwd` matches how the notebooks are run by hand."""
    papermill = [sys.executable, "-m", "clxai_utils.tools.kernel"]
    options = ["--kernel", "python3", "--cwd", str(notebook.parent), "--no-progress-bar", "--log-level", "WARNING"]
    return [
        *papermill,
        str(notebook),
        str(executed),
        *options,
        "-y",
        yaml.safe_dump(parameters, default_flow_style=True),
    ]


def papermill_command(job: Job, notebooks_dir: Path) -> list[str]:
    """The papermill call of one job."""
    return papermill_call(notebooks_dir / f"{job.notebook}.ipynb", job.executed, notebook_parameters(job))


def notebook_parameters(job: Job) -> dict[str, Any]:
    """The job's parameters that papermill injects (the others travel in the environment)."""
    return {name: value for name, value in job.params.items() if name not in ENV_PARAMETERS}


def job_environment(job: Job, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment: the folder holding its run as CLXAI_RUNS, plus the ENV_PARAMETERS it takes.

    The notebook then builds the same `Run` (and so the same paths) from its parameters.
    `extra` adds machine settings of the sweep (say CLXAI_DEVICES, the devices per run).
    """
    values = {env: str(job.params[name]) for name, env in ENV_PARAMETERS.items() if name in job.params}
    return {**os.environ, **(extra or {}), "CLXAI_RUNS": str(job.run.root.parent), **values}


class _Runner:
    """Runs papermill subprocesses from worker threads; `terminate_all` stops them (Ctrl-C)."""

    def __init__(self, notebooks_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.notebooks_dir, self.env = notebooks_dir, env
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._stopping = False

    def execute(self, job: Job) -> JobResult:
        """Run one job; write its marker only if papermill succeeded and the artefacts exist."""
        start = time.monotonic()
        job.executed.parent.mkdir(parents=True, exist_ok=True)
        env = job_environment(job, self.env)
        with self._lock:  # so that terminate_all either sees this process or prevents its start
            if self._stopping:
                return JobResult(job, "interrupted")
            with open(job.log, "w") as log:
                cmd = papermill_command(job, self.notebooks_dir)
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._procs.add(proc)
        code = proc.wait()
        with self._lock:
            self._procs.discard(proc)
            stopping = self._stopping
        seconds = time.monotonic() - start
        if code != 0:
            return JobResult(job, "interrupted" if stopping else "failed", seconds, f"papermill exit status {code}")
        if missing := [str(p.relative_to(job.run.root)) for p in job.artefacts if not p.is_file()]:
            return JobResult(job, "failed", seconds, f"notebook ran but did not write {missing}")
        write_json(job.marker, {"job": job.name, "parameters": job.params})
        return JobResult(job, "ok", seconds)

    def terminate_all(self, grace_s: float = 10.0) -> None:
        """Stop every running papermill and the processes below it; start no more.

        A kernel runs in a session of its own and outlives a terminated papermill by up to a
        second, still executing its cell: long enough to write an artefact after the sweep has
        reported the job interrupted. So the kernel (and its data-loader workers) are stopped
        here too, and waited for.
        """
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        below = [child for proc in procs for child in _descendants(proc.pid)]
        for proc in procs:
            proc.terminate()
        _stop(below, grace_s)
        for proc in procs:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process started below `pid` (none if it has exited)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop(processes: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM, then SIGKILL what still runs after `grace_s`; return once none runs."""
    for signal_them in (psutil.Process.terminate, psutil.Process.kill):
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                signal_them(process)
        stop_at = time.monotonic() + grace_s
        while (processes := [p for p in processes if _running(p)]) and time.monotonic() < stop_at:
            time.sleep(0.02)
        if not processes:
            return


def _running(process: psutil.Process) -> bool:
    """Whether it still executes; a zombie (exited, its new parent not yet reaping it) does not."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _Scheduler:
    """Starts ready jobs (all needs ok or cached) up to `max_parallel`; skips jobs whose needs failed."""

    def __init__(self, jobs: Sequence[Job], runner: _Runner, report: Callable[[JobResult], None]) -> None:
        self.jobs, self.runner, self.report = jobs, runner, report
        cached = cached_names(jobs)
        self.results = {job.name: JobResult(job, "cached" if job.name in cached else "not run") for job in jobs}
        self.running: dict[Future, Job] = {}

    def run(self, pool: ThreadPoolExecutor, max_parallel: int, bar: tqdm) -> None:
        for result in self.results.values():
            if result.status == "cached":
                self.report(result)
        while True:
            self._skip_blocked()
            for job in self._ready()[: max_parallel - len(self.running)]:
                self.results[job.name] = JobResult(job, "running")
                self.running[pool.submit(self.runner.execute, job)] = job
                bar.set_description_str(job.name)
            if not self.running:
                return
            done, _ = wait(self.running, return_when=FIRST_COMPLETED)
            for future in done:
                self._finish(future)

    def _finish(self, future: Future) -> None:
        job = self.running.pop(future)
        self.results[job.name] = future.result()
        self.report(self.results[job.name])

    def _ready(self) -> list[Job]:
        done = ("ok", "cached")
        return [
            job
            for job in self.jobs
            if self.results[job.name].status == "not run" and all(self.results[n].status in done for n in job.needs)
        ]

    def _skip_blocked(self) -> None:
        """Skip jobs with a failed or skipped need; plan order makes one pass transitive."""
        for job in self.jobs:
            if self.results[job.name].status != "not run":
                continue
            blocked = [n for n in job.needs if self.results[n].status in ("failed", "skipped")]
            if blocked:
                self.results[job.name] = JobResult(job, "skipped", reason=f"needs {blocked[0]}")
                self.report(self.results[job.name])

    def interrupt(self) -> None:
        """Terminate running jobs and record how each ended (one may have just succeeded)."""
        self.runner.terminate_all()
        while self.running:
            future = next(iter(self.running))
            job = self.running.pop(future)
            self.results[job.name] = future.result()


def check_notebooks(jobs: Iterable[Job], notebooks_dir: str | os.PathLike | None = None) -> Path:
    """The resolved notebooks folder; fails before anything runs, not hours in, if a notebook is missing."""
    folder = Path(notebooks_dir if notebooks_dir is not None else default_notebooks_dir()).resolve()
    if missing := sorted({j.notebook for j in jobs if not (folder / f"{j.notebook}.ipynb").is_file()}):
        raise FileNotFoundError(f"notebooks_dir={str(folder)!r} lacks {[m + '.ipynb' for m in missing]}")
    return folder


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_as_interrupt(enabled: bool) -> Iterator[None]:
    """Treat SIGTERM (`kill`, a batch system's stop) like Ctrl-C, so papermill children are stopped too."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(
    jobs: Sequence[Job],
    *,
    max_parallel: int = 1,
    notebooks_dir: str | os.PathLike | None = None,
    on_finish: Callable[[JobResult], None] | None = None,
    env: Mapping[str, str] | None = None,
    sigterm_stops: bool = True,
) -> SweepResult:
    """Run every job not cached, `max_parallel` at a time, and report each as it finishes.

    `on_finish` is called in this thread after each finished job (cached ones included); a
    KeyboardInterrupt raised there is treated like Ctrl-C, which makes interruption testable;
    so is SIGTERM, unless `sigterm_stops` is False (a cluster task: submitit handles SIGTERM,
    and a time limit arrives as submitit's requeue, a SystemExit, which stops the running
    notebooks too before it ends the task). `env` is added to every job's environment; with
    `max_parallel` > 1 so is each job's share of the cores (`clxai_utils.core.threads`).
    Markers of jobs about to run are removed first, so an interrupted or failed re-run can
    never leave a job looking complete from an older run.
    """
    check_positive_int("max_parallel", max_parallel)
    folder = check_notebooks(jobs, notebooks_dir)
    if max_parallel > 1:
        env = {**(env or {}), **share_of_cores(max_parallel)}
        print(f"{max_parallel} jobs at once, {env[THREADS_ENV]} CPU thread(s) each ({THREADS_ENV})")
    with tqdm(
        total=len(jobs), unit="job", dynamic_ncols=True, disable=None
    ) as bar:  # no bar in logs: the lines below suffice

        def report(result: JobResult) -> None:
            bar.update()
            tqdm.write(result.line(), file=sys.stdout)
            if on_finish is not None:
                on_finish(result)

        scheduler = _Scheduler(jobs, _Runner(folder, env), report)
        for job in jobs:
            if scheduler.results[job.name].status != "cached":
                job.marker.unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=max_parallel) as pool, _sigterm_as_interrupt(sigterm_stops):
            try:
                scheduler.run(pool, max_parallel, bar)
            except KeyboardInterrupt:
                scheduler.interrupt()
                return SweepResult(tuple(scheduler.results.values()), interrupted=True)
            except SystemExit:  # submitit requeues a stopped cluster task by exiting from its signal handler
                scheduler.interrupt()
                raise
    return SweepResult(tuple(scheduler.results.values()))
