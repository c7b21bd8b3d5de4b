"""Sweep runner: execute the pipeline notebooks with papermill over a grid of seeds.

    python -m clxai_utils.sweep --dataset cifar10 --profile quick --losses ce supcon triplet --seeds 0 1 2

Every (dataset, profile, seed) is a *run* with its own outputs root `<runs root>/<run id>/`
(see `Run.id`), so runs never overwrite each other and the analysis notebook can gather
them all. Within a run the notebooks form a small dependency graph (`PIPELINE`): data,
then one training per loss, then probe, explanations and metrics.

The sweep is resumable. A job counts as done only when papermill succeeded (a marker file,
written atomically after the exit status is known, records the job's parameters) *and* its
artefacts exist. Stopping a sweep (Ctrl-C, crash, power cut) and re-running the same
command therefore continues where it stopped, and changing a parameter re-runs exactly the
jobs it affects. Run ids and paths derive only from the parameters, never from the clock.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from .artifacts import read_json, write_json
from .config import DATASETS, LOSSES, check_choice, check_choices, check_positive_int, load_profile
from .paths import repo_root
from .seeding import check_seed

# Same as clxai_utils.explain.METHODS (a test checks it); not imported from there because
# that module loads grad-cam and quantus, which would add many seconds to every sweep start.
EXPLANATION_METHODS = ("gradcam", "eigencam")
RUN_PARAMETERS = ("profile", "dataset", "seed", "losses", "data_source")
#: Run values handed to the notebook as environment variables instead of papermill parameters:
#: a data path is machine-specific and must not end up in the executed notebooks users read.
ENV_PARAMETERS = {"data_source": "CLXAI_DATA_SOURCE"}
INTERRUPTED_EXIT = 130  # the shell's convention for "stopped by SIGINT"


@dataclass(frozen=True)
class Run:
    """One point of the grid; every path and parameter of its jobs derives from these fields."""

    dataset: str
    profile: str
    seed: int
    losses: tuple[str, ...]
    data_source: str

    @property
    def id(self) -> str:
        """Run id, e.g. `cifar10-quick-seed0`: also the name of the run's outputs root."""
        return f"{self.dataset}-{self.profile}-seed{self.seed}"

    def parameters(self) -> dict[str, Any]:
        """Every value a step may receive, in JSON/YAML-ready types (so markers compare equal)."""
        return {
            "profile": self.profile,
            "dataset": self.dataset,
            "seed": self.seed,
            "losses": list(self.losses),
            "data_source": self.data_source,
        }


@dataclass(frozen=True)
class Step:
    """One notebook of the pipeline, as data, so tests can substitute a toy pipeline.

    `params` names the run values (from RUN_PARAMETERS) the notebook receives; `artefacts`
    gives the files it must leave, relative to the run root; `needs` names earlier steps
    whose jobs must succeed first. A step with a `loss` is a training step: it is planned
    only when that loss is selected (and a dependency on an unplanned step is dropped).
    """

    notebook: str
    params: tuple[str, ...]
    artefacts: Callable[[Run], list[str]]
    needs: tuple[str, ...] = ()
    loss: str | None = None


def _manifest(run: Run) -> list[str]:
    return [f"data/{run.dataset}/manifest.json"]


def _model(loss: str) -> Callable[[Run], list[str]]:
    """Artefact function of one training step (a factory, so each step keeps its own loss)."""

    def paths(run: Run) -> list[str]:
        return [f"models/{run.dataset}/{loss}/seed{run.seed}/model.pt"]

    return paths


def _accuracy(run: Run) -> list[str]:
    return [f"results/{run.dataset}/accuracy_seed{run.seed}.csv"]


def _explanations(run: Run) -> list[str]:
    return [
        f"explanations/{run.dataset}/{loss}/seed{run.seed}/{method}.pt"
        for loss in run.losses
        for method in EXPLANATION_METHODS
    ]


def _metrics(run: Run) -> list[str]:
    files = (("facets", "csv"), ("facets", "json"), ("pf_curves", "csv"))
    return [f"results/{run.dataset}/{name}_seed{run.seed}.{ext}" for name, ext in files]


TRAINING_NOTEBOOKS = {"ce": "01_train_ce", "supcon": "02_train_supcon", "triplet": "03_train_triplet"}
_BASE = ("profile", "dataset", "seed")
PIPELINE: tuple[Step, ...] = (
    Step("00_data", (*_BASE, "data_source"), _manifest),
    *(Step(nb, _BASE, _model(loss), needs=("00_data",), loss=loss) for loss, nb in TRAINING_NOTEBOOKS.items()),
    Step("04_linear_probe", (*_BASE, "losses"), _accuracy, needs=tuple(TRAINING_NOTEBOOKS.values())),
    Step("05_explanations", (*_BASE, "losses"), _explanations, needs=("04_linear_probe",)),
    Step("06_metrics", (*_BASE, "losses"), _metrics, needs=("05_explanations",)),
)


@dataclass(frozen=True)
class Job:
    """One notebook execution within one run."""

    run_id: str
    notebook: str
    root: Path
    params: dict[str, Any]
    artefacts: tuple[Path, ...]
    needs: tuple[str, ...]

    @property
    def name(self) -> str:
        """`<run id>/<notebook>`: unique across the sweep, used in every message."""
        return f"{self.run_id}/{self.notebook}"

    @property
    def executed(self) -> Path:
        """The executed notebook papermill writes (kept on failure, with the traceback)."""
        return self.root / "notebooks" / f"{self.notebook}.ipynb"

    @property
    def log(self) -> Path:
        return self.root / "notebooks" / f"{self.notebook}.log"

    @property
    def marker(self) -> Path:
        return self.root / "notebooks" / f"{self.notebook}.done.json"


# ---------------------------------------------------------------- planning


def default_runs_root() -> Path:
    """outputs/runs/: one folder per run, all below the default outputs root the analysis scans."""
    return repo_root() / "outputs" / "runs"


def default_notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def resolve_data_source(value: str | None) -> str:
    """Return "torchvision" or an existing absolute path; None means $CLXAI_DATA_SOURCE, else torchvision.

    Paths are made absolute because papermill runs the notebooks from the notebooks folder.
    """
    value = value if value is not None else os.environ.get("CLXAI_DATA_SOURCE", "torchvision")
    if value == "torchvision":
        return value
    path = Path(value).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"data_source={value!r} does not exist; give 'torchvision', a folder or a .tar.gz")
    return str(path)


def _check_losses(losses: Sequence[str]) -> tuple[str, ...]:
    """Validated losses in canonical LOSSES order, so `supcon ce` and `ce supcon` share markers."""
    chosen = check_choices("losses", losses, LOSSES)
    return tuple(loss for loss in LOSSES if loss in chosen)


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, (str, int)) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    return tuple(check_seed(seed) for seed in seeds)


def check_pipeline(pipeline: Sequence[Step]) -> None:
    """Reject a pipeline that is not a valid dependency order (so plan order is run order)."""
    seen: set[str] = set()
    for step in pipeline:
        if step.notebook in seen:
            raise ValueError(f"pipeline: notebook {step.notebook!r} appears twice")
        if unknown := [p for p in step.params if p not in RUN_PARAMETERS]:
            raise ValueError(f"pipeline: step {step.notebook!r} asks for {unknown}; allowed: {RUN_PARAMETERS}")
        if missing := [n for n in step.needs if n not in seen]:
            raise ValueError(f"pipeline: step {step.notebook!r} needs {missing}, which are not earlier steps")
        if step.loss is not None:
            check_choice(f"loss of pipeline step {step.notebook!r}", step.loss, LOSSES)
        seen.add(step.notebook)


def _run_jobs(run: Run, root: Path, pipeline: Sequence[Step]) -> list[Job]:
    """The jobs of one run: steps of unselected losses are dropped, and so are needs on them."""
    steps = [s for s in pipeline if s.loss is None or s.loss in run.losses]
    planned = {s.notebook for s in steps}
    values = run.parameters()
    return [
        Job(
            run_id=run.id,
            notebook=step.notebook,
            root=root,
            params={key: values[key] for key in step.params},
            artefacts=tuple(root / rel for rel in step.artefacts(run)),
            needs=tuple(f"{run.id}/{need}" for need in step.needs if need in planned),
        )
        for step in steps
    ]


def plan(
    dataset: str,
    profile: str,
    losses: Sequence[str],
    seeds: Sequence[int],
    *,
    runs_root: str | os.PathLike | None = None,
    data_source: str | None = None,
    pipeline: Sequence[Step] = PIPELINE,
) -> list[Job]:
    """Every job of the sweep, in a valid execution order; invalid arguments raise naming them."""
    check_choice("dataset", dataset, DATASETS)
    load_profile(profile).for_dataset(dataset)
    losses, seeds = _check_losses(losses), _check_seeds(seeds)
    check_pipeline(pipeline)
    source = resolve_data_source(data_source)
    root = Path(runs_root if runs_root is not None else default_runs_root()).resolve()
    runs = [Run(dataset, profile, seed, losses, source) for seed in seeds]
    return [job for run in runs for job in _run_jobs(run, root / run.id, pipeline)]


# ---------------------------------------------------------------- state


def is_complete(job: Job) -> bool:
    """Done = papermill succeeded with these very parameters and every artefact is present."""
    if not job.marker.is_file() or read_json(job.marker).get("parameters") != job.params:
        return False
    return all(path.is_file() for path in job.artefacts)


def _check_order(jobs: Sequence[Job]) -> None:
    seen: set[str] = set()
    for job in jobs:
        if missing := [n for n in job.needs if n not in seen]:
            raise ValueError(f"jobs: {job.name} needs {missing}, which are not listed before it")
        seen.add(job.name)


def cached_names(jobs: Sequence[Job]) -> set[str]:
    """Jobs to skip: complete, and every job they need is cached too.

    A complete job whose input is about to be rebuilt (say 00_data after `data_source`
    changed) is stale, so it re-runs as well.
    """
    _check_order(jobs)
    cached: set[str] = set()
    for job in jobs:
        if is_complete(job) and all(need in cached for need in job.needs):
            cached.add(job.name)
    return cached


def format_plan(jobs: Sequence[Job]) -> str:
    """The dry-run listing: state, job and parameters, one job a line."""
    cached = cached_names(jobs)
    width = max((len(job.name) for job in jobs), default=0)
    lines = [f"{len(jobs)} jobs, {len(cached)} cached, {len(jobs) - len(cached)} to run"]
    for job in jobs:
        state = "cached" if job.name in cached else "to run"
        lines.append(f"{state:<6}  {job.name:<{width}}  {json.dumps(job.params)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- execution


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


def papermill_command(job: Job, notebooks_dir: Path) -> list[str]:
    """The papermill call of one job; `--cwd` matches how the notebooks are run by hand."""
    return [
        sys.executable, "-m", "papermill",
        str(notebooks_dir / f"{job.notebook}.ipynb"), str(job.executed),
        "--kernel", "python3", "--cwd", str(notebooks_dir),
        "--no-progress-bar", "--log-level", "WARNING",
        "-y", yaml.safe_dump(notebook_parameters(job), default_flow_style=True),
    ]  # fmt: skip


def notebook_parameters(job: Job) -> dict[str, Any]:
    """The job's parameters that papermill injects (the others travel in the environment)."""
    return {name: value for name, value in job.params.items() if name not in ENV_PARAMETERS}


def job_environment(job: Job) -> dict[str, str]:
    """The job's environment: its run root as CLXAI_OUTPUTS, plus the ENV_PARAMETERS it takes."""
    extra = {env: str(job.params[name]) for name, env in ENV_PARAMETERS.items() if name in job.params}
    return {**os.environ, "CLXAI_OUTPUTS": str(job.root), **extra}


class _Runner:
    """Runs papermill subprocesses from worker threads; `terminate_all` stops them (Ctrl-C)."""

    def __init__(self, notebooks_dir: Path) -> None:
        self.notebooks_dir = notebooks_dir
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._stopping = False

    def execute(self, job: Job) -> JobResult:
        """Run one job; write its marker only if papermill succeeded and the artefacts exist."""
        start = time.monotonic()
        job.executed.parent.mkdir(parents=True, exist_ok=True)
        env = job_environment(job)
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
        if missing := [str(p.relative_to(job.root)) for p in job.artefacts if not p.is_file()]:
            return JobResult(job, "failed", seconds, f"notebook ran but did not write {missing}")
        write_json(job.marker, {"job": job.name, "parameters": job.params})
        return JobResult(job, "ok", seconds)

    def terminate_all(self, grace_s: float = 10.0) -> None:
        """Stop every running papermill (its kernel exits when its parent does); start no more."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()


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
            job for job in self.jobs
            if self.results[job.name].status == "not run" and all(self.results[n].status in done for n in job.needs)
        ]  # fmt: skip

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
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (`kill`, a batch system's stop) like Ctrl-C, so papermill children are stopped too."""
    if threading.current_thread() is not threading.main_thread():
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
) -> SweepResult:
    """Run every job not cached, `max_parallel` at a time, and report each as it finishes.

    `on_finish` is called in this thread after each finished job (cached ones included); a
    KeyboardInterrupt raised there is treated like Ctrl-C, which makes interruption testable;
    so is SIGTERM.
    Markers of jobs about to run are removed first, so an interrupted or failed re-run can
    never leave a job looking complete from an older run.
    """
    check_positive_int("max_parallel", max_parallel)
    folder = check_notebooks(jobs, notebooks_dir)
    with tqdm(total=len(jobs), unit="job", dynamic_ncols=True, disable=None) as bar:  # no bar in logs: the lines below suffice

        def report(result: JobResult) -> None:
            bar.update()
            tqdm.write(result.line(), file=sys.stdout)
            if on_finish is not None:
                on_finish(result)

        scheduler = _Scheduler(jobs, _Runner(folder), report)
        for job in jobs:
            if scheduler.results[job.name].status != "cached":
                job.marker.unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=max_parallel) as pool, _sigterm_as_interrupt():
            try:
                scheduler.run(pool, max_parallel, bar)
            except KeyboardInterrupt:
                scheduler.interrupt()
                return SweepResult(tuple(scheduler.results.values()), interrupted=True)
    return SweepResult(tuple(scheduler.results.values()))


# ---------------------------------------------------------------- reporting and CLI


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


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an int >= minimum, so the error names the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clxai_utils.sweep",
        description="Run the pipeline notebooks over losses x seeds; re-run the same command to resume.",
    )
    parser.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)} (default cifar10)")
    parser.add_argument("--profile", default="quick", help="run profile in configs/profiles.yaml (default quick)")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), help=f"any of {' '.join(LOSSES)} (default all)")
    parser.add_argument("--seeds", nargs="+", type=_int_at_least(0), default=[0], help="seeds >= 0 (default 0)")
    parser.add_argument(
        "--jobs", type=_int_at_least(1), default=1,
        help="run up to N ready jobs at once (default 1). On a 2-core machine N > 1 gains nothing: "
        "one notebook already keeps both cores busy.",
    )  # fmt: skip
    parser.add_argument("--runs-root", default=None, help="where run folders go (default outputs/runs)")
    parser.add_argument("--notebooks-dir", default=None, help="folder of the pipeline notebooks (default notebooks/)")
    parser.add_argument(
        "--data-source", default=None,
        help="'torchvision', a folder or a .tar.gz, for 00_data only (default: $CLXAI_DATA_SOURCE, else torchvision)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, cached or to run; run nothing")
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
            args.dataset, args.profile, args.losses, args.seeds,
            runs_root=args.runs_root, data_source=args.data_source, pipeline=pipeline,
        )  # fmt: skip
        if args.dry_run:
            print(format_plan(jobs))
            return 0
        check_notebooks(jobs, args.notebooks_dir)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.error(str(error))
    result = run_sweep(jobs, max_parallel=args.jobs, notebooks_dir=args.notebooks_dir)
    print(format_summary(result))
    print(_closing_advice(result, shlex.join([sys.executable, "-m", "clxai_utils.sweep", *argv])))
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
