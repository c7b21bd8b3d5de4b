"""Batched data augmentation with per-sample random parameters.

Why not torchvision: its transforms draw one set of parameters per call, so a batch has to
be augmented image by image (about 1 ms of CPU time per image per view for the SupCon
pipeline, colour jitter with hue being the slowest; several times more wall time on a busy
2-core machine). Here every op works on a whole batch
(N, 3, H, W) at once, with one parameter set per sample drawn from an explicit
`torch.Generator`, so a run is reproducible and independent of the global RNG.

Each op is split into `draw_*` (random parameters; drawn on the generator's device, then
moved to the images' device) and `apply_*` (deterministic, given the parameters). The apply
functions use torchvision's formulas and are tested against torchvision's functional ops.
Images are floats in [0, 1]; uint8 input is converted with /255. Values outside [0, 1]
are not checked for (the colour ops clamp to [0, 1] like torchvision).

Differences from torchvision's per-image transforms, by design:
- `random_resized_crop` resizes bilinearly without antialiasing. For CIFAR (32x32 crops
  resized to 32x32) every crop is up-sampled or kept, where antialiasing changes nothing;
  for down-scaling (e.g. ImageNet crops to 224) torchvision's default antialias=True would
  low-pass filter first, and this function would alias.
- `color_jitter` applies the four ops in an independent random order per sample (torchvision
  draws one order per call, i.e. per image in a per-image pipeline: the same distribution).
- Brightness/contrast/saturation strengths are single floats (ranges [max(0, 1-s), 1+s]),
  not torchvision's optional (min, max) tuples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.core.validate import check_choice, check_number, check_positive_int

AugmentFn = Callable[[Tensor, torch.Generator], Tensor]

GRAYSCALE_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision
_RESIZED_CROP_TRIES = 10  # torchvision's number of attempts before the centre-crop fallback


# ----------------------------------------------------------------------------- validation


def _check_generator(generator: torch.Generator) -> None:
    """Insist on an explicit generator: the global RNG would make runs depend on other code."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def check_range(name: str, value: Sequence[float], low: float, high: float = math.inf) -> tuple[float, float]:
    """Validate a (min, max) pair with low < min <= max <= high."""
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    lo, hi = (check_number(name, v) for v in value)
    if not (low < lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} < min <= max <= {high}, got {tuple(value)}")
    return lo, hi


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Accept an int (square output) or an (height, width) pair of positive ints."""
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)
    ):
        raise ValueError(f"size must be a positive int or an (height, width) pair of them, got {size!r}")
    return pair[0], pair[1]


def to_float_images(x: Tensor, rgb: bool = False) -> Tensor:
    """Return `x` (N, C, H, W) as floats in [0, 1]: uint8 is divided by 255, floats pass as is."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (N, C, H, W), got {got}")
    if rgb and x.shape[1] != 3:
        raise ValueError(f"x must have 3 (RGB) channels, got {x.shape[1]}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"x must be uint8 or floating point, got {x.dtype}")
    return x


def _uniform(n: int, low: float, high: float, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """n draws of U[low, high) from `generator`, on the generator's device."""
    u = torch.rand(n, generator=generator, device=generator.device, dtype=dtype)
    return low + (high - low) * u


def _randint_below(upper: Tensor, generator: torch.Generator) -> Tensor:
    """Per-element uniform integer in [0, upper) for an int64 tensor `upper` >= 1."""
    u = torch.rand(upper.shape, generator=generator, device=generator.device, dtype=torch.float64)
    return (u * upper).long().clamp_(max=upper - 1)


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """Reshape per-sample values (N,) to broadcast against images (N, C, H, W)."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# ------------------------------------------------------------------ crop with zero padding


def draw_crop_offsets(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Top and left offsets (N,) into the padded image, each uniform on {0, ..., 2 * padding}."""
    full = torch.full((n,), 2 * padding + 1, dtype=torch.long, device=generator.device)
    return _randint_below(full, generator), _randint_below(full, generator)


def apply_crop_with_padding(x: Tensor, top: Tensor, left: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by `padding` and cut an H x W window at (top[n], left[n]).

    One gather on the flattened padded images: output pixel (r, c) of sample n reads
    padded pixel (top[n] + r, left[n] + c).
    """
    x = to_float_images(x)
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    width_p = w + 2 * padding
    rows = top.to(x.device).view(n, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
    cols = left.to(x.device).view(n, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
    flat_index = (rows * width_p + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, flat_index).view(n, c, h, w)


def random_crop_with_padding(x: Tensor, padding: int = 4, *, generator: torch.Generator) -> Tensor:
    """Like torchvision RandomCrop(size=(H, W), padding=padding, fill=0), per sample."""
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    _check_generator(generator)
    x = to_float_images(x)
    top, left = draw_crop_offsets(x.shape[0], padding, generator)
    return apply_crop_with_padding(x, top, left, padding)


# ------------------------------------------------------------------------ horizontal flip


def draw_flags(n: int, p: float, generator: torch.Generator) -> Tensor:
    """Boolean (N,) mask, each True with probability p (flip, grayscale, whether to jitter)."""
    return torch.rand(n, generator=generator, device=generator.device) < p


def apply_horizontal_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples where `flip` (N,) is True."""
    x = to_float_images(x)
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def random_horizontal_flip(x: Tensor, p: float = 0.5, *, generator: torch.Generator) -> Tensor:
    """Like torchvision RandomHorizontalFlip(p), per sample."""
    p = check_number("p", p, 0.0, 1.0)
    _check_generator(generator)
    x = to_float_images(x)
    return apply_horizontal_flip(x, draw_flags(x.shape[0], p, generator))


# ------------------------------------------------------------------------- resized crop


def draw_resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Boxes (N, 4) int64 as (top, left, box_height, box_width), torchvision's sampling.

    torchvision tries up to 10 (area fraction ~ U[scale], log aspect ~ U[log ratio]) draws
    and keeps the first that fits, else falls back to the largest centre crop within
    `ratio`. Here all 10 candidates per sample are drawn at once and the first valid one
    is taken. Sizes are computed in float64 and rounded half-to-even like Python's round.
    """
    area = _uniform(n * _RESIZED_CROP_TRIES, *scale, generator, torch.float64) * (height * width)
    log_aspect = _uniform(n * _RESIZED_CROP_TRIES, math.log(ratio[0]), math.log(ratio[1]), generator, torch.float64)
    aspect = log_aspect.exp()
    box_w = (area * aspect).sqrt().round().long().view(n, _RESIZED_CROP_TRIES)
    box_h = (area / aspect).sqrt().round().long().view(n, _RESIZED_CROP_TRIES)
    valid = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # index of the first valid try (0 if none)
    found = valid.any(dim=1)
    box_h = box_h.gather(1, first).squeeze(1)
    box_w = box_w.gather(1, first).squeeze(1)
    top = _randint_below((height - box_h + 1).clamp(min=1), generator)
    left = _randint_below((width - box_w + 1).clamp(min=1), generator)

    fb_h, fb_w = _fallback_box(height, width, ratio)
    fallback = torch.tensor([(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w], device=generator.device)
    boxes = torch.stack([top, left, box_h, box_w], dim=1)
    return torch.where(found.view(n, 1), boxes, fallback.view(1, 4))


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return int(round(width / ratio[0])), width
    if in_ratio > ratio[1]:
        return height, int(round(height * ratio[1]))
    return height, width


def apply_resized_crop(x: Tensor, boxes: Tensor, size: int | Sequence[int]) -> Tensor:
    """Cut each sample's box (top, left, h, w) and resize it bilinearly to `size`, no antialias.

    Equals F.interpolate(crop, size, mode="bilinear", align_corners=False) on each crop:
    output pixel u samples crop coordinate (u + 0.5) * w / out_w - 0.5, clamped to the crop
    (interpolate replicates the crop's own border, not the neighbouring pixels of the full
    image). The clamped pixel coordinates are fed to one grid_sample over the batch.
    """
    x = to_float_images(x)
    out_h, out_w = _check_size(size)
    n, _, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    top, left, box_h, box_w = boxes.unbind(dim=1)
    ys = _crop_sample_coords(top, box_h, out_h, height)  # (N, out_h), normalised to [-1, 1]
    xs = _crop_sample_coords(left, box_w, out_w, width)  # (N, out_w)
    grid = torch.stack(torch.broadcast_tensors(xs.view(n, 1, out_w), ys.view(n, out_h, 1)), dim=-1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_sample_coords(start: Tensor, length: Tensor, out: int, full: int) -> Tensor:
    """Sampling positions (N, out) along one axis, in grid_sample's align_corners=False units."""
    u = torch.arange(out, device=start.device, dtype=start.dtype).view(1, out)
    in_crop = ((u + 0.5) * (length / out).view(-1, 1) - 0.5).clamp(min=0.0)
    in_crop = torch.minimum(in_crop, (length - 1).view(-1, 1))
    pixel = start.view(-1, 1) + in_crop
    return (2.0 * pixel + 1.0) / full - 1.0


def random_resized_crop(
    x: Tensor,
    size: int | Sequence[int],
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
) -> Tensor:
    """Like torchvision RandomResizedCrop(size, scale, ratio, antialias=False), per sample."""
    _check_size(size)
    scale = check_range("scale", scale, 0.0, 1.0)
    ratio = check_range("ratio", ratio, 0.0)
    _check_generator(generator)
    x = to_float_images(x)
    boxes = draw_resized_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio, generator)
    return apply_resized_crop(x, boxes, size)


# ------------------------------------------------------------------------- colour ops


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W) with ITU-R 601-2 weights, as torchvision rgb_to_grayscale."""
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = GRAYSCALE_WEIGHTS
    return (r * wr + g * wg + b * wb).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] (torchvision's blend)."""
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale each sample by factor (N,) and clamp."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its grayscale image."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image."""
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by shift (N,) in turns (torchvision's range [-0.5, 0.5]) in the HSV hexcone.

    Hue in sixths, H6, from the usual max/min formulas (ties resolved R before G before B,
    as torchvision); the shifted image is then c = V - C * clip(min(k, 4 - k), 0, 1) with
    k = (n_c + H6 + 6 * shift) mod 6, n = (5, 3, 1) for (R, G, B), V = max and C = max - min
    (hue rotation keeps both). This closed form avoids branching on the hue sector and, with
    elementwise maximum/minimum instead of argmax, keeps the op cheap. Grey pixels (C = 0)
    come out unchanged whatever their (arbitrary) hue.
    """
    r, g, b = x.unbind(dim=1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    safe = chroma.clamp_min(torch.finfo(x.dtype).eps)  # |numerator| <= chroma, so no blow-up
    hue6 = torch.where(
        r == value,
        (g - b) / safe,
        torch.where(g == value, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue6 += 6.0 * _per_sample(shift, x).view(-1, 1, 1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(hue6.unsqueeze(1) + offsets, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * ramp


class JitterParams(NamedTuple):
    """Per-sample colour-jitter parameters; `order[n]` lists op indices (see JITTER_OPS)."""

    apply: Tensor  # (N,) bool: jitter this sample at all (probability p)
    order: Tensor  # (N, 4) int64: a permutation of 0..3 per sample
    brightness: Tensor  # (N,) factors
    contrast: Tensor
    saturation: Tensor
    hue: Tensor  # (N,) shifts


# Op index -> (function, parameter field, identity value meaning "skip", as torchvision's None).
JITTER_OPS: tuple[tuple[Callable[[Tensor, Tensor], Tensor], str, float], ...] = (
    (adjust_brightness, "brightness", 1.0),
    (adjust_contrast, "contrast", 1.0),
    (adjust_saturation, "saturation", 1.0),
    (adjust_hue, "hue", 0.0),
)


def draw_color_jitter(
    n: int, brightness: float, contrast: float, saturation: float, hue: float, p: float, generator: torch.Generator
) -> JitterParams:
    """Factors ~ U[max(0, 1-s), 1+s], hue ~ U[-hue, hue], a random op order, as torchvision."""
    order = torch.rand(n, 4, generator=generator, device=generator.device).argsort(dim=1)
    return JitterParams(
        apply=draw_flags(n, p, generator),
        order=order,
        brightness=_uniform(n, max(0.0, 1.0 - brightness), 1.0 + brightness, generator),
        contrast=_uniform(n, max(0.0, 1.0 - contrast), 1.0 + contrast, generator),
        saturation=_uniform(n, max(0.0, 1.0 - saturation), 1.0 + saturation, generator),
        hue=_uniform(n, -hue, hue, generator),
    )


def apply_color_jitter(x: Tensor, params: JitterParams) -> Tensor:
    """Apply the four ops in each sample's own order.

    At step k, op o runs on the subset of samples whose order[:, k] == o (16 batched calls,
    no loop over images); each sample goes through each op once. An op is skipped for a
    sample whose parameter is the identity, as torchvision skips an op whose range is 0.
    """
    x = to_float_images(x, rgb=True).clone()
    params = JitterParams(*(t.to(x.device) for t in params))
    for step in range(4):
        for op_index, (op, field, identity) in enumerate(JITTER_OPS):
            values = getattr(params, field)
            chosen = params.apply & (params.order[:, step] == op_index) & (values != identity)
            idx = chosen.nonzero().squeeze(1)
            if idx.numel():
                x[idx] = op(x[idx], values[idx])
    return x


def color_jitter(
    x: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    *,
    generator: torch.Generator,
) -> Tensor:
    """Like torchvision RandomApply([ColorJitter(b, c, s, h)], p), per sample."""
    brightness = check_number("brightness", brightness, 0.0)
    contrast = check_number("contrast", contrast, 0.0)
    saturation = check_number("saturation", saturation, 0.0)
    hue = check_number("hue", hue, 0.0, 0.5)
    p = check_number("p", p, 0.0, 1.0)
    _check_generator(generator)
    x = to_float_images(x, rgb=True)
    params = draw_color_jitter(x.shape[0], brightness, contrast, saturation, hue, p, generator)
    return apply_color_jitter(x, params)


def apply_grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """Replace the samples where `mask` (N,) is True by their luma, copied to 3 channels."""
    x = to_float_images(x, rgb=True)
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)


def random_grayscale(x: Tensor, p: float = 0.2, *, generator: torch.Generator) -> Tensor:
    """Like torchvision RandomGrayscale(p), per sample."""
    p = check_number("p", p, 0.0, 1.0)
    _check_generator(generator)
    x = to_float_images(x, rgb=True)
    return apply_grayscale(x, draw_flags(x.shape[0], p, generator))


# ------------------------------------------------------------------------- Gaussian blur


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels (N, kernel_size), one per sigma, as torchvision computes them."""
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    pdf = torch.exp(-0.5 * (x.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def apply_gaussian_blur(x: Tensor, sigma: Tensor, apply: Tensor, kernel_size: int) -> Tensor:
    """Blur the samples where `apply` is True with their own sigma: one separable, grouped convolution.

    Reflect padding, as torchvision's gaussian_blur; each (sample, channel) plane is a group
    of the convolution, so the whole batch is blurred in two calls.
    """
    x = to_float_images(x)
    n, c, h, w = x.shape
    kernels = gaussian_kernels(sigma.to(device=x.device, dtype=x.dtype), kernel_size).repeat_interleave(c, dim=0)
    pad = kernel_size // 2
    planes = x.reshape(1, n * c, h, w)
    planes = F.conv2d(F.pad(planes, (pad, pad, 0, 0), mode="reflect"), kernels.view(n * c, 1, 1, -1), groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, pad, pad), mode="reflect"), kernels.view(n * c, 1, -1, 1), groups=n * c)
    return torch.where(apply.to(x.device).view(-1, 1, 1, 1), planes.view(n, c, h, w), x)


def random_gaussian_blur(
    x: Tensor,
    kernel_size: int,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    *,
    generator: torch.Generator,
) -> Tensor:
    """Like torchvision RandomApply([GaussianBlur(kernel_size, sigma)], p), per sample."""
    kernel_size = check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    low, high = check_range("sigma", sigma, 0.0)
    p = check_number("p", p, 0.0, 1.0)
    _check_generator(generator)
    x = to_float_images(x)
    if kernel_size // 2 >= min(x.shape[-2:]):
        raise ValueError(f"kernel_size {kernel_size} is too large for {tuple(x.shape[-2:])} images (reflect padding)")
    return apply_gaussian_blur(
        x, _uniform(x.shape[0], low, high, generator), draw_flags(x.shape[0], p, generator), kernel_size
    )


# ------------------------------------------------------------------------- compositions


def no_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Identity (as floats in [0, 1]); draws nothing from `generator`."""
    _check_generator(generator)
    return to_float_images(x)


def ce_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """The paper's CIFAR CE augmentation: random crop with zero padding (4 pixels at 32 px: 1/8 of the side), flip."""
    x = random_crop_with_padding(x, padding=max(1, x.shape[-1] // 8), generator=generator)
    return random_horizontal_flip(x, p=0.5, generator=generator)


def supcon_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """The paper's CIFAR SupCon augmentation (docs/method.md, "Training"), output the input's size (32x32 for CIFAR).

    RandomResizedCrop(size, scale 0.2-1) -> flip -> ColorJitter(0.4, 0.4, 0.4, 0.1) with
    p = 0.8 -> grayscale with p = 0.2, in the authors' order.
    """
    x = random_resized_crop(x, tuple(x.shape[-2:]), scale=(0.2, 1.0), generator=generator)
    x = random_horizontal_flip(x, p=0.5, generator=generator)
    x = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, generator=generator)
    return random_grayscale(x, p=0.2, generator=generator)


def imagenet_supcon_colour(x: Tensor, generator: torch.Generator) -> Tensor:
    """The colour half of the paper's ImageNet-S50 SupCon augmentation, on crops already resized and flipped.

    ColorJitter(0.8, 0.8, 0.8, 0.2) with p = 0.8 -> grayscale with p = 0.2 -> Gaussian blur
    with p = 0.5, sigma in [0.1, 2], kernel 10 % of the side (odd); the crop and flip happen
    while decoding (`clxai_utils.data.stream`), where each image is at hand at full size.
    """
    x = color_jitter(x, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=generator)
    x = random_grayscale(x, p=0.2, generator=generator)
    kernel = max(3, int(0.1 * x.shape[-1]) // 2 * 2 + 1)
    return random_gaussian_blur(x, kernel, (0.1, 2.0), p=0.5, generator=generator)


def make_views(x: Tensor, augment: AugmentFn, generator: torch.Generator, n_views: int = 2) -> Tensor:
    """`n_views` independently augmented views per image, shape (N, n_views, C, H', W').

    The batch is repeated and augmented in one call, so the n_views * N parameter sets are
    independent draws and the work stays batched.
    """
    _check_generator(generator)
    check_positive_int("n_views", n_views)
    x = to_float_images(x)
    views = augment(torch.cat([x] * n_views), generator)
    return views.view(n_views, x.shape[0], *views.shape[1:]).transpose(0, 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel; uint8 input is first scaled to [0, 1]."""
    x = to_float_images(x)
    channels = x.shape[1]
    for name, values in (("mean", mean), ("std", std)):
        if not isinstance(values, Sequence) or len(values) != channels:
            raise ValueError(f"{name} must be a sequence of {channels} numbers (one per channel), got {values!r}")
    if not all(isinstance(s, (int, float)) and s > 0 for s in std):
        raise ValueError(f"std must hold numbers > 0, got {tuple(std)}")
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, channels, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, channels, 1, 1)
    return (x - m) / s


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Inverse of `normalize` (float images, not clamped): for showing model inputs."""
    channels = x.shape[1]
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, channels, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, channels, 1, 1)
    return x * s + m


AUGMENTATIONS: Mapping[str, AugmentFn] = MappingProxyType(
    {"none": no_augment, "ce": ce_augment, "supcon": supcon_augment}
)


def get_augment(name: str) -> AugmentFn:
    """The augmentation called `name` in AUGMENTATIONS (as named in configs)."""
    check_choice("augment", name, sorted(AUGMENTATIONS))
    return AUGMENTATIONS[name]
