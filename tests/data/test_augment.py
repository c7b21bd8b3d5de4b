"""Batched augmentations against torchvision's functional ops applied image by image."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from clxai_utils.data import augment as A

N = 24


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Random RGB images plus the hue edge cases: grey, black, white, ties, saturated."""
    x = torch.rand(N, 3, 32, 32, generator=gen(123))
    x[0] = 0.5  # grey everywhere
    x[1, :, :8] = 0.0  # black rows
    x[1, :, 8:16] = 1.0  # white rows
    x[2] = x[2].round()  # pure primaries / secondaries
    x[3, 1] = x[3, 0]  # R == G
    x[4, 2] = x[4, 1]  # G == B
    x[5, 2] = x[5, 0]  # R == B
    return x


def per_image(fn, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """torchvision reference: `fn(image, value)` applied in a loop over the batch."""
    return torch.stack([fn(img, float(v)) for img, v in zip(x, values)])


# ------------------------------------------------------------------ colour ops vs torchvision
@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high", "atol"),
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.0, 2.0, 1e-6),
        (A.adjust_contrast, TF.adjust_contrast, 0.0, 2.0, 1e-5),
        (A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0, 1e-5),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5, 1e-5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_colour_ops_match_torchvision(images, ours, theirs, low, high, atol):
    factors = torch.empty(N).uniform_(low, high, generator=gen(1))
    factors[:3] = torch.tensor([low, high, (low + high) / 2])  # range ends and identity-ish
    out = ours(images, factors)
    ref = per_image(theirs, images, factors)
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    assert out.min() >= 0 and out.max() <= 1  # clamped like torchvision


def test_hue_shift_of_primaries_by_hand():
    red_green_blue = torch.eye(3).view(3, 3, 1, 1)  # samples: pure R, pure G, pure B
    third = torch.full((3,), 1 / 3)
    shifted = A.adjust_hue(red_green_blue, third).view(3, 3)
    torch.testing.assert_close(shifted, torch.eye(3).roll(1, dims=1), atol=1e-6, rtol=0)  # R->G->B->R
    half_yellow = torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(A.adjust_hue(half_yellow, torch.tensor([0.5])).flatten(), torch.tensor([0.0, 0.0, 1.0]))


def test_grayscale_matches_torchvision(images):
    torch.testing.assert_close(A.rgb_to_grayscale(images), TF.rgb_to_grayscale(images), atol=1e-6, rtol=0)
    mask = torch.arange(N) % 3 == 0
    out = A.apply_grayscale(images, mask)
    expected = torch.where(mask.view(-1, 1, 1, 1), TF.rgb_to_grayscale(images, num_output_channels=3), images)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_color_jitter_follows_each_samples_order(images):
    """Each sample must equal torchvision's four ops applied in that sample's order."""
    params = A.draw_color_jitter(N, 0.4, 0.4, 0.4, 0.1, p=0.7, generator=gen(2))
    out = A.apply_color_jitter(images, params)
    tv_ops = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }
    names = [field for _, field, _ in A.JITTER_OPS]
    for n in range(N):
        expected = images[n]
        if params.apply[n]:
            for op_index in params.order[n].tolist():
                name = names[op_index]
                expected = tv_ops[name](expected, float(getattr(params, name)[n]))
        torch.testing.assert_close(out[n], expected, atol=2e-5, rtol=0)
    assert len(set(map(tuple, params.order.tolist()))) > 1  # orders really differ per sample
    assert not params.apply.all() and params.apply.any()


# ------------------------------------------------------------------ geometric ops vs torchvision
def test_crop_with_padding_matches_torchvision(images):
    top = torch.arange(N) % 9
    left = (torch.arange(N) * 5) % 9
    out = A.apply_crop_with_padding(images, top, left, padding=4)
    padded = TF.pad(images, [4], fill=0)
    ref = torch.stack([TF.crop(p, int(t), int(lf), 32, 32) for p, t, lf in zip(padded, top, left)])
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    centre = A.apply_crop_with_padding(images, torch.full((N,), 4), torch.full((N,), 4), padding=4)
    torch.testing.assert_close(centre, images, atol=0, rtol=0)


def test_horizontal_flip_matches_torch_flip(images):
    flip = torch.arange(N) % 2 == 1
    out = A.apply_horizontal_flip(images, flip)
    torch.testing.assert_close(out[flip], images[flip].flip(-1), atol=0, rtol=0)
    torch.testing.assert_close(out[~flip], images[~flip], atol=0, rtol=0)


def fixed_boxes() -> torch.Tensor:
    """Full image, corners, thin strips and random boxes, as (top, left, h, w)."""
    hand = [[0, 0, 32, 32], [0, 0, 7, 7], [25, 25, 7, 7], [3, 10, 32 - 3, 5], [10, 0, 1, 32], [4, 6, 20, 17]]
    random = A.draw_resized_crop_boxes(N - len(hand), 32, 32, (0.05, 1.0), (0.5, 2.0), gen(3))
    return torch.cat([torch.tensor(hand), random])


@pytest.mark.parametrize("size", [(32, 32), (20, 48), (8, 8)])
def test_resized_crop_matches_torchvision_without_antialias(images, size):
    boxes = fixed_boxes()
    out = A.apply_resized_crop(images, boxes, size)
    ref = torch.stack([TF.resized_crop(img, *b.tolist(), list(size), antialias=False) for img, b in zip(images, boxes)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_resized_crop_upsampling_also_matches_antialiased_torchvision(images):
    """CIFAR crops are never larger than the 32x32 output, so antialiasing changes nothing."""
    boxes = fixed_boxes()
    out = A.apply_resized_crop(images, boxes, 32)
    ref = torch.stack([TF.resized_crop(img, *b.tolist(), [32, 32], antialias=True) for img, b in zip(images, boxes)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ parameter distributions
def test_flip_and_grayscale_rates():
    flips = A.draw_flags(4000, 0.5, gen(4)).float().mean().item()
    grey = A.draw_flags(4000, 0.2, gen(5)).float().mean().item()
    assert abs(flips - 0.5) < 0.03  # 3.8 standard errors
    assert abs(grey - 0.2) < 0.025


def test_crop_offsets_uniform_on_0_to_2p():
    top, left = A.draw_crop_offsets(9000, 4, gen(6))
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert counts.numel() == 9 and counts.min() > 850 and counts.max() < 1150  # expected 1000 each


def test_resized_crop_boxes_follow_torchvision_sampling():
    boxes = A.draw_resized_crop_boxes(4000, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), gen(7))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).double() / 1024
    # Target areas are >= 0.2 * 1024 px; rounding each side to whole pixels can lose ~14 px.
    assert 0.18 <= area.min() < 0.22 and area.max() <= 1
    log_aspect = (w / h).double().log()
    assert log_aspect.abs().max() < 0.4 and abs(log_aspect.mean().item()) < 0.01  # log(4/3) = 0.29
    torch.manual_seed(7)
    rrc = T.RandomResizedCrop(32, scale=(0.2, 1.0))
    tv_boxes = [rrc.make_params([torch.zeros(3, 32, 32)]) for _ in range(4000)]
    tv_area = sum(q["height"] * q["width"] for q in tv_boxes) / (4000 * 1024)
    assert abs(area.mean().item() - tv_area) < 0.02  # standard error of the difference ~0.005


@pytest.mark.parametrize(("ratio", "expected"), [((3.0, 4.0), [10, 0, 11, 32]), ((0.25, 0.3), [0, 11, 32, 10])])
def test_resized_crop_fallback_is_torchvision_centre_crop(ratio, expected):
    """No candidate fits (>= 90% of the area at an extreme aspect): centre crop at the nearest ratio."""
    boxes = A.draw_resized_crop_boxes(5, 32, 32, (0.9, 1.0), ratio, gen(8))
    params = T.RandomResizedCrop(32, scale=(0.9, 1.0), ratio=ratio).make_params([torch.zeros(3, 32, 32)])
    assert [params["top"], params["left"], params["height"], params["width"]] == expected
    assert boxes.tolist() == [expected] * 5


def test_jitter_parameters_in_torchvision_ranges():
    params = A.draw_color_jitter(4000, 0.4, 0.3, 1.5, 0.1, p=0.8, generator=gen(9))
    for name, low, high in [
        ("brightness", 0.6, 1.4),
        ("contrast", 0.7, 1.3),
        ("saturation", 0.0, 2.5),
        ("hue", -0.1, 0.1),
    ]:
        values = getattr(params, name)
        assert values.min() >= low and values.max() <= high
        assert abs(values.mean().item() - (low + high) / 2) < 0.03 * (high - low)
    assert abs(params.apply.float().mean().item() - 0.8) < 0.025
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    first_counts = torch.bincount(params.order[:, 0], minlength=4)
    assert first_counts.min() > 850 and first_counts.max() < 1150


# ------------------------------------------------------------------ compositions, determinism
def test_same_seed_same_batch_and_global_rng_untouched(images):
    state = torch.get_rng_state()
    first = A.supcon_augment(images, gen(10))
    again = A.supcon_augment(images, gen(10))
    other = A.supcon_augment(images, gen(11))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(A.ce_augment(images, gen(12)), A.ce_augment(images, gen(12)), atol=0, rtol=0)


def test_uint8_input_is_scaled(images):
    as_uint8 = (images * 255).round().to(torch.uint8)
    scaled = as_uint8.float() / 255
    torch.testing.assert_close(A.ce_augment(as_uint8, gen(13)), A.ce_augment(scaled, gen(13)), atol=0, rtol=0)
    out = A.supcon_augment(as_uint8, gen(14))
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1


def test_ce_augment_is_a_shifted_and_maybe_flipped_copy(images):
    out = A.ce_augment(images, gen(15))
    padded = TF.pad(images, [4], fill=0)
    for n in range(N):
        windows = [TF.crop(padded[n], t, lf, 32, 32) for t in range(9) for lf in range(9)]
        candidates = windows + [w.flip(-1) for w in windows]
        assert any(torch.equal(out[n], c) for c in candidates)


def test_make_views_are_independent_draws(images):
    views = A.make_views(images, A.supcon_augment, gen(16))
    assert views.shape == (N, 2, 3, 32, 32)
    assert all(not torch.equal(views[n, 0], views[n, 1]) for n in range(N))
    stacked = A.supcon_augment(torch.cat([images, images]), gen(16))
    torch.testing.assert_close(views[:, 0], stacked[:N], atol=0, rtol=0)
    torch.testing.assert_close(views[:, 1], stacked[N:], atol=0, rtol=0)
    plain = A.make_views(images, A.get_augment("none"), gen(16))
    torch.testing.assert_close(plain[:, 1], images, atol=0, rtol=0)


def test_normalize_by_hand():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = A.normalize(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 2.0))
    expected = torch.tensor([-1.0, 0.0, 0.25]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(
        A.normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), (0, 0, 0), (1, 1, 1)), torch.ones(1, 3, 1, 1)
    )


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda x: A.random_horizontal_flip(x, p=1.5, generator=gen()), ValueError, "p"),
        (lambda x: A.random_grayscale(x, p=-0.1, generator=gen()), ValueError, "p"),
        (lambda x: A.color_jitter(x, p=2, generator=gen()), ValueError, "p"),
        (lambda x: A.color_jitter(x, hue=0.6, generator=gen()), ValueError, "hue"),
        (lambda x: A.color_jitter(x, brightness=-1, generator=gen()), ValueError, "brightness"),
        (lambda x: A.random_crop_with_padding(x, padding=-1, generator=gen()), ValueError, "padding"),
        (lambda x: A.random_resized_crop(x, 32, scale=(0.5, 0.2), generator=gen()), ValueError, "scale"),
        (lambda x: A.random_resized_crop(x, 32, scale=(0.0, 1.0), generator=gen()), ValueError, "scale"),
        (lambda x: A.random_resized_crop(x, 32, ratio=(2.0, 1.0), generator=gen()), ValueError, "ratio"),
        (lambda x: A.random_resized_crop(x, 0, generator=gen()), ValueError, "size"),
        (lambda x: A.random_horizontal_flip(x, generator=None), TypeError, "generator"),
        (lambda x: A.ce_augment(x[0], gen()), ValueError, "x"),
        (lambda x: A.supcon_augment(x.long(), gen()), TypeError, "x"),
        (lambda x: A.color_jitter(x[:, :1], generator=gen()), ValueError, "x"),
        (lambda x: A.normalize(x, (0.5,), (0.5,)), ValueError, "mean"),
        (lambda x: A.normalize(x, (0.5,) * 3, (0.5, 0.0, 0.5)), ValueError, "std"),
        (
            lambda x: A.get_augment("simclr"),
            ValueError,
            "augment='simclr' is not allowed; choose one of: ce, none, supcon",
        ),
    ],
)
def test_invalid_arguments_name_the_parameter(images, call, error, names):
    with pytest.raises(error, match=names):
        call(images)


def test_registry():
    assert set(A.AUGMENTATIONS) == {"none", "ce", "supcon"}
    assert A.get_augment("supcon") is A.supcon_augment and A.get_augment("ce") is A.ce_augment


# ------------------------------------------------------------------ speed
def test_supcon_augment_much_faster_than_torchvision_per_image():
    """CPU time per image of the batched SupCon pipeline vs torchvision v2 image by image.

    Process time (not wall time) with one intra-op thread, so that other jobs on the
    machine do not decide the outcome; the reference is measured in the same way.
    """
    batch = (torch.rand(256, 3, 32, 32, generator=gen(17)) * 255).to(torch.uint8)
    reference = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=False),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
        ]
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        A.supcon_augment(batch, gen())  # warm-up
        start = time.process_time()
        for _ in range(3):
            A.supcon_augment(batch, gen())
        ours = (time.process_time() - start) / (3 * 256)
        floats = batch[:64].float() / 255
        start = time.process_time()
        for img in floats:
            reference(img)
        theirs = (time.process_time() - start) / 64
    finally:
        torch.set_num_threads(threads)
    print(f"supcon_augment {ours * 1e3:.3f} ms/image, torchvision per image {theirs * 1e3:.3f} ms/image")
    assert ours < theirs / 3


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_gaussian_blur_matches_torchvision_per_sample(images, kernel_size):
    """Each sample blurred with its own sigma equals torchvision's gaussian_blur of that sample (reflect padding)."""
    sigma = torch.linspace(0.3, 2.0, len(images))
    apply = torch.arange(len(images)) % 3 != 0  # some samples stay as they are
    blurred = A.apply_gaussian_blur(images, sigma, apply, kernel_size)
    for i in range(len(images)):
        expected = (
            TF.gaussian_blur(images[i], [kernel_size, kernel_size], [sigma[i].item()] * 2) if apply[i] else images[i]
        )
        torch.testing.assert_close(blurred[i], expected, atol=1e-5, rtol=0)


def test_gaussian_kernel_by_hand():
    """sigma 1, size 3: weights proportional to (e^-0.5, 1, e^-0.5)."""
    edge = torch.exp(torch.tensor(-0.5))
    expected = torch.stack([edge, torch.tensor(1.0), edge]) / (1 + 2 * edge)
    torch.testing.assert_close(A.gaussian_kernels(torch.tensor([1.0]), 3)[0], expected)


def test_imagenet_supcon_colour_keeps_the_crop_and_draws_independently(images):
    big = torch.nn.functional.interpolate(images.float(), size=64, mode="nearest")
    a = A.imagenet_supcon_colour(big, torch.Generator().manual_seed(0))
    b = A.imagenet_supcon_colour(big, torch.Generator().manual_seed(0))
    c = A.imagenet_supcon_colour(big, torch.Generator().manual_seed(1))
    assert a.shape == big.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        A.random_gaussian_blur(big, 4, generator=torch.Generator())
