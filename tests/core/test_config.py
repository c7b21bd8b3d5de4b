"""Profiles: strict parsing, and the paper profile equals the paper's Table 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clxai_utils.core.config import load_profile, load_profiles, profiles_path
from clxai_utils.core.validate import ConfigError

# The paper's Table 2 (docs/method.md, "Training"): epochs, batch, optimiser, lr, weight decay, warm-up, temperature, margin.
TABLE2 = {
    ("cifar10", "ce"): (200, 128, "sgd", 0.1, 5e-4, 0, None, None),
    ("cifar10", "supcon"): (500, 256, "sgd", 0.5, 1e-4, 10, 0.07, None),
    ("cifar10", "triplet"): (500, 256, "sgd", 0.1, 1e-4, 10, None, 0.3),
    ("imagenet_s50", "ce"): (160, 512, "adamw", 1e-3, 1e-4, 5, None, None),
    ("imagenet_s50", "supcon"): (160, 512, "radam", 1e-3, 1e-4, 5, 0.07, None),
    ("imagenet_s50", "triplet"): (160, 512, "radam", 1e-3, 1e-4, 5, None, 0.3),
}


@pytest.mark.parametrize(("dataset", "loss"), sorted(TABLE2))
def test_paper_profile_is_table_2(dataset: str, loss: str) -> None:
    cfg = load_profile("paper").train_config(dataset, loss)
    got = (
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        cfg.warmup_epochs,
        cfg.temperature,
        cfg.margin,
    )
    assert got == TABLE2[(dataset, loss)]
    if cfg.optimizer == "sgd":
        assert cfg.momentum == 0.9


def test_paper_profile_uses_full_data_full_width_and_paper_probe() -> None:
    for dataset, arch in (("cifar10", "resnet18_cifar"), ("imagenet_s50", "resnet50")):
        ds = load_profile("paper").for_dataset(dataset)
        assert (ds.model.arch, ds.model.width) == (arch, 1.0)
        assert (ds.subset.train_per_class, ds.subset.test_per_class) == (None, None)
        assert (ds.probe.epochs, ds.probe.lr) == (100, 0.1)


def test_all_three_profiles_exist() -> None:
    assert set(load_profiles()) == {"smoke", "quick", "paper"}


def test_unknown_profile_dataset_and_loss_are_named() -> None:
    with pytest.raises(ConfigError, match="profile='fast'.*smoke, quick, paper"):
        load_profile("fast")
    with pytest.raises(ConfigError, match="profile 'quick' defines no settings for dataset 'imagenet_s50'"):
        load_profile("quick").for_dataset("imagenet_s50")
    with pytest.raises(
        ConfigError, match="dataset='mnist' is not allowed; choose one of: cifar10, imagenet_s50, imagefolder"
    ):
        load_profile("quick").for_dataset("mnist")
    with pytest.raises(ConfigError, match="loss='simclr'"):
        load_profile("smoke").train_config("cifar10", "simclr")


def _write_variant(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(profiles_path().read_text())
    edit(raw)
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["ce"].update(epoch=3), r"unknown key\(s\) \['epoch'\]"),
        (lambda r: r["smoke"].update(seeds=[0]), r"unknown key\(s\) \['seeds'\]"),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["ce"].update(lr="fast"), r"\.lr must be of type float"),
        (
            lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["ce"].update(epochs=1.5),
            r"\.epochs must be of type int",
        ),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["ce"].update(optimizer="adam"), r"optimizer='adam'"),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["supcon"].pop("temperature"), r"temperature must be > 0"),
        (
            lambda r: r["smoke"]["datasets"]["cifar10"]["train"].pop("triplet"),
            r"lacks settings for loss\(es\) \['triplet'\]",
        ),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["model"].pop("arch"), r"missing key 'arch'"),
        (lambda r: r["smoke"]["datasets"].update(mnist={}), r"dataset key .*='mnist'"),
        (
            lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["ce"].update(views=2),
            r"train\.ce\.views must be >= 1 \(and 1 for the ce loss\)",
        ),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["train"]["supcon"].update(augment="strong"), r"augment='strong'"),
        (
            lambda r: r["smoke"]["datasets"]["cifar10"]["metrics"].update(noise_sigma=0.0),
            r"metrics\.noise_sigma must be a finite number > 0",
        ),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["metrics"].update(baseline="white"), r"baseline='white'"),
        (lambda r: r["smoke"]["datasets"]["cifar10"]["explain"].update(images_per_class=0), r"images_per_class >= 1"),
    ],
)
def test_bad_profile_files_are_rejected(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_profiles(_write_variant(tmp_path, edit))
