"""Several processes on the CPU (gloo): the global losses, their gradients, a DDP step, torchrun training.

The tests that start processes are marked `cluster` (`make cluster-tests`); the checks of
options run with the unit tests.

Each check compares two processes that share one batch with one process that holds it all:
the distributed loss equals the single-process loss, and the gradient that DDP ends up
applying equals the single-process gradient.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from clxai_utils.core.compute import CPU_FLOAT32
from clxai_utils.core.run import Run
from clxai_utils.data.prepare import prepare_data
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.train import checkpoints as C
from clxai_utils.train import distributed as D
from clxai_utils.train import processes as Pr
from clxai_utils.train import trainer as T
from clxai_utils.train.losses import supcon_loss, triplet_loss

WORLD = 2
N, V, DIM = 12, 2, 16  # images of the whole batch, views, embedding size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, fn: Callable[[int], Any], out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out[rank] = fn(rank)
    finally:
        dist.destroy_process_group()


def on_two_ranks(fn: Callable[[int], Any]) -> list[Any]:
    """fn(rank) in two gloo processes; their return values, in rank order."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_worker, args=(free_port(), fn, out), nprocs=WORLD, start_method="spawn")
        return [out[rank] for rank in range(WORLD)]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(N, V, DIM, generator=gen, dtype=torch.float64), dim=-1)
    return z, torch.tensor([0, 1, 2, 0, 1, 3, 0, 2, 2, 1, 4, 0])  # label 3 and 4 occur once


def shard(x: torch.Tensor, rank: int) -> torch.Tensor:
    rows = x.shape[0] // WORLD
    return x[rank * rows : (rank + 1) * rows]


def _supcon_rank(rank: int) -> tuple[float, torch.Tensor]:
    z, labels = batch()
    local = shard(z, rank).clone().requires_grad_()
    loss = D.global_supcon_loss(local, shard(labels, rank), 0.1, D.World.current())
    loss.backward()
    return loss.item(), local.grad


def _triplet_rank(rank: int) -> tuple[float, torch.Tensor]:
    z, labels = batch()
    emb, emb_labels = z.flatten(0, 1), labels.repeat_interleave(V)
    local = shard(emb, rank).clone().requires_grad_()
    loss = D.global_triplet_loss(local, shard(emb_labels, rank), 0.3, D.World.current())
    loss.backward()
    return loss.item(), local.grad


def _every_check_rank(rank: int) -> dict[str, Any]:
    """All per-rank computations of this file, in one pair of processes (each start costs seconds)."""
    return {
        "supcon": _supcon_rank(rank),
        "triplet": _triplet_rank(rank),
        "no_grad_gather": _gather_without_grad_rank(rank),
        "ddp_step": _ddp_step_rank(rank),
    }


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return on_two_ranks(_every_check_rank)


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["supcon", "triplet"])
def test_distributed_loss_and_gradient_equal_the_full_batch(name: str, ranks: list[dict[str, Any]]) -> None:
    z, labels = batch()
    full = z.clone().requires_grad_()
    if name == "supcon":
        expected = supcon_loss(full, labels, 0.1)
    else:
        expected = triplet_loss(full.flatten(0, 1), labels.repeat_interleave(V), 0.3)
    expected.backward()
    results = [per_rank[name] for per_rank in ranks]
    assert full.grad is not None
    grad = full.grad if name == "supcon" else full.grad.flatten(0, 1)
    # Each rank's loss is W times its part, so the mean over ranks is the batch loss ...
    assert sum(value for value, _ in results) / WORLD == pytest.approx(expected.item(), rel=1e-12)
    # ... and each rank's gradient is W times the full-batch gradient of its rows (DDP divides by W).
    for rank, (_, local_grad) in enumerate(results):
        torch.testing.assert_close(local_grad, WORLD * shard(grad, rank), rtol=1e-10, atol=1e-12)


def _gather_without_grad_rank(rank: int) -> torch.Tensor:
    """What a MoCo-style gather (no gradient through the other ranks' rows) would give."""
    z, labels = batch()
    local = shard(z, rank).clone().requires_grad_()
    keys = torch.cat([shard(z, r) if r != rank else local for r in range(WORLD)]).flatten(0, 1)
    offset = rank * local.shape[0] * V
    loss = WORLD * supcon_loss(
        local, shard(labels, rank), 0.1, keys=keys, key_labels=labels.repeat_interleave(V), offset=offset
    )
    loss.backward()
    return local.grad


@pytest.mark.cluster
def test_a_gather_without_gradient_gives_the_wrong_gradient(ranks: list[dict[str, Any]]) -> None:
    """The negative control: dropping the cross-rank terms changes the gradient (so the test above can fail)."""
    z, labels = batch()
    full = z.clone().requires_grad_()
    supcon_loss(full, labels, 0.1).backward()
    assert full.grad is not None
    assert not torch.allclose(ranks[0]["no_grad_gather"], WORLD * shard(full.grad, 0), atol=1e-6)


def _no_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))


def _step_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 8, 8, generator=gen), torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])


def _sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, world: D.World) -> dict[str, torch.Tensor]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    z = F.normalize(model(x), dim=-1).view(x.shape[0], 1, -1)
    D.global_supcon_loss(z, y, 0.2, world).backward()
    optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _ddp_step_rank(rank: int) -> dict[str, torch.Tensor]:
    x, y = _step_data()
    model = nn.parallel.DistributedDataParallel(_no_bn_model())
    return _sgd_step(model, shard(x, rank), shard(y, rank), D.World.current())


@pytest.mark.cluster
def test_ddp_step_equals_the_single_process_step(ranks: list[dict[str, Any]]) -> None:
    x, y = _step_data()
    expected = _sgd_step(_no_bn_model(), x, y, D.World())
    for params in (per_rank["ddp_step"] for per_rank in ranks):
        for name, value in expected.items():
            torch.testing.assert_close(params[f"module.{name}"], value, rtol=1e-5, atol=1e-6)


def test_world_size_must_divide_the_batch() -> None:
    assert D.check_world_size(128, 4, "devices") == 32
    with pytest.raises(ValueError, match=r"devices=3 does not divide the batch size 128"):
        D.check_world_size(128, 3, "devices")


def test_devices_beyond_the_visible_gpus_or_below_one_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"devices=4 asks for more GPUs than the 2 visible"):
        Pr.resolve_devices(4)
    monkeypatch.setenv(Pr.DEVICES_ENV, "0")
    with pytest.raises(ValueError, match=Pr.DEVICES_ENV):
        Pr.resolve_devices(None)


def test_sync_batchnorm_needs_cuda() -> None:
    from clxai_utils.train.models import ModelSpec

    with pytest.raises(ValueError, match="sync_batchnorm=True needs CUDA"):
        T._prepare_model(ModelSpec("resnet18_cifar", 0.125, 10, "ce"), CPU_FLOAT32, sync_batchnorm=True)


@pytest.mark.cluster
def test_torchrun_training_stops_and_a_submitit_job_of_two_tasks_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two CPU processes through torchrun stop after one epoch; a job of two submitit tasks finishes the run."""
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))
    run = Run("cifar10", "smoke", 0, root=tmp_path / "run")
    prepare_data(run, str(write_synthetic_imagefolder(tmp_path / "tree")))
    first = T.run_training(run, "supcon", devices=2, stop_after_epoch=1)
    assert first.resumed_from_epoch == 0 and len(first.history) == 1
    assert not (run.model_dir("supcon") / C.MODEL).exists()
    argv = ["--dataset", "cifar10", "--profile", "smoke", "--seed", "0", "--loss", "supcon", "--run-dir", str(run.root)]
    argv += ["--submit", "submitit-local", "--gpus", "0", "--processes-per-node", "2"]
    from clxai_utils.tools import launch

    assert launch.main(argv) == 0, capsys.readouterr().out
    state = C.load_torch(run.model_dir("supcon") / C.CHECKPOINT)
    epochs = run.settings.train["supcon"].epochs
    assert state["world_size"] == 2 and state["epoch"] == epochs and len(state["history"]) == epochs
    model, _, _ = C.load_trained(run.model_dir("supcon"))
    for a, b in zip(model.state_dict().values(), state["model"].values()):
        assert torch.equal(a, b)
    with pytest.raises(C.CheckpointMismatch, match="2 training process"):
        T.run_training(run, "supcon", devices=1)


def test_launch_without_torchrun_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clxai_utils.tools import launch

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit) as stop:
        launch.main(["--dataset", "cifar10", "--profile", "smoke", "--seed", "0", "--loss", "ce"])
    assert stop.value.code == 2 and "start this module with torchrun" in capsys.readouterr().err
