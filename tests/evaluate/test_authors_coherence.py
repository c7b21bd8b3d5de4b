"""The authors' coherence (`authors_coherence`): aug_smooth maps, quantus's scores, and the switch in 06 and 08."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import quantus
import torch
from pytorch_grad_cam import EigenCAM, GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from clxai_utils.core.config import MetricsConfig
from clxai_utils.core.registry import METRICS
from clxai_utils.core.run import Run
from clxai_utils.evaluate import authors_coherence as AC
from clxai_utils.evaluate import scoring
from clxai_utils.explain.cams import explain
from clxai_utils.explain.store import ExplanationSet, compute_explanations

NUM_CLASSES = 5


class TinyNet(nn.Module):
    """An untrained model with the explained-model contract: logits, `target_layer` (4 x 6 maps), `num_classes`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(12, NUM_CLASSES)
        self.num_classes = NUM_CLASSES

    @property
    def target_layer(self) -> nn.Module:
        return self.block

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def tiny_model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


def images(n: int = 6) -> Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 24, generator=g) * torch.linspace(0.5, 2.0, n)[:, None, None, None]


def library_maps(cam_class: type, model: nn.Module, x: Tensor, labels: Tensor) -> np.ndarray:
    cam = cam_class(model=model, target_layers=[model.target_layer])
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in labels], aug_smooth=True)
    finally:
        cam.activations_and_grads.release()


def test_aug_smooth_maps_are_pytorch_grad_cams_for_the_ground_truth() -> None:
    """Six augmented copies, each post-processed and mirrored back, averaged without renormalising."""
    model, x = tiny_model(), images()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    ours = explain(model, x, "gradcam", labels, batch_size=4, aug_smooth=True).numpy()
    np.testing.assert_allclose(ours, library_maps(GradCAM, model, x, labels), atol=1e-5)
    plain = explain(model, x, "gradcam", labels, batch_size=4).numpy()
    assert np.abs(ours - plain).max() > 1e-3  # the smoothing changes the maps
    eigen = explain(model, x, "eigencam", None, batch_size=4, eigencam_sign=False, aug_smooth=True).numpy()
    np.testing.assert_allclose(eigen, library_maps(EigenCAM, model, x, labels), atol=1e-5)


def test_zero_maps_get_the_authors_mark_at_the_first_pixel() -> None:
    maps = torch.zeros(3, 4, 5)
    maps[1, 2, 3] = 0.5
    marked = AC.mark_zero_maps(maps)
    assert marked[0, 0, 0] == AC.ZERO_MAP_MARK and marked[2, 0, 0] == AC.ZERO_MAP_MARK
    assert torch.equal(marked[1], maps[1]) and marked.flatten(1)[:, 1:].sum() == 0.5 and maps.sum() == 0.5


def quantus_scores(maps: Tensor, masks: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """quantus 0.6's PointingGame and AttributionLocalisation as the authors called them (defaults)."""
    x = np.zeros((len(maps), 3, *maps.shape[1:]), dtype=np.float32)
    kwargs = {
        "model": None,
        "x_batch": x,
        "y_batch": np.zeros(len(maps), dtype=np.int64),
        "a_batch": maps[:, None].numpy(),
        "s_batch": (masks > 0)[:, None].numpy().astype(np.float32),
    }
    pointing = quantus.PointingGame(disable_warnings=True)(**kwargs)
    localisation = quantus.AttributionLocalisation(disable_warnings=True)(**kwargs)
    return np.asarray(pointing, dtype=np.float64), np.asarray(localisation, dtype=np.float64)


def test_pointing_game_and_localisation_are_quantus_with_the_authors_settings() -> None:
    """Ties, an empty mask (quantus's hit), a marked zero map, and an image without a mask file (-1: NaN)."""
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(6, 8, 10, generator=g)
    maps[0, 1, 1] = maps[0, 6, 8] = 2.0  # a tie: one maximum inside, one outside
    maps[4] = AC.mark_zero_maps(torch.zeros(1, 8, 10))[0]
    masks = (torch.rand(6, 8, 10, generator=g) > 0.6).to(torch.int8)
    masks[0] = 0
    masks[0, 6, 8] = 1
    masks[3] = 0  # empty
    masks[4, 0, 0] = 1
    pointing, localisation = quantus_scores(maps[:5], masks[:5])
    masks[5] = -1  # no mask file
    ours = AC.authors_coherence_scores(_explained(maps), masks)
    np.testing.assert_allclose(ours["pointing_game"][:5].numpy(), pointing)
    np.testing.assert_allclose(ours["attribution_localisation"][:5].numpy(), localisation, rtol=1e-5, equal_nan=True)
    assert ours["pointing_game"][3] == 1.0 and ours["attribution_localisation"][3].isnan()  # quantus's empty mask
    assert ours["pointing_game"][4] == 1.0 and ours["attribution_localisation"][4] == pytest.approx(1.0)
    assert ours["pointing_game"][5].isnan() and ours["attribution_localisation"][5].isnan()


def _explained(maps: Tensor) -> ExplanationSet:
    n = len(maps)
    labels = torch.zeros(n, dtype=torch.int64)
    return ExplanationSet(
        maps=maps,
        image_ids=torch.arange(n),
        labels=labels,
        predictions=labels,
        logits=torch.zeros(n, NUM_CLASSES),
        targets=labels,
        method="gradcam",
    )


def test_misclassified_images_are_scored_with_the_authors_maps() -> None:
    """score_model under the switch: ground-truth aug_smooth maps, every image scored, NaN-free on non-empty masks."""
    model, x = tiny_model(), images()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    labels = torch.where(torch.arange(6) % 2 == 0, predicted, (predicted + 1) % NUM_CLASSES)  # half misclassified
    stored = compute_explanations(model, (x, labels, torch.arange(6)), "gradcam", batch_size=4, progress=False)
    masks = torch.zeros(6, 16, 24, dtype=torch.int8)
    masks[:, 4:12, 6:18] = 1
    params = MetricsConfig(pixels_per_step=16, batch_size=8, protocol=("authors_coherence",))
    inputs = scoring.FacetInputs(x, x, masks, torch.zeros(3), params, 4, 0, authors_masks=masks)
    clock = scoring.FacetClock()
    rows = scoring.score_model(model, stored, stored, inputs, {"loss": "ce"}, clock, facets=["coherence"]).rows
    assert (~rows["correct"]).sum() == 3
    assert rows[["pointing_game", "attribution_localisation"]].notna().all().all()
    expected = AC.authors_coherence_scores(AC.authors_coherence_maps(model, x, stored, 4), masks)
    for name, values in expected.items():
        np.testing.assert_allclose(rows[name].to_numpy(), values.numpy())
    others = [name for name, m in METRICS.items() if m.facet != "coherence"]
    assert rows[others].isna().all().all()  # only coherence was asked for
    corrected = scoring.FacetInputs(x, x, masks, torch.zeros(3), MetricsConfig(pixels_per_step=16, batch_size=8), 4, 0)
    plain = scoring.score_model(model, stored, stored, corrected, {}, clock, facets=["coherence"]).rows
    assert plain["pointing_game"][~plain["correct"]].isna().all()  # the corrected protocol skips them


# --------------------------------------------------------------------------- 06 and 08 on the ImageNet-S50 fixture


@pytest.fixture(scope="module")
def s50_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The smoke profile on the ImageNet-S50 fixture (official layout, own masks): CE, its maps and 06's table."""
    from fixtures import write_imagenet_s50_fixture

    from clxai_utils.data.prepare import prepare_data
    from clxai_utils.evaluate.facets import evaluate_facets
    from clxai_utils.explain.store import run_explanations
    from clxai_utils.train.probe import probe_and_evaluate
    from clxai_utils.train.trainer import run_training

    root = tmp_path_factory.mktemp("s50")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLXAI_OUTPUTS", str(root / "out"))
        mp.setenv("CLXAI_DATA_DIR", str(root / "datadir"))
        fixture = write_imagenet_s50_fixture(root / "fixture", train_per_class=2, val_per_class=3)
        run = Run("imagenet_s50", "smoke", 0)
        prepare_data(run, str(fixture.parent), mask_source="")
        run_training(run, "ce", progress=False)
        probe_and_evaluate(run, ["ce"], progress=False)
        run_explanations(run, ["ce"], progress=False)
        evaluate_facets(run, ["ce"], progress=False)
        yield run


def test_the_ablation_recomputes_only_coherence_on_own_masks_and_06_applies_it_too(s50_run: Run) -> None:
    from clxai_utils.evaluate import ablation as AB
    from clxai_utils.evaluate import facets as FA

    out = AB.run_ablation(s50_run, ["ce"], protocols=["authors_coherence"], progress=False)
    table = out.table
    corrected = table[table["protocol"] == "corrected"].drop(columns="protocol").reset_index(drop=True)
    authors = table[table["protocol"] == "authors_coherence"].drop(columns="protocol").reset_index(drop=True)
    coherence = ["pointing_game", "attribution_localisation"]
    kept = [c for c in corrected.columns if c not in [*coherence, "coherence_map_all_zero"]]
    pd.testing.assert_frame_equal(authors[kept], corrected[kept])
    assert authors[coherence].notna().all().all()  # every image, misclassified or not: each has a non-empty mask
    assert not np.allclose(authors["attribution_localisation"], corrected["attribution_localisation"], equal_nan=True)
    record = out.sidecar["protocols"]["authors_coherence"]
    assert record["recomputed"] == {"ce/gradcam": ["coherence"], "ce/eigencam": ["coherence"]}
    assert record["not_applicable"] == {}

    # 06 under the same switch scores the same coherence (table rows in the same image order)
    settings = s50_run.settings
    patched = replace(settings, metrics=replace(settings.metrics, protocol=("authors_coherence",)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(s50_run.__dict__, "settings", patched)
        facets = FA.evaluate_facets(s50_run, ["ce"], progress=False)
    assert "read and scored as the authors did" in facets.sidecar["params"]["coherence"]
    assert "not_applicable" not in facets.sidecar
    merged = facets.table.merge(authors, on=["method", "image_id"], suffixes=("", "_08"))
    for name in coherence:
        np.testing.assert_allclose(merged[name], merged[f"{name}_08"], atol=1e-6)
