"""Sweeps through submitit: the Slurm dry run and its checks, the debug executor, requeue when signalled.

Toy notebooks (from test_sweep) stand in for the pipeline, except in the test marked
`notebooks`, which runs the real smoke pipeline through the debug executor. The tests that
execute anything are marked (`make cluster-tests` runs them); the dry run and the checks
of options run with the unit tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import submitit
import yaml
from test_sweep import Toy, run_name, toy_step

from clxai_utils.core.artifacts import read_json
from clxai_utils.core.notebooks import NOTEBOOK
from clxai_utils.core.run import Run
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.tools import cluster as C
from clxai_utils.tools.plan import PIPELINE
from clxai_utils.tools.sweep import main

TOY_PIPELINE = [
    toy_step("data"),
    toy_step("work", needs=("data",)),
    toy_step("final", needs=("work",), params=("profile", "dataset", "seed", "losses")),
]
REPORT_CODE = """\
import json, pathlib
runs = sorted(p.name for p in pathlib.Path(runs_root).iterdir() if p.is_dir() and p.name != "submitit")
pathlib.Path(report_dir, "runs.json").write_text(json.dumps(runs))
"""
# A notebook of EPOCHS epochs that keeps its progress in a file and resumes from it. On its first attempt, at
# epoch STOP_AT, it sends its submitit task the signal Slurm sends before a time limit or a preemption (USR2),
# then holds until the task stops it: the requeue follows an explicit signal, not the wall clock.
LOOP_CODE = """\
import json, os, pathlib, signal, time
import psutil
from clxai_utils.core.run import Run
out = Run(dataset, profile, seed).root / "toy"
out.mkdir(parents=True, exist_ok=True)
state = out / "epochs.json"
done = json.loads(state.read_text()) if state.exists() else []
with open(out / "starts.txt", "a") as f:
    f.write(f"{{len(done)}}\\n")
for epoch in range(len(done), {epochs}):
    if epoch == {stop_at} and not (out / "signalled").exists():
        (out / "signalled").touch()
        task = next(p for p in psutil.Process().parents() if "submitit.core._submit" in " ".join(p.cmdline()))
        os.kill(task.pid, signal.SIGUSR2)
        held_until = time.monotonic() + 600  # stopped long before; a kernel never stopped finishes, and is counted
        while time.monotonic() < held_until:
            time.sleep(0.1)
    done.append(epoch)
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(done))
    tmp.replace(state)
(out / "work.json").write_text(json.dumps(done))
"""


def write_notebook(folder: Path, name: str, params: str, code: str) -> None:
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.fixture
def toy(tmp_path: Path) -> Toy:
    toy = Toy(tmp_path / "notebooks", tmp_path / "ctl", tmp_path / "runs")
    toy.notebooks.mkdir()
    toy.ctl.mkdir()
    write_notebook(toy.notebooks, "10_analysis", 'runs_root = ""\nreport_dir = ""', REPORT_CODE)
    return toy


def cli(toy: Toy, *extra: str, seeds: tuple[int, ...] = (0, 1, 2)) -> list[str]:
    return [
        "--profile", "smoke", "--losses", "ce", "--seeds", *map(str, seeds), "--data-source", "torchvision",
        "--runs-root", str(toy.runs), "--notebooks-dir", str(toy.notebooks), "--report-dir", str(toy.runs.parent / "report"),
        *extra,
    ]  # fmt: skip


# ------------------------------------------------------------------ dry run and checks (nothing runs)


def test_slurm_dry_run_prints_one_array_task_per_run_with_resources(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--profile", "paper", "--seeds", "0", "1", "2", "--runs-root", str(tmp_path), "--backend", "slurm"]
    argv += ["--partition", "gpu", "--gpus", "2", "--time-min", "600", "--sbatch", "constraint=a100", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "slurm sweep: 3 run(s) to submit, 0 finished" in out
    assert "prepare: 1 job, 00_data of 3 run(s); gpus 0, cpus 10, mem 64 GB, time 120 min, partition gpu" in out
    assert "array: 3 task(s), at most 16 at once, each gpus 2, cpus 10, mem 64 GB, time 600 min, partition gpu" in out
    assert "2 training process(es) per run" in out and "at most 10 time limits" in out
    for seed in range(3):
        assert f"  [{seed}] cifar10-paper-seed{seed}: 00_data 01_train_ce 02_train_supcon 03_train_triplet" in out
    assert "extra sbatch options: --constraint=a100" in out
    assert not (tmp_path / "submitit").exists()  # nothing submitted


def test_slurm_without_slurm_stops_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(C.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "paper", "--runs-root", str(tmp_path), "--backend", "slurm"])
    assert stop.value.code == 2
    assert "--backend slurm needs Slurm's sbatch on this machine's PATH" in capsys.readouterr().err


def test_partition_is_required_where_the_cluster_has_no_default() -> None:
    resources = C.Resources()
    with pytest.raises(ValueError, match=r"--partition is required: .* \(partitions: gpu, cpu\)"):
        C.check_slurm(resources, sinfo=lambda: "gpu\ncpu\n")
    C.check_slurm(resources, sinfo=lambda: "gpu*\ncpu\n")  # a default partition: fine
    C.check_slurm(C.Resources(partition="cpu"), sinfo=lambda: "gpu\ncpu\n")
    assert C.default_partition(lambda: "long\nshort*\n") == "short"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "pbs"], "argument --backend: invalid choice: 'pbs'"),
        (
            ["--backend", "slurm", "--gpus", "3"],
            "--gpus=3 does not divide the batch size 128 of loss ce in profile 'paper'",
        ),
        (["--backend", "debug", "--gpus", "1"], "--gpus=1 asks for more GPUs than the 0 visible"),
        (["--gpus", "1"], "--gpus=1 asks for more GPUs than the 0 visible"),
        (["--backend", "slurm", "--sbatch", "constraint"], "--sbatch takes KEY=VALUE, got ['constraint']"),
        (["--backend", "slurm", "--time-min", "1"], "signal_delay_s=180 must be shorter than the time limit (1.0 min)"),
    ],
)
def test_bad_cluster_options_are_named(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.setattr(C.torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "paper", "--runs-root", str(tmp_path), "--dry-run", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_resources_file_entries_are_validated(tmp_path: Path) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(yaml.safe_dump({"smoke": {"gpus": 0, "walltime": 5}}))
    with pytest.raises(ValueError, match=r"unknown keys \['walltime'\]"):
        C.load_resources("smoke", file)
    with pytest.raises(ValueError, match="has no entry for profile 'paper'"):
        C.load_resources("paper", file)
    file.write_text(yaml.safe_dump({"smoke": {"gpus": -1}}))
    with pytest.raises(ValueError, match="gpus must be an integer >= 0, got -1"):
        C.load_resources("smoke", file)
    paper = C.load_resources("paper", None, partition="gpu", gpus=4)
    assert (paper.partition, paper.gpus, paper.cpus, paper.devices) == ("gpu", 4, 10, 4)


def test_slurm_script_carries_the_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were here
    resources = C.Resources(
        partition="gpu", account="lab", gpus=2, cpus=6, mem_gb=48, time_min=90, sbatch={"qos": "high"}
    )
    executor = C.make_executor("slurm", tmp_path, resources)
    script = executor._make_submission_file_text("python -c pass", "uid")  # what sbatch would receive
    for line in ["--partition=gpu", "--account=lab", "--gpus-per-node=2", "--cpus-per-task=6", "--mem=48GB"]:
        assert f"#SBATCH {line}" in script
    assert "#SBATCH --time=90" in script and "#SBATCH --qos=high" in script and "#SBATCH --signal=USR2@120" in script


# ------------------------------------------------------------------ executions through submitit


@pytest.mark.cluster
def test_debug_executor_isolates_a_failing_run_and_a_second_call_skips_finished_runs(
    toy: Toy, capsys: pytest.CaptureFixture
) -> None:
    toy.write("data", "work", "final")
    toy.flag("fail-work-1").touch()
    assert main(cli(toy, "--backend", "debug", seeds=(0, 1)), pipeline=TOY_PIPELINE) == 1
    out = capsys.readouterr().out
    failed = run_notebooks(toy, 1) / "work.log"
    assert f"[FAILED] {run_name(1)}: [FAILED] {run_name(1)}/work" in out and str(failed) in out
    assert f"[ok] {run_name(0)}" in out
    assert "toy failure requested" in failed.read_text()
    assert read_json(toy.runs.parent / "report" / "runs.json") == [run_name(0), run_name(1)]  # 09 ran after all
    assert (run_notebooks(toy, 1) / "cluster.log").read_text().count("task") == 1

    toy.flag("fail-work-1").unlink()
    before = toy.executions()
    assert main(cli(toy, "--backend", "debug", "--dry-run", seeds=(0, 1)), pipeline=TOY_PIPELINE) == 0
    assert "1 run(s) to submit, 1 finished (skipped)" in capsys.readouterr().out
    assert main(cli(toy, "--backend", "debug", seeds=(0, 1)), pipeline=TOY_PIPELINE) == 0
    ran = toy.executions() - before
    assert ran == {f"{run_name(1)}/work": 1, f"{run_name(1)}/final": 1}  # seed 1's data and all of seed 0: cached


def run_notebooks(toy: Toy, seed: int) -> Path:
    return toy.runs.resolve() / run_name(seed) / "notebooks"


@pytest.mark.cluster
def test_a_signalled_task_is_requeued_and_resumes(toy: Toy, capsys: pytest.CaptureFixture) -> None:
    """submitit's local executor; the task gets USR2 (a time limit's or a preemption's warning) at epoch 4 of 12.

    The time limits (30 min) are never reached: the test does not depend on how fast this machine is.
    """
    toy.write("data")
    params, loop = 'profile = ""\ndataset = ""\nseed = -1', LOOP_CODE.format(epochs=12, stop_at=4)
    write_notebook(toy.notebooks, "work", params, loop)
    resources = toy.runs.parent / "cluster.yaml"
    limits = {"gpus": 0, "cpus": 1, "time_min": 30, "aux_time_min": 30, "signal_delay_s": 30, "max_requeues": 3}
    resources.write_text(yaml.safe_dump({"smoke": limits}))
    argv = cli(toy, "--backend", "submitit-local", "--resources", str(resources), seeds=(0,))
    assert main(argv, pipeline=TOY_PIPELINE[:2]) == 0, capsys.readouterr().out
    toy_dir = toy.runs / run_name(0) / "toy"
    starts = [int(n) for n in (toy_dir / "starts.txt").read_text().split()]
    assert starts == [0, 4], starts  # stopped at epoch 4, then resumed from its saved progress
    assert json.loads((toy_dir / "work.json").read_text()) == list(range(12))
    log = (run_notebooks(toy, 0) / "cluster.log").read_text()
    assert log.count("task ") == len(starts)  # one line per attempt, each naming its submitit log


@pytest.mark.notebooks
def test_the_smoke_grid_runs_through_the_debug_executor_and_a_second_call_skips_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real notebooks, smoke profile, CE only (the plumbing, not the losses): prepare, one array task (01 and
    04-06: the chain up to the metric tables), 10 over the run; again: nothing. 07-09 and 11 run the same way
    (the smoke-notebook stage executes every notebook), so they are left out here to keep make test short."""
    if not os.environ.get("CLXAI_DATA_SOURCE") or os.environ["CLXAI_DATA_SOURCE"] == "torchvision":
        monkeypatch.setenv("CLXAI_DATA_SOURCE", str(write_synthetic_imagefolder(tmp_path / "images")))
    runs, report = tmp_path / "runs", tmp_path / "report"
    argv = ["--profile", "smoke", "--losses", "ce", "--runs-root", str(runs), "--report-dir", str(report)]
    argv += ["--backend", "debug"]
    through_metrics = PIPELINE[: 1 + [s.notebook for s in PIPELINE].index(NOTEBOOK["metrics"].name)]
    assert main(argv, pipeline=through_metrics) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "debug sweep: 1 run(s) to submit, 0 finished" in out and "[ok] cifar10-smoke-seed0" in out
    run = Run("cifar10", "smoke", 0, root=runs / "cifar10-smoke-seed0")
    assert run.accuracy_path.is_file() and all(p.is_file() for p in run.facets_paths.values())
    assert (report / "10_analysis.ipynb").is_file() and (report / "table4.md").is_file()
    assert main(argv, pipeline=through_metrics) == 0
    assert "debug sweep: 0 run(s) to submit, 1 finished (skipped)" in capsys.readouterr().out


def test_run_task_is_checkpointable_with_the_same_arguments(tmp_path: Path) -> None:
    task = C.RunTask(tmp_path, {"CLXAI_DEVICES": "1"})
    resubmission = task.checkpoint(("jobs",))
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert resubmission.function is task and resubmission.args == (("jobs",),)
