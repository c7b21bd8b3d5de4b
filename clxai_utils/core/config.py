"""Run profiles: one YAML file (`configs/profiles.yaml`) defines every setting a notebook takes.

A notebook receives only a profile name (plus dataset, loss and seed); everything else,
from subset sizes to optimiser settings, is read here. Parsing is strict: an unknown
profile, dataset, section or key is an error that names it and lists what is allowed,
so a typo in a sweep never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml

from clxai_utils.core.paths import repo_root
from clxai_utils.core.registry import FAITHFULNESS_MEASURES, LOSSES
from clxai_utils.core.validate import (
    ConfigError,
    check_choice,
    check_choices,
    check_fractions,
    check_positive,
    check_positive_int,
)

DATASETS = ("cifar10", "imagenet_s50", "imagefolder")
OPTIMIZERS = ("sgd", "adamw", "radam")
SCHEDULES = ("cosine", "linear")
BASELINES = ("black", "mean")
TRAIN_AUGMENTATIONS = ("ce", "supcon")
ACCURACY_IMAGES = ("subset", "all")

#: Named protocols of the metrics: the corrected one (the default) and the authors' (every deviation on).
PROTOCOLS = ("corrected", "authors")
#: The authors' deviations from the corrected protocol that can be switched on one by one
#: (`clxai_utils.evaluate.protocol` says what each does). Order is the record's order.
DEVIATIONS = (
    "clamped_noise",
    "pf_true_label",
    "pf_min_baseline",
    "pf_channel_elements",
    "pf_no_first_point",
    "zero_maps_unhandled",
    "eigencam_no_sign",
    "unnormalised_head",
    "correct_only_average",
    "authors_coherence",
)
#: Deviations that change the maps 05_explanations stores (recorded with them, checked by 06).
MAP_DEVIATIONS = ("eigencam_no_sign", "unnormalised_head")


def resolve_protocol(protocol: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The deviations (in `DEVIATIONS` order) a protocol switches on; unknown names are a ConfigError.

    "corrected" switches none, "authors" every one, and an explicit list (or tuple)
    exactly those named, so each deviation can be measured alone.
    """
    if isinstance(protocol, str):
        check_choice("protocol", protocol, PROTOCOLS)
        return () if protocol == "corrected" else DEVIATIONS
    if not isinstance(protocol, (list, tuple)) or not all(isinstance(name, str) for name in protocol):
        raise ConfigError(
            f"protocol must be one of {', '.join(PROTOCOLS)} or a list of deviation names, got {protocol!r}"
        )
    for name in protocol:
        check_choice("protocol deviation", name, DEVIATIONS)
    return tuple(d for d in DEVIATIONS if d in protocol)


#: The protocols of the ablation (08_protocol): the corrected one, the authors', and each deviation alone.
ABLATION_PROTOCOLS: tuple[str, ...] = (*PROTOCOLS, *DEVIATIONS)


def protocol_deviations(name: str) -> tuple[str, ...]:
    """The deviations one ablation protocol switches on: none, the authors' set, or the one deviation it names."""
    check_choice("protocol", name, ABLATION_PROTOCOLS)
    return resolve_protocol(name if name in PROTOCOLS else [name])


@dataclass(frozen=True)
class SubsetConfig:
    """Class-balanced subset sizes (`null`: the whole split), and the test images accuracy is counted on.

    `masks_per_class` takes a class-balanced subset of the external images with masks
    (`mask_source`, CIFAR-10's real photographs); `null` keeps all of them.

    `accuracy_on: all` measures accuracy (04's table, 07's snapshots) on the whole test split
    while explanations, metrics and neuron labels keep the subset: on 2,000 images, two models
    that disagree on a quarter of them differ by about a point by chance alone.
    """

    train_per_class: int | None = None
    test_per_class: int | None = None
    accuracy_on: str = "subset"
    masks_per_class: int | None = None

    def __post_init__(self) -> None:
        check_choice("accuracy_on", self.accuracy_on, ACCURACY_IMAGES)
        if self.masks_per_class is not None:
            check_positive_int("masks_per_class", self.masks_per_class)


@dataclass(frozen=True)
class DataConfig:
    """How images are read: the model's input side (null: the data set's own) and the decoding processes.

    `workers` DataLoader processes decode and crop streamed images (ImageNet-S50, large image
    folders); 0 decodes in the notebook's own process.
    """

    image_size: int | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.image_size is not None:
            check_positive_int("image_size", self.image_size)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone architecture and width multiplier (1.0 = the paper's network)."""

    arch: str
    width: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """One loss's optimisation settings (the paper's Table 2 for the `paper` profile)."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed: steps are what count)
    schedule: str = "cosine"  # decay to 0 after the warm-up: "cosine" (the paper) or "linear" (one-cycle)
    momentum: float = 0.9
    nesterov: bool = False  # Nesterov momentum (SGD only)
    temperature: float | None = None
    margin: float | None = None
    views: int | None = None  # augmented views per image; null: the paper's (1 for CE, 2 for SupCon/TL)
    augment: str | None = None  # "ce" or "supcon" augmentation; null: the paper's choice for the loss
    snapshot_every: int | None = None  # keep the weights every k epochs (the accuracy-confound analysis); null: none

    def view_plan(self, loss: str) -> tuple[int, str]:
        """(views per image, augmentation name) that `loss` trains on under these settings."""
        paper = (1, "ce") if loss == "ce" else (2, "supcon")
        return self.views or paper[0], self.augment or paper[1]


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probe on frozen, L2-normalised pooled features (paper: 100 epochs, SGD, lr 0.1)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ExplainConfig:
    """Which test images are explained (05_explanations) and in what chunks.

    `images_per_class` picks a class-balanced subset of the profile's test split (the same
    images for every loss and seed, so results pair by image id); null = all of it.
    """

    images_per_class: int | None
    batch_size: int


@dataclass(frozen=True)
class AblationConfig:
    """The protocol ablation (08_protocol): which explained images are scored under every protocol.

    `images_per_class` picks a class-balanced subset of the explained images (the same for
    every loss, protocol and seed, so rows pair by image id); null = all explained images.
    """

    images_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.images_per_class is not None:
            check_positive_int("images_per_class", self.images_per_class)


#: Removal fractions of the ROAD paper (and pytorch-grad-cam's ROAD averagers): `evaluate.faithfulness`'s default.
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: F-Fidelity's explanation sizes in the authors' CIFAR evaluation: 5% to 100% of the pixels in steps of 5%.
FFIDELITY_FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 21))


@dataclass(frozen=True)
class FaithfulnessConfig:
    """The faithfulness stage (`evaluate.faithfulness_stage`): which images, which measures, what budget.

    `images_per_class` picks the class-balanced subset of the explained images the ablation
    uses (same index function and seed, so rows pair with 06 and 08 by image id); null = all.
    `measures` are names of `registry.FAITHFULNESS_MEASURES`. F-Fidelity fine-tunes a copy of
    each classifier for `finetune_epochs` epochs of the training split (fractions allowed),
    `finetune_batch_size` images a step, and averages `ffidelity_samples` random removals per
    explanation size in `ffidelity_fractions`. The cascading randomisation explains
    `randomisation_images_per_class` images per class and re-initialises the layers of
    `randomisation_order` (null: `evaluate.randomisation.DEFAULT_ORDER`; the stage checks
    them against each model). The defaults are the full-size budget (the F-Fidelity authors').
    """

    images_per_class: int | None = None
    measures: tuple[str, ...] = tuple(FAITHFULNESS_MEASURES)
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS
    finetune_epochs: float = 100.0
    finetune_batch_size: int = 128
    ffidelity_samples: int = 50
    ffidelity_fractions: tuple[float, ...] = FFIDELITY_FRACTIONS
    randomisation_images_per_class: int = 10
    randomisation_order: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images_per_class is not None:
            check_positive_int("images_per_class", self.images_per_class)
        normalised = {
            "measures": tuple(check_choices("measures", self.measures, FAITHFULNESS_MEASURES)),
            "road_fractions": check_fractions("road_fractions", self.road_fractions),
            "ffidelity_fractions": check_fractions("ffidelity_fractions", self.ffidelity_fractions),
            "finetune_epochs": check_positive("finetune_epochs", self.finetune_epochs),
        }
        order = self.randomisation_order
        if order is not None:
            names = () if isinstance(order, str) else tuple(order)
            if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
                raise ConfigError(
                    f"randomisation_order must be null or a non-empty list of distinct layer names, got {order!r}"
                )
            normalised["randomisation_order"] = names
        for name in ("finetune_batch_size", "ffidelity_samples", "randomisation_images_per_class"):
            check_positive_int(name, getattr(self, name))
        for name, value in normalised.items():  # lists (YAML, papermill) kept as hashable tuples
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class ConfoundConfig:
    """The accuracy-confound analysis (07_accuracy_confound): which test images every kept snapshot is scored on.

    `images_per_class` picks a class-balanced subset of the explained images (the same for
    every loss, epoch and seed, so snapshots pair by image id); null = all explained images.
    Which epochs are kept is each loss's `snapshot_every`.
    """

    images_per_class: int | None

    def __post_init__(self) -> None:
        if self.images_per_class is not None:
            check_positive_int("images_per_class", self.images_per_class)


class SsimKwargs(TypedDict):
    """The keyword arguments of `evaluate.metrics.ssim` that `MetricsConfig` fixes."""

    win_size: int
    k1: float
    k2: float
    data_range: float


@dataclass(frozen=True)
class MetricsConfig:
    """The protocol of 06_metrics, validated on creation and recorded in the results' JSON sidecar.

    The one settings type of the metrics: the profile file sets the first four fields, the
    SSIM constants keep their defaults (those of scikit-image's SSIM, docs/method.md, "The five facets").
    `pixels_per_step` is the Pixel Flipping step; `batch_size` bounds the images (or flipped
    copies) per forward pass; `noise_sigma` is the continuity noise in normalised input space.
    The evaluation's random draws take the run's seed. `protocol` is "corrected" (the
    default), "authors" or a list of the authors' deviations to switch on one by one
    (`resolve_protocol`, `clxai_utils.evaluate.protocol`); `deviations` is the resolved set.
    """

    pixels_per_step: int
    batch_size: int
    baseline: str = "black"
    noise_sigma: float = 0.02
    ssim_win_size: int = 7
    ssim_k1: float = 0.01
    ssim_k2: float = 0.03
    ssim_data_range: float = 1.0
    protocol: str | tuple[str, ...] = "corrected"

    def __post_init__(self) -> None:
        if isinstance(self.protocol, list):  # a YAML or papermill list: kept as a hashable tuple
            object.__setattr__(self, "protocol", tuple(self.protocol))
        resolve_protocol(self.protocol)
        check_positive_int("pixels_per_step", self.pixels_per_step)
        check_positive_int("batch_size", self.batch_size)
        check_choice("baseline", self.baseline, BASELINES)
        check_positive("noise_sigma", self.noise_sigma)
        win = check_positive_int("ssim_win_size", self.ssim_win_size)
        if win % 2 == 0 or win < 3:
            raise ValueError(f"ssim_win_size must be odd and >= 3, got {win}")
        for name in ("ssim_k1", "ssim_k2", "ssim_data_range"):
            check_positive(name, getattr(self, name))

    @property
    def deviations(self) -> frozenset[str]:
        """The deviations `protocol` switches on (empty for "corrected")."""
        return frozenset(resolve_protocol(self.protocol))

    def to_dict(self) -> dict[str, Any]:
        """Every setting as a plain dict, for the results' sidecar (`protocol` only where it is not the default)."""
        out = dataclasses.asdict(self)
        if out["protocol"] == "corrected":
            del out["protocol"]
        elif isinstance(out["protocol"], tuple):
            out["protocol"] = list(out["protocol"])
        return out

    def ssim_kwargs(self) -> SsimKwargs:
        """Keyword arguments for `ssim`."""
        return {
            "win_size": self.ssim_win_size,
            "k1": self.ssim_k1,
            "k2": self.ssim_k2,
            "data_range": self.ssim_data_range,
        }


@dataclass(frozen=True)
class DatasetProfile:
    """Everything a profile fixes for one data set."""

    subset: SubsetConfig
    data: DataConfig
    model: ModelConfig
    train: dict[str, TrainConfig]
    probe: ProbeConfig
    explain: ExplainConfig
    metrics: MetricsConfig
    confound: ConfoundConfig
    ablation: AblationConfig = field(default_factory=AblationConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)


@dataclass(frozen=True)
class Profile:
    """A named run profile (`smoke`, `quick`, `paper`)."""

    name: str
    description: str
    datasets: dict[str, DatasetProfile] = field(default_factory=dict)

    def for_dataset(self, dataset: str) -> DatasetProfile:
        """Settings for `dataset`, or an error listing the data sets this profile covers."""
        check_choice("dataset", dataset, DATASETS)
        if dataset not in self.datasets:
            raise ConfigError(
                f"profile {self.name!r} defines no settings for dataset {dataset!r}; "
                f"it covers: {', '.join(sorted(self.datasets))}"
            )
        return self.datasets[dataset]

    def train_config(self, dataset: str, loss: str) -> TrainConfig:
        """Optimisation settings for one (dataset, loss)."""
        check_choice("loss", loss, LOSSES)
        return self.for_dataset(dataset).train[loss]


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check a YAML scalar against a dataclass field annotation (ints are accepted as floats)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        if isinstance(value, list) and tuple[str, ...] in options and all(isinstance(v, str) for v in value):
            return tuple(value)  # a list of names (MetricsConfig.protocol)
        annotation = next(a for a in options if a is not type(None))
    if typing.get_origin(annotation) is tuple and isinstance(value, list):  # a YAML list of one type
        item = typing.get_args(annotation)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"{where} must be of type {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown and missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {name!r} in {where}")
            continue
        kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ValueError as error:  # a range check of the settings type itself
        raise ConfigError(f"{where}.{error}") from None


def _validate_train(cfg: TrainConfig, loss: str, where: str) -> None:
    """Range checks that the type system cannot express."""
    check_choice(f"{where}.optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice(f"{where}.schedule", cfg.schedule, SCHEDULES)
    if cfg.nesterov and cfg.optimizer != "sgd":
        raise ConfigError(f"{where}.nesterov applies to the sgd optimizer only, not {cfg.optimizer!r}")
    if cfg.snapshot_every is not None and not 1 <= cfg.snapshot_every < cfg.epochs:
        raise ConfigError(
            f"{where}.snapshot_every must be null or 1 <= snapshot_every < epochs, got {cfg.snapshot_every}"
        )
    for key in ("epochs", "batch_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}.{key} must be >= 1, got {getattr(cfg, key)}")
    if not 0 <= cfg.warmup_epochs < cfg.epochs or cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ConfigError(f"{where}: need 0 <= warmup_epochs < epochs, lr > 0, weight_decay >= 0; got {cfg}")
    views, augment = cfg.view_plan(loss)
    check_choice(f"{where}.augment", augment, TRAIN_AUGMENTATIONS)
    if views < 1 or (loss == "ce" and views != 1):
        raise ConfigError(f"{where}.views must be >= 1 (and 1 for the ce loss), got {views}")
    if loss == "supcon" and (cfg.temperature is None or cfg.temperature <= 0):
        raise ConfigError(f"{where}.temperature must be > 0 for the supcon loss")
    if loss == "triplet" and (cfg.margin is None or cfg.margin <= 0):
        raise ConfigError(f"{where}.margin must be > 0 for the triplet loss")


def _validate_explain(cfg: ExplainConfig, where: str) -> ExplainConfig:
    if cfg.batch_size < 1 or (cfg.images_per_class is not None and cfg.images_per_class < 1):
        raise ConfigError(f"{where}: need batch_size >= 1 and images_per_class >= 1 (or null); got {cfg}")
    return cfg


def _dataset_profile(data: Any, where: str) -> DatasetProfile:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping")
    allowed = {
        "subset",
        "data",
        "model",
        "train",
        "probe",
        "explain",
        "metrics",
        "confound",
        "ablation",
        "faithfulness",
    }
    if unknown := sorted(set(data) - allowed):
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {', '.join(sorted(allowed))}")
    train_raw = data.get("train") or {}
    if missing := [loss for loss in LOSSES if loss not in train_raw]:
        raise ConfigError(f"{where}.train lacks settings for loss(es) {missing}")
    train = {}
    for loss, raw in train_raw.items():
        check_choice(f"loss key in {where}.train", loss, LOSSES)
        train[loss] = _build(TrainConfig, raw, f"{where}.train.{loss}")
        _validate_train(train[loss], loss, f"{where}.train.{loss}")
    return DatasetProfile(
        subset=_build(SubsetConfig, data.get("subset", {}), f"{where}.subset"),
        data=_build(DataConfig, data.get("data", {}), f"{where}.data"),
        model=_build(ModelConfig, data.get("model"), f"{where}.model"),
        train=train,
        probe=_build(ProbeConfig, data.get("probe"), f"{where}.probe"),
        explain=_validate_explain(_build(ExplainConfig, data.get("explain"), f"{where}.explain"), f"{where}.explain"),
        metrics=_build(MetricsConfig, data.get("metrics"), f"{where}.metrics"),
        confound=_build(ConfoundConfig, data.get("confound"), f"{where}.confound"),
        ablation=_build(AblationConfig, data.get("ablation", {}), f"{where}.ablation"),
        faithfulness=_build(FaithfulnessConfig, data.get("faithfulness", {}), f"{where}.faithfulness"),
    )


def profiles_path() -> Path:
    """The one file that defines the profiles."""
    return repo_root() / "configs" / "profiles.yaml"


def load_profiles(path: str | Path | None = None) -> dict[str, Profile]:
    """Parse and validate every profile in the YAML file."""
    raw = yaml.safe_load(Path(path or profiles_path()).read_text())
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path or profiles_path()} must map profile names to settings")
    profiles = {}
    for name, body in raw.items():
        where = f"profile {name!r}"
        if not isinstance(body, dict):
            raise ConfigError(f"{where} must be a mapping")
        if unknown := sorted(set(body) - {"description", "datasets"}):
            raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: description, datasets")
        datasets = {}
        for dataset, data in (body.get("datasets") or {}).items():
            check_choice(f"dataset key in {where}", dataset, DATASETS)
            datasets[dataset] = _dataset_profile(data, f"{where}.datasets.{dataset}")
        profiles[name] = Profile(name=name, description=str(body.get("description", "")), datasets=datasets)
    return profiles


def load_profile(name: str, path: str | Path | None = None) -> Profile:
    """The profile called `name`; an unknown name is an error listing the defined ones."""
    profiles = load_profiles(path)
    check_choice("profile", name, profiles)
    return profiles[name]
