"""Grad-CAM / Eigen-CAM maps against hand computations and pytorch-grad-cam itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from clxai_utils.explain import cams
from clxai_utils.explain import cams as cam_module
from clxai_utils.explain import store as ex
from clxai_utils.train.models import ExplainableClassifier, build_backbone

NUM_CLASSES = 5


class TinyNet(nn.Module):
    """Smallest model with the contract: logits, `target_layer` with 4 x 6 output, `num_classes`."""

    def __init__(self, target: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = target or nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(12, NUM_CLASSES)
        self.num_classes = NUM_CLASSES

    @property
    def target_layer(self) -> nn.Module:
        return self.block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class Zero(nn.Module):
    """Target layer whose activations are all zero (but still depend on the input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 12, *x.shape[2:]) * x[:, :1]


class Raising(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise IndexError("boom inside the model")


def tiny_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    model.stem[1].running_mean.uniform_(-0.2, 0.2)  # non-trivial eval-mode BatchNorm
    return model.eval()


def real_model(seed: int = 0) -> ExplainableClassifier:
    torch.manual_seed(seed)
    return ExplainableClassifier(build_backbone("resnet18_cifar", width=0.125), nn.Linear(64, 10), True).eval()


def images(n: int, h: int = 16, w: int = 24, seed: int = 1) -> torch.Tensor:
    """Varied images: per-image scale and offset, so maps differ across the batch."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, n)[:, None, None, None]
    return torch.randn(n, 3, h, w, generator=g) * scale + torch.randn(n, 3, 1, 1, generator=g)


def cv2_pipeline(cams: np.ndarray, h: int, w: int) -> np.ndarray:
    """Library post-processing written out: ReLU, min-max, cv2 bilinear resize, min-max."""
    return scale_cam_image(scale_cam_image(np.maximum(cams, 0), (w, h)))


def hand_grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """alpha_k = spatial mean of d logit_c / d A^k; ReLU(sum_k alpha_k A^k), then the pipeline."""
    store = {}
    handle = model.target_layer.register_forward_hook(lambda m, i, out: store.update(a=out))
    try:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        (grads,) = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), store["a"])
    finally:
        handle.remove()
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cams = (alpha * store["a"]).sum(dim=1).detach().numpy()
    return np.stack([cv2_pipeline(c[None], *x.shape[-2:])[0] for c in cams])


# --------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_batched_equals_single_and_is_varied() -> None:
    model, x = tiny_model(), images(6)
    targets = torch.tensor([0, 3, 1, 4, 2, 0])  # varied classes, each with positive evidence
    full = cams.grad_cam(model, x, targets, batch_size=6)
    single = cams.grad_cam(model, x, targets, batch_size=1)
    uneven = cams.grad_cam(model, x, targets, batch_size=4)
    assert full.shape == (6, 16, 24) and full.dtype == torch.float32
    torch.testing.assert_close(single, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(uneven, full, atol=1e-5, rtol=0)
    assert full.min() >= 0 and full.max() <= 1
    torch.testing.assert_close(full.amax(dim=(1, 2)), torch.ones(6), atol=1e-5, rtol=0)
    pairwise = (full[:, None] - full[None]).abs().amax(dim=(2, 3))
    assert (pairwise + torch.eye(6)).min() > 0.05  # every pair of maps differs


@pytest.mark.parametrize("make_model", [tiny_model, real_model], ids=["tiny", "resnet18_cifar"])
def test_grad_cam_matches_hand_computation(make_model) -> None:
    model = make_model()
    x = images(4, 32, 32) if isinstance(model, ExplainableClassifier) else images(4)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    other = (predicted + 1) % model.num_classes
    expected = hand_grad_cam(model, x, predicted)
    got = cams.grad_cam(model, x, predicted, batch_size=3).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # The tolerance is tight enough to tell a wrong target apart.
    wrong = hand_grad_cam(model, x, other)
    assert np.abs(wrong - got).max(axis=(1, 2)).min() > 1e-2


def test_grad_cam_explains_the_requested_class() -> None:
    model, x = tiny_model(), images(5)
    a = cams.grad_cam(model, x, torch.zeros(5, dtype=torch.long), batch_size=5)
    b = cams.grad_cam(model, x, torch.full((5,), 3), batch_size=5)
    assert (a - b).abs().amax(dim=(1, 2)).min() > 0.05


def test_grad_cam_frozen_backbone_and_state_restored() -> None:
    model, x = real_model(), images(3, 32, 32)
    targets = torch.tensor([1, 4, 7])
    reference = cams.grad_cam(model, x, targets, batch_size=3)
    model.train()
    model.backbone.eval()  # a probe set-up: frozen backbone in eval mode, head training
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    got = cams.grad_cam(model, x, targets, batch_size=2)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())  # no weight gradients accumulated
    assert not model.target_layer._forward_hooks  # hooks released
    for p in model.parameters():  # fully frozen model: still works
        p.requires_grad_(False)
    torch.testing.assert_close(cams.grad_cam(model, x, targets, batch_size=3), reference, atol=1e-5, rtol=0)


def test_grad_cam_propagates_exceptions_and_releases_hooks() -> None:
    model = tiny_model().train()
    model.head = Raising()
    with pytest.raises(IndexError, match="boom"):
        cams.grad_cam(model, images(2), torch.tensor([0, 1]), batch_size=2)
    assert not model.target_layer._forward_hooks
    assert model.training and model.stem.training


def test_grad_cam_rejects_bad_arguments() -> None:
    model, x = tiny_model(), images(2)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        cams.grad_cam(model, x, torch.tensor([0, 5]), batch_size=2)
    with pytest.raises(ValueError, match="targets must have shape"):
        cams.grad_cam(model, x, torch.tensor([0]), batch_size=2)
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        cams.grad_cam(model, x, torch.tensor([0.0, 1.0]), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        cams.grad_cam(model, x, torch.tensor([0, 1]), batch_size=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        cams.eigen_cam(model, x[0], batch_size=2)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        cams.eigen_cam(model, x.to(torch.uint8), batch_size=2)


# --------------------------------------------------------------------------- post-processing


def test_postprocess_matches_library_scaling() -> None:
    g = torch.Generator().manual_seed(3)
    cams = torch.randn(6, 4, 6, generator=g)
    cams[1] = 0.0  # all zero
    cams[2] = 0.7  # constant
    cams[3] = -cams[3].abs()  # no positive evidence
    got = cam_module.postprocess_cam(cams, (16, 24))
    np.testing.assert_allclose(got.numpy(), cv2_pipeline(cams.numpy(), 16, 24), atol=1e-6)
    assert torch.all(got[1:4] == 0)


# --------------------------------------------------------------------------- Eigen-CAM


def conventional_eigen_cam(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image numpy reference: (library map, negated-projection map, map under the convention)."""
    store = {}
    handle = model.target_layer.register_forward_hook(lambda m, i, out: store.update(a=out))
    with torch.no_grad():
        model(x)
    handle.remove()
    acts = store["a"].numpy()
    h, w = x.shape[-2:]
    proj = get_2d_projection(acts)
    pos, neg, chosen = cv2_pipeline(proj, h, w), cv2_pipeline(-proj, h, w), []
    for p, a in zip(proj, acts):
        corr = float((p * a.mean(axis=0)).sum())  # correlation with the channel-mean map
        chosen.append(cv2_pipeline((p if corr > 0 else -p)[None], h, w)[0])
    return pos, neg, np.stack(chosen)


@pytest.mark.parametrize("make_model", [tiny_model, real_model], ids=["tiny", "resnet18_cifar"])
def test_eigen_cam_matches_library_up_to_sign(make_model) -> None:
    model = make_model()
    x = images(6, 32, 32) if isinstance(model, ExplainableClassifier) else images(6)
    got = cams.eigen_cam(model, x, batch_size=4).numpy()
    library = EigenCAM(model=model, target_layers=[model.target_layer])
    try:
        lib_maps = library(input_tensor=x, targets=None)
    finally:
        library.activations_and_grads.release()
    pos, neg, chosen = conventional_eigen_cam(model, x)
    np.testing.assert_allclose(pos, lib_maps, atol=1e-5)  # the reference pipeline is the library's
    assert np.abs(pos - neg).max(axis=(1, 2)).min() > 0.05  # the sign matters for every image
    err_pos = np.abs(got - pos).max(axis=(1, 2))
    err_neg = np.abs(got - neg).max(axis=(1, 2))
    assert np.all(np.minimum(err_pos, err_neg) < 1e-4)
    np.testing.assert_allclose(got, chosen, atol=1e-4)


def test_eigen_cam_sign_is_invariant_to_svd_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny_model(), images(6)
    reference = cams.eigen_cam(model, x, batch_size=6)
    svd = torch.linalg.svd

    def flipped(a, full_matrices=True):
        u, s, vh = svd(a, full_matrices=full_matrices)
        return -u, s, -vh

    monkeypatch.setattr(torch.linalg, "svd", flipped)
    torch.testing.assert_close(cams.eigen_cam(model, x, batch_size=6), reference, atol=1e-6, rtol=0)


def test_eigen_cam_batched_equals_single_and_restores_state() -> None:
    model, x = tiny_model().train(), images(5)
    torch.testing.assert_close(cams.eigen_cam(model, x, 1), cams.eigen_cam(model, x, 5), atol=1e-5, rtol=0)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not model.target_layer._forward_hooks


def test_oriented_projection_closed_form() -> None:
    """Two channels, one spatial pattern: the projection is the pattern itself, up to scale."""
    pattern = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]])
    acts = torch.stack([pattern, 2 * pattern])[None]  # (1, K=2, 2, 3), rank one
    proj = cams._oriented_projection(acts)[0]
    centred = pattern - pattern.mean()
    expected = centred * (5**0.5)  # ||(1, 2)|| = sqrt(5): coordinates along v = (1, 2)/sqrt(5)
    torch.testing.assert_close(proj, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cams._oriented_projection(-acts)[0], -expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- degenerate maps and dispatch


@pytest.mark.parametrize("method", ex.METHODS)
def test_zero_activations_give_zero_maps(method: str) -> None:
    torch.manual_seed(0)
    model = TinyNet(target=Zero()).eval()
    maps = ex.explain(model, images(3), method, torch.tensor([0, 1, 2]), batch_size=2)
    assert maps.shape == (3, 16, 24)
    assert torch.isfinite(maps).all() and torch.all(maps == 0)


def test_explain_dispatches() -> None:
    model, x, t = tiny_model(), images(3), torch.tensor([2, 0, 1])
    assert torch.equal(ex.explain(model, x, "gradcam", t, 2), cams.grad_cam(model, x, t, 2))
    assert torch.equal(ex.explain(model, x, "eigencam", None, 2), cams.eigen_cam(model, x, 2))
    with pytest.raises(ValueError, match="method='gradcm' is not allowed; choose one of: gradcam, eigencam"):
        ex.explain(model, x, "gradcm", t, 2)
    with pytest.raises(ValueError, match="targets must be given"):
        ex.explain(model, x, "gradcam", None, 2)


# --------------------------------------------------------------------------- storage


def make_set(n: int = 4, maps_dtype: torch.dtype = torch.float16) -> ex.ExplanationSet:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 3, generator=g)
    return ex.ExplanationSet(
        maps=torch.rand(n, 8, 8, generator=g).to(maps_dtype),
        image_ids=torch.arange(100, 100 + n),
        labels=torch.randint(0, 3, (n,), generator=g),
        predictions=logits.argmax(1),
        logits=logits,
        targets=logits.argmax(1),
        method="gradcam",
        meta={"model_id": "ce_s0", "seed": 0, "versions": ex.package_versions(), "tags": ("a", 1.5, None)},
    )


@pytest.mark.parametrize("maps_dtype", ex.MAP_DTYPES)
def test_explanation_set_round_trip(tmp_path, maps_dtype: torch.dtype) -> None:
    original = make_set(maps_dtype=maps_dtype)
    path = original.save(tmp_path / "sub" / "maps.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "clxai.ExplanationSet/1" and raw["maps"].dtype == maps_dtype
    loaded = ex.ExplanationSet.load(path)
    for name in ("maps", "image_ids", "labels", "predictions", "logits", "targets"):
        assert torch.equal(getattr(loaded, name), getattr(original, name)), name
    assert loaded.method == "gradcam" and loaded.meta == original.meta and len(loaded) == 4


def test_explanation_set_validates() -> None:
    good = make_set()
    fields = {name: getattr(good, name) for name in good.__dataclass_fields__}
    with pytest.raises(ValueError, match="labels has 3 rows but maps has 4"):
        ex.ExplanationSet(**{**fields, "labels": good.labels[:3]})
    with pytest.raises(ValueError, match="logits has 5 rows"):
        ex.ExplanationSet(**{**fields, "logits": torch.zeros(5, 3)})
    with pytest.raises(ValueError, match="image_ids must be unique"):
        ex.ExplanationSet(**{**fields, "image_ids": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(TypeError, match="maps must be a 3-D tensor"):
        ex.ExplanationSet(**{**fields, "maps": good.maps.double()})
    with pytest.raises(TypeError, match=r"meta\['bad'\]"):
        ex.ExplanationSet(**{**fields, "meta": {"bad": torch.ones(1)}})
    with pytest.raises(TypeError, match=r"meta\['v'\]\[0\] must hold only"):
        ex.ExplanationSet(**{**fields, "meta": {"v": [torch.__version__]}})  # a str subclass
    with pytest.raises(ValueError, match="method='lime' is not allowed; choose one of: gradcam, eigencam"):
        ex.ExplanationSet(**{**fields, "method": "lime"})


def test_load_rejects_foreign_file(tmp_path) -> None:
    torch.save({"maps": torch.zeros(1, 2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ExplanationSet"):
        ex.ExplanationSet.load(tmp_path / "other.pt")


def test_compute_explanations() -> None:
    model, x = tiny_model().train(), images(7)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    ids = torch.arange(50, 57)
    batches = [(x[:3], y[:3], ids[:3]), (x[3:], y[3:], ids[3:])]
    result = ex.compute_explanations(model, batches, "gradcam", batch_size=2, meta={"seed": 3}, progress=False)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(result.logits, logits)
    assert torch.equal(result.predictions, logits.argmax(1)) and torch.equal(result.targets, result.predictions)
    assert torch.equal(result.labels, y) and torch.equal(result.image_ids, ids)
    torch.testing.assert_close(result.maps, cams.grad_cam(model, x, result.predictions, 7), atol=1e-5, rtol=0)
    assert result.meta["seed"] == 3 and result.meta["target_rule"] == "predicted"
    assert result.meta["versions"]["grad-cam"] == "1.5.7"

    true = ex.compute_explanations(
        model, (x, y, ids), "eigencam", "true", batch_size=4, progress=False, maps_dtype=torch.float16
    )
    assert torch.equal(true.targets, y) and true.maps.dtype == torch.float16
    assert "sign_convention" in true.meta
    torch.testing.assert_close(true.maps.float(), cams.eigen_cam(model, x, 4), atol=1e-3, rtol=0)

    with pytest.raises(ValueError, match="target='label' is not allowed; choose one of: predicted, true"):
        ex.compute_explanations(model, batches, "gradcam", "label", batch_size=2)
    with pytest.raises(ValueError, match="meta must not set"):
        ex.compute_explanations(model, batches, "gradcam", batch_size=2, meta={"target_rule": "x"})
    with pytest.raises(ValueError, match="at least one"):
        ex.compute_explanations(model, [], "gradcam", batch_size=2, progress=False)
