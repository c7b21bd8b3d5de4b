"""The authors' coherence (protocol switch `authors_coherence`): their maps and quantus 0.6's two scores.

The authors scored coherence on ImageNet-S50 only, differently from the corrected protocol
(`evaluate.metrics.pointing_game` and `attribution_localisation`) in three ways:

- masks: read by `data.imagenet_s.authors_object_mask` (bilinear resize, red channel > 0),
  handed in as int8 masks by `data.datasets.authors_test_masks`;
- maps: Grad-CAM / Eigen-CAM of the ground-truth class, not the prediction, averaged over
  pytorch-grad-cam's six test-time augmentations (`aug_smooth`), and a map whose maximum
  is 0 gets 0.001 at pixel (0, 0) so that quantus's normalisation does not divide by zero;
- scores: quantus 0.6's PointingGame and AttributionLocalisation as called, on every image,
  misclassified ones included.

Everything here is batched; it exists to measure the authors' protocol, not to score with.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from clxai_utils.explain.cams import explain
from clxai_utils.explain.store import ExplanationSet

#: What the authors added at pixel (0, 0) of a map whose maximum is 0.
ZERO_MAP_MARK = 1e-3
#: quantus 0.6 AttributionLocalisation's offset in the denominator.
LOCALISATION_OFFSET = 1e-9


def mark_zero_maps(maps: Tensor) -> Tensor:
    """A copy of `maps` (N, H, W) where every map whose maximum is 0 holds `ZERO_MAP_MARK` at pixel (0, 0)."""
    marked = maps.clone()
    zero = marked.flatten(1).amax(dim=1) == 0
    marked[zero, 0, 0] += ZERO_MAP_MARK
    return marked


def authors_coherence_maps(
    model: nn.Module, x: Tensor, maps: ExplanationSet, batch_size: int, eigencam_sign: bool = True
) -> ExplanationSet:
    """The maps the authors' coherence scores for the images `x` of `maps`: ground truth, aug_smooth, zeros marked.

    Only the maps and their targets (the labels) change; predictions and logits stay those
    of `maps`, so the rows still say whether the image is classified correctly.
    `eigencam_sign` as for every other map of the protocol (`eigencam_no_sign`).
    """
    smoothed = explain(model, x, maps.method, maps.labels, batch_size, eigencam_sign, aug_smooth=True)
    meta = maps.meta | {"target": "true", "aug_smooth": True, "zero_map_mark": ZERO_MAP_MARK}
    return replace(maps, maps=mark_zero_maps(smoothed.float()), targets=maps.labels, meta=meta)


def _check(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(maps (N, HW) float64, object (N, HW) bool, has_mask (N,) bool) of maps and int8 masks (-1 everywhere: no mask)."""
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(
            f"maps and masks must have the same shape (N, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    flat, mask = maps.flatten(1).double(), masks.flatten(1)
    return flat, mask > 0, (mask >= 0).any(dim=1)


def quantus_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """quantus 0.6 PointingGame (N,): 1.0 if any pixel attaining the map's maximum lies in the mask, else 0.0.

    As quantus scores it: an empty mask counts as a hit (quantus writes NaN into a boolean
    array, which makes it True). NaN only for an image without a mask (-1 everywhere).
    quantus first divides the batch by its maximum, which moves no maximum.
    """
    flat, inside, has_mask = _check(maps, masks)
    hit = ((flat == flat.amax(dim=1, keepdim=True)) & inside).any(dim=1) | ~inside.any(dim=1)
    return hit.double().masked_fill(~has_mask, float("nan"))


def quantus_attribution_localisation(maps: Tensor, masks: Tensor) -> Tensor:
    """quantus 0.6 AttributionLocalisation (N,) with its defaults: sum of |map| in the mask / (sum of |map| + 1e-9).

    NaN for an empty mask and an image without a mask (quantus's other NaN, a share above 1,
    cannot happen once the map is made non-negative). quantus first divides the batch by its largest value, which only rescales the 1e-9:
    the authors' maps lie in [0, 1], so it is taken as 1 here.
    """
    flat, inside, has_mask = _check(maps, masks)
    flat = flat.abs()
    share = (flat * inside).sum(dim=1) / (flat.sum(dim=1) + LOCALISATION_OFFSET)
    undefined = ~has_mask | ~inside.any(dim=1)
    return share.masked_fill(undefined, float("nan"))


def authors_coherence_scores(coherence_maps: ExplanationSet, masks: Tensor) -> dict[str, Tensor]:
    """Pointing Game and Attribution Localisation as the authors scored them: on every image, with quantus's rules."""
    maps = coherence_maps.maps.float()
    return {
        "pointing_game": quantus_pointing_game(maps, masks),
        "attribution_localisation": quantus_attribution_localisation(maps, masks),
    }
