"""The faithfulness stage on the smoke run (`run` and `results` of tests/conftest.py): tables, agreement, refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import SMOKE_LOSSES

from clxai_utils.analysis.tables import KINDS, load_results
from clxai_utils.core.artifacts import load_torch
from clxai_utils.core.compute import CPU_FLOAT32
from clxai_utils.core.config import FaithfulnessConfig
from clxai_utils.core.registry import FAITHFULNESS_MEASURES, METHODS
from clxai_utils.core.run import Run
from clxai_utils.core.validate import ConfigError
from clxai_utils.data.prepare import load_prepared
from clxai_utils.evaluate import faithfulness_stage as FS
from clxai_utils.evaluate.ablation import ablation_index
from clxai_utils.evaluate.facets import FacetResults
from clxai_utils.evaluate.ffidelity import f_fidelity
from clxai_utils.evaluate.metrics import make_baseline, pixel_flipping
from clxai_utils.evaluate.randomisation import DEFAULT_ORDER
from clxai_utils.explain.store import explained_split, load_explanations, normalised_images
from clxai_utils.train.probe import load_classifier

PER_IMAGE = [*FS.RUN_COLUMNS, "image_id", "label", "prediction", "correct", "map_all_zero"]


@pytest.fixture(scope="module")
def measured(run: Run) -> FS.FaithfulnessResults:
    return FS.run_faithfulness(run, SMOKE_LOSSES, progress=False, compute=CPU_FLOAT32)


def _subset(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The measured images (normalised) and their positions among the explained images."""
    data, _ = load_prepared(run)
    split = explained_split(data, run.settings.explain)
    index = ablation_index(split.labels, run.settings.faithfulness.images_per_class)
    return normalised_images(split, data.info)[index], index


def _block(table: pd.DataFrame, loss: str, method: str) -> pd.DataFrame:
    return table[(table["loss"] == loss) & (table["method"] == method)].reset_index(drop=True)


def test_tables_layout_files_and_sidecar(run: Run, results: FacetResults, measured: FS.FaithfulnessResults) -> None:
    cfg = run.settings.faithfulness
    n = 10 * cfg.images_per_class
    table = measured.table
    assert list(table.columns) == [*PER_IMAGE, *FAITHFULNESS_MEASURES]
    assert len(table) == len(SMOKE_LOSSES) * len(METHODS) * n
    assert not table.duplicated(["loss", "method", "image_id"]).any()
    assert table.loc[table["map_all_zero"], list(FAITHFULNESS_MEASURES)].isna().all().all()

    curves = measured.curves
    assert list(curves.columns) == [*FS.RUN_COLUMNS, "curve", "point", "fraction", "mean", "std", "n"]
    sizes = curves.groupby(["loss", "method", "curve"]).size()
    assert sizes.xs("ffid_plus", level="curve").eq(len(cfg.ffidelity_fractions)).all()
    assert sizes.xs("road_morf", level="curve").eq(len(cfg.road_fractions)).all()
    assert sizes.xs("deletion_logit", level="curve").eq(1024 // 128 + 1).all()

    cascade = measured.randomisation
    assert list(cascade.columns) == [*FS.RUN_COLUMNS, *FS.RANDOMISATION_COLUMNS]
    assert len(cascade) == len(SMOKE_LOSSES) * len(METHODS) * 10 * (1 + len(DEFAULT_ORDER))
    logit = measured.random_logit
    assert list(logit.columns) == [*FS.RUN_COLUMNS, *FS.RANDOM_LOGIT_COLUMNS]
    assert set(logit["method"]) == {"gradcam"} and len(logit) == len(SMOKE_LOSSES) * n  # Eigen-CAM has no class

    paths = run.faithfulness_paths
    for name in ("table", "curves", "randomisation", "random_logit"):
        on_disk = pd.read_csv(paths[name])
        pd.testing.assert_frame_equal(on_disk, getattr(measured, name), check_dtype=False)
    maps = load_torch(paths["maps"])
    assert maps["maps"]["ce/gradcam"].shape == (1 + len(DEFAULT_ORDER), 4, 32, 32)
    assert maps["layers"]["supcon/eigencam"] == ["none", *DEFAULT_ORDER] and len(maps["image_ids"]) == 4

    sidecar = json.loads(paths["sidecar"].read_text())
    assert sidecar["n_images"] == n and sidecar["settings"]["randomisation_order"] == list(DEFAULT_ORDER)
    assert set(sidecar["timings"]) == set(FS.TIMED)
    assert all(t["images_per_s"] > 0 for t in sidecar["timings"].values())
    steps = math.ceil(cfg.finetune_epochs * 160 / cfg.finetune_batch_size)  # 16 training images per class
    assert sidecar["fine_tuning"]["ce"]["steps"] == steps and sidecar["fine_tuning"]["supcon"]["seconds"] > 0
    assert set(sidecar["randomisation_verdicts"]) == {f"{loss}/{m}" for loss in SMOKE_LOSSES for m in METHODS}
    assert set(sidecar["random_logit"]) == {f"{loss}/gradcam" for loss in SMOKE_LOSSES}

    gathered = load_results(run.root.parent)  # 09's reader (06's table in `results`) finds every table here
    kinds = {"faithfulness": "table", "faithfulness_curves": "curves", "randomisation": "randomisation"}
    for kind, field in (kinds | {"random_logit": "random_logit"}).items():
        assert len(getattr(gathered, kind)) == len(getattr(measured, field))
        assert set(KINDS[kind].columns) <= set(getattr(gathered, kind).columns)


def test_deletion_probability_is_pixel_flipping_and_06s_pf_auc(
    run: Run, results: FacetResults, measured: FS.FaithfulnessResults
) -> None:
    x, index = _subset(run)
    params = run.settings.metrics
    data, _ = load_prepared(run)
    baseline = make_baseline(params.baseline, data.info.mean, data.info.std)
    for loss in SMOKE_LOSSES:
        model, _ = load_classifier(run, loss)
        for method in METHODS:
            maps = load_explanations(run, loss, method).select(index)
            pf = pixel_flipping(
                model, x, maps.maps, maps.targets, pixels_per_step=params.pixels_per_step, baseline=baseline
            )
            block = _block(measured.table, loss, method)
            assert np.allclose(block["deletion_probability"], pf.auc.numpy(), atol=1e-9, equal_nan=True)
            paired = block.merge(_block(results.table, loss, method), on="image_id")
            assert len(paired) == len(block)
            assert np.allclose(paired["deletion_probability"], paired["pf_auc"], atol=1e-9, equal_nan=True)


def test_ffid_columns_are_a_direct_f_fidelity_call(run: Run, measured: FS.FaithfulnessResults) -> None:
    x, index = _subset(run)
    cfg, params = run.settings.faithfulness, run.settings.metrics
    data, _ = load_prepared(run)
    baseline = make_baseline(params.baseline, data.info.mean, data.info.std)
    model, _ = load_classifier(run, "supcon")
    tuned, record = FS.fine_tuned_copy(run, model, data, baseline, CPU_FLOAT32)
    assert record["steps"] == measured.sidecar["fine_tuning"]["supcon"]["steps"]
    maps = load_explanations(run, "supcon", "gradcam").select(index)
    direct = f_fidelity(
        tuned,
        x,
        maps.maps,
        maps.targets,
        baseline=baseline,
        generator=torch.Generator().manual_seed(run.seed),
        fractions=cfg.ffidelity_fractions,
        n_samples=cfg.ffidelity_samples,
    )
    block = _block(measured.table, "supcon", "gradcam")
    assert np.allclose(block["ffid_plus"], direct.ffid_plus.numpy(), atol=1e-6, equal_nan=True)
    assert np.allclose(block["ffid_minus"], direct.ffid_minus.numpy(), atol=1e-6, equal_nan=True)


def test_the_cascade_starts_from_the_trained_maps(measured: FS.FaithfulnessResults) -> None:
    cascade = measured.randomisation
    first = cascade[cascade["step"] == 0]
    assert (first["layer"] == "none").all() and np.allclose(first["ssim"], 1.0)
    last = cascade[cascade["step"] == len(DEFAULT_ORDER)]
    assert (last["layer"] == DEFAULT_ORDER[-1]).all()
    logit = measured.random_logit
    assert logit["near_identical"].equals(logit["ssim"] > 0.95)


def _with_faithfulness(run: Run, **changes: object) -> Run:
    """The same run, its faithfulness settings changed (the profile file stays as it is)."""
    changed = dataclasses.replace(run)
    settings = dataclasses.replace(run.settings, faithfulness=FaithfulnessConfig(**changes))  # type: ignore[arg-type]
    changed.__dict__["settings"] = settings  # the cached property's value
    return changed


def test_bad_input_is_refused_with_the_parameter_named(run: Run, measured: FS.FaithfulnessResults) -> None:
    for changes, message in (
        ({"measures": ["deletion_logit", "aopc"]}, "an entry of measures='aopc' is not allowed"),
        ({"road_fractions": [0.0]}, r"road_fractions must be a non-empty list of numbers in \(0, 1\]"),
        ({"ffidelity_fractions": [1.5]}, r"ffidelity_fractions must be a non-empty list of numbers in \(0, 1\]"),
        ({"finetune_epochs": 0}, "finetune_epochs must be a finite number > 0, got 0"),
    ):
        with pytest.raises(ValueError, match=message):
            _with_faithfulness(run, **changes)
    with pytest.raises(TypeError, match="finetune_epochs must be a number, got str"):
        _with_faithfulness(run, finetune_epochs="abc")
    table = run.faithfulness_paths["table"]
    written = table.stat().st_mtime_ns
    missing = _with_faithfulness(run, randomisation_order=["head", "backbone.layer9"])
    with pytest.raises(ConfigError, match=r"randomisation_order names \['backbone.layer9'\].*layers are \['head'"):
        FS.run_faithfulness(missing, SMOKE_LOSSES, progress=False, compute=CPU_FLOAT32)
    assert table.stat().st_mtime_ns == written, "refused before anything was removed or computed"
    with pytest.raises(ConfigError, match="an entry of losses='lime'"):
        FS.run_faithfulness(run, ["ce", "lime"], progress=False)


def test_an_interrupted_run_leaves_no_table(
    run: Run, measured: FS.FaithfulnessResults, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = run.faithfulness_paths
    assert all(path.is_file() for path in paths.values())

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(FS, "cascading_randomisation", interrupt)
    with pytest.raises(KeyboardInterrupt):
        FS.run_faithfulness(run, SMOKE_LOSSES, progress=False, compute=CPU_FLOAT32)
    assert not any(path.exists() for path in paths.values())
    assert not list(paths["table"].parent.glob("*.tmp*"))
