"""The explanation (05) and facet (06) stages end to end on the smoke profile and synthetic images."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import SMOKE_LOSSES as LOSSES

from clxai_utils import figures as plots
from clxai_utils.core.config import MetricsConfig
from clxai_utils.core.registry import FACETS, METHODS, METRICS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import ConfigError
from clxai_utils.data.prepare import load_prepared
from clxai_utils.evaluate import facets as FA
from clxai_utils.evaluate import scoring as SC
from clxai_utils.evaluate.metrics import contrast_classes, make_baseline, pixel_flipping, ssim
from clxai_utils.explain.cams import explain
from clxai_utils.explain.store import (
    ExplanationSet,
    explained_split,
    load_explanations,
    normalised_images,
    run_explanations,
)
from clxai_utils.train.probe import load_classifier

# `run` (a smoke run with CE and SupCon models and their stored maps) and `results` (06 on it) are tests/conftest.py's.


def test_maps_are_stored_once_and_reused(run: Run) -> None:
    again = run_explanations(run, LOSSES, progress=False)
    assert again["reused"].all()
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    stored = load_explanations(run, "ce", "gradcam")
    assert torch.equal(stored.image_ids, split.ids) and torch.equal(stored.targets, stored.predictions)
    mosaics = load_explanations(run, "ce", "gradcam", "mosaics")
    assert torch.equal(mosaics.targets, split.labels) and mosaics.maps.shape[1:] == (64, 64)


def test_maps_of_a_changed_model_are_refused(run: Run) -> None:
    path = run.explanation_path("supcon", "eigencam")
    stored = ExplanationSet.load(path)
    stale = ExplanationSet(**{**vars(stored), "meta": {**stored.meta, "model_digest": "0" * 64}})
    stale.save(path)
    try:
        with pytest.raises(ValueError, match="computed for another 'supcon' model.*05_explanations"):
            load_explanations(run, "supcon", "eigencam")
        redone = run_explanations(run, ["supcon"], ["eigencam"], progress=False)
        assert list(redone["reused"]) == [False, True]  # the stale test maps are recomputed, the mosaics reused
    finally:
        run_explanations(run, ["supcon"], ["eigencam"], progress=False)


def test_results_table_layout_and_files(run: Run, results: FA.FacetResults) -> None:
    table, n = results.table, results.sidecar["n_images"]
    assert len(table) == len(LOSSES) * 2 * n and not table.duplicated(["loss", "method", "image_id"]).any()
    assert list(table.columns) == [*FA.ID_COLUMNS, *METRICS]
    paths = run.facets_paths
    on_disk = pd.read_csv(paths["table"])
    pd.testing.assert_frame_equal(on_disk, results.table, check_dtype=False)
    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["params"]["pixels_per_step"] == 128 and sidecar["params"]["noise_sigma"] == 0.02
    assert set(sidecar["columns"]) >= set(METRICS) and "grad-cam" in sidecar["versions"]
    curves = pd.read_csv(paths["curves"])
    assert len(curves) == len(LOSSES) * 2 * (1024 // 128 + 1)
    assert curves["fraction"].min() == 0 and curves["fraction"].max() == 1


def test_metric_columns_equal_direct_computation(run: Run, results: FA.FacetResults) -> None:
    """Faithfulness and contrastivity of the CE Grad-CAM block recomputed from the stored maps."""
    model, _ = load_classifier(run, "ce")
    stored = load_explanations(run, "ce", "gradcam")
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    x = normalised_images(split, data.info)
    block = results.table[(results.table["loss"] == "ce") & (results.table["method"] == "gradcam")]
    params = run.settings.metrics
    pf = pixel_flipping(
        model,
        x,
        stored.maps,
        stored.targets,
        pixels_per_step=128,
        baseline=make_baseline(params.baseline, data.info.mean, data.info.std),
    )
    assert torch.allclose(torch.tensor(block["pf_auc"].to_numpy()), pf.auc, atol=1e-9, equal_nan=True)
    others = contrast_classes(stored.predictions, stored.image_ids, 10, 0)
    expected = ssim(stored.maps, explain(model, x, "gradcam", others, 64))
    assert torch.allclose(torch.tensor(block["contrastivity_ssim"].to_numpy()), expected, atol=1e-6)


def test_facet_rules(results: FA.FacetResults) -> None:
    table = results.table
    assert table.loc[table["method"] == "eigencam", "contrastivity_ssim"].isna().all()
    assert table.loc[~table["correct"], ["pointing_game", "attribution_localisation"]].isna().all().all()
    scored = table[table["correct"] & ~table["coherence_map_all_zero"]]
    assert scored["pointing_game"].isin([0.0, 1.0]).all() and scored["attribution_localisation"].between(0, 1).all()
    assert set(results.throughput["facet"]) == set(FACETS)


def test_all_zero_maps_are_flagged_and_their_metrics_empty() -> None:
    maps = torch.rand(3, 8, 8)
    maps[1] = 0
    ids = torch.arange(3)
    explanation = ExplanationSet(maps, ids, ids, ids, torch.randn(3, 4), ids, "gradcam")
    values = {
        "pf_auc": torch.tensor([0.1, float("nan"), 0.3]),
        "continuity_ssim": torch.tensor([0.9, 1.0, 0.8]),
        "pointing_game": torch.tensor([1.0, 0.0, 0.0]),
    }
    rows = SC._rows({"loss": "ce"}, explanation, explanation, values)
    assert rows["map_all_zero"].tolist() == [False, True, False]
    assert rows["continuity_ssim"].isna().tolist() == [False, True, False]  # SSIM 1.0 of a zero map is not kept
    assert rows["contrastivity_ssim"].isna().all()  # not computed for this block


def test_interrupted_run_leaves_no_table(run: Run, results: FA.FacetResults, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = run.facets_paths
    assert all(p.is_file() for p in paths.values())

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SC, "coherence_scores", interrupt)
    with pytest.raises(KeyboardInterrupt):
        FA.evaluate_facets(run, LOSSES, progress=False)
    assert not any(p.exists() for p in paths.values())
    assert not list(paths["table"].parent.glob("*.tmp*"))
    monkeypatch.undo()
    FA.evaluate_facets(run, LOSSES, progress=False)  # restore for other tests


def test_bad_parameters_are_named(run: Run) -> None:
    with pytest.raises(ConfigError, match="method.*='lime'"):
        run_explanations(run, LOSSES, ["gradcam", "lime"], progress=False)
    with pytest.raises(ConfigError, match="an entry of losses.*'lime'"):
        FA.evaluate_facets(run, '["ce", "lime"]', progress=False)
    with pytest.raises(FileNotFoundError, match="no trained model .*training notebook"):
        run_explanations(run, ["triplet"], progress=False)
    probe = run.model_dir("supcon") / "probe.pt"
    probe.rename(probe.with_suffix(".bak"))
    try:
        with pytest.raises(FileNotFoundError, match="no linear probe .*04_linear_probe"):
            FA.evaluate_facets(run, ["supcon"], progress=False)
    finally:
        probe.with_suffix(".bak").rename(probe)
    with pytest.raises(ValueError, match="noise_sigma must be"):
        MetricsConfig(32, 64, "black", 0.0)
    with pytest.raises(ValueError, match="n_examples must be an integer >= 1, got 0"):
        FA.evaluate_facets(run, LOSSES, progress=False, n_examples=0)


def test_gallery_shows_the_first_image_of_each_class_its_maps_and_every_prediction(run: Run) -> None:
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    maps = {(loss, method): load_explanations(run, loss, method) for loss in LOSSES for method in METHODS}
    fig = plots.explanation_gallery(split.images, split.labels, data.classes, maps, n_rows=3)
    axes = np.array(fig.axes).reshape(3, 1 + len(maps))
    for c in range(3):
        first = int((split.labels == c).nonzero()[0, 0])
        np.testing.assert_array_equal(
            axes[c, 0].images[0].get_array(), plots.to_display(split.images[first : first + 1])[0]
        )
        predicted = [data.classes[int(maps[(loss, "gradcam")].predictions[first])][:5] for loss in LOSSES]
        assert axes[c, 0].get_ylabel() == f"{data.classes[c]}\n({', '.join(predicted)})"
        for j, m in enumerate(maps.values(), start=1):
            np.testing.assert_array_equal(axes[c, j].images[1].get_array(), m.maps[first].float().numpy())
    assert [ax.get_title() for ax in axes[0]] == [
        "image",
        "CE · Grad-CAM",
        "CE · Eigen-CAM",
        "SCL · Grad-CAM",
        "SCL · Eigen-CAM",
    ]
    plt.close(fig)
    for bad, message in (
        (0, "n_gallery must be an integer >= 1, got 0"),
        (11, r"at most the number of classes \(10\), got 11"),
    ):
        with pytest.raises(ValueError, match=message):
            plots.explanation_gallery(split.images, split.labels, data.classes, maps, n_rows=bad)


def test_snapshots_are_scored_like_the_final_models_and_reused(run: Run, results: FA.FacetResults) -> None:
    """07 on the smoke run: epochs 1 and 2 of each loss; the final snapshot repeats 04's accuracy and 06's values."""
    from clxai_utils.evaluate.snapshots import evaluate_snapshots

    first = evaluate_snapshots(run, LOSSES, progress=False)
    assert first.accuracy[["loss", "epoch", "final"]].values.tolist() == [
        ["ce", 1, False],
        ["ce", 2, True],
        ["supcon", 1, False],
        ["supcon", 2, True],
    ]
    probed = pd.read_csv(run.accuracy_path).set_index("loss")["accuracy"]
    final = first.accuracy[first.accuracy["final"]].set_index("loss")["accuracy"]
    assert (final == probed.loc[LOSSES]).all()
    assert (run.model_dir("supcon") / "snapshots" / "epoch0001.probe.pt").is_file(), "a probe of its own"
    same = first.table[first.table["final"]].merge(
        results.table, on=["loss", "method", "image_id"], suffixes=("", "_06")
    )
    assert len(same) == len(first.table) // 2
    for metric in ("pf_auc", "sparseness_gini", "complexity_entropy", "contrastivity_ssim"):
        assert np.allclose(same[metric], same[f"{metric}_06"], atol=1e-6, equal_nan=True), metric
    assert first.sidecar["snapshots_reused"] == 0
    again = evaluate_snapshots(run, LOSSES, progress=False)
    assert again.sidecar["snapshots_reused"] == 4
    pd.testing.assert_frame_equal(again.table, first.table)
    run.snapshot_block_path("supcon", 1).unlink()  # as if interrupted before that block was written
    resumed = evaluate_snapshots(run, LOSSES, progress=False)
    assert resumed.sidecar["snapshots_reused"] == 3
    pd.testing.assert_frame_equal(resumed.table, first.table)


def test_explained_kinds_follow_the_data(run: Run) -> None:
    """CIFAR-like test images without masks get mosaics; a mask set adds its own kind; masked test images need none."""
    from dataclasses import replace

    from clxai_utils.data.masks import MaskSet
    from clxai_utils.explain.store import explained_inputs

    data, _ = load_prepared(run)
    assert list(explained_inputs(data, run)) == ["test", "mosaics"]
    masked = MaskSet(
        data.test.images[:3],
        torch.ones(3, 32, 32, dtype=torch.int8),
        data.test.labels[:3],
        torch.arange(3),
        ("x", "y", "z"),
        data.classes,
    )
    kinds = explained_inputs(replace(data, mask_set=masked), run)
    assert list(kinds) == ["test", "mosaics", "masks"] and kinds["masks"].target == "predicted"
    own = replace(data, test=replace(data.test, masks=torch.zeros(len(data.test), 32, 32, dtype=torch.int8)))
    assert list(explained_inputs(own, run)) == ["test"]


def test_the_protocol_ablation_changes_only_what_each_deviation_changes(run: Run, results: FA.FacetResults) -> None:
    """08 on the smoke run's ablation subset: corrected rows are 06's; each deviation alone recomputes only its
    facets, by hand."""
    from clxai_utils.core.config import ABLATION_PROTOCOLS
    from clxai_utils.evaluate import ablation as AB

    FA.evaluate_facets(run, LOSSES, progress=False)  # 06's table, which an earlier test's failure path removed
    out = AB.run_ablation(run, LOSSES, progress=False)
    table = out.table
    assert list(dict.fromkeys(table["protocol"])) == list(ABLATION_PROTOCOLS)
    corrected = table[table["protocol"] == "corrected"].drop(columns="protocol").reset_index(drop=True)
    facets = pd.read_csv(run.facets_paths["table"])
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    index = AB.ablation_index(split.labels, run.settings.ablation.images_per_class)
    assert 0 < len(index) < len(split), "the smoke profile scores a class-balanced subset of the explained images"
    kept = facets[facets["image_id"].isin(split.ids[index].tolist())].reset_index(drop=True)
    pd.testing.assert_frame_equal(corrected, kept, check_dtype=False)

    def block(protocol: str, loss: str, method: str) -> pd.DataFrame:
        rows = table[(table["protocol"] == protocol) & (table["loss"] == loss) & (table["method"] == method)]
        return rows.drop(columns="protocol").reset_index(drop=True)

    untouched = ["complexity_entropy", "sparseness_gini", "pointing_game", "attribution_localisation"]
    for protocol in ("clamped_noise", "pf_true_label", "pf_min_baseline", "pf_no_first_point"):
        changed = block(protocol, "ce", "gradcam")
        pd.testing.assert_frame_equal(changed[untouched], block("corrected", "ce", "gradcam")[untouched])
    assert not np.allclose(
        block("clamped_noise", "ce", "gradcam")["continuity_ssim"],
        block("corrected", "ce", "gradcam")["continuity_ssim"],
    )
    pd.testing.assert_frame_equal(block("eigencam_no_sign", "ce", "gradcam"), block("corrected", "ce", "gradcam"))
    pd.testing.assert_frame_equal(block("unnormalised_head", "ce", "eigencam"), block("corrected", "ce", "eigencam"))

    # pf_no_first_point by hand: the curve without the intact image, trapz / (S - 1), on the stored maps
    stored = load_explanations(run, "ce", "gradcam", "test")
    model, _ = load_classifier(run, "ce")
    x = normalised_images(split, data.info)[index]
    maps, targets = stored.maps[index].float(), stored.targets[index]
    params = run.settings.metrics
    baseline = make_baseline(params.baseline, data.info.mean, data.info.std)
    curves = pixel_flipping(
        model.eval(), x, maps, targets, pixels_per_step=params.pixels_per_step, baseline=baseline
    ).curves
    by_hand = torch.trapezoid(curves[:, 1:], dx=1.0, dim=1) / (curves.shape[1] - 2)
    expected = by_hand.masked_fill(maps.flatten(1).amax(1) == 0, float("nan")).numpy()
    assert np.allclose(block("pf_no_first_point", "ce", "gradcam")["pf_auc"], expected, atol=1e-6, equal_nan=True)

    # unnormalised_head: SupCon's predictions are those of its probe on raw features
    raw, _ = load_classifier(run, "supcon", normalize_features=False)
    with torch.no_grad():
        predicted = raw.eval()(x).argmax(1).numpy()
    assert (block("unnormalised_head", "supcon", "gradcam")["prediction"].to_numpy() == predicted).all()
    assert out.sidecar["protocols"]["pf_true_label"]["recomputed"]["ce/gradcam"] == ["faithfulness"]

    # authors_coherence: the authors scored no coherence on mosaics, so every column is the corrected one
    for loss in LOSSES:
        for method in METHODS:
            pd.testing.assert_frame_equal(block("authors_coherence", loss, method), block("corrected", loss, method))
    alone = out.sidecar["protocols"]["authors_coherence"]
    assert alone["recomputed"]["ce/gradcam"] == [] and "authors_coherence" in alone["not_applicable"]
    assert "applies only to data sets whose test images carry masks" in alone["not_applicable"]["authors_coherence"]
    assert run.ablation_paths["table"].is_file() and run.ablation_paths["sidecar"].is_file()
    with pytest.raises(ConfigError, match="protocols='bogus' is not allowed; choose one of: corrected, authors"):
        AB.run_ablation(run, LOSSES, protocols=["bogus"], progress=False)
