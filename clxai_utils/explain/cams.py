"""Saliency maps: Grad-CAM (pytorch-grad-cam) and a batched, sign-fixed Eigen-CAM.

The explained model is duck-typed: `model(x)` returns logits (N, C), `model.target_layer`
is the module whose (N, K, u, v) output is explained (the last block of layer4) and
`model.num_classes` is C. Both methods return CPU float32 maps (N, H, W) in [0, 1] with the
same post-processing as pytorch-grad-cam: ReLU, per-map min-max on the u x v map,
bilinear upsampling to the input size, per-map min-max again (`postprocess_cam`). The
min-max hides magnitudes: maps are comparable within an image, not across images or
models. A map with no positive evidence stays all zero (never NaN); metrics must handle it.

Grad-CAM always receives explicit class targets: with `targets=None` the library explains
the argmax output, which on an embedding head is an embedding dimension, not a class.
`clxai_utils.explain.store` runs a whole split through `explain` and stores the maps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clxai_utils.core.registry import METHODS
from clxai_utils.core.validate import check_choice, check_positive_int

_EPS = 1e-7  # denominator offset of pytorch-grad-cam's `scale_cam_image`

POSTPROCESSING = (
    "ReLU; per-map min-max (x - min) / (1e-7 + max) on the u x v map; bilinear upsampling "
    "to the input size (half-pixel centres, as cv2.resize INTER_LINEAR); per-map min-max again"
)
EIGENCAM_SIGN_CONVENTION = (
    "projection on the first right-singular vector of the centred (uv x K) activations, "
    "oriented to correlate positively with the channel-mean activation map; exact ties "
    "fall back to |max| >= |min|"
)


# --------------------------------------------------------------------------- validation


def _check_images(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point image tensor, got {got}")
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    return x


def _check_class_indices(name: str, values: Any, n: int, num_classes: int) -> Tensor:
    """Require a LongTensor-like (n,) of class indices in [0, num_classes)."""
    if not isinstance(values, Tensor) or values.dtype == torch.bool or values.is_floating_point():
        got = values.dtype if isinstance(values, Tensor) else type(values).__name__
        raise TypeError(f"{name} must be an integer tensor of class indices, got {got}")
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(values.shape)}")
    if n and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got min {int(values.min())}, max {int(values.max())}")
    return values.long().cpu()


# --------------------------------------------------------------------------- model state


@contextlib.contextmanager
def _explanation_mode(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and frozen parameters inside the block; every flag restored afterwards.

    Eval mode makes maps independent of the batch (BatchNorm running statistics) and is
    what pytorch-grad-cam sets anyway. Freezing the parameters stops the CAM backward pass
    from computing weight gradients and filling `.grad`; Grad-CAM gets its gradient path
    from an input that requires grad instead. Flags are restored per module and per
    parameter, so a model with a frozen backbone in eval mode comes back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        yield next(model.parameters()).device
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grad_flags:
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- post-processing


def _minmax(maps: Tensor) -> Tensor:
    """Per-map (x - min) / (eps + max - min), exactly as `scale_cam_image`: zeros stay zeros."""
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (_EPS + maps.amax(dim=(-2, -1), keepdim=True))


def postprocess_cam(cams: Tensor, size: tuple[int, int]) -> Tensor:
    """pytorch-grad-cam's post-processing of raw (N, u, v) CAMs to (N, H, W) maps in [0, 1].

    ReLU, min-max, bilinear upsampling, min-max, as `BaseCAM` does for one target layer.
    torch's bilinear mode with `align_corners=False` uses the half-pixel centres and edge
    clamping of `cv2.resize(..., INTER_LINEAR)`; the two agree to float32 rounding.
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape (N, u, v), got {tuple(cams.shape)}")
    scaled = _minmax(cams.float().clamp_min(0))
    upsampled = F.interpolate(scaled[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return _minmax(upsampled[:, 0])


# --------------------------------------------------------------------------- Grad-CAM


def grad_cam(model: nn.Module, x: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """Grad-CAM maps (N, H, W) for class `targets[i]` of image `x[i]`, via pytorch-grad-cam.

    One `GradCAM` object serves every chunk of `batch_size` images (each new object adds
    hooks) and its hooks are released in `finally`, not by `with GradCAM(...)`, whose
    `__exit__` swallows IndexError. The input is given `requires_grad`, so the target
    layer's output carries a gradient even when the backbone is frozen (the library would
    otherwise find no gradient, or fail in `backward` if nothing requires grad).
    The library calls `model.zero_grad()`: any `.grad` on the parameters is cleared.
    """
    # Imported here: pytorch-grad-cam loads torchvision and torch._dynamo (5-10 s), which only the
    # notebooks that compute Grad-CAM maps (05, 07) need.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = _check_images(x)
    num_classes = cast(int, model.num_classes)  # duck-typed model: see the module docstring
    targets = _check_class_indices("targets", targets, len(x), num_classes)
    batch_size = check_positive_int("batch_size", batch_size)
    with _explanation_mode(model):
        cam = GradCAM(model=model, target_layers=[model.target_layer])
        try:
            maps = [
                torch.from_numpy(
                    cam(
                        input_tensor=xb.detach().requires_grad_(True),
                        targets=[ClassifierOutputTarget(t) for t in tb.tolist()],
                    )
                )
                for xb, tb in zip(x.split(batch_size), targets.split(batch_size))
            ]
        finally:
            cam.activations_and_grads.release()
    return torch.cat(maps)


# --------------------------------------------------------------------------- Eigen-CAM


def _oriented_projection(activations: Tensor, sign_rule: bool = True) -> Tensor:
    """Raw Eigen-CAM (B, u, v): projection of the centred (uv x K) activations on V[:, 0].

    Sign convention: the SVD fixes V[:, 0] only up to sign (LAPACK builds may return either),
    so each projection p is flipped to correlate positively with the channel-mean map m
    (the map uniform channel weights would give). The centred p has zero mean, so
    <p, m> = (s_1^2 / K) * sum_k V[k, 0]: the axis is oriented so that moving along it
    increases the total feature activation, i.e. the map highlights where the (ReLU)
    features fire rather than where they are silent. Unlike "flip if |min| > |max|" it does
    not depend on the skewness of p. The rule uses no class and stays class-agnostic.
    Exact ties (<p, m> = 0) fall back to |max| >= |min|. `sign_rule=False` gives the
    authors' maps instead (`_library_projection`; protocol switch `eigencam_no_sign`).
    """
    if not sign_rule:
        return _library_projection(activations)
    b, _, u, v = activations.shape
    a = activations.flatten(2).transpose(1, 2).double()  # (B, uv, K)
    centred = a - a.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    proj = (centred @ vh[:, 0, :, None])[..., 0]  # (B, uv)
    score = (proj * a.mean(dim=2)).sum(dim=1)
    score = torch.where(score == 0, proj.amax(dim=1) + proj.amin(dim=1), score)
    sign = torch.where(score < 0, -1.0, 1.0).to(proj)
    return (sign[:, None] * proj).reshape(b, u, v).float()


def _library_projection(activations: Tensor) -> Tensor:
    """Raw Eigen-CAM (B, u, v) exactly as pytorch-grad-cam's `get_2d_projection`, with no sign rule.

    Without a rule the sign is whatever the SVD routine returns, so only the same routine
    reproduces the authors' maps: numpy's float32 SVD with full matrices, as the library
    calls it, here on the whole batch at once (numpy runs the same LAPACK call per matrix).
    """
    b, k, u, v = activations.shape
    a = activations.detach().float().cpu().numpy().reshape(b, k, u * v).transpose(0, 2, 1)  # (B, uv, K)
    centred = a - a.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=True)
    proj = np.einsum("bnk,bk->bn", centred, vt[:, 0, :]).astype(np.float32)
    return torch.from_numpy(proj.reshape(b, u, v)).to(activations.device)


def eigen_cam(model: nn.Module, x: Tensor, batch_size: int, sign_rule: bool = True) -> Tensor:
    """Class-agnostic Eigen-CAM maps (N, H, W) with a fixed sign (`EIGENCAM_SIGN_CONVENTION`).

    Activations come from a forward hook without gradients; the SVD runs batched in torch
    on the model's device, in float64 so that near-equal singular values are separated
    as reliably as numpy's (which pytorch-grad-cam uses, one image at a time).
    `sign_rule=False` leaves the sign as the SVD returns it (`_oriented_projection`).
    """
    x = _check_images(x)
    batch_size = check_positive_int("batch_size", batch_size)
    captured: list[Tensor] = []
    target_layer = cast(nn.Module, model.target_layer)  # duck-typed model: see the module docstring
    handle = target_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    maps = []
    try:
        with _explanation_mode(model) as device, torch.no_grad():
            for xb in x.split(batch_size):
                model(xb.to(device))
                activations = captured.pop()
                if activations.ndim != 4:
                    raise ValueError(
                        "model.target_layer must output (N, K, u, v) feature maps, got shape "
                        f"{tuple(activations.shape)}"
                    )
                maps.append(
                    postprocess_cam(_oriented_projection(activations, sign_rule), (x.shape[-2], x.shape[-1])).cpu()
                )
    finally:
        handle.remove()
    return torch.cat(maps)


#: pytorch-grad-cam's test-time augmentations for `aug_smooth` (ttach's HorizontalFlip x Multiply([0.9, 1, 1.1])):
#: (mirror the image, factor it is multiplied by).
AUG_SMOOTH_TRANSFORMS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)
)


def augmentation_smoothed(maps_of: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The mean of the maps of x's augmented copies (`AUG_SMOOTH_TRANSFORMS`), as pytorch-grad-cam's `aug_smooth`.

    Each copy's maps are complete (ReLU, min-max, upsampling, min-max) and mirrored back
    before the mean, which is not normalised again: where the copies disagree, a map's
    maximum stays below 1. Every copy is a whole batch: the loop runs over the six copies.
    """
    maps = []
    for flip, factor in AUG_SMOOTH_TRANSFORMS:
        augmented = x * factor
        copy = maps_of(augmented.flip(-1) if flip else augmented)
        maps.append(copy.flip(-1) if flip else copy)
    return torch.stack(maps).mean(dim=0)


def explain(
    model: nn.Module,
    x: Tensor,
    method: str,
    targets: Tensor | None,
    batch_size: int,
    eigencam_sign: bool = True,
    aug_smooth: bool = False,
) -> Tensor:
    """Maps (N, H, W) by `method` in METHODS; Eigen-CAM is class-agnostic and ignores `targets`.

    `eigencam_sign=False` drops Eigen-CAM's sign rule (the authors' maps); Grad-CAM ignores it.
    `aug_smooth=True` averages the maps of six augmented copies (`augmentation_smoothed`),
    as the authors' coherence did (protocol switch `authors_coherence`).
    """
    check_choice("method", method, METHODS)
    if method == "gradcam":
        if targets is None:
            raise ValueError("targets must be given for method 'gradcam' (explicit classes, never argmax)")
        maps_of = partial(grad_cam, model, targets=targets, batch_size=batch_size)
    else:
        maps_of = partial(eigen_cam, model, batch_size=batch_size, sign_rule=eigencam_sign)
    return augmentation_smoothed(maps_of, x) if aug_smooth else maps_of(x)
