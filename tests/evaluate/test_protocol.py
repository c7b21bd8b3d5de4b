"""The metrics' protocol: each of the authors' deviations switched on alone, on hand-made cases."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clxai_utils.core.config import (
    DEVIATIONS,
    MetricsConfig,
    _build,
    resolve_protocol,
)
from clxai_utils.core.registry import FACETS
from clxai_utils.core.validate import ConfigError
from clxai_utils.evaluate import metrics as M
from clxai_utils.evaluate import scoring
from clxai_utils.evaluate.protocol import DEVIATION_DESCRIPTIONS, correct_only_average, protocol_record
from clxai_utils.explain import cams, store
from clxai_utils.explain.store import ExplanationSet
from clxai_utils.train import probe as probe_module
from clxai_utils.train.models import ContrastiveModel, resnet18_cifar


def _params(protocol: Any = "corrected", **kwargs: Any) -> MetricsConfig:
    return MetricsConfig(pixels_per_step=1, batch_size=64, protocol=protocol, **kwargs)


# --------------------------------------------------------------------------- the setting


def test_default_protocol_is_corrected_and_leaves_the_record_unchanged() -> None:
    params = MetricsConfig(pixels_per_step=32, batch_size=8)
    assert params.protocol == "corrected" and params.deviations == frozenset()
    assert "protocol" not in params.to_dict()
    assert protocol_record(params, own_masks=True) == {
        "protocol": "corrected",
        "deviations": [],
        "deviations_described": {},
    }


def test_authors_switches_every_deviation_and_says_which_change_nothing_on_mosaics() -> None:
    params = _params("authors")
    assert params.deviations == frozenset(DEVIATIONS) and "authors_coherence" in params.deviations
    with_masks = protocol_record(params, own_masks=True)
    assert with_masks["deviations"] == list(DEVIATIONS) and "not_applicable" not in with_masks
    on_mosaics = protocol_record(params, own_masks=False)
    assert list(on_mosaics["not_applicable"]) == ["authors_coherence"]
    assert (
        "applies only to data sets whose test images carry masks" in on_mosaics["not_applicable"]["authors_coherence"]
    )
    assert MetricsConfig(**params.to_dict()) == params


@pytest.mark.parametrize("name", DEVIATIONS)
def test_each_deviation_can_be_switched_on_alone(name: str) -> None:
    params = _params([name])
    assert params.deviations == {name} and params.protocol == (name,) and resolve_protocol([name]) == (name,)
    assert protocol_record(params, own_masks=True)["deviations_described"] == {name: DEVIATION_DESCRIPTIONS[name]}
    assert MetricsConfig(**params.to_dict()) == params


def test_a_yaml_list_is_read_as_deviation_names() -> None:
    raw = {"pixels_per_step": 4, "batch_size": 2, "protocol": ["pf_no_first_point", "clamped_noise"]}
    params = _build(MetricsConfig, raw, "metrics")
    assert params.protocol == ("pf_no_first_point", "clamped_noise")
    assert resolve_protocol(params.protocol) == ("clamped_noise", "pf_no_first_point")  # the fixed order


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ("paper", r"protocol='paper'.*corrected, authors"),
        (["clamped_noise", "typo"], r"protocol deviation='typo'.*clamped_noise.*unnormalised_head.*authors_coherence"),
        (3, r"protocol must be one of corrected, authors or a list"),
    ],
)
def test_unknown_names_are_refused_with_the_allowed_ones(protocol: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _params(protocol)
    with pytest.raises(ConfigError, match=r"metrics\."):
        _build(MetricsConfig, {"pixels_per_step": 4, "batch_size": 2, "protocol": protocol}, "metrics")


# --------------------------------------------------------------------------- toy models


class Summer(nn.Module):
    """Logits (sum of all inputs, 0): softmax p0 = sigmoid(sum x), by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([s, torch.zeros_like(s)], dim=1) + self.dummy


class Recorder(Summer):
    """Summer that keeps every input it sees (the flipped copies)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return super().forward(x)


def _flipped_copies(x: Tensor, maps: Tensor, **switches: bool) -> Tensor:
    model = Recorder().eval()
    baseline = torch.full((x.shape[1],), -9.0)
    M.pixel_flipping(
        model, x, maps, torch.zeros(len(x), dtype=torch.long), pixels_per_step=1, baseline=baseline, **switches
    )
    return torch.cat(model.seen)


MAP_2X2 = torch.tensor([[[0.9, 0.5], [0.7, 0.1]]])


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# --------------------------------------------------------------------------- Pixel Flipping switches


def test_pf_true_label_scores_the_label_not_the_explained_class() -> None:
    """Map explains class 0 (predicted), label 1: the authors' curve is 1 - the explained class's curve."""
    x = torch.ones(1, 1, 2, 2)
    maps = ExplanationSet(
        maps=MAP_2X2.clone(),
        image_ids=torch.tensor([7]),
        labels=torch.tensor([1]),
        predictions=torch.tensor([0]),
        logits=torch.tensor([[4.0, 0.0]]),
        targets=torch.tensor([0]),
        method="gradcam",
    )
    baseline = torch.zeros(1)
    corrected, curves, _ = scoring._faithfulness(Summer().eval(), x, maps, _params(), baseline)
    authors, true_curves, _ = scoring._faithfulness(Summer().eval(), x, maps, _params(["pf_true_label"]), baseline)
    expected = torch.tensor([[_sigmoid(4 - k) for k in range(5)]], dtype=torch.float64)
    torch.testing.assert_close(curves, expected)
    torch.testing.assert_close(true_curves, 1 - expected)
    assert not torch.allclose(corrected["pf_auc"], authors["pf_auc"])


def test_pf_min_baseline_fills_with_the_images_minimum_over_all_channels() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-2.5, 0.0], [0.5, 1.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    corrected = _flipped_copies(x, MAP_2X2)
    authors = _flipped_copies(x, MAP_2X2, min_baseline=True)
    assert torch.equal(corrected[-1], torch.full((3, 2, 2), -9.0))  # the given per-channel baseline
    assert torch.equal(authors[-1], torch.full((3, 2, 2), -2.5))  # min over every channel and pixel
    assert torch.equal(authors[1][:, 0, 0], torch.full((3,), -2.5))  # the best pixel (0.9) goes first


def test_pf_channel_elements_flips_one_channel_element_per_step_in_quantus_order() -> None:
    """C=3, 4 pixels, 1 element per step: 12 steps; after 3k steps the k best pixels are gone in every channel."""
    x = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2) + 1
    copies = _flipped_copies(x, MAP_2X2, channel_elements=True)
    assert len(copies) == 13 and len(_flipped_copies(x, MAP_2X2)) == 5
    flipped = copies == -9.0
    assert flipped.flatten(1).sum(1).tolist() == list(range(13))
    pixel_order = [(0, 0), (1, 0), (0, 1), (1, 1)]  # map 0.9, 0.7, 0.5, 0.1
    for k, (i, j) in enumerate(pixel_order, start=1):
        assert flipped[3 * k, :, i, j].all()
        assert flipped[3 * k].any(dim=0).sum() == k  # whole pixels only at multiples of C
    # the order is quantus's own: numpy's argsort of the negated, broadcast map
    order = np.argsort(-np.broadcast_to(MAP_2X2.numpy()[:, None], (1, 3, 2, 2)).reshape(1, -1), axis=1)[0]
    for k in range(1, 13):
        assert flipped[k].flatten()[order[k - 1]] and flipped[k].flatten().sum() == k


def test_pf_no_first_point_drops_the_intact_image_and_uses_the_authors_auc() -> None:
    x = torch.ones(1, 1, 2, 2)
    kwargs: dict[str, Any] = {"pixels_per_step": 1, "baseline": torch.zeros(1)}
    target = torch.zeros(1, dtype=torch.long)
    full = M.pixel_flipping(Summer().eval(), x, MAP_2X2, target, **kwargs)
    short = M.pixel_flipping(Summer().eval(), x, MAP_2X2, target, first_point=False, **kwargs)
    s = [_sigmoid(4 - k) for k in range(5)]
    assert full.curves.shape == (1, 5) and short.curves.shape == (1, 4)
    torch.testing.assert_close(short.curves[0], torch.tensor(s[1:], dtype=torch.float64))
    assert short.auc.item() == pytest.approx(((s[1] + s[4]) / 2 + s[2] + s[3]) / 3, abs=1e-12)
    assert full.auc.item() == pytest.approx(((s[0] + s[4]) / 2 + s[1] + s[2] + s[3]) / 4, abs=1e-12)
    torch.testing.assert_close(short.fractions, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))


# --------------------------------------------------------------------------- continuity, zero maps


def test_clamped_noise_zeroes_every_negative_normalised_value() -> None:
    x = torch.tensor([[[[-1.5, -0.2], [0.4, 2.0]]]])
    plain = M.add_input_noise(x, 0.02, torch.Generator().manual_seed(0))
    clamped = M.add_input_noise(x, 0.02, torch.Generator().manual_seed(0), clamp=True)
    assert torch.equal(clamped, plain.clamp(0, 1))
    assert clamped[0, 0, 0].tolist() == [0.0, 0.0] and clamped[0, 0, 1, 1] == 1.0
    assert (plain - x).abs().max() < 0.1  # the noise alone barely changes the image

    info = SimpleNamespace(mean=(0.5,), std=(0.25,))

    def run(protocol: Any) -> Any:
        return SimpleNamespace(
            settings=SimpleNamespace(metrics=_params(protocol), explain=SimpleNamespace(batch_size=2)), seed=0
        )

    assert torch.equal(scoring.facet_inputs(x, None, info, run("corrected")).x_noisy, plain)  # type: ignore[arg-type]
    assert torch.equal(scoring.facet_inputs(x, None, info, run(["clamped_noise"])).x_noisy, clamped)  # type: ignore[arg-type]


def test_zero_maps_unhandled_keeps_the_ssim_of_zero_maps() -> None:
    maps = ExplanationSet(
        maps=torch.stack([torch.zeros(2, 2), MAP_2X2[0]]),
        image_ids=torch.tensor([0, 1]),
        labels=torch.tensor([0, 1]),
        predictions=torch.tensor([0, 1]),
        logits=torch.zeros(2, 2),
        targets=torch.tensor([0, 1]),
        method="gradcam",
    )
    values = {name: torch.tensor([0.25, 0.5], dtype=torch.float64) for name in ("pf_auc", "continuity_ssim")}
    values["contrastivity_ssim"] = torch.tensor([0.125, 0.75], dtype=torch.float64)
    corrected = scoring._rows({}, maps, None, values)
    authors = scoring._rows({}, maps, None, values, zero_maps_unhandled=True)
    assert corrected[["pf_auc", "continuity_ssim", "contrastivity_ssim"]].iloc[0].isna().all()
    assert authors["continuity_ssim"].tolist() == [0.25, 0.5]
    assert authors["contrastivity_ssim"].tolist() == [0.125, 0.75]
    assert math.isnan(authors["pf_auc"].iloc[0])  # the authors marked Pixel Flipping of zero maps NaN themselves


# --------------------------------------------------------------------------- Eigen-CAM sign


def test_eigencam_no_sign_is_pytorch_grad_cams_projection() -> None:
    """Without the rule the projection is the library's (its SVD's sign); the rule flips those anti-correlated to the mean."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    activations = torch.rand(16, 5, 3, 3, generator=torch.Generator().manual_seed(3)) ** 4
    no_sign = cams._oriented_projection(activations, sign_rule=False)
    torch.testing.assert_close(no_sign, torch.from_numpy(get_2d_projection(activations.numpy())), rtol=0, atol=1e-6)
    flips = (no_sign.flatten(1) * activations.mean(dim=1).flatten(1)).sum(dim=1) < 0
    assert flips.any() and (~flips).any()  # the library's sign goes both ways on this batch
    ruled = cams._oriented_projection(activations)
    torch.testing.assert_close(ruled[flips], -no_sign[flips], rtol=0, atol=1e-6)
    torch.testing.assert_close(ruled[~flips], no_sign[~flips], rtol=0, atol=1e-6)


def test_eigencam_no_sign_reaches_the_stored_maps(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = probe_module.ExplainableClassifier(resnet18_cifar(0.125), nn.Linear(64, 3), False).eval()
    x = torch.randn(4, 3, 32, 32)
    batch = (x, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    ruled = store.compute_explanations(model, batch, "eigencam", batch_size=4, progress=False)
    plain = store.compute_explanations(model, batch, "eigencam", batch_size=4, progress=False, eigencam_sign=False)
    assert torch.equal(plain.maps, cams.explain(model, x, "eigencam", None, 4, eigencam_sign=False))
    assert plain.meta["sign_convention"] == store.NO_SIGN_CONVENTION != ruled.meta["sign_convention"]
    # a stored file counts as current only for the map deviations it was computed with
    path = tmp_path / "maps.pt"
    ExplanationSet(**{**vars(plain), "meta": plain.meta | {"map_deviations": ["eigencam_no_sign"]}}).save(path)
    assert store._is_current(path, {}, ["eigencam_no_sign"]) and not store._is_current(path, {})


# --------------------------------------------------------------------------- the probe's features


def test_unnormalised_head_applies_the_probe_to_raw_features(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same probe, same backbone: the authors' logits are the corrected ones times the feature norm (zero bias)."""
    torch.manual_seed(0)
    encoder = ContrastiveModel(resnet18_cifar(0.125)).eval()
    head = nn.Linear(64, 3)
    nn.init.zeros_(head.bias)
    identity = {"profile": "toy"}
    spec = SimpleNamespace(num_classes=3)
    (tmp_path / probe_module.PROBE).write_bytes(b"")
    monkeypatch.setattr(probe_module, "load_trained", lambda out_dir, epoch: (encoder, spec, identity))
    monkeypatch.setattr(
        probe_module, "load_torch", lambda path: {"identity": identity, "state_dict": head.state_dict()}
    )
    run = SimpleNamespace(model_dir=lambda loss: tmp_path, profile="toy")
    corrected, _ = probe_module.load_classifier(run, "supcon")  # type: ignore[arg-type]
    authors, _ = probe_module.load_classifier(run, "supcon", normalize_features=False)  # type: ignore[arg-type]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        norms = encoder.backbone(x).norm(dim=1, keepdim=True)
        torch.testing.assert_close(authors(x), corrected(x) * norms)
        torch.testing.assert_close(corrected(x), head(F.normalize(encoder.backbone(x), dim=1)))
    assert corrected.normalize_features and not authors.normalize_features


# --------------------------------------------------------------------------- summaries


def test_correct_only_average_leaves_out_misclassified_images() -> None:
    table = pd.DataFrame(
        {
            "loss": ["ce"] * 4 + ["supcon"] * 2,
            "method": ["gradcam"] * 6,
            "correct": [True, True, False, False, True, False],
            "pf_auc": [0.1, 0.3, 0.9, float("nan"), 0.5, 0.7],
            "continuity_ssim": [1.0, 0.5, 0.0, 0.25, 0.5, 0.5],
        }
    )
    every = correct_only_average(table, deviations=())
    correct = correct_only_average(table)
    assert every["pf_auc"].tolist() == pytest.approx([(0.1 + 0.3 + 0.9) / 3, 0.6])
    assert correct["pf_auc"].tolist() == pytest.approx([0.2, 0.5])
    assert correct["continuity_ssim"].tolist() == pytest.approx([0.75, 0.5])
    assert correct["n_images"].tolist() == [2, 1] and every["n_images"].tolist() == [4, 2]
    assert list(correct.columns[:3]) == ["loss", "method", "n_images"]


def test_every_ablation_protocol_switches_on_what_it_names() -> None:
    """08's protocols: none, the authors' set, or exactly one deviation; unknown names are refused."""
    from clxai_utils.core.config import ABLATION_PROTOCOLS, AblationConfig, protocol_deviations
    from clxai_utils.evaluate.ablation import DEVIATION_FACETS, maps_change, rescored_facets

    assert list(ABLATION_PROTOCOLS) == ["corrected", "authors", *DEVIATIONS]
    assert protocol_deviations("corrected") == () and protocol_deviations("authors") == DEVIATIONS
    assert all(protocol_deviations(d) == (d,) for d in DEVIATIONS)
    assert set(DEVIATION_FACETS) == set(DEVIATIONS), "every deviation says which facets it changes"
    with pytest.raises(ConfigError, match="protocol='typo' is not allowed; choose one of: corrected"):
        protocol_deviations("typo")
    assert rescored_facets(("pf_true_label",), "ce", "gradcam", own_masks=False) == ("faithfulness",)
    assert rescored_facets(("eigencam_no_sign",), "ce", "gradcam", own_masks=False) == ()
    assert rescored_facets(("authors_coherence",), "ce", "gradcam", own_masks=True) == ("coherence",)
    assert rescored_facets(("authors_coherence",), "ce", "eigencam", own_masks=False) == ()
    assert maps_change(("eigencam_no_sign",), "ce", "eigencam") and not maps_change(
        ("unnormalised_head",), "ce", "gradcam"
    )
    assert rescored_facets(("unnormalised_head",), "triplet", "gradcam", own_masks=False) == FACETS
    authors = protocol_deviations("authors")
    assert rescored_facets(authors, "ce", "gradcam", own_masks=False) == ("faithfulness", "continuity", "contrastivity")
    assert rescored_facets(authors, "ce", "gradcam", own_masks=True) == (
        "faithfulness",
        "continuity",
        "contrastivity",
        "coherence",
    )
    assert rescored_facets(("correct_only_average",), "supcon", "eigencam", own_masks=True) == ()
    with pytest.raises(ValueError, match="images_per_class must be"):
        AblationConfig(images_per_class=0)
