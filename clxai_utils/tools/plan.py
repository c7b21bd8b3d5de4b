"""Planning a sweep: the pipeline as data, the jobs of a grid of runs, and which are already done.

Every (dataset, profile, seed) is a `Run` with its own folder `<runs root>/<run id>/`, so
runs never overwrite each other and the analysis notebook can gather them all. Within a
run the notebooks form a small dependency graph (`PIPELINE`): data, then one training per
loss, then probe, explanations and metrics, the neuron labels (11, after the training), and, after
the metrics, the snapshots scored at matched accuracy (07), the protocol ablation (08) and the
faithfulness measures with the sanity checks (09). `clxai_utils.tools.execute` runs the jobs;
`clxai_utils.tools.sweep` is the command line.

The sweep is resumable. A job counts as done only when papermill succeeded (a marker file,
written atomically after the exit status is known, records the job's parameters) *and* its
artefacts exist. Stopping a sweep (Ctrl-C, crash, power cut) and re-running the same
command therefore continues where it stopped, and changing a parameter re-runs exactly the
jobs it affects. Run ids and paths derive only from the parameters, never from the clock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clxai_utils.core.artifacts import read_json
from clxai_utils.core.config import DATASETS, load_profile
from clxai_utils.core.notebooks import NOTEBOOK
from clxai_utils.core.paths import repo_root
from clxai_utils.core.paths import runs_root as default_runs_root
from clxai_utils.core.registry import LOSSES, METHODS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import check_choice, check_choices, check_seeds
from clxai_utils.data.datasets import resolve_mask_source
from clxai_utils.data.sources import resolve_source

RUN_PARAMETERS = ("profile", "dataset", "seed", "losses", "data_source", "mask_source")
#: Run values handed to the notebook as environment variables instead of papermill parameters:
#: a data path is machine-specific and must not end up in the executed notebooks users read.
ENV_PARAMETERS = {"data_source": "CLXAI_DATA_SOURCE", "mask_source": "CLXAI_MASK_SOURCE"}
INTERRUPTED_EXIT = 130  # the shell's convention for "stopped by SIGINT"


@dataclass(frozen=True)
class RunPlan:
    """One point of the grid: a run, the losses it trains and the data and mask sources of its 00_data step
    ("" for no mask source)."""

    run: Run
    losses: tuple[str, ...]
    data_source: str
    mask_source: str = ""

    def parameters(self) -> dict[str, Any]:
        """Every value a step may receive, in JSON/YAML-ready types (so markers compare equal)."""
        return {
            "profile": self.run.profile,
            "dataset": self.run.dataset,
            "seed": self.run.seed,
            "losses": list(self.losses),
            "data_source": self.data_source,
            "mask_source": self.mask_source,
        }


@dataclass(frozen=True)
class Step:
    """One notebook of the pipeline, as data, so tests can substitute a toy pipeline.

    `params` names the run values (from RUN_PARAMETERS) the notebook receives; `artefacts`
    gives the files it must leave (paths from the run's `Run`); `needs` names earlier steps
    whose jobs must succeed first. A step with a `loss` is a training step: it is planned
    only when that loss is selected (and a dependency on an unplanned step is dropped);
    a step with `datasets` is planned only for those data sets.
    """

    notebook: str
    params: tuple[str, ...]
    artefacts: Callable[[RunPlan], list[Path]]
    needs: tuple[str, ...] = ()
    loss: str | None = None
    datasets: tuple[str, ...] | None = None  # the data sets the step applies to; None: every one


def _manifest(plan: RunPlan) -> list[Path]:
    return [plan.run.manifest_path]


def _model(loss: str) -> Callable[[RunPlan], list[Path]]:
    """Artefact function of one training step (a factory, so each step keeps its own loss)."""

    def paths(plan: RunPlan) -> list[Path]:
        return [plan.run.model_dir(loss) / "model.pt"]

    return paths


def _accuracy(plan: RunPlan) -> list[Path]:
    return [plan.run.accuracy_path]


def _explanations(plan: RunPlan) -> list[Path]:
    return [plan.run.explanation_path(loss, method) for loss in plan.losses for method in METHODS]


def _metrics(plan: RunPlan) -> list[Path]:
    return list(plan.run.facets_paths.values())


def _snapshot_tables(plan: RunPlan) -> list[Path]:
    return list(plan.run.snapshot_paths.values())


def _ablation_tables(plan: RunPlan) -> list[Path]:
    return list(plan.run.ablation_paths.values())


def _faithfulness_tables(plan: RunPlan) -> list[Path]:
    return list(plan.run.faithfulness_paths.values())


def _neuron_tables(plan: RunPlan) -> list[Path]:
    """11's tables; the text labels only exist where a CLIP model was given, which a sweep does not do."""
    return [path for name, path in plan.run.neuron_paths.items() if name != "clip_labels"]


TRAINING_NOTEBOOKS = {loss: NOTEBOOK[f"train_{loss}"].name for loss in ("ce", "supcon", "triplet")}
_BASE = ("profile", "dataset", "seed")
_NB = {key: nb.name for key, nb in NOTEBOOK.items()}
#: The per-run steps, in the order of `core.notebooks.NOTEBOOKS`.
PIPELINE: tuple[Step, ...] = (
    Step(_NB["data"], (*_BASE, "data_source", "mask_source"), _manifest),
    *(Step(nb, _BASE, _model(loss), needs=(_NB["data"],), loss=loss) for loss, nb in TRAINING_NOTEBOOKS.items()),
    Step(_NB["probe"], (*_BASE, "losses"), _accuracy, needs=tuple(TRAINING_NOTEBOOKS.values())),
    Step(_NB["explanations"], (*_BASE, "losses"), _explanations, needs=(_NB["probe"],)),
    Step(_NB["metrics"], (*_BASE, "losses"), _metrics, needs=(_NB["explanations"],)),
    Step(_NB["accuracy_confound"], (*_BASE, "losses"), _snapshot_tables, needs=(_NB["metrics"],)),
    Step(_NB["protocol"], (*_BASE, "losses"), _ablation_tables, needs=(_NB["metrics"],)),
    Step(_NB["faithfulness"], (*_BASE, "losses"), _faithfulness_tables, needs=(_NB["metrics"],)),
    # Part II reads only the trained models; its painted attributes and vocabulary are CIFAR-10's.
    Step(
        _NB["neuron_labels"],
        (*_BASE, "losses"),
        _neuron_tables,
        needs=tuple(TRAINING_NOTEBOOKS.values()),
        datasets=("cifar10",),
    ),
)


@dataclass(frozen=True)
class Job:
    """One notebook execution within one run."""

    run: Run
    notebook: str
    params: dict[str, Any]
    artefacts: tuple[Path, ...]
    needs: tuple[str, ...]

    @property
    def name(self) -> str:
        """`<run id>/<notebook>`: unique across the sweep, used in every message."""
        return f"{self.run.id}/{self.notebook}"

    @property
    def executed(self) -> Path:
        """The executed notebook papermill writes (kept on failure, with the traceback)."""
        return self.run.notebooks_dir / f"{self.notebook}.ipynb"

    @property
    def log(self) -> Path:
        """papermill's output, kept for every job that ran."""
        return self.run.notebooks_dir / f"{self.notebook}.log"

    @property
    def marker(self) -> Path:
        """Written atomically once papermill succeeded and the artefacts exist: the job is done."""
        return self.run.notebooks_dir / f"{self.notebook}.done.json"


# ---------------------------------------------------------------- planning


def default_notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def _check_losses(losses: Sequence[str]) -> tuple[str, ...]:
    """Validated losses in canonical LOSSES order, so `supcon ce` and `ce supcon` share markers."""
    chosen = check_choices("losses", losses, LOSSES)
    return tuple(loss for loss in LOSSES if loss in chosen)


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


def _run_jobs(plan: RunPlan, pipeline: Sequence[Step]) -> list[Job]:
    """The jobs of one run: steps of unselected losses and of other data sets are dropped, and so are needs on them."""
    run = plan.run
    steps = [
        s
        for s in pipeline
        if (s.loss is None or s.loss in plan.losses) and (s.datasets is None or run.dataset in s.datasets)
    ]
    planned = {s.notebook for s in steps}
    values = plan.parameters()
    return [
        Job(
            run=run,
            notebook=step.notebook,
            params={key: values[key] for key in step.params},
            artefacts=tuple(step.artefacts(plan)),
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
    mask_source: str | None = None,
    pipeline: Sequence[Step] = PIPELINE,
) -> list[Job]:
    """Every job of the sweep, in a valid execution order; invalid arguments raise naming them."""
    check_choice("dataset", dataset, DATASETS)
    load_profile(profile).for_dataset(dataset)
    losses, seeds = _check_losses(losses), check_seeds(seeds)
    check_pipeline(pipeline)
    source, masks = resolve_source(data_source), resolve_mask_source(mask_source) or ""
    root = Path(runs_root) if runs_root is not None else default_runs_root()
    plans = [
        RunPlan(Run(dataset, profile, seed, root=root / Run(dataset, profile, seed).id), losses, source, masks)
        for seed in seeds
    ]
    return [job for plan in plans for job in _run_jobs(plan, pipeline)]


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
