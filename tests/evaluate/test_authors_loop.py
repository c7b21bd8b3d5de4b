"""The `authors` protocol against a plain, per-image re-implementation of the authors' CIFAR evaluation loop.

The loop below does what their published script did, one image at a time: a new
pytorch-grad-cam object per metric and image, Grad-CAM (and EigenCAM) on the predicted
class, quantus 0.6 `PixelFlipping(perturb_baseline="black", features_in_step=32)` called
with the TRUE label and scored as trapz(curve) / (len(curve) - 1), continuity on the noisy
normalised image clamped to [0, 1], quantus `Complexity` and `Sparseness`, skimage SSIM,
NaN for all-zero maps in Pixel Flipping and complexity only, the SupCon/triplet probe on
unnormalised features, and the summary averaged over correctly classified images.

Two random draws are shared rather than replayed, because they are not deviations that
change what is measured: the continuity noise (the authors seeded torch with the image
index, the package draws once from the run's seed) and the contrast classes (the authors
drew them from the global RNG). The model is an untrained small CIFAR ResNet-18 with a
random linear probe; labels are set so that half the images are classified correctly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from clxai_utils.core.config import MetricsConfig
from clxai_utils.evaluate import metrics as M
from clxai_utils.evaluate.protocol import correct_only_average
from clxai_utils.evaluate.scoring import FacetClock, FacetInputs, score_model
from clxai_utils.explain.store import ExplanationSet, compute_explanations
from clxai_utils.train import probe as probe_module
from clxai_utils.train.models import ContrastiveModel, resnet18_cifar

quantus = pytest.importorskip("quantus")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")

N_IMAGES, N_CLASSES, SEED, STEP, SIGMA = 20, 10, 0, 32, 0.02
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
SCORES = ("pf_auc", "continuity_ssim", "contrastivity_ssim", "complexity_entropy", "sparseness_gini")


class AuthorsClassifier(nn.Module):
    """The authors' CIFAR SCL/TL evaluation model: the probe's fc on the unnormalised pooled features."""

    def __init__(self, encoder: ContrastiveModel, fc: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.fc = encoder, fc

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.encoder.backbone(x))


@pytest.fixture(scope="module")
def setup() -> SimpleNamespace:
    torch.manual_seed(SEED)
    encoder = ContrastiveModel(resnet18_cifar(0.125)).eval()
    fc = nn.Linear(encoder.backbone.feature_dim, N_CLASSES)
    pixels = torch.rand(N_IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = (pixels - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    authors = AuthorsClassifier(encoder, fc).eval()
    with torch.no_grad():
        predictions = authors(x).argmax(1)
    wrong = (predictions + 1 + torch.arange(N_IMAGES) % (N_CLASSES - 1)) % N_CLASSES
    labels = torch.where(torch.arange(N_IMAGES) % 2 == 0, predictions, wrong)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
    ids = torch.arange(100, 100 + N_IMAGES)
    contrast = M.contrast_classes(predictions, ids, N_CLASSES, SEED)
    return SimpleNamespace(
        encoder=encoder, fc=fc, authors=authors, x=x, labels=labels, ids=ids, noise=noise, contrast=contrast, loops={}
    )


# --------------------------------------------------------------------------- the authors' loop, per image


def _cam(model: nn.Module, method: str, image: Tensor, target: int) -> np.ndarray:
    """A fresh CAM object per call, as the authors made one per metric and image; the (H, W) map."""
    from pytorch_grad_cam import EigenCAM, GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.encoder.backbone.target_layer
    cls = GradCAM if method == "gradcam" else EigenCAM
    for p in model.parameters():
        p.requires_grad_(True)
    with cls(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=image[None], targets=[ClassifierOutputTarget(target)])[0]


def _authors_image(s: SimpleNamespace, method: str, i: int) -> dict[str, Any]:
    model, image, label = s.authors, s.x[i], int(s.labels[i])
    with torch.no_grad():
        pred = int(model(image[None]).argmax(1))
    x_np, y_np = image[None].numpy(), np.array([label])
    row: dict[str, Any] = {"image_id": int(s.ids[i]), "label": label, "prediction": pred}

    a = _cam(model, method, image, pred)
    zero = a.max() == 0
    if zero:
        row["pf_auc"] = row["complexity_entropy"] = row["sparseness_gini"] = float("nan")
    else:
        pf = quantus.PixelFlipping(
            perturb_baseline="black", features_in_step=STEP, disable_warnings=True, display_progressbar=False
        )
        curve = np.asarray(
            pf(model=model, x_batch=x_np, y_batch=y_np, a_batch=a[None], channel_first=True, device="cpu")[0]
        )
        row["pf_auc"] = float(np.trapezoid(curve) / (len(curve) - 1))
        kwargs = {"disable_warnings": True, "display_progressbar": False}
        call = {"model": model, "x_batch": x_np, "y_batch": y_np, "a_batch": a[None], "channel_first": True}
        row["complexity_entropy"] = float(quantus.Complexity(**kwargs)(**call, device="cpu")[0])
        row["sparseness_gini"] = float(quantus.Sparseness(**kwargs)(**call, device="cpu")[0])

    noisy = torch.clamp(image + s.noise[i] * SIGMA, 0, 1)
    a_noisy = _cam(model, method, noisy, pred)
    row["continuity_ssim"] = structural_similarity(a, a_noisy, data_range=1.0)
    if method == "gradcam":
        a_other = _cam(model, method, image, int(s.contrast[i]))
        row["contrastivity_ssim"] = structural_similarity(a, a_other, data_range=1.0)
    else:
        row["contrastivity_ssim"] = float("nan")
    row["map"] = a
    return row


def authors_loop(s: SimpleNamespace, method: str) -> pd.DataFrame:
    """The loop's rows for `method`, computed once per module (it is slow by design: per image, per metric)."""
    if method not in s.loops:
        s.loops[method] = pd.DataFrame([_authors_image(s, method, i) for i in range(N_IMAGES)])
    return s.loops[method]


# --------------------------------------------------------------------------- the package, batched


def package_scores(
    s: SimpleNamespace,
    method: str,
    protocol: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    given_maps: Tensor | None = None,
) -> tuple[pd.DataFrame, Tensor]:
    """Rows of the package's facets table; `given_maps` replaces the explained maps (not the others it computes)."""
    params = MetricsConfig(pixels_per_step=STEP, batch_size=256, protocol=protocol)
    identity = {"profile": "toy"}
    (tmp_path / probe_module.PROBE).write_bytes(b"")
    monkeypatch.setattr(
        probe_module,
        "load_trained",
        lambda out_dir, epoch: (s.encoder, SimpleNamespace(num_classes=N_CLASSES), identity),
    )
    monkeypatch.setattr(
        probe_module, "load_torch", lambda path: {"identity": identity, "state_dict": s.fc.state_dict()}
    )
    run = SimpleNamespace(model_dir=lambda loss: tmp_path, profile="toy")
    model, _ = probe_module.load_classifier(
        run,  # type: ignore[arg-type]
        "supcon",
        normalize_features="unnormalised_head" not in params.deviations,
    )
    maps = compute_explanations(
        model,
        (s.x, s.labels, s.ids),
        method,
        batch_size=8,
        progress=False,
        eigencam_sign="eigencam_no_sign" not in params.deviations,
    )
    computed = maps.maps
    if given_maps is not None:
        maps = ExplanationSet(**{**vars(maps), "maps": given_maps})
    baseline = M.make_baseline(params.baseline, CIFAR_MEAN, CIFAR_STD)
    x_noisy = M.add_input_noise(s.x, SIGMA, torch.Generator().manual_seed(SEED), "clamped_noise" in params.deviations)
    inputs = FacetInputs(s.x, x_noisy, None, baseline, params, 8, SEED)
    block = score_model(model, maps, None, inputs, {"loss": "supcon", "method": method}, FacetClock())
    return block.rows, computed


# --------------------------------------------------------------------------- the comparison


def assert_authors_equal(
    s: SimpleNamespace, method: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> pd.DataFrame:
    """The package under `authors` against the per-image loop on the images of `s`; the package's rows.

    For Eigen-CAM the maps are compared, then the authors' own maps are scored: the package's
    Eigen-CAM post-processing (torch) equals the library's (cv2) to ~1e-7, but its bilinear
    upsampling makes many exactly tied pixels, and float noise orders ties differently in
    quantus's argsort: Pixel Flipping would then differ by ~1e-3 from tie order alone. Scoring
    the authors' own maps isolates the protocol, which must agree exactly.
    """
    expected = authors_loop(s, method)
    authors_maps = torch.from_numpy(np.stack(expected["map"])) if method == "eigencam" else None
    rows, maps = package_scores(s, method, "authors", monkeypatch, tmp_path, authors_maps)
    assert len(rows) == len(s.x) >= 20
    assert rows["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(maps.numpy(), np.stack(expected["map"]), atol=1e-5)
    for name in SCORES:
        np.testing.assert_allclose(rows[name].to_numpy(), expected[name].to_numpy(), atol=1e-5, err_msg=name)
    summary = correct_only_average(
        rows, MetricsConfig(pixels_per_step=STEP, batch_size=8, protocol="authors").deviations
    )
    authors_summary = expected[expected["label"] == expected["prediction"]][list(SCORES)].mean()
    np.testing.assert_allclose(summary[list(SCORES)].iloc[0].to_numpy(), authors_summary.to_numpy(), atol=1e-6)
    return rows


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_authors_protocol_equals_the_authors_loop(
    setup: SimpleNamespace, method: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """End to end for Grad-CAM (both sides call pytorch-grad-cam); Eigen-CAM's maps compared, then scored as given."""
    rows = assert_authors_equal(setup, method, monkeypatch, tmp_path)
    assert rows["correct"].sum() == N_IMAGES // 2


@pytest.mark.pinned
@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_authors_protocol_equals_the_authors_loop_on_the_quick_run(
    method: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The same comparison on the first 20 explained test images of the quick run's SupCon model and probe
    (`make reproduce` runs it after `make run`), with their true labels."""
    from clxai_utils.core.artifacts import load_torch
    from clxai_utils.core.run import Run
    from clxai_utils.data.prepare import load_prepared
    from clxai_utils.explain.store import explained_split, normalised_images
    from clxai_utils.train.checkpoints import load_trained

    run = Run("cifar10", "quick", 0)
    assert probe_module.probe_path(run.model_dir("supcon"), None).is_file(), "run `make run` first"
    encoder, spec, _ = load_trained(run.model_dir("supcon"), None)
    fc = nn.Linear(encoder.backbone.feature_dim, spec.num_classes)
    fc.load_state_dict(load_torch(probe_module.probe_path(run.model_dir("supcon"), None))["state_dict"])
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    assert tuple(data.info.mean) == pytest.approx(CIFAR_MEAN) and tuple(data.info.std) == pytest.approx(CIFAR_STD)
    x, ids = normalised_images(split, data.info)[:N_IMAGES], split.ids[:N_IMAGES]
    authors = AuthorsClassifier(encoder.eval(), fc).eval()
    with torch.no_grad():
        predictions = authors(x).argmax(1)
    s = SimpleNamespace(
        encoder=encoder,
        fc=fc,
        authors=authors,
        x=x,
        labels=split.labels[:N_IMAGES],
        ids=ids,
        noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED)),
        contrast=M.contrast_classes(predictions, ids, spec.num_classes, SEED),
        loops={},
    )
    assert_authors_equal(s, method, monkeypatch, tmp_path)


def test_corrected_protocol_differs_from_the_authors_loop(
    setup: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A sanity check that the comparison above has teeth: the corrected protocol scores something else."""
    expected = authors_loop(setup, "gradcam")
    rows, _ = package_scores(setup, "gradcam", "corrected", monkeypatch, tmp_path)
    for name in ("pf_auc", "continuity_ssim"):
        valid = ~np.isnan(expected[name].to_numpy())
        assert not np.allclose(rows[name].to_numpy()[valid], expected[name].to_numpy()[valid], atol=1e-3), name
