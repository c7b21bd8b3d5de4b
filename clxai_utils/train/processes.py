"""Training one run in several processes: how many, and starting them with torchrun.

`run_training(run, loss, devices=G)` (and a sweep's $CLXAI_DEVICES) trains with
DistributedDataParallel in G processes on this machine: torchrun starts `WORKER_MODULE`
(`clxai_utils.train.worker`) in each, every process calls `run_training` with its rank,
and the caller reads the checkpoint they left. Each process takes one GPU where CUDA is
available, else a share of the CPU cores (gloo), which is what the tests use.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pandas as pd
import torch

from clxai_utils.core.artifacts import load_torch
from clxai_utils.core.compute import Compute
from clxai_utils.core.progress import relay_output
from clxai_utils.core.run import Run
from clxai_utils.core.threads import share_of_cores
from clxai_utils.core.validate import check_positive_int
from clxai_utils.train.checkpoints import CHECKPOINT, TrainResult
from clxai_utils.train.distributed import DEVICES_ENV
from clxai_utils.train.models import ModelSpec, build_training_model


def resolve_devices(devices: int | None) -> int:
    """How many processes train one run: `devices`, else $CLXAI_DEVICES (set by a sweep), else 1.

    Each process takes one GPU where CUDA is available (so at most the visible ones), else
    CPU cores (gloo), which is what the tests use.
    """
    source = "devices"
    if devices is None:
        text, source = os.environ.get(DEVICES_ENV, "1"), DEVICES_ENV
        if not text.strip().isdigit():
            raise ValueError(f"{DEVICES_ENV}={text!r} must be a whole number of training processes >= 1")
        devices = int(text)
    check_positive_int(source, devices)
    visible = torch.cuda.device_count()
    if visible and devices > visible:
        raise ValueError(f"{source}={devices} asks for more GPUs than the {visible} visible here")
    return devices


def train_in_processes(
    run: Run,
    loss: str,
    spec: ModelSpec,
    devices: int,
    stop_after_epoch: int | None,
    sync_batchnorm: bool,
    compute: Compute,
) -> TrainResult:
    """Train through torchrun in `devices` processes, then read the checkpoint they left.

    Every process computes in `compute`'s precision on a device of its type (GPU `rank` under CUDA).
    """
    if compute.device.type not in ("cuda", "cpu"):
        raise ValueError(f"devices={devices}: processes train together on CUDA or CPU, not {compute.device.type}")
    out_dir = run.model_dir(loss)
    resumed_from = load_torch(out_dir / CHECKPOINT)["epoch"] if (out_dir / CHECKPOINT).is_file() else 0
    args = launch_arguments(
        run,
        loss,
        device=compute.device.type,
        stop_after_epoch=stop_after_epoch,
        sync_batchnorm=sync_batchnorm,
        precision=compute.precision,
    )
    run_torchrun(devices, args)
    state = load_torch(out_dir / CHECKPOINT)
    model = build_training_model(spec)
    model.load_state_dict(state["model"])
    return TrainResult(model.eval(), spec, pd.DataFrame(state["history"]), out_dir, resumed_from)


#: The entry point torchrun and submitit start in every training process.
WORKER_MODULE = "clxai_utils.train.worker"


def launch_arguments(
    run: Run,
    loss: str,
    *,
    device: str = "auto",
    stop_after_epoch: int | None = None,
    sync_batchnorm: bool = False,
    precision: str | None = None,
) -> list[str]:
    """The command line of `WORKER_MODULE` that trains `loss` of `run` (every process gets the same)."""
    args = ["--dataset", run.dataset, "--profile", run.profile, "--seed", str(run.seed), "--loss", loss]
    args += ["--run-dir", str(run.root), "--device", device]
    args += ["--sync-batchnorm"] if sync_batchnorm else []
    args += [] if precision is None else ["--precision", precision]
    return args + ([] if stop_after_epoch is None else ["--stop-after-epoch", str(stop_after_epoch)])


def run_torchrun(processes: int, args: list[str]) -> None:
    """Run `WORKER_MODULE` with `args` in `processes` processes on this machine (torchrun --standalone).

    Their output (rank 0's progress bar, errors) is relayed, so a notebook shows it. They
    split the cores this process may use ($OMP_NUM_THREADS, else its CPUs) equally.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", WORKER_MODULE, *args]
    env = {**os.environ, **share_of_cores(processes)}  # CPU ranks share the cores instead of oversubscribing
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc:
        assert proc.stdout is not None
        relay_output(proc.stdout)
    if proc.returncode:
        raise RuntimeError(
            f"distributed training stopped with exit status {proc.returncode} (its output is above): {shlex.join(cmd)}"
        )
