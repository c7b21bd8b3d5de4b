"""The explanation (05) and facet (06) stages end to end on the smoke profile and synthetic images."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from clxai_utils import facets as FA
from clxai_utils import plots
from clxai_utils.config import ConfigError, MetricsConfig, load_profile
from clxai_utils.data import load_prepared, prepare_data, write_synthetic_imagefolder
from clxai_utils.explain import METHODS, ExplanationSet, explain, explained_split, load_explanations, normalised_images, run_explanations
from clxai_utils.metrics import contrast_classes, pixel_flipping, ssim
from clxai_utils.paths import explanation_path, model_dir
from clxai_utils.probe import load_classifier, probe_and_evaluate
from clxai_utils.stats import METRICS
from clxai_utils.train import run_training

LOSSES = ["ce", "supcon"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Smoke data, CE and SupCon models with a probe, and their stored maps."""
    root = tmp_path_factory.mktemp("stages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLXAI_OUTPUTS", str(root / "out"))
        mp.setenv("CLXAI_DATA_DIR", str(root / "datadir"))
        prepare_data("smoke", "cifar10", str(write_synthetic_imagefolder(root / "tree")))
        for loss in LOSSES:
            run_training(loss, "smoke", "cifar10", 0, progress=False)
        probe_and_evaluate("smoke", "cifar10", 0, LOSSES, progress=False)
        first = run_explanations("smoke", "cifar10", 0, LOSSES, progress=False)
        assert not first["reused"].any() and len(first) == 2 * 2 * 2  # losses x methods x (test, mosaics)
        yield root / "out"


def test_maps_are_stored_once_and_reused(outputs: Path) -> None:
    again = run_explanations("smoke", "cifar10", 0, LOSSES, progress=False)
    assert again["reused"].all()
    data, _ = load_prepared("cifar10", "smoke")
    split = explained_split(data, load_profile("smoke").for_dataset("cifar10").explain)
    stored = load_explanations("cifar10", "ce", 0, "gradcam")
    assert torch.equal(stored.image_ids, split.ids) and torch.equal(stored.targets, stored.predictions)
    mosaics = load_explanations("cifar10", "ce", 0, "gradcam", "mosaics")
    assert torch.equal(mosaics.targets, split.labels) and mosaics.maps.shape[1:] == (64, 64)


def test_maps_of_a_changed_model_are_refused(outputs: Path) -> None:
    path = explanation_path("cifar10", "supcon", 0, "eigencam")
    stored = ExplanationSet.load(path)
    stale = ExplanationSet(**{**vars(stored), "meta": {**stored.meta, "model_digest": "0" * 64}})
    stale.save(path)
    try:
        with pytest.raises(ValueError, match="computed for another 'supcon' model.*05_explanations"):
            load_explanations("cifar10", "supcon", 0, "eigencam")
        redone = run_explanations("smoke", "cifar10", 0, ["supcon"], ["eigencam"], progress=False)
        assert list(redone["reused"]) == [False, True]  # the stale test maps are recomputed, the mosaics reused
    finally:
        run_explanations("smoke", "cifar10", 0, ["supcon"], ["eigencam"], progress=False)


@pytest.fixture(scope="module")
def results(outputs: Path) -> FA.FacetResults:
    return FA.evaluate_facets("smoke", "cifar10", 0, LOSSES, progress=False, n_examples=2)


def test_results_table_layout_and_files(results: FA.FacetResults) -> None:
    table, n = results.table, results.sidecar["n_images"]
    assert len(table) == len(LOSSES) * 2 * n and not table.duplicated(["loss", "method", "image_id"]).any()
    assert list(table.columns) == [*FA.ID_COLUMNS, *METRICS]
    paths = FA.table_paths("cifar10", 0)
    on_disk = pd.read_csv(paths["table"])
    pd.testing.assert_frame_equal(on_disk, results.table, check_dtype=False)
    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["params"]["pixels_per_step"] == 128 and sidecar["params"]["noise_sigma"] == 0.02
    assert set(sidecar["columns"]) >= set(METRICS) and "grad-cam" in sidecar["versions"]
    curves = pd.read_csv(paths["curves"])
    assert len(curves) == len(LOSSES) * 2 * (1024 // 128 + 1)
    assert curves["fraction"].min() == 0 and curves["fraction"].max() == 1


def test_metric_columns_equal_direct_computation(results: FA.FacetResults) -> None:
    """Faithfulness and contrastivity of the CE Grad-CAM block recomputed from the stored maps."""
    model, _ = load_classifier("cifar10", "ce", 0, "smoke")
    stored = load_explanations("cifar10", "ce", 0, "gradcam")
    data, _ = load_prepared("cifar10", "smoke")
    split = explained_split(data, load_profile("smoke").for_dataset("cifar10").explain)
    x = normalised_images(split, data.info)
    block = results.table[(results.table["loss"] == "ce") & (results.table["method"] == "gradcam")]
    params = FA.metric_params(load_profile("smoke").for_dataset("cifar10").metrics, 0)
    pf = pixel_flipping(model, x, stored.maps, stored.targets, pixels_per_step=128,
                        baseline=params.baseline_vector(data.info.mean, data.info.std))
    assert torch.allclose(torch.tensor(block["pf_auc"].to_numpy()), pf.auc, atol=1e-9, equal_nan=True)
    others = contrast_classes(stored.predictions, stored.image_ids, 10, 0)
    expected = ssim(stored.maps, explain(model, x, "gradcam", others, 64))
    assert torch.allclose(torch.tensor(block["contrastivity_ssim"].to_numpy()), expected, atol=1e-6)


def test_facet_rules(results: FA.FacetResults) -> None:
    table = results.table
    assert table.loc[table["method"] == "eigencam", "contrastivity_ssim"].isna().all()
    assert table.loc[~table["correct"], ["pointing_game", "attribution_localisation"]].isna().all().all()
    scored = table[table["correct"] & ~table["mosaic_map_all_zero"]]
    assert scored["pointing_game"].isin([0.0, 1.0]).all() and scored["attribution_localisation"].between(0, 1).all()
    assert set(results.throughput["facet"]) == set(FA.FACETS)


def test_all_zero_maps_are_flagged_and_their_metrics_empty() -> None:
    maps = torch.rand(3, 8, 8)
    maps[1] = 0
    ids = torch.arange(3)
    explanation = ExplanationSet(maps, ids, ids, ids, torch.randn(3, 4), ids, "gradcam")
    values = {"pf_auc": torch.tensor([0.1, float("nan"), 0.3]), "continuity_ssim": torch.tensor([0.9, 1.0, 0.8]),
              "pointing_game": torch.tensor([1.0, 0.0, 0.0])}
    rows = FA._rows({"loss": "ce"}, explanation, explanation, values)
    assert rows["map_all_zero"].tolist() == [False, True, False]
    assert rows["continuity_ssim"].isna().tolist() == [False, True, False]  # SSIM 1.0 of a zero map is not kept
    assert rows["contrastivity_ssim"].isna().all()  # not computed for this block


def test_interrupted_run_leaves_no_table(outputs: Path, results: FA.FacetResults, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = FA.table_paths("cifar10", 0)
    assert all(p.is_file() for p in paths.values())

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(FA, "_coherence", interrupt)
    with pytest.raises(KeyboardInterrupt):
        FA.evaluate_facets("smoke", "cifar10", 0, LOSSES, progress=False)
    assert not any(p.exists() for p in paths.values())
    assert not list(paths["table"].parent.glob("*.tmp*"))
    monkeypatch.undo()
    FA.evaluate_facets("smoke", "cifar10", 0, LOSSES, progress=False)  # restore for other tests


def test_bad_parameters_are_named(outputs: Path) -> None:
    with pytest.raises(ConfigError, match="method.*='lime'"):
        run_explanations("smoke", "cifar10", 0, LOSSES, ["gradcam", "lime"], progress=False)
    with pytest.raises(ConfigError, match="losses must be a list"):
        FA.evaluate_facets("smoke", "cifar10", 0, "ce", progress=False)
    with pytest.raises(FileNotFoundError, match="no trained model .*training notebook"):
        run_explanations("smoke", "cifar10", 0, ["triplet"], progress=False)
    probe = model_dir("cifar10", "supcon", 0) / "probe.pt"
    probe.rename(probe.with_suffix(".bak"))
    try:
        with pytest.raises(FileNotFoundError, match="no linear probe .*04_linear_probe"):
            FA.evaluate_facets("smoke", "cifar10", 0, ["supcon"], progress=False)
    finally:
        probe.with_suffix(".bak").rename(probe)
    with pytest.raises(ValueError, match="noise_sigma must be"):
        FA.metric_params(MetricsConfig(32, 64, "black", 0.0), 0)
    with pytest.raises(ValueError, match="n_examples must be an integer >= 1, got 0"):
        FA.evaluate_facets("smoke", "cifar10", 0, LOSSES, progress=False, n_examples=0)


def test_gallery_shows_the_first_image_of_each_class_its_maps_and_every_prediction(outputs: Path) -> None:
    data, _ = load_prepared("cifar10", "smoke")
    split = explained_split(data, load_profile("smoke").for_dataset("cifar10").explain)
    maps = {(loss, method): load_explanations("cifar10", loss, 0, method) for loss in LOSSES for method in METHODS}
    fig = plots.explanation_gallery(split.images, split.labels, data.classes, maps, n_rows=3)
    axes = np.array(fig.axes).reshape(3, 1 + len(maps))
    for c in range(3):
        first = int((split.labels == c).nonzero()[0, 0])
        np.testing.assert_array_equal(axes[c, 0].images[0].get_array(), plots.to_display(split.images[first : first + 1])[0])
        predicted = [data.classes[int(maps[(loss, "gradcam")].predictions[first])][:5] for loss in LOSSES]
        assert axes[c, 0].get_ylabel() == f"{data.classes[c]}\n({', '.join(predicted)})"
        for j, m in enumerate(maps.values(), start=1):
            np.testing.assert_array_equal(axes[c, j].images[1].get_array(), m.maps[first].float().numpy())
    assert [ax.get_title() for ax in axes[0]] == ["image", "CE · Grad-CAM", "CE · Eigen-CAM", "SCL · Grad-CAM", "SCL · Eigen-CAM"]
    plt.close(fig)
    for bad, message in ((0, "n_gallery must be an integer >= 1, got 0"), (11, r"at most the number of classes \(10\), got 11")):
        with pytest.raises(ValueError, match=message):
            plots.explanation_gallery(split.images, split.labels, data.classes, maps, n_rows=bad)
