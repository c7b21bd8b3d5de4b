"""The planted-concept experiment and the comparison of the losses' units (notebook 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from clxai_utils.analysis.stats import permutation_test
from clxai_utils.neurons import comparison, planted
from clxai_utils.neurons.encoders import concatenated_features
from clxai_utils.neurons.invert import Invert, auroc
from clxai_utils.neurons.scorers import CSP, SemanticLens

# --------------------------------------------------------------------------- painting


def test_attributes_are_painted_as_documented() -> None:
    images = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    red = planted.plant(images, "red square patch")
    side = round(planted.PATCH_SHARE * 8)  # 2 pixels of 8
    assert red[:, :, :side, :side].flatten(2).tolist() == [[[255] * 4, [0] * 4, [0] * 4]] * 2
    assert (red[:, :, side:, :] == 100).all() and (red[:, :, :, side:] == 100).all()
    green = planted.plant(images, "green square patch")
    assert green[0, :, -1, -1].tolist() == [0, 255, 0] and green[0, :, 0, 0].tolist() == [100, 100, 100]
    # Tint: 0.8 * 100 + 0.2 * (0, 0, 255) = (80, 80, 131).
    assert planted.plant(images, "blue tint")[0, :, 3, 3].tolist() == [80, 80, 131]
    # Stripes: rows 0, 1, 4, 5 mixed 20 % with white (0.8 * 100 + 51 = 131), rows 2, 3, 6, 7 untouched.
    striped = planted.plant(images, "stripes")[0, 0, :, 0].tolist()
    assert striped == [131, 131, 100, 100, 131, 131, 100, 100]
    assert (images == 100).all(), "planting copies"
    assert list(planted.versions(images)) == [planted.ORIGINAL, *planted.ATTRIBUTES]


def test_planting_rejects_unknown_attributes_and_float_images() -> None:
    with pytest.raises(ValueError, match="attribute='yellow border' is not allowed; choose one of: red square patch"):
        planted.plant(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "yellow border")
    with pytest.raises(ValueError, match="images must be uint8"):
        planted.plant(torch.zeros(1, 3, 4, 4), "stripes")


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.5, 0.95, 1.0])
def test_planted_mask_puts_a_share_rho_of_t_into_class_c(rho: float) -> None:
    labels = torch.arange(10).repeat_interleave(20)
    mask = planted.planted_mask(labels, 3, rho, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 20, "as many images carry T as class C has"
    assert int(mask[labels == 3].sum()) == round(rho * 20)
    again = planted.planted_mask(labels, 3, rho, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    with pytest.raises(ValueError, match=r"rho must be in \[0.0, 1.0\], got 1.5"):
        planted.planted_mask(labels, 3, 1.5, torch.Generator())


def test_t_unit_is_fishers_discriminant() -> None:
    gen = torch.Generator().manual_seed(0)
    # Feature 0 varies a lot (the class), feature 1 little; T shifts both by 1.
    original = torch.randn(400, 2, generator=gen) * torch.tensor([5.0, 0.5])
    planted_ = original + 1
    unit = planted.t_unit("stripes", original, planted_)
    # By numpy: pooled within-group covariance (both groups centred), ridge 1e-3 x its mean eigenvalue.
    x = original.double().numpy()
    within = 2 * np.cov(x.T, bias=True) / 2  # both groups have the same spread here
    ridge = planted.SHRINKAGE * np.trace(within) / 2
    expected = np.linalg.solve(within + ridge * np.eye(2), np.ones(2))
    assert unit.direction.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    assert unit.direction[1] / unit.direction[0] > 30, "the low-variance feature carries the discriminant"
    a0, a1 = unit(original), unit(original + 1)
    assert float((a0.mean() + a1.mean()) / 2) == pytest.approx(0, abs=1e-5), "bias = the midpoint"
    assert (
        auroc(torch.cat([a0, a1])[:, None], torch.arange(800)[:, None] >= 400).item() > 0.9
    )  # d' = 2: Phi(sqrt 2) = 0.92


# --------------------------------------------------------------------------- trials on a simulated space


def _toy(n_per_class: int = 60, t_strength: float = 0.6, seed: int = 0) -> tuple[planted.TrialInputs, planted.Space]:
    """Ten classes and one attribute in a 24-d space; T moves an image by a third of a class's pull."""
    gen = torch.Generator().manual_seed(seed)
    d, classes = 24, tuple(f"class {c}" for c in range(10))
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    class_dirs, t_dir = basis[:10] * 1.5, basis[10] * t_strength

    def embed(labels: torch.Tensor, with_t: bool) -> torch.Tensor:
        noise = 0.1 * torch.randn(len(labels), d, generator=gen)
        return F.normalize(class_dirs[labels] + noise + (t_dir if with_t else 0), dim=1)

    labels = torch.arange(10).repeat_interleave(n_per_class)
    ref_labels = torch.arange(10).repeat_interleave(30)
    probe = {planted.ORIGINAL: embed(labels, False), "stripes": embed(labels, True)}
    reference = {planted.ORIGINAL: embed(ref_labels, False), "stripes": embed(ref_labels, True)}
    space = planted.concept_mean_space("toy", probe, reference, ref_labels, classes)
    # The T-unit reads a feature that is 1 with T and 0 without, plus noise; 5 more units of the "layer".
    features = {v: torch.rand(len(labels), 6, generator=gen) * 0.5 for v in probe}
    features["stripes"][:, 0] += 1
    unit = planted.TUnit("stripes", torch.eye(6)[0], 0.75)
    return planted.TrialInputs(features, labels, classes, {"stripes": unit}), space


def test_contrast_recovers_the_planted_concept_where_averaging_names_the_class() -> None:
    inputs, space = _toy()
    scorers = [SemanticLens(30), CSP(1.0, 30)]
    trials = planted.run_trials(inputs, [space], scorers, rhos=[0.95, 1.0], seeds=range(10), progress=False)
    table = planted.recovery_table(trials)
    at_one = table[table["rho"] == 1.0].set_index("scorer")
    rates = table[table["rho"] == 0.95].set_index("scorer")
    # rho = 1, the negative control: every class-C image carries T, so no twin lacks it and CSP names C too.
    assert at_one.loc["CSP (gamma=1)", "names_T"] <= 0.2
    assert rates.loc["SemanticLens", "names_C"] >= 0.8 and rates.loc["SemanticLens", "names_T"] <= 0.2
    assert rates.loc["CSP (gamma=1)", "names_T"] >= 0.8
    assert rates.loc["INVERT (annotated)", "names_T"] == 1.0, "the oracle knows where T is"
    assert set(trials["class"]) == set(inputs.classes), "seed s plants with class s mod 10"
    assert (rates["trials"] == 10).all()


def test_a_blind_space_ties_the_attributes_and_names_none() -> None:
    inputs, space = _toy()
    blind = planted.concept_mean_space(
        "toy",
        space.images,
        {v: space.images[planted.ORIGINAL] for v in space.images},
        inputs.labels,
        inputs.classes,
        blind=True,
    )
    assert torch.equal(blind.images["stripes"], blind.images[planted.ORIGINAL])
    # One attribute: its blind label is the mean of all originals, a label like any other, but not T's.
    trials = planted.run_trials(inputs, [blind], [CSP(1.0, 30)], rhos=[0.5], seeds=range(4), progress=False)
    assert not trials.loc[trials["scorer"] != "INVERT (annotated)", "names_T"].any()


def test_top_label_reports_ties_between_labels_embedded_alike() -> None:
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), dim=1)
    images = {planted.ORIGINAL: embeddings[:1]}
    space = planted.Space("s", images, ("a", "b", "c"), embeddings)
    assert planted.top_label(torch.tensor([0.9, 0.1, 0.1]), space) == "a"
    assert planted.top_label(torch.tensor([0.1, 0.9, 0.9]), space) == "tie: b / c"


# --------------------------------------------------------------------------- the losses' units


def test_class_selectivity_hand_case() -> None:
    # Class means of unit 0: (4, 1, 1): (4 - 1) / (4 + 1) = 0.6; unit 1 responds alike: 0; unit 2 is silent: NaN.
    activations = torch.tensor([[3.0, 2, 0], [5, 2, 0], [1, 2, 0], [1, 2, 0], [0, 2, 0], [2, 2, 0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    selectivity = comparison.class_selectivity(comparison.class_means(activations, labels, 3))
    assert selectivity[:2].tolist() == pytest.approx([0.6, 0.0]) and torch.isnan(selectivity[2])


def test_unit_counts_follow_the_authors_capped_at_a_tenth() -> None:
    assert comparison.unit_counts(1400) == comparison.UnitCounts(30, 100, 100)
    assert comparison.unit_counts(56) == comparison.UnitCounts(5, 5, 5)
    assert comparison.unit_counts(10) == comparison.UnitCounts(2, 2, 2)


def test_concatenated_features_weigh_every_network_alike() -> None:
    joint = concatenated_features({"a": torch.tensor([[3.0, 4.0]]), "b": torch.tensor([[10.0]])})
    assert joint.tolist()[0] == pytest.approx([0.6 / 2**0.5, 0.8 / 2**0.5, 1 / 2**0.5])


def test_permutation_test_matches_scipys_exact_test() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.8, 1, 7), rng.normal(0, 1, 6)
    diff, p = permutation_test(x, y, n_permutations=20000)
    exact = stats.permutation_test(
        (x, y), lambda a, b: a.mean() - b.mean(), permutation_type="independent", n_resamples=np.inf
    )
    assert diff == pytest.approx(x.mean() - y.mean())
    assert p == pytest.approx(exact.pvalue, abs=0.01)
    assert permutation_test([1, 2], [3, 4], n_permutations=30000)[1] == pytest.approx(1 / 3, abs=0.02)
    with pytest.raises(ValueError, match="at least 2 values"):
        permutation_test([1.0], [2.0, 3.0])


def test_unit_table_and_loss_comparison() -> None:
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(4).repeat_interleave(25)
    classes = ("a", "b", "c", "d")
    embeddings = F.normalize(F.one_hot(labels, 4).float() + 0.2 * torch.randn(100, 4, generator=gen), dim=1)
    label_embeddings = comparison.class_embeddings(embeddings, labels, 4)
    # Network x: unit u fires on class u; network y: units fire at random.
    sharp = F.one_hot(labels, 4).float() * 3 + 0.1 * torch.rand(100, 4, generator=gen)
    noisy = torch.rand(100, 4, generator=gen)
    counts = comparison.UnitCounts(10, 10, 10)
    scorers = [SemanticLens(10), CSP(1.0, 10)]
    units = pd.concat(
        [
            comparison.unit_table(
                name, acts, labels, classes, embeddings, label_embeddings, scorers, counts, 8, Invert()
            )
            for name, acts in (("ce", sharp), ("supcon", noisy))
        ],
        ignore_index=True,
    )
    sharp_units = units[units["loss"] == "ce"].sort_values("unit")
    assert sharp_units["invert_formula"].tolist() == list(classes) and (sharp_units["invert_auroc"] == 1.0).all()
    assert sharp_units["SemanticLens"].tolist() == list(classes) == sharp_units["top_class"].tolist()
    assert (sharp_units["selectivity"] > 0.9).all()
    tests = comparison.compare_losses(units, n_permutations=999)
    assert len(tests) == len(comparison.UNIT_SCORES)
    row = tests.set_index("score").loc["invert_auroc"]
    assert row["a"] == "ce" and row["difference"] > 0.2 and row["p"] == pytest.approx(1 / 1000 * 1, abs=0.03)
    assert (tests["p_holm"] >= tests["p"]).all()
    single = comparison.compare_losses(units[units["loss"] == "ce"])
    assert single.empty and list(single.columns) == list(tests.columns), "one loss: nothing to compare, same columns"
