"""Trainer: schedule, optimisers, resumption and the notebooks' entry point."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from clxai_utils.core.compute import CPU_FLOAT32, Compute
from clxai_utils.core.config import ProbeConfig, TrainConfig
from clxai_utils.core.precision import cpu_computes_bf16
from clxai_utils.core.run import Run
from clxai_utils.core.validate import ConfigError
from clxai_utils.data.datasets import SPECS, load_dataset
from clxai_utils.data.sources import ImageSplit, write_synthetic_imagefolder
from clxai_utils.train import checkpoints as C
from clxai_utils.train import probe as P
from clxai_utils.train import trainer as T
from clxai_utils.train.models import ModelSpec
from clxai_utils.train.processes import launch_arguments

INFO = SPECS["cifar10"].info()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> ImageSplit:
    root = tmp_path_factory.mktemp("tree")
    write_synthetic_imagefolder(root / "tree", classes=("a", "b", "c", "d"), per_class=(12, 4))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLXAI_DATA_DIR", str(root / "datadir"))
        return load_dataset("cifar10", str(root / "tree")).train


def cfg_for(loss: str, epochs: int = 4) -> TrainConfig:
    extra = {"temperature": 0.1} if loss == "supcon" else {"margin": 0.3} if loss == "triplet" else {}
    return TrainConfig(
        epochs=epochs, batch_size=16, optimizer="sgd", lr=0.05, weight_decay=1e-4, warmup_epochs=1, **extra
    )


def run(split: ImageSplit, loss: str, out: Path, **kwargs) -> C.TrainResult:
    spec, cfg = ModelSpec("resnet18_cifar", 0.125, 4, loss), cfg_for(loss)
    identity = C.RunIdentity("cifar10", "test", 0, "sum", spec.to_dict(), asdict(cfg))
    return T.train(spec, cfg, split, INFO, out, identity=identity, seed=0, progress=False, **kwargs)


def test_lr_factor_warmup_then_cosine() -> None:
    assert T.lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert T.lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert T.lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert T.lr_factor(12, 4, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert T.lr_factor(20, 4, 20) == pytest.approx(0.0)
    assert T.lr_factor(5, 0, 10) == pytest.approx(0.5)


def test_lr_factor_one_cycle() -> None:
    """Linear warm-up then linear decay (the quick profile's one-cycle): peak at the end of the warm-up."""
    assert T.lr_factor(0, 5, 20, "linear") == pytest.approx(0.2)
    assert T.lr_factor(4, 5, 20, "linear") == pytest.approx(1.0)
    assert T.lr_factor(5, 5, 20, "linear") == pytest.approx(1.0)
    assert T.lr_factor(10, 5, 20, "linear") == pytest.approx(1 - 5 / 15)
    assert T.lr_factor(20, 5, 20, "linear") == pytest.approx(0.0)


def test_fractional_warmup_counts_steps() -> None:
    cfg = replace(cfg_for("ce", epochs=6), warmup_epochs=1.5, schedule="linear")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = T.build_scheduler(optimizer, cfg, steps_per_epoch=10)  # 15 warm-up steps of 60
    lrs = []
    for _ in range(60):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[13] < lrs[14] == lrs[15] > lrs[16] and lrs[14] == pytest.approx(cfg.lr)


def test_nesterov_reaches_sgd() -> None:
    cfg = replace(cfg_for("ce"), nesterov=True)
    assert T.build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg).defaults["nesterov"] is True


def test_snapshots_are_the_weights_of_their_epoch(split: ImageSplit, tmp_path: Path) -> None:
    """snapshot_every=1 keeps epochs 1..3; epoch 2's file holds the weights an interrupted run had after epoch 2."""
    spec, cfg = ModelSpec("resnet18_cifar", 0.125, 4, "ce"), replace(cfg_for("ce", epochs=4), snapshot_every=1)
    identity = C.RunIdentity("cifar10", "test", 0, "sum", spec.to_dict(), asdict(cfg))
    kwargs = {"identity": identity, "seed": 0, "progress": False}
    T.train(spec, cfg, split, INFO, tmp_path / "full", **kwargs)
    assert C.trained_epochs(tmp_path / "full") == [1, 2, 3, 4]
    stopped = T.train(spec, cfg, split, INFO, tmp_path / "stopped", stop_after_epoch=2, **kwargs)
    snapshot, _, _ = C.load_trained(tmp_path / "full", epoch=2)
    for (name, a), b in zip(snapshot.state_dict().items(), stopped.model.state_dict().values()):
        assert torch.equal(a, b), name
    final, _, _ = C.load_trained(tmp_path / "full", epoch=4)
    assert all(
        torch.equal(a, b)
        for a, b in zip(final.state_dict().values(), C.load_trained(tmp_path / "full")[0].state_dict().values())
    )
    with pytest.raises(FileNotFoundError, match=r"no snapshot of epoch 7 .*epochs kept: \[1, 2, 3, 4\]"):
        C.load_trained(tmp_path / "full", epoch=7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": "step"}, r"schedule='step' is not allowed; choose one of: cosine, linear"),
        ({"optimizer": "adamw", "nesterov": True}, r"nesterov applies to the sgd optimizer only"),
        ({"snapshot_every": 4}, r"snapshot_every must be null or 1 <= snapshot_every < epochs, got 4"),
    ],
)
def test_bad_recipe_settings_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    import yaml

    from clxai_utils.core.config import load_profiles, profiles_path

    raw = yaml.safe_load(profiles_path().read_text())
    raw["smoke"]["datasets"]["cifar10"]["train"]["ce"] |= change
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_profiles(path)


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("radam", torch.optim.RAdam)]
)
def test_optimisers_of_table_2(name: str, cls: type) -> None:
    cfg = replace(cfg_for("ce"), optimizer=name)
    opt = T.build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert isinstance(opt, cls) and opt.defaults["lr"] == 0.05 and opt.defaults["weight_decay"] == 1e-4


@pytest.mark.parametrize("loss", ["ce", "supcon", "triplet"])
def test_interrupted_training_resumes_to_identical_weights(split: ImageSplit, tmp_path: Path, loss: str) -> None:
    full = run(split, loss, tmp_path / "full")
    first = run(split, loss, tmp_path / "resumed", stop_after_epoch=2)
    assert len(first.history) == 2 and not (tmp_path / "resumed" / C.MODEL).exists()
    second = run(split, loss, tmp_path / "resumed")
    assert second.resumed_from_epoch == 2
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert full.history["loss"].tolist() == second.history["loss"].tolist()
    # the history table is written next to the checkpoint and holds every epoch
    import pandas as pd

    table = pd.read_csv(tmp_path / "resumed" / C.HISTORY)
    assert table["epoch"].tolist() == [1, 2, 3, 4] and {"loss", "lr", "seconds", "images_per_s"} <= set(table)


def test_training_lowers_the_loss_and_finished_runs_are_not_retrained(split: ImageSplit, tmp_path: Path) -> None:
    result = run(split, "ce", tmp_path / "ce")
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    again = run(split, "ce", tmp_path / "ce")
    assert again.resumed_from_epoch == 4
    state = torch.load(tmp_path / "ce" / C.CHECKPOINT, weights_only=True)
    assert state["epoch"] == 4 and set(state) >= {
        "model",
        "optimizer",
        "scheduler",
        "shuffle_gen",
        "aug_gens",
        "world_size",
    }
    assert torch.load(tmp_path / "ce" / C.MODEL, weights_only=True)["threads"] == torch.get_num_threads()
    model, spec, _ = C.load_trained(tmp_path / "ce")
    assert spec.loss == "ce"
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_of_other_settings_is_refused(split: ImageSplit, tmp_path: Path) -> None:
    run(split, "ce", tmp_path / "ce", stop_after_epoch=1)
    spec, cfg = ModelSpec("resnet18_cifar", 0.125, 4, "ce"), replace(cfg_for("ce"), lr=0.2)
    identity = C.RunIdentity("cifar10", "test", 0, "sum", spec.to_dict(), asdict(cfg))
    with pytest.raises(C.CheckpointMismatch, match="other settings"):
        T.train(spec, cfg, split, INFO, tmp_path / "ce", identity=identity, seed=0, progress=False)


def test_probe_learns_separable_features() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=gen) * 3
    labels = torch.arange(3).repeat(40)
    feats = centres[labels] + 0.3 * torch.randn(120, 8, generator=gen)
    probe, history = P.train_probe(
        feats, labels, 3, ProbeConfig(epochs=20, batch_size=32, lr=0.1), seed=0, progress=False
    )
    assert (probe(feats).argmax(1) == labels).float().mean() == 1.0
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_run_training_rejects_bad_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    run = Run("cifar10", "smoke", 0)
    with pytest.raises(ConfigError, match="loss='softmax'"):
        T.run_training(run, "softmax")
    with pytest.raises(TypeError, match="seed must be a non-negative integer, got '1'"):
        Run("cifar10", "smoke", "1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="profile='huge'"):
        Run("cifar10", "huge", 0)
    with pytest.raises(ConfigError, match="dataset='svhn'"):
        Run("svhn", "smoke", 0)
    with pytest.raises(Exception, match="run notebooks/00_data.ipynb"):
        T.run_training(run, "ce")


def test_probe_without_trained_encoder_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="no trained model .*run the training notebook"):
        P.load_classifier(Run("cifar10", "smoke", 0), "supcon")


def test_probe_stage_end_to_end_on_smoke_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clxai_utils.data.prepare import load_prepared, prepare_data

    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))
    run = Run("cifar10", "smoke", 0)
    prepare_data(run, str(write_synthetic_imagefolder(tmp_path / "tree")))
    T.run_training(run, "supcon", progress=False)
    with pytest.raises(FileNotFoundError, match="no linear probe .*04_linear_probe"):
        P.load_classifier(run, "supcon")
    data, _ = load_prepared(run)
    cfg = run.settings.probe
    fitted, history = P.fit_probe(run.model_dir("supcon"), data.train, data.info, cfg, seed=0, progress=False)
    assert len(history) == cfg.epochs
    loaded, spec = P.load_classifier(run, "supcon")
    assert loaded.normalize_features and spec.loss == "supcon"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), fitted(x), atol=1e-6)
    acc, predictions = P.accuracy(loaded, data.test, data.info)
    assert acc == pytest.approx((predictions == data.test.labels).float().mean().item())
    # a quick run pointed at this folder
    with pytest.raises(ValueError, match="trained with profile='smoke', not 'quick'"):
        P.load_classifier(Run("cifar10", "quick", 0, root=run.root), "supcon")


def test_folded_standardisation_equals_the_standardised_probe() -> None:
    gen = torch.Generator().manual_seed(1)
    layer = torch.nn.Linear(5, 3)
    x, mean, std = torch.randn(7, 5, generator=gen), torch.randn(5, generator=gen), torch.rand(5, generator=gen) + 0.5
    with torch.no_grad():
        assert torch.allclose(P.fold_standardisation(layer, mean, std)(x), layer((x - mean) / std), atol=1e-6)


def test_probe_stage_rejects_losses_it_does_not_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="an entry of losses.*'lime'"):
        P.probe_and_evaluate(Run("cifar10", "smoke", 0), '["supcon", "lime"]')


@pytest.mark.parametrize(
    ("loss", "views", "augment", "shape"),
    [
        ("ce", None, None, (5, 3, 32, 32)),
        ("supcon", None, None, (5, 2, 3, 32, 32)),
        ("triplet", 1, "ce", (5, 1, 3, 32, 32)),
        ("supcon", 3, "supcon", (5, 3, 3, 32, 32)),
    ],
)
def test_augment_batch_follows_the_view_plan(
    split: ImageSplit, loss: str, views: int | None, augment: str | None, shape: tuple
) -> None:
    cfg = replace(cfg_for(loss), views=views, augment=augment)
    x = T.augment_batch(loss, cfg, split.images[:5], INFO, torch.Generator().manual_seed(0))
    assert x.shape == shape
    if augment == "ce":  # crop-with-padding + flip only: every view keeps the image's pixel values up to a shift/flip
        mean, std = torch.tensor(INFO.mean).view(1, 3, 1, 1), torch.tensor(INFO.std).view(1, 3, 1, 1)
        raw = (split.images[:5].float() / 255 - mean) / std
        assert torch.isclose(x[:, 0].flatten(1).sort().values[:, -1], raw.flatten(1).max(1).values, atol=1e-5).all()


def test_probe_does_not_depend_on_the_global_rng() -> None:
    """Same features, labels and seed give the same probe whatever the global RNG state (the old init drew from it)."""
    gen = torch.Generator().manual_seed(2)
    features, labels = torch.randn(64, 6, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    cfg = ProbeConfig(epochs=3, batch_size=16, lr=0.1)
    torch.manual_seed(0)
    first, _ = P.train_probe(features, labels, 3, cfg, seed=5, progress=False)
    torch.manual_seed(12345)
    torch.rand(1000)
    second, _ = P.train_probe(features, labels, 3, cfg, seed=5, progress=False)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


BF16 = Compute(torch.device("cpu"), "bf16")


@pytest.mark.skipif(not cpu_computes_bf16(), reason="this CPU has no native bf16, so the switch refuses bf16")
def test_bf16_training_is_recorded_and_not_resumed_in_float32(split: ImageSplit, tmp_path: Path) -> None:
    fast = run(split, "supcon", tmp_path / "bf16", stop_after_epoch=2, compute=BF16)
    assert all(math.isfinite(v) for v in fast.history["loss"])
    assert torch.load(tmp_path / "bf16" / C.CHECKPOINT, weights_only=True)["precision"] == "bf16"
    with pytest.raises(C.CheckpointMismatch, match=r"trained in bf16 and this run asks for float32"):
        run(split, "supcon", tmp_path / "bf16", compute=CPU_FLOAT32)
    run(split, "supcon", tmp_path / "bf16", compute=BF16)
    assert torch.load(tmp_path / "bf16" / C.MODEL, weights_only=True)["precision"] == "bf16"


def test_launch_arguments_carry_the_precision(tmp_path: Path) -> None:
    run_ = Run("cifar10", "smoke", 0, root=tmp_path)
    args = launch_arguments(run_, "ce", precision="bf16")
    assert args[args.index("--precision") + 1] == "bf16" and "--precision" not in launch_arguments(run_, "ce")


def test_streamed_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    """Images on disk: the same (seed, epoch, order) gives the same augmented batches with 0 or 2 decoding workers,
    and another epoch other crops. SupCon views carry the colour half (jitter, grayscale, blur) on the batch."""
    from fixtures import write_imagenet_s50_fixture

    from clxai_utils.data.datasets import DatasetInfo
    from clxai_utils.data.sources import FileSplit

    root = write_imagenet_s50_fixture(tmp_path / "fixture", train_per_class=2)
    paths = tuple(str(p) for p in sorted((root / "train").rglob("*.JPEG")))
    split = FileSplit(paths, torch.arange(len(paths)) % 4, torch.arange(len(paths)))
    info = DatasetInfo("imagenet_s50", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 32)
    cfg = replace(cfg_for("supcon"), batch_size=4)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))

    def batches(workers: int, epoch: int = 0) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(5)
        return [x for x, _ in T.epoch_batches("supcon", cfg, split, info, order, 4, generator, (0, epoch), workers)]

    first = batches(0)
    assert len(first) == len(paths) // 4 and first[0].shape == (4, 2, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(first, batches(2)))
    assert not torch.equal(first[0], batches(0, epoch=1)[0])
