"""F-Fidelity (Zheng et al., ICLR 2025): faithfulness scored on a model fine-tuned to the removal itself.

Why. Pixel Flipping (`metrics.pixel_flipping`) replaces the best-ranked pixels by a baseline
and watches the target's probability fall. The flipped images are out of the training
distribution (OoD), so the score mixes two things: whether the map found the evidence, and
whether the model's softmax survives broken images at all. The paper reproduced here notes
that SupCon models may look more faithful only because they keep a more reliable softmax on
such images. ROAR removes the OoD gap by retraining on images masked *by the explanations*,
which leaks the explanations into the model it then scores them with. F-Fidelity instead

1. fine-tunes a copy of the classifier with explanation-agnostic random masking
   (`random_removal_masks`, `fine_tune_masked`): every training image loses a uniformly
   random subset of its pixels to the removal baseline, the masked fraction uniform on
   [0, beta], under the ordinary cross-entropy on the true labels. Removing up to beta of the
   pixels is then in-distribution for every model alike, and no explainer is involved;
2. scores a map on that model with a stochastic removal (`f_fidelity`) that stays inside the
   fine-tuning distribution: for an explanation size s, a random alpha share of the s*H*W
   top-ranked pixels (FFid+) or of the s*H*W bottom-ranked pixels (FFid-) is removed, never
   more than beta*H*W pixels, and the drop of the target's score is averaged over n_samples
   such draws.

Both losses' models are thus probed on inputs they have been taught to read: a drop now
says the removed pixels mattered, not that the model panics on masks. FFid+ (higher is more
faithful): removing part of what the map ranks first hurts. FFid- (lower is more faithful):
removing part of what it ranks last does not.

Definitions followed (FFid+/FFid- as the paper names them, details from the authors' public
CIFAR code): FFid+(x, s) = score(x) - (1/N) sum_i score(x with R_i removed), R_i uniform random
subsets of the k = round(s*H*W) top-ranked pixels, each of size m = round(min(alpha*k,
beta*H*W)) (at least 1); FFid-(x, s) the same with the k bottom-ranked pixels, as the
authors' CIFAR evaluation (its LeRF branch) does. The paper writes FFid- as removal from the
complement of the top-s explanation, i.e. the bottom (1 - s)*H*W pixels: the same sets,
indexed by 1 - s. A pixel is removed in all channels. An image's FFid+ and FFid- are the
means of its curves over the explanation sizes, as the paper's tables average over sparsity
levels. Defaults are the authors': alpha = 0.5, beta = 0.1, N = 50 samples; they sweep s
from about 5% to 100% in 5% steps, the default here is s = 0.1..0.5 (`DEFAULT_FRACTIONS`)
to bound the cost (2 * S * N forward passes per image).

Choices and simplifications, each deliberate:
- Score: the target's softmax probability (a probability drop, as Pixel Flipping here);
  the paper's tables use the label score 1[argmax = y], available as `score="label"`.
- Exact counts: the authors' code removes each pixel of the ranked set independently with
  probability min(alpha, beta*H*W/k); here exactly m pixels are drawn without replacement.
  Same expected count, less variance, and never more than beta*H*W pixels, so every
  evaluation input lies in the support of the fine-tuning masks.
- Fine-tuning fraction uniform on [0, beta] (random masking up to the ceiling beta); the
  authors' public script removes exactly beta of the pixels of every image. Uniform also
  trains the evaluation's smaller removals. Pixels, not patches, as the authors' CIFAR code.
- Optimiser: SGD with momentum for a fixed budget of steps; the authors fine-tune with their
  training script (Adam, lr 1e-4, weight decay 1e-4, batch 128, up to 100 epochs, best
  validation accuracy kept).
- Which model the maps explain is the caller's choice: the authors explain the fine-tuned
  model itself; maps of the original model approximate that while the budget is small.
- Ties in a map are ranked in raster order (stable sort), as in Pixel Flipping.
- The evaluation's draws are keyed by (a seed taken once from `generator`, image, direction,
  size, sample) through SplitMix64, so the scores do not depend on `batch_size`.
All-zero maps rank nothing and get NaN rows (see `metrics.zero_maps`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clxai_utils.core.seeding import splitmix64
from clxai_utils.core.validate import check_choice, check_number, check_positive, check_positive_int
from clxai_utils.evaluate.metrics import Model, _attribution_rank, _check_maps, zero_maps

#: Share of the ranked set removed per draw (the paper's alpha).
DEFAULT_ALPHA = 0.5
#: Ceiling of the removed fraction, in fine-tuning and in evaluation (the paper's beta).
DEFAULT_BETA = 0.1
#: Random removals averaged per image and explanation size (the paper's N).
DEFAULT_SAMPLES = 50
#: Explanation sizes s (fractions of the pixels in the ranked set).
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
SCORES = ("probability", "label")
_DIRECTIONS = 2  # 0: top-ranked set (FFid+), 1: bottom-ranked set (FFid-)
_NEVER = torch.iinfo(torch.int64).max  # sort key of a pixel outside the ranked set


# ----------------------------------------------------------------------------- checks


def _check_unit_fraction(name: str, value: Any) -> float:
    """`value` as a float in (0, 1]: a share of the pixels that removes something."""
    number = check_number(name, value)
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return number


def _check_fractions(fractions: Iterable[float]) -> tuple[float, ...]:
    """A non-empty sequence of explanation sizes, each in (0, 1]."""
    values = tuple(fractions)
    if not values:
        raise ValueError("fractions must hold at least one explanation size in (0, 1], got none")
    return tuple(_check_unit_fraction("fractions", value) for value in values)


# ------------------------------------------------------------------------- random masks


def _choose(keys: Tensor, counts: Tensor) -> Tensor:
    """Bool (B, P): in row b the `counts[b]` positions with the smallest keys.

    Keys are random, so this is a uniform subset of exactly that size; positions keyed
    `_NEVER` come last, which confines the choice to the others.
    """
    order = torch.argsort(keys, dim=1)
    positions = torch.arange(keys.shape[1], device=keys.device).expand_as(order)
    place = torch.empty_like(order).scatter_(1, order, positions)
    return place < counts.to(keys.device)[:, None]


def random_removal_masks(n: int, shape: Sequence[int], beta: float, generator: torch.Generator) -> Tensor:
    """Fine-tuning masks, bool (n, H, W): True = removed; per image round(u * beta * H*W) pixels, u ~ U(0, 1).

    The pixels are a uniform random subset, so the masks know nothing of any explanation.
    Draw order (fixed, tests rely on it): u (n,), then the pixel keys (n, H*W), both from
    `generator` on its device; the masks come back there.
    """
    n = check_positive_int("n", n)
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)}")
    height, width = (check_positive_int("shape", side) for side in shape)
    beta = _check_unit_fraction("beta", beta)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    pixels = height * width
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
    keys = torch.rand(n, pixels, generator=generator, device=generator.device)
    counts = torch.round(u * beta * pixels).long()
    return _choose(keys, counts).view(n, height, width)


def _remove(x: Tensor, removed: Tensor, baseline: Tensor) -> Tensor:
    """`x` (B, C, H, W) with the pixels where `removed` (B, H, W) is True set to `baseline` (C,)."""
    fill = baseline.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return torch.where(removed.to(x.device)[:, None], fill, x)


# --------------------------------------------------------------------------- fine-tuning


def _steps_of(batches: Iterable[tuple[Tensor, Tensor]], steps: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Exactly `steps` batches, starting `batches` over as often as needed (a list, a DataLoader)."""
    done = 0
    while True:
        before = done
        for batch in batches:
            yield batch
            done += 1
            if done == steps:
                return
        if done == before:
            raise ValueError(
                f"batches ran out after {done} of steps={steps} batches: pass something that can be "
                "iterated again (a list, a DataLoader), not a one-shot iterator"
            )


def fine_tune_masked(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    steps: int,
    baseline: Tensor,
    generator: torch.Generator,
    beta: float = DEFAULT_BETA,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A deep copy of `model` fine-tuned for `steps` SGD steps on randomly masked images; eval mode.

    `batches` yields (images, labels): images normalised as the model reads them, in the
    space of `baseline` (C,) (see `metrics.make_baseline`). Each image gets its own
    `random_removal_masks` draw. Every parameter of the copy trains, backbone included and
    also for SupCon/triplet (whose backbone was frozen under the probe): F-Fidelity adapts
    the classifier as a black box to the removal distribution, and masked images shift the
    features and BatchNorm statistics of every layer, not only the head's input. BatchNorm
    runs in train mode during fine-tuning (its running statistics learn the masked inputs),
    in eval mode afterwards. `model` itself is never changed. The copy lives on `device`
    (None: where `model`'s parameters are). Deterministic given the generator's state.
    """
    steps = check_positive_int("steps", steps)
    lr = check_positive("lr", lr)
    momentum = check_number("momentum", momentum, 0.0, 1.0)
    weight_decay = check_number("weight_decay", weight_decay, 0.0)
    beta = _check_unit_fraction("beta", beta)
    tuned = copy.deepcopy(model)
    if device is not None:
        tuned.to(device)
    home = next(tuned.parameters()).device
    tuned.requires_grad_(True).train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for images, labels in _steps_of(batches, steps):
        images, labels = images.to(home), labels.to(home)
        removed = random_removal_masks(len(images), images.shape[-2:], beta, generator)
        loss = F.cross_entropy(tuned(_remove(images, removed, baseline)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return tuned.eval()


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class FFidelityResult:
    """F-Fidelity per image (NaN rows for zero maps) and the curves they average."""

    ffid_plus: Tensor  # (N,) mean of plus_curve: higher = removing the top-ranked pixels hurts more
    ffid_minus: Tensor  # (N,) mean of minus_curve: lower = removing the bottom-ranked pixels hurts less
    plus_curve: Tensor  # (N, S) score(x) - mean score with part of the top k_s pixels removed
    minus_curve: Tensor  # (N, S) the same for the bottom k_s pixels
    intact: Tensor  # (N,) score of the intact image on the fine-tuned model
    fractions: Tensor  # (S,) explanation sizes s
    removed: Tensor  # (S,) pixels removed per draw, m_s = round(min(alpha * k_s, beta * H*W))


def removal_plan(fractions: Sequence[float], pixels: int, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """(k, m) (S,): ranked-set size round(s * pixels) and pixels removed per draw, both at least 1."""
    sizes = [min(pixels, max(1, round(s * pixels))) for s in fractions]
    counts = [max(1, round(min(alpha * k, beta * pixels))) for k in sizes]
    return torch.tensor(sizes), torch.tensor(counts)


def _draw_keys(seed: int, copy_ids: Tensor, pixels: int) -> Tensor:
    """Random int64 keys (B, pixels), a function of (seed, copy id, pixel) only: SplitMix64 counters."""
    ids = copy_ids.cpu().numpy().astype(np.uint64)
    row = splitmix64(np.uint64(seed) ^ splitmix64(ids))
    keys = splitmix64(row[:, None] ^ np.arange(pixels, dtype=np.uint64)[None, :])
    return torch.from_numpy((keys >> np.uint64(1)).astype(np.int64))


def _readout(logits: Tensor, targets: Tensor, score: str) -> Tensor:
    """Float64 (B,): the target's softmax probability, or 1 where the target is the argmax."""
    if score == "label":
        return (logits.argmax(dim=1) == targets).double()
    return logits.double().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)


def _check_inputs(model: Model, x: Tensor, maps: Tensor, targets: Tensor, baseline: Tensor) -> None:
    """An eval-mode model; x (N, C, H, W), maps (N, H, W), targets (N,) long and baseline (C,) that agree."""
    if getattr(model, "training", False):
        raise ValueError("model_ft must be in eval mode: batch statistics would mix the masked copies")
    _check_maps(maps)
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    n, c, h, w = x.shape
    expected = {"maps": (maps.shape, (n, h, w)), "targets": (targets.shape, (n,)), "baseline": (baseline.shape, (c,))}
    for name, (got, want) in expected.items():
        if tuple(got) != want:
            raise ValueError(f"{name} must have shape {want} to match x {tuple(x.shape)}, got {tuple(got)}")
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be a LongTensor, got {targets.dtype}")


@dataclass(frozen=True)
class _Draws:
    """How one call draws its removals: the (k, m) plan, samples per point, key seed, copies per pass, read-out."""

    plan: tuple[Tensor, Tensor]
    n_samples: int
    seed: int
    chunk: int
    score: str


def _mean_scores(
    model: Model, x: Tensor, rank: Tensor, targets: Tensor, baseline: Tensor, image_ids: Tensor, draws: _Draws
) -> Tensor:
    """Mean score (n, 2, S) over the draws; direction 0 = top-ranked set, 1 = bottom-ranked set.

    Copy (image, direction, size, sample) is built on the fly from the rank and its keys,
    at most `draws.chunk` copies per forward pass, so memory stays O(chunk) images.
    `image_ids` key each image's draws by its place in the caller's batch.
    """
    n_samples, chunk = draws.n_samples, draws.chunk
    sizes, counts = (t.to(x.device) for t in draws.plan)
    n, _, h, w = x.shape
    per_image = _DIRECTIONS * len(sizes) * n_samples
    total = torch.zeros(n * _DIRECTIONS * len(sizes), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for start in range(0, n * per_image, chunk):
            job = torch.arange(start, min(start + chunk, n * per_image), device=x.device)
            image, point = job // per_image, job % per_image // n_samples
            direction, size = point // len(sizes), point % len(sizes)
            ids = (image_ids[image] * per_image + job % per_image).cpu()
            ranked = rank[image]
            inside = torch.where(
                direction[:, None] == 0, ranked < sizes[size, None], ranked >= h * w - sizes[size, None]
            )
            keys = _draw_keys(draws.seed, ids, h * w).to(x.device).masked_fill_(~inside, _NEVER)
            removed = _choose(keys, counts[size]).view(-1, h, w)
            logits = model(_remove(x[image], removed, baseline))
            total.index_add_(0, job // n_samples, _readout(logits, targets[image], draws.score))
    return (total / n_samples).view(n, _DIRECTIONS, len(sizes))


def _intact_scores(model: Model, x: Tensor, targets: Tensor, chunk: int, score: str) -> Tensor:
    """Score (n,) of the intact images, `chunk` at a time."""
    with torch.no_grad():
        parts = [
            _readout(model(x[start : start + chunk]), targets[start : start + chunk], score)
            for start in range(0, len(x), chunk)
        ]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64, device=x.device)


def f_fidelity(
    model_ft: Model,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    baseline: Tensor,
    generator: torch.Generator,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    n_samples: int = DEFAULT_SAMPLES,
    batch_size: int | None = None,
    score: str = "probability",
) -> FFidelityResult:
    """FFid+ and FFid- (N,) of `maps` on the fine-tuned `model_ft` (see the module docstring).

    `model_ft` should come from `fine_tune_masked` with the same `beta` and `baseline`, in
    eval mode; `targets` are the classes the maps explain. For every explanation size s in
    `fractions`, `n_samples` draws remove m_s random pixels among the top-ranked (FFid+) or
    bottom-ranked (FFid-) k_s pixels; the curves hold score(x) minus the mean score of the
    draws. `batch_size` bounds the copies per forward pass (None: one image's copies, 2 *
    S * n_samples). One seed is taken from `generator` per call.
    """
    _check_inputs(model_ft, x, maps, targets, baseline)
    fractions = _check_fractions(fractions)
    alpha = _check_unit_fraction("alpha", alpha)
    beta = _check_unit_fraction("beta", beta)
    n_samples = check_positive_int("n_samples", n_samples)
    score = check_choice("score", score, SCORES)
    n, _, h, w = x.shape
    per_image = _DIRECTIONS * len(fractions) * n_samples
    chunk = per_image if batch_size is None else check_positive_int("batch_size", batch_size)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    draws = _Draws(removal_plan(fractions, h * w, alpha, beta), n_samples, seed, chunk, score)

    curves = torch.full((n, _DIRECTIONS, len(fractions)), float("nan"), dtype=torch.float64, device=x.device)
    intact = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    keep = torch.nonzero(~zero_maps(maps)).squeeze(1).to(x.device)
    if keep.numel():
        kept_x, kept_targets = x[keep], targets.to(x.device)[keep]
        intact[keep] = _intact_scores(model_ft, kept_x, kept_targets, chunk, score)
        rank = _attribution_rank(maps.to(x.device)[keep])
        mean = _mean_scores(model_ft, kept_x, rank, kept_targets, baseline, keep, draws)
        curves[keep] = intact[keep, None, None] - mean
    plus, minus = curves.unbind(dim=1)
    return FFidelityResult(
        ffid_plus=plus.mean(dim=1),
        ffid_minus=minus.mean(dim=1),
        plus_curve=plus,
        minus_curve=minus,
        intact=intact,
        fractions=torch.tensor(fractions, dtype=torch.float64),
        removed=draws.plan[1],
    )
