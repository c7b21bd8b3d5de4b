"""The planted-concept experiment: units with a known concept T, hidden behind a class C.

The question of the CSP paper, asked where the answer is known. Visual attributes
(`ATTRIBUTES`: two coloured patches, stripes, a tint) are painted into real CIFAR-10 images.
A *T-unit* responds to an attribute T: a_T(x) = w_T . f(x) - b_T on the frozen features f
of a trained backbone, where w_T is Fisher's discriminant between reference images of every
class with and without T painted in (the same images both ways, so T is independent of the
class there) and b_T the midpoint between the mean responses. In the probe set T is then made to co-occur with
one class C: T is painted into as many images as C has, a share rho of them of class C and
the rest from the other classes (so rho = P(C | T) = P(T | C); rho = 0.1 is independence
for ten classes). For rho near 1 the unit's top images are mostly C with T, and a scorer
that only averages them is expected to name C; CSP, whose contrastive twins are the most
similar images without T (mostly C too), is expected to name T.

Every trial scores the T-unit with each scorer and records whether its top label is T or C.
Two negative controls: the encoder blind to T (the planted copies are embedded as the
originals, and so are T's reference images), and rho = 1 (every C image carries T: no
same-class image without T is left to contrast with). `run_trials` returns one row per
trial and scorer; `recovery_table` the share of trials naming T and naming C.

The image-text space of a trial is a `Space`: image embeddings of the probe images in every
version (original, and each attribute painted in) plus label embeddings. `open_clip_space`
builds it from a real (or, in tests, untrained) open_clip model and the vocabulary's text;
`concept_mean_space` from the stand-in of `neurons.encoders.ConceptMeanStandIn`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clxai_utils.core.compute import Compute, compute_or_resolve
from clxai_utils.core.progress import progress_bar
from clxai_utils.core.validate import check_choice, check_number, check_seeds
from clxai_utils.data.datasets import DatasetInfo
from clxai_utils.neurons.encoders import ConceptMeanStandIn, OpenClipEncoder, concatenated_features
from clxai_utils.neurons.invert import Invert
from clxai_utils.neurons.scorers import CLIPDissect, Scorer, check_embeddings
from clxai_utils.neurons.units import DEFAULT_LAYER, unit_activations
from clxai_utils.neurons.vocabulary import clean_labels

#: The attributes that can be painted in; each is also a line of the shipped vocabulary.
ATTRIBUTES: tuple[str, ...] = ("red square patch", "green square patch", "stripes", "blue tint")
ORIGINAL = "original"
#: Strength of the attributes, chosen on the quick models so that a linear probe detects each one (AUROC
#: about 0.95) while the stand-in space still sees the class first (cosine to the original about 0.86-0.97):
#: side of the patches as a share of the image side; share of the colour mixed in for tint and stripes.
PATCH_SHARE = 0.3
TINT_ALPHA = 0.2
STRIPE_ALPHA = 0.2
DEFAULT_RHOS: tuple[float, ...] = (0.0, 0.1, 0.5, 0.8, 0.95, 1.0)
#: The name of the concept-mean stand-in space in the trials (`<name>, blind` for its negative control).
STAND_IN = "stand-in (not CLIP)"


# --------------------------------------------------------------------------- painting


def _patch(images: Tensor, colour: tuple[int, int, int], corner: str) -> Tensor:
    out = images.clone()
    side = max(2, round(PATCH_SHARE * images.shape[-1]))
    rows = slice(None, side) if corner == "top-left" else slice(-side, None)
    out[:, :, rows, rows] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    return out


def _blend(images: Tensor, colour: tuple[int, int, int], alpha: float, where: Tensor | None = None) -> Tensor:
    """(1 - alpha) x + alpha colour, rounded, on the (H, W) pixels where `where` holds (everywhere when None)."""
    target = torch.tensor(colour, dtype=torch.float32)[:, None, None]
    mixed = ((1 - alpha) * images.float() + alpha * target).round().clamp(0, 255).to(torch.uint8)
    if where is None:
        return mixed
    return torch.where(where, mixed, images)


def plant(images: Tensor, attribute: str) -> Tensor:
    """Copies of uint8 images (N, 3, H, W) with `attribute` painted in, all at once.

    * red square patch: a pure red square, 30 % of the side, in the top-left corner;
    * green square patch: the same in green, bottom-right;
    * stripes: every other pair of rows mixed 20 % with white;
    * blue tint: every pixel mixed 20 % with pure blue.
    """
    attribute = check_choice("attribute", attribute, ATTRIBUTES)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {getattr(images, 'dtype', type(images))}")
    if attribute == "red square patch":
        return _patch(images, (255, 0, 0), "top-left")
    if attribute == "green square patch":
        return _patch(images, (0, 255, 0), "bottom-right")
    if attribute == "stripes":
        rows = (torch.arange(images.shape[-2]) // 2) % 2 == 0
        return _blend(images, (255, 255, 255), STRIPE_ALPHA, rows[:, None].expand(-1, images.shape[-1]))
    return _blend(images, (0, 0, 255), TINT_ALPHA)


def versions(images: Tensor, attributes: Sequence[str] = ATTRIBUTES) -> dict[str, Tensor]:
    """The images as they are (`ORIGINAL`) and with each attribute painted in."""
    return {ORIGINAL: images, **{attribute: plant(images, attribute) for attribute in attributes}}


def map_versions(function: Callable[[Tensor], Tensor], images: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`function` (images -> features or embeddings, batched inside) applied to every version."""
    return {version: function(batch) for version, batch in images.items()}


# --------------------------------------------------------------------------- T-units and the trial design


@dataclass(frozen=True)
class TUnit:
    """A unit built to respond to one attribute: a(x) = direction . f(x) - bias."""

    attribute: str
    direction: Tensor  # (d,)
    bias: float

    def __call__(self, features: Tensor) -> Tensor:
        return features @ self.direction - self.bias


#: Ridge added to the within-group covariance of `t_unit`, relative to its mean eigenvalue.
SHRINKAGE = 1e-3


def t_unit(attribute: str, original: Tensor, planted: Tensor) -> TUnit:
    """The T-unit of `attribute`: Fisher's linear discriminant of reference features (N, d) without and with it.

    The two sets are the same images, so T is independent of the class. direction =
    (S + ridge)^-1 (mean planted - mean original), S the pooled within-group covariance
    (the plain mean difference is swamped by class variation for the small patches);
    bias = the midpoint of the two mean responses.
    """
    if original.shape != planted.shape or original.ndim != 2 or len(original) < 2:
        raise ValueError(
            f"original and planted must be matching (N >= 2, d) features, got {original.shape}, {planted.shape}"
        )
    original, planted = original.double(), planted.double()
    centred = torch.cat([original - original.mean(0), planted - planted.mean(0)])
    within = centred.T @ centred / len(centred)
    ridge = SHRINKAGE * within.trace() / len(within)
    direction = torch.linalg.solve(
        within + ridge * torch.eye(len(within), dtype=within.dtype), planted.mean(0) - original.mean(0)
    )
    bias = ((original @ direction).mean() + (planted @ direction).mean()) / 2
    return TUnit(attribute, direction.float(), float(bias))


def check_rho(rho: Any) -> float:
    """The co-occurrence rate P(C | T), in [0, 1]."""
    return check_number("rho", rho, 0.0, 1.0)


def planted_mask(labels: Tensor, target_class: int, rho: float, generator: torch.Generator) -> Tensor:
    """(N,) bool: the probe images that carry T.

    As many images as class C has carry T, round(rho * that) of them of class C and the rest
    drawn from the other classes, all at random.
    """
    rho = check_rho(rho)
    inside = (labels == target_class).nonzero().flatten()
    outside = (labels != target_class).nonzero().flatten()
    n_t = len(inside)
    k = round(rho * n_t)
    if n_t == 0 or n_t - k > len(outside):
        raise ValueError(f"class {target_class} has {n_t} probe images; the others {len(outside)}: cannot plant")
    chosen = torch.cat(
        [
            inside[torch.randperm(n_t, generator=generator)[:k]],
            outside[torch.randperm(len(outside), generator=generator)[: n_t - k]],
        ]
    )
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    return mask


def mix(original: Tensor, planted: Tensor, mask: Tensor) -> Tensor:
    """Rows of `planted` where `mask` holds, of `original` elsewhere."""
    return torch.where(mask[:, None], planted, original)


# --------------------------------------------------------------------------- spaces


@dataclass(frozen=True)
class Space:
    """An image-text space for the trials: probe-image embeddings per version, and label embeddings."""

    name: str
    images: Mapping[str, Tensor]  # version -> (N, d) normalised embeddings
    labels: tuple[str, ...]
    label_embeddings: Tensor  # (labels, d)

    def __post_init__(self) -> None:
        d = self.images[ORIGINAL].shape[1]
        for version, embeddings in self.images.items():
            check_embeddings(f"images[{version!r}]", embeddings, rows=len(self.images[ORIGINAL]), dim=d)
        check_embeddings("label_embeddings", self.label_embeddings, rows=len(self.labels), dim=d)
        if missing := [a for a in self.images if a != ORIGINAL and a not in self.labels]:
            raise ValueError(f"attributes {missing} have no label in the space's labels")

    def blind(self) -> Space:
        """The negative control: the planted copies look like the originals (the encoder cannot see T).

        In a concept-mean space the attributes' label embeddings come from images too, so pass
        those already computed from originals (see `concept_mean_space(..., blind=True)`).
        """
        return replace(self, name=f"{self.name}, blind", images=dict.fromkeys(self.images, self.images[ORIGINAL]))


def concept_mean_space(
    name: str,
    probe: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    reference_labels: Tensor,
    classes: Sequence[str],
    *,
    blind: bool = False,
) -> Space:
    """The stand-in space (not CLIP): labels are the classes and attributes, embedded as concept means.

    `probe` and `reference` map every version to normalised embeddings; a class is embedded
    by its reference originals, an attribute by the reference copies that carry it (all classes).
    With `blind`, the planted copies are embedded as their originals, everywhere.
    """
    attributes = [version for version in probe if version != ORIGINAL]
    original = reference[ORIGINAL]
    embeddings = [original] + [original if blind else reference[a] for a in attributes]
    concepts = torch.zeros(len(original) * len(embeddings), len(classes) + len(attributes), dtype=torch.bool)
    n = len(original)
    concepts[torch.arange(n), reference_labels] = True
    for i in range(len(attributes)):
        concepts[(i + 1) * n : (i + 2) * n, len(classes) + i] = True
    label_embeddings = ConceptMeanStandIn.label_embeddings(torch.cat(embeddings), concepts)
    space = Space(name, dict(probe), (*classes, *attributes), label_embeddings)
    return space.blind() if blind else space


def pooled_versions(
    models: Mapping[str, nn.Module],
    images: Mapping[str, Tensor],
    info: DatasetInfo,
    batch_size: int = 256,
    compute: Compute | None = None,
) -> dict[str, dict[str, Tensor]]:
    """network -> version -> (N, d) pooled backbone features (last-stage means) of the images in every version.

    Computed on `compute.device` (None: `resolve_compute()`, resolved once for all networks), returned on the CPU.
    """
    compute = compute_or_resolve(compute)
    return {
        name: {
            v: unit_activations(model, batch, info, DEFAULT_LAYER, batch_size=batch_size, compute=compute)
            for v, batch in images.items()
        }
        for name, model in models.items()
    }


def stand_in_space(
    probe: Mapping[str, Mapping[str, Tensor]],
    reference: Mapping[str, Mapping[str, Tensor]],
    reference_labels: Tensor,
    classes: Sequence[str],
    *,
    blind: bool = False,
) -> Space:
    """The concept-mean stand-in over the networks' concatenated features (`pooled_versions` of probe and reference)."""
    networks = list(probe)
    versions_ = list(next(iter(probe.values())))

    def embed(features: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
        return {v: concatenated_features({n: features[n][v] for n in networks}) for v in versions_}

    return concept_mean_space(STAND_IN, embed(probe), embed(reference), reference_labels, classes, blind=blind)


def open_clip_space(encoder: OpenClipEncoder, probe: Mapping[str, Tensor], vocabulary: Sequence[str]) -> Space:
    """A real image-text space: open_clip embeddings of the probe images in every version, the vocabulary's text.

    The painted attributes join the vocabulary if it lacks them, so that T can be named.
    """
    labels = clean_labels([*vocabulary, *(version for version in probe if version != ORIGINAL)])
    images = map_versions(lambda batch: encoder.encode_images(batch, progress=True), probe)
    return Space(encoder.name, images, labels, encoder.label_embeddings(labels))


# --------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialInputs:
    """Everything a trial reads: unit features per version, embeddings, labels, T-units and the layer's units."""

    unit_features: Mapping[str, Tensor]  # version -> (N, d) features the T-units read (= the layer's units)
    labels: Tensor  # (N,) class of every probe image
    classes: tuple[str, ...]
    t_units: Mapping[str, TUnit]


def top_label(scores: Tensor, space: Space) -> str:
    """The best label of a (labels,) score vector; `tie: a / b` when the space embeds several labels alike.

    A blind concept-mean space embeds every attribute the same way, so naming one of them is a
    tie, not a recovery (comparing the scores instead would hinge on rounding).
    """
    best = int(scores.argmax())
    alike = torch.isclose(space.label_embeddings, space.label_embeddings[best], atol=1e-6).all(1)
    tied = alike.nonzero().flatten().tolist()
    return space.labels[best] if len(tied) == 1 else "tie: " + " / ".join(space.labels[i] for i in tied)


def trial_rows(
    inputs: TrialInputs,
    space: Space,
    scorers: Sequence[Scorer],
    attribute: str,
    target_class: int,
    rho: float,
    seed: int,
    invert: Invert,
) -> list[dict[str, Any]]:
    """One trial: T planted with class C at rate rho; the label of the T-unit under every scorer, and INVERT's."""
    mask = planted_mask(inputs.labels, target_class, rho, torch.Generator().manual_seed(seed))
    features = mix(inputs.unit_features[ORIGINAL], inputs.unit_features[attribute], mask)
    unit = inputs.t_units[attribute](features)
    # CLIP-Dissect's prior is a mean over the layer: the T-unit joins the layer's own units there. The
    # other scorers treat every unit on its own, so they score the T-unit alone.
    layer = torch.cat([unit[:, None], features], dim=1)
    embeddings = mix(space.images[ORIGINAL], space.images[attribute], mask)
    concept_name, class_name = attribute, inputs.classes[target_class]
    labels = {
        scorer.name: top_label(
            scorer(layer if isinstance(scorer, CLIPDissect) else unit[:, None], embeddings, space.label_embeddings)[0],
            space,
        )
        for scorer in scorers
    }
    concepts = torch.cat([F.one_hot(inputs.labels, len(inputs.classes)).bool(), mask[:, None]], dim=1)
    invert_result = invert(unit[:, None], concepts, [*inputs.classes, attribute])
    labels["INVERT (annotated)"] = invert_result.formulas[0]
    base = {"space": space.name, "attribute": attribute, "class": class_name, "rho": rho, "seed": seed}
    return [
        {**base, "scorer": scorer, "label": label, "names_T": label == concept_name, "names_C": label == class_name}
        for scorer, label in labels.items()
    ]


def run_trials(
    inputs: TrialInputs,
    spaces: Sequence[Space],
    scorers: Sequence[Scorer],
    rhos: Sequence[float] = DEFAULT_RHOS,
    seeds: Sequence[int] = tuple(range(10)),
    invert: Invert | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every (space, attribute, rho, seed) trial; seed s plants with class s mod 10 and its own random images."""
    rhos = [check_rho(rho) for rho in rhos]
    seeds = check_seeds(seeds)
    invert = invert or Invert(max_length=1)
    conditions = [(space, a, rho, s) for space in spaces for a in inputs.t_units for rho in rhos for s in seeds]
    rows = []
    for space, attribute, rho, seed in progress_bar(conditions, desc="planted-concept trials", disable=not progress):
        target = seed % len(inputs.classes)
        rows += trial_rows(inputs, space, scorers, attribute, target, rho, seed, invert)
    return pd.DataFrame(rows)


def recovery_summary(recovery: pd.DataFrame) -> pd.DataFrame:
    """The recovery table for reading: a row per (space, scorer), a column per rho, cells `T share / C share`."""
    cells = recovery.assign(cell=[f"{t:.2f} / {c:.2f}" for t, c in zip(recovery["names_T"], recovery["names_C"])])
    table = cells.pivot_table(index=["space", "scorer"], columns="rho", values="cell", aggfunc="first", sort=False)
    table.columns = [f"rho = {rho:g}" for rho in table.columns]
    return table.reset_index()


def recovery_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Share of trials whose top label is T (`names_T`) and C (`names_C`), per space, scorer and rho."""
    grouped = trials.groupby(["space", "scorer", "rho"], sort=False)
    table = grouped.agg(names_T=("names_T", "mean"), names_C=("names_C", "mean"), trials=("names_T", "size"))
    return table.reset_index()
