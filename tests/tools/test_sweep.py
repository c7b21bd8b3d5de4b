"""The papermill sweep runner, on toy notebooks that take a few seconds each.

Each toy notebook writes `toy/<name>.json` (its seed, losses and $OMP_NUM_THREADS) in its run's folder (the
`Run` it builds from its parameters, below the CLXAI_RUNS the sweep hands it) and
appends `<run id>/<name>` to a counter file, so a test can count real executions. Flag
files make a notebook fail (`fail-<name>-<seed>`) or hold until its kernel is stopped (`hold-<name>`; its
kernel then writes its process id to `pid-<name>`).
The tests that execute notebooks start real Jupyter kernels through papermill (14 executions, a few seconds
each) and are marked `kernels`: `make cluster-tests` runs them, the unit tests leave them out. None of them
depends on timing: a held kernel waits for its stop (up to 10 minutes; one never stopped then finishes and is
counted), and the tests check what ran, not how long it took.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from clxai_utils.core.artifacts import read_json, write_json
from clxai_utils.core.run import Run
from clxai_utils.tools.execute import JobResult, job_environment, papermill_command, run_sweep
from clxai_utils.tools.plan import Job, Step, check_pipeline, format_plan, plan
from clxai_utils.tools.sweep import format_summary, main

BASE = ("profile", "dataset", "seed")
TOY_CODE = """\
import json, os, pathlib, time
from clxai_utils.core.run import Run
out = Run(dataset, profile, seed).root
ctl = pathlib.Path({ctl!r})
if (ctl / f"fail-{name}-{{seed}}").exists():
    raise RuntimeError("toy failure requested")
if (ctl / "hold-{name}").exists():
    (ctl / "pid-{name}").write_text(str(os.getpid()))
    held_until = time.monotonic() + 600  # stopped long before; a kernel never stopped finishes, and is counted
    while time.monotonic() < held_until:
        time.sleep(0.1)
with open(ctl / "executions.txt", "a") as f:
    f.write(f"{{out.name}}/{name}\\n")
target = out / "toy" / "{name}.json"
target.parent.mkdir(parents=True, exist_ok=True)
target.write_text(json.dumps({{"seed": seed, "losses": losses, "threads": os.environ.get("OMP_NUM_THREADS")}}))
"""


@dataclass
class Toy:
    """Folders of one toy sweep: notebooks, control flags, runs root."""

    notebooks: Path
    ctl: Path
    runs: Path

    def write(self, *names: str) -> None:
        for name in names:
            params = nbformat.v4.new_code_cell('profile = ""\ndataset = ""\nseed = -1\nlosses = []')
            params.metadata["tags"] = ["parameters"]
            body = nbformat.v4.new_code_cell(TOY_CODE.format(ctl=str(self.ctl), name=name))
            nb = nbformat.v4.new_notebook(cells=[params, body])
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, self.notebooks / f"{name}.ipynb")

    def flag(self, name: str) -> Path:
        return self.ctl / name

    def executions(self) -> Counter:
        counter = self.ctl / "executions.txt"
        return Counter(counter.read_text().split()) if counter.exists() else Counter()

    def plan(self, pipeline: list[Step], seeds: list[int], losses: list[str]) -> list[Job]:
        source = "torchvision"  # unused by the toy notebooks; fixed so $CLXAI_DATA_SOURCE cannot interfere
        return plan("cifar10", "smoke", losses, seeds, runs_root=self.runs, data_source=source, pipeline=pipeline)


def toy_step(name: str, needs: tuple[str, ...] = (), loss: str | None = None, params: tuple[str, ...] = BASE) -> Step:
    return Step(name, params, lambda plan: [plan.run.root / "toy" / f"{name}.json"], needs, loss)


@pytest.fixture
def toy(tmp_path: Path) -> Toy:
    toy = Toy(tmp_path / "notebooks", tmp_path / "ctl", tmp_path / "runs")
    toy.notebooks.mkdir()
    toy.ctl.mkdir()
    return toy


def wait_for_pid(path: Path, timeout_s: float = 300.0) -> int:
    """The process id a held toy kernel wrote; waits while the kernel starts (a bound for a broken kernel only)."""
    stop = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < stop, f"{path.name} not written within {timeout_s} s"
        time.sleep(0.05)
    return int(path.read_text())


def kernel_alive(pid: int) -> bool:
    """Whether the process runs; a zombie (dead, not yet reaped by its new parent) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_name(seed: int) -> str:
    return Run("cifar10", "smoke", seed).id


def sweep(toy: Toy, jobs: list[Job], on_finish: Callable[[JobResult], None] | None = None):
    return run_sweep(jobs, max_parallel=2, notebooks_dir=toy.notebooks, on_finish=on_finish)


# ------------------------------------------------------------ real executions (14 in all)

TRAIN_PIPELINE = [
    toy_step("train_ce", loss="ce"),
    toy_step("train_supcon", loss="supcon"),
    toy_step("final", needs=("train_ce", "train_supcon"), params=(*BASE, "losses")),
]


@pytest.mark.kernels
def test_failure_skips_dependents_other_seed_completes_and_rerun_finishes_the_rest(
    toy: Toy, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # the sweep's share of the cores: 6 // 2 jobs at once
    toy.write("train_ce", "final")  # supcon is not selected, so its notebook need not exist
    toy.flag("fail-train_ce-0").touch()
    jobs = toy.plan(TRAIN_PIPELINE, seeds=[0, 1], losses=["ce"])
    s0, s1 = run_name(0), run_name(1)
    assert [j.name for j in jobs] == [f"{s0}/train_ce", f"{s0}/final", f"{s1}/train_ce", f"{s1}/final"]
    assert jobs[1].needs == (f"{s0}/train_ce",) and jobs[1].params["losses"] == ["ce"]

    first = sweep(toy, jobs)
    assert [first.statuses[j.name] for j in jobs] == ["failed", "skipped", "ok", "ok"]
    assert first.exit_code == 1
    assert toy.executions() == Counter({f"{s1}/train_ce": 1, f"{s1}/final": 1})
    failed = jobs[0]
    assert "toy failure requested" in failed.executed.read_text()  # the failed executed notebook is kept
    assert "toy failure requested" in failed.log.read_text()
    assert not failed.marker.exists()
    printed = capsys.readouterr().out
    assert f"[ok] {s1}/train_ce " in printed
    assert f"[FAILED] {s0}/train_ce" in printed and str(failed.log) in printed
    assert f"[skipped] {s0}/final (needs {s0}/train_ce)" in printed
    summary = format_summary(first)
    assert f"{s0}/train_ce  failed" in summary and str(failed.log) in summary

    toy.flag("fail-train_ce-0").unlink()
    second = sweep(toy, jobs)
    out = capsys.readouterr().out
    assert f"[cached] {s1}/final" in out and "2 jobs at once, 3 CPU thread(s) each (OMP_NUM_THREADS)" in out
    assert [second.statuses[j.name] for j in jobs] == ["ok", "ok", "cached", "cached"] and second.exit_code == 0
    assert toy.executions() == Counter({f"{run}/{nb}": 1 for run in (s0, s1) for nb in ("train_ce", "final")})
    for job in jobs:  # the notebooks got their parameters and CLXAI_RUNS, so their Run has the sweep's root
        seed = job.params["seed"]
        assert job.run.root == toy.runs.resolve() / run_name(seed)
        written = read_json(job.run.root / "toy" / f"{job.notebook}.json")
        assert written == {"seed": seed, "losses": job.params.get("losses", []), "threads": "3"}
        assert read_json(job.marker)["parameters"] == job.params


@pytest.mark.kernels
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_interrupt_terminates_running_jobs_and_rerun_resumes(toy: Toy, stop: str) -> None:
    toy.write("fast", "slow")
    toy.flag("hold-slow").touch()
    fast, slow = jobs = toy.plan([toy_step("fast"), toy_step("slow")], seeds=[0], losses=["ce"])

    def stop_after_fast(result: JobResult) -> None:
        if result.job is not fast:
            return
        kernel_pid.append(wait_for_pid(toy.flag("pid-slow")))  # "slow" is in its cell, not starting up
        if stop == "sigterm":  # `kill <pid>`: the sweep's handler raises KeyboardInterrupt here
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise KeyboardInterrupt

    kernel_pid: list[int] = []
    outer_hits: list[int] = []  # the handler in place before the sweep: must not see the signal, and comes back

    def outer(signum: int, frame: object) -> None:
        outer_hits.append(signum)

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        stopped = sweep(toy, jobs, on_finish=stop_after_fast)  # returns only once "slow"'s kernel is stopped
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outer_hits == []
    assert not kernel_alive(kernel_pid[0])  # stopped with its papermill: it must not write after the sweep
    assert stopped.interrupted and stopped.exit_code == 130
    assert stopped.statuses == {fast.name: "ok", slow.name: "interrupted"}
    assert fast.marker.exists() and not slow.marker.exists()
    assert toy.executions() == Counter({fast.name: 1})  # "slow" never got past its hold: it was stopped there

    toy.flag("hold-slow").unlink()
    resumed = sweep(toy, jobs)
    assert resumed.statuses == {fast.name: "cached", slow.name: "ok"} and resumed.exit_code == 0
    assert toy.executions() == Counter({fast.name: 1, slow.name: 1})


@pytest.mark.kernels
def test_cli_reruns_a_job_whose_parameters_changed_and_a_failed_rerun_never_looks_complete(
    toy: Toy, capsys: pytest.CaptureFixture
) -> None:
    pipeline = [toy_step("prep"), toy_step("final", needs=("prep",), params=(*BASE, "losses"))]
    toy.write("prep", "final")
    options = ["--profile", "smoke", "--seeds", "0", "--jobs", "2", "--data-source", "torchvision"]
    argv = [*options, "--runs-root", str(toy.runs), "--notebooks-dir", str(toy.notebooks)]
    assert main([*argv, "--losses", "ce"], pipeline=pipeline) == 0
    assert "All 2 jobs done (2 run, 0 cached)." in capsys.readouterr().out
    prep, final = jobs = toy.plan(pipeline, seeds=[0], losses=["supcon", "ce"])
    assert final.params["losses"] == ["ce", "supcon"]  # canonical order, whatever order was asked
    assert read_json(final.marker)["parameters"]["losses"] == ["ce"]
    assert format_plan(jobs).splitlines()[1:] == [
        f"cached  {prep.name}   {json.dumps(prep.params)}",
        f"to run  {final.name}  {json.dumps(final.params)}",
    ]

    toy.flag("fail-final-0").touch()
    assert main([*argv, "--losses", "supcon", "ce"], pipeline=pipeline) == 1
    printed = capsys.readouterr().out
    assert f"[cached] {prep.name}" in printed and f"[FAILED] {final.name}" in printed
    assert "1 job(s) failed, 0 skipped" in printed and "re-run the same command" in printed
    assert "toy failure requested" in final.executed.read_text()  # it really ran again
    assert not final.marker.exists() and (final.run.root / "toy" / "final.json").exists()  # stale artefact, no marker
    assert format_plan(jobs).splitlines()[2].startswith("to run")
    assert toy.executions() == Counter({prep.name: 1, final.name: 1})


# ------------------------------------------------------------ planning, state and CLI (no executions)


def test_dry_run_lists_the_real_pipeline_with_parameters_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "cifar"
    source.mkdir()
    monkeypatch.setenv("CLXAI_DATA_SOURCE", str(source))
    monkeypatch.delenv("CLXAI_MASK_SOURCE", raising=False)  # no mask source: 00_data gets ""
    runs = tmp_path / "runs"
    options = ["--dry-run", "--profile", "quick", "--losses", "triplet", "ce", "supcon", "--seeds", "0", "1"]
    assert main([*options, "--runs-root", str(runs)]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header == "22 jobs, 0 cached, 22 to run"
    base = {"profile": "quick", "dataset": "cifar10"}
    losses = {"losses": ["ce", "supcon", "triplet"]}
    expected = []
    for seed in (0, 1):
        run = Run("cifar10", "quick", seed).id
        expected.append(
            ("to run", f"{run}/00_data", {**base, "seed": seed, "data_source": str(source), "mask_source": ""})
        )
        for nb in ("01_train_ce", "02_train_supcon", "03_train_triplet"):
            expected.append(("to run", f"{run}/{nb}", {**base, "seed": seed}))
        for nb in (
            "04_linear_probe",
            "05_explanations",
            "06_metrics",
            "07_accuracy_confound",
            "08_protocol",
            "09_faithfulness",
        ):
            expected.append(("to run", f"{run}/{nb}", {**base, "seed": seed, **losses}))
        for nb in ("11_neuron_labels",):
            expected.append(("to run", f"{run}/{nb}", {**base, "seed": seed, **losses}))
    parsed = [(line[:6], line[8:].split()[0], json.loads(line[8:].split(maxsplit=1)[1])) for line in lines]
    assert parsed == expected
    assert not runs.exists()


def test_real_pipeline_artefacts_and_dependencies_follow_the_schema(tmp_path: Path) -> None:
    jobs = plan("cifar10", "quick", ["ce", "triplet"], [3], runs_root=tmp_path, data_source="torchvision")
    run = "cifar10-quick-seed3"
    relative = {j.notebook: [str(p.relative_to(tmp_path / run)) for p in j.artefacts] for j in jobs}
    assert relative == {
        "00_data": ["data/manifest.json"],
        "01_train_ce": ["models/ce/model.pt"],
        "03_train_triplet": ["models/triplet/model.pt"],
        "04_linear_probe": ["results/accuracy.csv"],
        "05_explanations": [
            "explanations/ce/gradcam.pt",
            "explanations/ce/eigencam.pt",
            "explanations/triplet/gradcam.pt",
            "explanations/triplet/eigencam.pt",
        ],
        "06_metrics": ["results/facets.csv", "results/facets.json", "results/pf_curves.csv"],
        "11_neuron_labels": [
            "results/neuron_planted_trials.csv",
            "results/neuron_planted.csv",
            "results/neuron_units.csv",
            "results/neuron_loss_tests.csv",
            "results/neuron_planted.md",
            "results/neuron_units.md",
        ],
        "07_accuracy_confound": [
            "results/snapshot_facets.csv",
            "results/snapshot_accuracy.csv",
            "results/snapshot_facets.json",
        ],
        "08_protocol": ["results/protocol_ablation.csv", "results/protocol_ablation.json"],
        "09_faithfulness": [
            "results/faithfulness.csv",
            "results/faithfulness_curves.csv",
            "results/randomisation.csv",
            "results/random_logit.csv",
            "results/randomisation_maps.pt",
            "results/faithfulness.json",
        ],
    }
    needs = {j.notebook: [n.split("/")[1] for n in j.needs] for j in jobs}
    assert needs == {
        "00_data": [],
        "01_train_ce": ["00_data"],
        "03_train_triplet": ["00_data"],
        "04_linear_probe": ["01_train_ce", "03_train_triplet"],
        "05_explanations": ["04_linear_probe"],
        "06_metrics": ["05_explanations"],
        "11_neuron_labels": ["01_train_ce", "03_train_triplet"],
        "07_accuracy_confound": ["06_metrics"],
        "08_protocol": ["06_metrics"],
        "09_faithfulness": ["06_metrics"],
    }
    assert {j.run.root for j in jobs} == {tmp_path.resolve() / run}


def test_completion_needs_matching_marker_artefacts_and_cached_inputs(tmp_path: Path) -> None:
    jobs = plan("cifar10", "smoke", ["ce"], [0], runs_root=tmp_path, data_source="torchvision")
    data, train = jobs[0], jobs[1]

    def states() -> list[str]:
        return [line[:6] for line in format_plan(jobs).splitlines()[1:3]]

    for job in (data, train):
        for path in job.artefacts:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        write_json(job.marker, {"job": job.name, "parameters": job.params})
    assert states() == ["cached", "cached"]
    write_json(data.marker, {"job": data.name, "parameters": {**data.params, "data_source": "/elsewhere"}})
    assert states() == ["to run", "to run"]  # a rebuilt input makes its dependents stale too
    write_json(data.marker, {"job": data.name, "parameters": data.params})
    train.artefacts[0].unlink()
    assert states() == ["cached", "to run"]


def test_papermill_command_passes_parameters_as_yaml(tmp_path: Path) -> None:
    job = plan("cifar10", "smoke", ["ce", "supcon"], [2], runs_root=tmp_path, data_source="torchvision")[3]
    cmd = papermill_command(job, tmp_path / "nbs")
    assert cmd[1:4] == ["-m", "clxai_utils.tools.kernel", str(tmp_path / "nbs" / "04_linear_probe.ipynb")]
    assert cmd[4] == str(tmp_path.resolve() / "cifar10-smoke-seed2" / "notebooks" / "04_linear_probe.ipynb")
    nbs = str(tmp_path / "nbs")
    assert cmd[5:-2] == ["--kernel", "python3", "--cwd", nbs, "--no-progress-bar", "--log-level", "WARNING"]
    assert cmd[-2] == "-y"
    assert yaml.safe_load(cmd[-1]) == {"profile": "smoke", "dataset": "cifar10", "seed": 2, "losses": ["ce", "supcon"]}


def test_data_source_travels_in_the_environment_not_in_the_notebook(tmp_path: Path) -> None:
    """A machine-specific path must not be injected into executed (and committed) notebooks."""
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(b"")
    data_job = plan("cifar10", "smoke", ["ce"], [0], runs_root=tmp_path, data_source=str(archive))[0]
    assert data_job.notebook == "00_data" and data_job.params["data_source"] == str(archive.resolve())
    assert "data_source" not in yaml.safe_load(papermill_command(data_job, tmp_path)[-1])
    env = job_environment(data_job)
    assert env["CLXAI_DATA_SOURCE"] == str(archive.resolve()) and env["CLXAI_RUNS"] == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--losses", "ce", "hinge"], "losses='hinge' is not allowed"),
        (["--losses", "ce", "ce"], "losses must be a non-empty list of distinct values"),
        (["--seeds", "0", "-1"], "argument --seeds: must be an integer >= 0"),
        (["--seeds", "x"], "argument --seeds: must be an integer >= 0"),
        (["--jobs", "0"], "argument --jobs: must be an integer >= 1"),
        (["--profile", "nope"], "profile='nope' is not allowed"),
        (["--dataset", "mnist"], "dataset='mnist' is not allowed"),
        (["--dataset", "imagenet_s50", "--profile", "quick"], "defines no settings for dataset 'imagenet_s50'"),
        (["--data-source", "/no/such/archive.tar.gz"], "data_source='/no/such/archive.tar.gz' does not exist"),
    ],
)
def test_cli_rejects_bad_arguments_naming_them(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--dry-run", "--runs-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_api_rejects_bad_seeds_pipelines_and_parallelism(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="seed must be a non-negative integer"):
        plan("cifar10", "smoke", ["ce"], [True], runs_root=tmp_path, data_source="torchvision")
    with pytest.raises(ValueError, match=r"seeds must be a non-empty list of distinct integers >= 0, got \[0, 0\]"):
        plan("cifar10", "smoke", ["ce"], [0, 0], runs_root=tmp_path, data_source="torchvision")
    with pytest.raises(ValueError, match="which are not earlier steps"):
        check_pipeline([toy_step("a", needs=("b",)), toy_step("b")])
    with pytest.raises(ValueError, match="asks for"):
        check_pipeline([toy_step("a", params=("epochs",))])
    with pytest.raises(ValueError, match="max_parallel must be an integer >= 1"):
        run_sweep([], max_parallel=0)
    jobs = plan("cifar10", "smoke", ["ce"], [0], runs_root=tmp_path, data_source="torchvision")
    with pytest.raises(FileNotFoundError, match="04_linear_probe.ipynb"):
        run_sweep(jobs, notebooks_dir=tmp_path)
    with pytest.raises(ValueError, match="not listed before it"):
        format_plan(jobs[1:])


def test_the_sweep_takes_its_method_names_from_the_registry(tmp_path: Path) -> None:
    """The explanation artefacts the sweep waits for are those of every registered method."""
    from clxai_utils.core.registry import METHODS

    jobs = plan("cifar10", "smoke", ["ce"], [0], runs_root=tmp_path, data_source="torchvision")
    job = next(j for j in jobs if j.notebook == "05_explanations")
    assert [p.stem for p in job.artefacts] == list(METHODS)
