"""Stage 09_faithfulness: faithfulness beyond Pixel Flipping, and two sanity checks, on a run's models.

06 scores faithfulness by Pixel Flipping alone, whose softmax read-out on broken images mixes
map quality with how confidently a model reads out-of-distribution inputs. This stage scores
the maps 05 stored (the predicted class, as 06 scores them) on a class-balanced subset of the
explained images (`faithfulness.images_per_class`; the ablation's index, so rows pair with 06
and 08 by image id) with

- deletion and insertion on the probability, the logit and the normalised probability, and
  ROAD (`evaluate.faithfulness`), with the run's metrics settings (pixels per step, baseline,
  batch size);
- F-Fidelity (`evaluate.ffidelity`): each classifier is fine-tuned once, a copy per loss, on
  randomly masked training images (the metrics baseline fills the removed pixels; CE's
  training augmentation, the same batches and masks for every loss), then FFid+ and FFid- of
  the same maps are read on that copy;
- the sanity checks of `evaluate.randomisation`: cascading model-parameter randomisation on
  `randomisation_images_per_class` images per class, and the random-logit check of
  class-specific methods against the maps 06's contrastivity compares with (05 stores no
  contrast maps: `scoring.contrast_maps` recomputes them, same classes, same precision).

Every random draw is keyed by the run's seed. The files are written only when everything is
computed, sidecar and maps first, the per-image table last; stale files are removed first, so
an interrupted run leaves no table. A rerun recomputes (the stage is short).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from clxai_utils.core.artifacts import remove_stale, save_torch, write_csv, write_json
from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.config import ConfigError, FaithfulnessConfig
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.registry import FAITHFULNESS_MEASURES, LOSSES, METHOD_REGISTRY, METHODS
from clxai_utils.core.run import Run
from clxai_utils.core.seeding import seed_everything
from clxai_utils.core.validate import check_choices
from clxai_utils.data.datasets import Dataset
from clxai_utils.data.prepare import load_prepared
from clxai_utils.evaluate.ablation import ablation_index
from clxai_utils.evaluate.facets import stored_maps
from clxai_utils.evaluate.faithfulness import MEASURES, ROAD_NOISE, score_faithfulness
from clxai_utils.evaluate.ffidelity import DEFAULT_ALPHA, DEFAULT_BETA, f_fidelity, fine_tune_masked
from clxai_utils.evaluate.randomisation import (
    DEFAULT_ORDER,
    cascading_randomisation,
    random_logit_check,
    randomisable_layers,
    randomisation_verdict,
)
from clxai_utils.evaluate.scoring import (
    FacetClock,
    ScoringSet,
    contrast_maps,
    eigencam_sign,
    image_columns,
    mean_curves,
    scoring_set,
    sidecar_header,
)
from clxai_utils.explain.store import ExplanationSet, explained_split
from clxai_utils.train.probe import load_classifier
from clxai_utils.train.trainer import epoch_batches

#: The measures F-Fidelity gives (on the fine-tuned copy); every other measure is `faithfulness.MEASURES`'.
FFIDELITY_MEASURES = ("ffid_plus", "ffid_minus")
#: What the sidecar times: the walks of the measures, the sanity checks, and a plain forward pass.
TIMED = ("deletion", "insertion", "road", "ffidelity", "randomisation", "random_logit", "forward")
#: The run part that starts every row: which run, model and method.
RUN_COLUMNS = ("dataset", "profile", "seed", "loss", "method")
#: The columns of the cascade's table after the run part; step 0 is the trained model (SSIM 1).
RANDOMISATION_COLUMNS = ("step", "layer", "image_id", "zero_map", "ssim", "spearman")
#: The columns of the random-logit table after the run part.
RANDOM_LOGIT_COLUMNS = ("image_id", "ssim", "spearman", "near_identical")


@dataclass
class FaithfulnessResults:
    """What `run_faithfulness` returns (and wrote): the four tables, the cascade's figure maps, the sidecar.

    `maps` holds per "loss/method" the maps (steps + 1, n, H, W) of the cascade's first images,
    step 0 the trained model, with their `layers` and `image_ids` (results/randomisation_maps.pt).
    """

    table: pd.DataFrame
    curves: pd.DataFrame
    randomisation: pd.DataFrame
    random_logit: pd.DataFrame
    maps: dict[str, Any]
    sidecar: dict[str, Any]


def measure_families(measures: Iterable[str]) -> dict[str, list[str]]:
    """The measures by the walk that computes them (deletion, insertion, road, ffidelity), in the given order."""
    families: dict[str, list[str]] = defaultdict(list)
    for name in measures:
        families["ffidelity" if name in FFIDELITY_MEASURES else MEASURES[name].family].append(name)
    return dict(families)


def check_randomisation_order(models: Mapping[str, nn.Module], order: tuple[str, ...] | None) -> tuple[str, ...]:
    """`order` (None: DEFAULT_ORDER) if every model has each of its layers; else a ConfigError naming what it has."""
    order = DEFAULT_ORDER if order is None else order
    for loss, model in models.items():
        layers = randomisable_layers(model)
        if missing := [name for name in order if name not in layers]:
            raise ConfigError(
                f"faithfulness.randomisation_order names {missing}, which the {loss} model does not have; "
                f"its layers are {list(layers)}"
            )
    return tuple(order)


# ------------------------------------------------------------------------------ F-Fidelity


def _training_batches(run: Run, data: Dataset, batch_size: int, generator: torch.Generator) -> Iterator[Any]:
    """Endless shuffled epochs of the prepared training split, CE-augmented as CE trains, full batches only."""
    split, ce = data.train, run.settings.train["ce"]
    kept = len(split) // batch_size * batch_size
    for epoch in itertools.count():
        order = torch.randperm(len(split), generator=generator)[:kept]
        yield from epoch_batches(
            "ce", ce, split, data.info, order, batch_size, generator, (run.seed, epoch), run.settings.data.workers
        )


def fine_tune_steps(cfg: FaithfulnessConfig, train_images: int) -> tuple[int, int]:
    """(steps, batch size) of the F-Fidelity fine-tuning: ceil(epochs * images / batch), batches of at most the split."""
    batch = min(cfg.finetune_batch_size, train_images)
    return math.ceil(cfg.finetune_epochs * train_images / batch), batch


def fine_tuned_copy(
    run: Run, model: nn.Module, data: Dataset, baseline: Tensor, compute: Compute
) -> tuple[nn.Module, dict[str, Any]]:
    """F-Fidelity's fine-tuned copy of `model` on `compute`'s device, and its steps, batch size and seconds.

    The run's seed (`seed_everything`) fixes the batches, their augmentation and the masks, so
    every loss's copy sees the same training images with the same pixels removed. It trains
    under the run's precision, except fp16, which would need a gradient scaler: float32 there.
    """
    steps, batch = fine_tune_steps(run.settings.faithfulness, len(data.train))
    generator = seed_everything(run.seed)
    batches = _training_batches(run, data, batch, generator)
    start = time.perf_counter()
    precision = compute.autocast() if compute.precision != "fp16" else nullcontext()
    with compute.placed(model) as placed, precision:
        tuned = fine_tune_masked(placed, batches, steps=steps, baseline=baseline, generator=generator)
    return tuned, {"steps": steps, "batch_size": batch, "seconds": round(time.perf_counter() - start, 2)}


# ------------------------------------------------------------------------------ measures


def _walk(
    model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, names: list[str], baseline: Tensor, run: Run
) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """Scores of `names` and every curve (curve, x axis) of their one deletion, insertion or ROAD walk; CPU.

    ROAD builds the imputed copies of all its images at once, so it gets the images in chunks
    of at most `metrics.batch_size` copies, its noise drawn from one stream of the run's seed;
    deletion and insertion build their copies batch by batch themselves.
    """
    params, cfg = run.settings.metrics, run.settings.faithfulness
    road = MEASURES[names[0]].family == "road"
    chunk = max(1, params.batch_size // len(cfg.road_fractions)) if road else len(x)
    generator = torch.Generator().manual_seed(run.seed)
    parts = [
        score_faithfulness(
            model,
            x[start : start + chunk],
            maps[start : start + chunk],
            targets[start : start + chunk],
            measures=names,
            pixels_per_step=params.pixels_per_step,
            baseline=baseline,
            fractions=cfg.road_fractions,
            noise=ROAD_NOISE,
            batch_size=params.batch_size,
            generator=generator,
        )
        for start in range(0, len(x), chunk)
    ]
    scores = {name: torch.cat([part.scores[name] for part in parts]).cpu() for name in names}
    curves = {
        name: (torch.cat([part.curves[name] for part in parts]).cpu(), parts[0].fractions[name].cpu())
        for name in parts[0].curves
    }
    return scores, curves


def _ffidelity(
    tuned: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, names: list[str], baseline: Tensor, run: Run
) -> tuple[dict[str, Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """FFid+ and FFid- on the fine-tuned copy, and both curves; the draws keyed by the run's seed; CPU."""
    cfg = run.settings.faithfulness
    result = f_fidelity(
        tuned,
        x,
        maps,
        targets,
        baseline=baseline,
        generator=torch.Generator().manual_seed(run.seed),
        fractions=cfg.ffidelity_fractions,
        n_samples=cfg.ffidelity_samples,
        batch_size=run.settings.metrics.batch_size,
    )
    scores = {"ffid_plus": result.ffid_plus.cpu(), "ffid_minus": result.ffid_minus.cpu()}
    curves = {"ffid_plus": result.plus_curve.cpu(), "ffid_minus": result.minus_curve.cpu()}
    return {name: scores[name] for name in names}, {name: (c, result.fractions) for name, c in curves.items()}


@torch.no_grad()
def _forward(model: nn.Module, x: Tensor, batch_size: int) -> None:
    """Plain forward passes over `x`: the reference the measures' images per second are read against."""
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size])


@dataclass
class _Context:
    """What every (loss, method) block reads: the run, its explained images, the subsets, where to compute."""

    run: Run
    scoring: ScoringSet  # every explained image: normalised images, the metrics baseline
    index: Tensor  # positions of the measured images among the explained ones
    cascade_index: Tensor  # positions of the cascade's images
    order: tuple[str, ...]  # the cascade's layers
    compute: Compute
    clock: FacetClock

    def images(self, index: Tensor) -> Tensor:
        """The normalised images at `index`, on the compute device (the perturbed copies are built there)."""
        return self.scoring.inputs.x[index].to(self.compute.device)


@dataclass
class _Block:
    """One (loss, method) measured: its table rows and the sanity checks' results."""

    rows: pd.DataFrame
    curves: pd.DataFrame
    cascade: pd.DataFrame
    cascade_maps: Tensor
    layers: tuple[str, ...]
    random_logit: pd.DataFrame | None
    logit_verdict: dict[str, Any] | None


def _measures(
    ctx: _Context, maps: ExplanationSet, fast: nn.Module, tuned: nn.Module, base: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every configured measure of the subset's maps: the per-image rows and the mean curves."""
    run, baseline = ctx.run, ctx.scoring.inputs.baseline
    x, targets = ctx.images(ctx.index), maps.targets.to(ctx.compute.device)
    values = maps.maps.float().to(ctx.compute.device)
    scores: dict[str, Tensor] = {}
    curves: dict[str, tuple[Tensor, Tensor]] = {}
    for family, names in measure_families(run.settings.faithfulness.measures).items():
        model, measure = (tuned, _ffidelity) if family == "ffidelity" else (fast, _walk)
        got, walks = ctx.clock.time(family, len(maps), measure, model, x, values, targets, names, baseline, run)
        scores |= got
        curves |= walks
    rows = pd.DataFrame(image_columns(base, maps) | {name: scores[name].double().numpy() for name in scores})
    mean = [mean_curves({**base, "curve": name}, c, f, point="point") for name, (c, f) in curves.items()]
    return rows, pd.concat(mean, ignore_index=True)


def _random_logit(
    ctx: _Context, maps: ExplanationSet, fast: nn.Module, base: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The random-logit check of the subset's maps against the maps of 06's contrast classes."""
    params, batch = ctx.run.settings.metrics, ctx.run.settings.explain.batch_size

    def check() -> Any:
        contrast, _ = contrast_maps(fast, ctx.images(ctx.index), maps, params, batch, ctx.run.seed)
        return random_logit_check(maps.maps.float(), contrast)

    result = ctx.clock.time("random_logit", len(maps), check)
    rows = {"image_id": maps.image_ids.numpy(), **{k: getattr(result, k).numpy() for k in ("ssim", "spearman")}}
    table = pd.DataFrame({**base, **rows, "near_identical": result.near_identical.numpy()})
    return table, {"share": result.share, "fails": result.fails}


def _measure_method(
    ctx: _Context, loss: str, method: str, model: nn.Module, fast: nn.Module, tuned: nn.Module
) -> _Block:
    """One (loss, method): the measures, the cascade and (class-specific methods) the random-logit check."""
    run = ctx.run
    base = dict(zip(RUN_COLUMNS, (run.dataset, run.profile, run.seed, loss, method)))
    stored, _ = stored_maps(run, loss, method, ctx.scoring, ctx.compute.precision)
    maps = stored.select(ctx.index)
    rows, curves = _measures(ctx, maps, fast, tuned, base)
    explained = stored.select(ctx.cascade_index)
    cascade = ctx.clock.time(
        "randomisation",
        len(explained),
        cascading_randomisation,
        model,
        ctx.images(ctx.cascade_index),
        explained.targets,
        method,
        order=ctx.order,
        seed=run.seed,
        batch_size=run.settings.explain.batch_size,
        image_ids=explained.image_ids,
        eigencam_sign=eigencam_sign(run.settings.metrics),
    )
    scores = cascade.scores.drop(columns="image").assign(**base)
    logit, verdict = _random_logit(ctx, maps, fast, base) if METHOD_REGISTRY[method].class_specific else (None, None)
    return _Block(rows, curves, scores[[*base, *RANDOMISATION_COLUMNS]], cascade.maps, cascade.layers, logit, verdict)


# ------------------------------------------------------------------------------ the stage


def _measure_loss(
    ctx: _Context, loss: str, model: nn.Module, methods: list[str], data: Dataset, bar: Any
) -> tuple[list[_Block], dict[str, Any]]:
    """Fine-tune the loss's copy once, then measure every method; the fine-tuning's steps and seconds."""
    bar.set_postfix_str(f"{loss}: F-Fidelity fine-tuning", refresh=False)
    tuned, fine_tuning = fine_tuned_copy(ctx.run, model, data, ctx.scoring.inputs.baseline, ctx.compute)
    bar.update(1)
    blocks = []
    with ctx.compute.inference(model) as fast, ctx.compute.inference(tuned) as tuned_fast:
        batch = ctx.run.settings.metrics.batch_size
        ctx.clock.time("forward", len(ctx.index), _forward, fast, ctx.images(ctx.index), batch)
        for method in methods:
            bar.set_postfix_str(f"{loss}/{method}", refresh=False)
            blocks.append(_measure_method(ctx, loss, method, model, fast, tuned_fast))
            bar.update(1)
    return blocks, fine_tuning


def _timings(clock: FacetClock) -> dict[str, dict[str, float]]:
    """Seconds, images and images per second of every timed family (forward: the plain forward pass)."""
    return {
        name: {
            "seconds": round(clock.seconds[name], 2),
            "images": clock.images[name],
            "images_per_s": round(clock.images[name] / clock.seconds[name], 1),
        }
        for name in TIMED
        if clock.seconds.get(name)
    }


def _sidecar(
    ctx: _Context,
    losses: list[str],
    methods: list[str],
    blocks: dict[tuple[str, str], _Block],
    fine_tuning: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The settings, measures, timings and sanity-check verdicts of one run's faithfulness tables."""
    run, cfg, params = ctx.run, ctx.run.settings.faithfulness, ctx.run.settings.metrics
    verdicts = {}
    for (loss, method), block in blocks.items():
        verdict = randomisation_verdict(block.cascade, metric="ssim")
        last = verdict.summary.iloc[-1]
        verdicts[f"{loss}/{method}"] = {"fails": verdict.fails, "last_layer": last["layer"], "mean_ssim": last["mean"]}
    return {
        **sidecar_header(run, losses, methods, len(ctx.index), ctx.compute),
        "settings": dataclasses.asdict(cfg) | {"randomisation_order": list(ctx.order)},
        "metrics": {
            "pixels_per_step": params.pixels_per_step,
            "baseline": params.baseline,
            "batch_size": params.batch_size,
        },
        "road_noise": ROAD_NOISE,
        "ffidelity": {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA, "score": "probability", "augmentation": "ce"},
        "measures": {
            name: f"{FAITHFULNESS_MEASURES[name].description} ({FAITHFULNESS_MEASURES[name].better} is better)"
            for name in cfg.measures
        },
        "randomisation_images": len(ctx.cascade_index),
        "timings": _timings(ctx.clock),
        "fine_tuning": fine_tuning,
        "randomisation_verdicts": verdicts,
        "random_logit": {
            f"{loss}/{method}": block.logit_verdict
            for (loss, method), block in blocks.items()
            if block.logit_verdict is not None
        },
    }


def _cascade_maps(blocks: dict[tuple[str, str], _Block], ids: Tensor) -> dict[str, Any]:
    """The cascade's figure maps per "loss/method", the layer of each step, and the ids of the images they show."""
    shown = next(iter(blocks.values())).cascade_maps.shape[1]  # the first images of the cascade's
    return {
        "maps": {f"{loss}/{method}": block.cascade_maps for (loss, method), block in blocks.items()},
        "layers": {f"{loss}/{method}": list(block.layers) for (loss, method), block in blocks.items()},
        "image_ids": ids[:shown],
    }


def run_faithfulness(
    run: Run,
    losses: Iterable[str] = LOSSES,
    methods: Iterable[str] = METHODS,
    progress: bool = True,
    compute: Compute | None = None,
) -> FaithfulnessResults:
    """09_faithfulness' work: the configured measures and both sanity checks for every (loss, method).

    The images are `faithfulness.images_per_class` per class of the explained images
    (`ablation_index`), the cascade's `randomisation_images_per_class` per class. `compute`
    must have the precision the stored maps were computed in (as for 06). Every model must
    have the layers of `randomisation_order`, checked before anything is computed.
    """
    losses, methods = check_choices("losses", losses, LOSSES), check_choices("methods", methods, METHODS)
    compute = compute_or_resolve(compute)
    cfg = run.settings.faithfulness
    models = {loss: load_classifier(run, loss)[0] for loss in losses}
    order = check_randomisation_order(models, cfg.randomisation_order)
    paths = run.faithfulness_paths
    remove_stale(paths.values())
    data, _ = load_prepared(run)
    scoring = scoring_set(explained_split(data, run.settings.explain), data, run)
    labels = scoring.split.labels
    index = ablation_index(labels, cfg.images_per_class)
    cascade_index = ablation_index(labels, cfg.randomisation_images_per_class)
    ctx = _Context(run, scoring, index, cascade_index, order, compute, FacetClock())
    blocks: dict[tuple[str, str], _Block] = {}
    fine_tuning = {}
    with progress_bar(total=len(losses) * (1 + len(methods)), desc="faithfulness", disable=not progress) as bar:
        for loss in losses:
            measured, fine_tuning[loss] = _measure_loss(ctx, loss, models[loss], methods, data, bar)
            blocks |= dict(zip([(loss, method) for method in methods], measured))
    results = _results(blocks, _sidecar(ctx, losses, methods, blocks, fine_tuning), scoring.split.ids[cascade_index])
    write_json(paths["sidecar"], results.sidecar)
    save_torch(paths["maps"], results.maps)
    write_csv(paths["curves"], results.curves)
    write_csv(paths["randomisation"], results.randomisation)
    write_csv(paths["random_logit"], results.random_logit)
    write_csv(paths["table"], results.table)  # last: its presence means every other file is complete
    return results


def _results(
    blocks: dict[tuple[str, str], _Block], sidecar: dict[str, Any], cascade_ids: Tensor
) -> FaithfulnessResults:
    """The blocks' rows concatenated into the stage's tables."""
    parts = list(blocks.values())
    logit = [b.random_logit for b in parts if b.random_logit is not None]
    empty_logit = pd.DataFrame(columns=[*RUN_COLUMNS, *RANDOM_LOGIT_COLUMNS])
    return FaithfulnessResults(
        table=pd.concat([b.rows for b in parts], ignore_index=True),
        curves=pd.concat([b.curves for b in parts], ignore_index=True),
        randomisation=pd.concat([b.cascade for b in parts], ignore_index=True),
        random_logit=pd.concat(logit, ignore_index=True) if logit else empty_logit,
        maps=_cascade_maps(blocks, cascade_ids),
        sidecar=sidecar,
    )
