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


def _faithfulness(**changes: object):
    """A profile edit: the smoke CIFAR-10 profile's faithfulness section updated with `changes`."""
    return lambda raw: raw["smoke"]["datasets"]["cifar10"]["faithfulness"].update(changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"measures": ["deletion_logit", "aopc"]}, r"faithfulness\.an entry of measures='aopc' .*deletion_probability"),
        (
            {"road_fractions": [0.0, 0.5]},
            r"faithfulness\.road_fractions must be a non-empty list of numbers in \(0, 1\]",
        ),
        ({"ffidelity_fractions": [1.5]}, r"faithfulness\.ffidelity_fractions must be a non-empty list .*\[1\.5\]"),
        ({"road_fractions": []}, r"road_fractions must be a non-empty list"),
        ({"finetune_epochs": 0}, r"faithfulness\.finetune_epochs must be a finite number > 0, got 0"),
        ({"finetune_epochs": "abc"}, r"faithfulness\.finetune_epochs must be of type float, got 'abc'"),
        ({"finetune_batch_size": 0}, r"faithfulness\.finetune_batch_size must be an integer >= 1"),
        ({"ffidelity_samples": 2.5}, r"faithfulness\.ffidelity_samples must be of type int"),
        ({"randomisation_images_per_class": 0}, r"randomisation_images_per_class must be an integer >= 1"),
        ({"randomisation_order": []}, r"randomisation_order must be null or a non-empty list of distinct layer names"),
        ({"randomisation_order": ["head", "head"]}, r"randomisation_order must be .*distinct"),
        ({"randomisation_order": [3]}, r"faithfulness\.randomisation_order\[0\] must be of type str"),
        ({"images_per_class": 0}, r"faithfulness\.images_per_class must be an integer >= 1"),
        ({"ffid_samples": 2}, r"unknown key\(s\) \['ffid_samples'\] .*faithfulness; allowed: images_per_class"),
    ],
)
def test_bad_faithfulness_settings_are_named(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_profiles(_write_variant(tmp_path, _faithfulness(**changes)))


def test_faithfulness_defaults_are_the_full_budget_and_lists_become_tuples() -> None:
    from clxai_utils.core.config import FFIDELITY_FRACTIONS, ROAD_FRACTIONS, FaithfulnessConfig
    from clxai_utils.core.registry import FAITHFULNESS_MEASURES

    full = load_profile("paper").for_dataset("imagenet_s50").faithfulness  # no key: the defaults
    assert full == FaithfulnessConfig()
    assert full.images_per_class is None and full.measures == tuple(FAITHFULNESS_MEASURES)
    assert (full.finetune_epochs, full.finetune_batch_size, full.ffidelity_samples) == (100.0, 128, 50)
    assert full.road_fractions == ROAD_FRACTIONS and full.randomisation_order is None
    assert FFIDELITY_FRACTIONS[0] == 0.05 and FFIDELITY_FRACTIONS[-1] == 1.0 and len(FFIDELITY_FRACTIONS) == 20
    quick = load_profile("quick").for_dataset("cifar10").faithfulness
    assert (quick.images_per_class, quick.ffidelity_samples, quick.finetune_epochs) == (10, 10, 0.2)
    assert quick.randomisation_images_per_class == 2
    for dataset in ("cifar10", "imagenet_s50", "imagefolder"):
        assert load_profile("smoke").for_dataset(dataset).faithfulness.ffidelity_samples == 2
    given = FaithfulnessConfig(measures=["road"], road_fractions=[0.5, 1], randomisation_order=["head"])
    assert given.measures == ("road",) and given.road_fractions == (0.5, 1.0) and given.randomisation_order == ("head",)
    hash(given)  # frozen and hashable, as every settings type
    with pytest.raises(TypeError, match="finetune_epochs must be a number, got str"):
        FaithfulnessConfig(finetune_epochs="abc")  # type: ignore[arg-type]
