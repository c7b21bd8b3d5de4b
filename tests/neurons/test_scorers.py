"""Neuron-labelling scorers and scores (clxai_utils.neurons) against hand-computed cases.

Expected numbers are worked out from the formulas of docs/method.md ("Part II: neuron labels")
by hand (written as literals or as scalar arithmetic here), never by calling the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clxai_utils.data.sources import CIFAR10_CLASSES
from clxai_utils.neurons import scorers
from clxai_utils.neurons.faithfulness import planted_copy_scores, simulation_correlation
from clxai_utils.neurons.interpretability import clarity, polysemanticity
from clxai_utils.neurons.invert import Invert, auroc, average_ranks
from clxai_utils.neurons.scorers import (
    CSP,
    CLIPDissect,
    SemanticLens,
    contrastive_set,
    project_contrastive,
    top_labels,
)
from clxai_utils.neurons.vocabulary import clean_labels, default_vocabulary_path, load_vocabulary

SQRT_HALF = math.sqrt(0.5)


def tensor(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# --------------------------------------------------------------------------- SemanticLens


def test_semantic_lens_hand_case() -> None:
    # unit 0 fires on images 0, 1 (e = x, y); unit 1 on images 2, 3 (e = y, norm(x + y)).
    activations = tensor([[3, 0], [2, 0], [0, 5], [0, 4]])
    embeddings = tensor([[1, 0], [0, 1], [0, 1], [SQRT_HALF, SQRT_HALF]])
    text = tensor([[1, 0], [0.6, 0.8]])
    scores = SemanticLens(n_positives=2)(activations, embeddings, text)
    # c_0 = norm((x + y) / 2) = (0.70711, 0.70711); c_1 = norm(y + norm(x + y)) = (0.70711, 1.70711) / 1.84776
    # = (0.38268, 0.92388), the direction halfway between y and norm(x + y).
    expected = tensor([[0.707107, 0.707107 * 1.4], [0.382683, 0.6 * 0.382683 + 0.8 * 0.923880]])
    assert torch.allclose(scores, expected, atol=1e-5)
    assert top_labels(scores, ["x", "tilted"], k=1) == [["tilted"], ["tilted"]]


# --------------------------------------------------------------------------- CSP


def test_csp_reproduces_the_authors_toy_case() -> None:
    """neurolens tests/score_function/test_contrastive_projection_score_function.py, gamma = 0.5, top 2 labels."""
    positives = tensor([[[1, 0], [0, 1]], [[0, 1], [1, 0]]])
    twins = tensor([[[0, 1], [1, 0]], [[1, 0], [0, 1]]])
    similarities = tensor([[0, 0], [1, 0]])
    weights = tensor([[3, 1], [1, 3]])
    text = F.normalize(tensor([[1, 0], [0, 1], [1, 1]]), dim=1)
    scores, indices = (project_contrastive(positives, twins, similarities, weights, 0.5) @ text.T).topk(2, dim=1)
    assert torch.equal(indices, torch.tensor([[0, 2], [0, 2]]))
    assert torch.allclose(scores, tensor([[0.9486833, 0.8944272], [0.9284767, 0.9191450]]))


def test_csp_gamma_removes_the_twins_direction() -> None:
    """The authors' second toy case: gamma 0 keeps e(p) = x, gamma 1 leaves x - y."""
    positives, twins = tensor([[[1, 0], [1, 0]]]), tensor([[[0, 1], [0, 1]]])
    similarities, weights = tensor([[1, 1]]), tensor([[1, 1]])
    text = F.normalize(tensor([[1, 0], [1, -1]]), dim=1)
    for gamma, label in ((0.0, 0), (1.0, 1)):
        best = (project_contrastive(positives, twins, similarities, weights, gamma) @ text.T).max(dim=1)
        assert best.indices.item() == label and best.values.item() == pytest.approx(1.0)


def test_csp_end_to_end_hand_case() -> None:
    # Positives: image 0 (a = 3, e = x) and image 1 (a = 2, e = y); the mean activation is 1, so the pool
    # is images 2-4. Twins: image 2 (norm(x + z)) for image 0, image 3 (norm(y + z)) for image 1, s = 0.70711.
    # gamma = 1: r_0 = x - 0.70711 norm(x + z) = (0.5, 0, -0.5), r_1 = (0, 0.5, -0.5);
    # c = norm(3 r_0 + 2 r_1) = (1.5, 1, -2.5) / sqrt(9.5).
    unit = tensor([3, 2, 0, 0, 0])
    activations = torch.stack([unit, 2 * unit], dim=1)  # unit 1: same images, activations doubled
    embeddings = tensor([[1, 0, 0], [0, 1, 0], [SQRT_HALF, 0, SQRT_HALF], [0, SQRT_HALF, SQRT_HALF], [0, 0, 1]])
    twins, similarities = contrastive_set(activations, embeddings, torch.tensor([[0, 1], [0, 1]]))
    assert twins.tolist() == [[2, 3], [2, 3]]
    assert torch.allclose(similarities, torch.full((2, 2), SQRT_HALF))
    text = torch.eye(3)
    root = math.sqrt(9.5)
    full = CSP(gamma=1.0, n_positives=2)(activations, embeddings, text)
    assert torch.allclose(full, tensor([[1.5 / root, 1 / root, -2.5 / root]] * 2), atol=1e-6)
    none = CSP(gamma=0.0, n_positives=2)(activations, embeddings, text)  # norm(3x + 2y)
    assert torch.allclose(none, tensor([[3 / math.sqrt(13), 2 / math.sqrt(13), 0]] * 2), atol=1e-6)
    assert CSP(0.5).name == "CSP (gamma=0.5)"


def test_csp_is_the_same_in_blocks_of_units(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(50, 7, generator=generator)
    embeddings = F.normalize(torch.randn(50, 4, generator=generator), dim=1)
    text = F.normalize(torch.randn(3, 4, generator=generator), dim=1)
    whole = CSP(0.5, n_positives=5)(activations, embeddings, text)
    monkeypatch.setattr(scorers, "_BLOCK", 1)  # one unit per block
    assert torch.allclose(CSP(0.5, n_positives=5)(activations, embeddings, text), whole, atol=1e-6)


def test_csp_needs_images_below_the_mean() -> None:
    activations = torch.ones(4, 1)
    with pytest.raises(ValueError, match=r"units \[0\] have no image below their mean"):
        CSP(n_positives=2)(activations, torch.eye(4), torch.eye(4))


@pytest.mark.parametrize("gamma", [-0.1, 1.1, float("nan")])
def test_gamma_outside_0_1_is_refused(gamma: float) -> None:
    with pytest.raises(ValueError, match=r"gamma must be in \[0.0, 1.0\]"):
        CSP(gamma=gamma)
    with pytest.raises(ValueError, match="gamma must be"):
        project_contrastive(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.ones(1, 1), gamma)


def test_gamma_must_be_a_number() -> None:
    with pytest.raises(TypeError, match="gamma must be a number"):
        CSP(gamma="0.5")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLIP-Dissect


def test_clip_dissect_hand_case() -> None:
    # Images e = x, y, norm(x + y); labels x, y. P(t | x) = softmax(10 cos): (q, 1 - q) with
    # q = 1 / (1 + e^-10) for image 0, (1 - q, q) for image 1, (1/2, 1/2) for image 2.
    # Unit 0 ranks images 0, 1; unit 1 ranks images 1, 2; p = 0.998, 0.97 by rank.
    activations = tensor([[3, 1], [2, 3], [1, 2]])
    embeddings = tensor([[1, 0], [0, 1], [SQRT_HALF, SQRT_HALF]])
    q = 1 / (1 + math.exp(-10))

    def term(p: float, prob: float) -> float:
        return math.log(1 - p + p * prob)

    given = [
        [term(0.998, q) + term(0.97, 1 - q), term(0.998, 1 - q) + term(0.97, q)],
        [term(0.998, 1 - q) + term(0.97, 0.5), term(0.998, q) + term(0.97, 0.5)],
    ]
    prior = [math.log((math.exp(given[0][j]) + math.exp(given[1][j])) / 2) for j in range(2)]
    expected = tensor([[given[k][j] - prior[j] for j in range(2)] for k in range(2)])
    scores = CLIPDissect(n_top=2)(activations, embeddings, torch.eye(2))
    assert torch.allclose(scores, expected, atol=1e-5)
    assert top_labels(scores, ["x", "y"], k=1) == [["x"], ["y"]]


def test_clip_dissect_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="n_top must be an integer >= 1"):
        CLIPDissect(n_top=0)
    with pytest.raises(ValueError, match="n_top=5 exceeds the 3 probe images"):
        CLIPDissect(n_top=5)(torch.rand(3, 2), torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match="p_first must be in"):
        CLIPDissect(p_first=0.9, p_last=0.97)


def test_scorer_inputs_are_checked() -> None:
    acts, emb = torch.rand(4, 2), F.normalize(torch.rand(4, 3), dim=1)
    with pytest.raises(ValueError, match="image_embeddings must have 4 rows"):
        SemanticLens(2)(acts, emb[:3], emb)
    with pytest.raises(ValueError, match="text_embeddings must have 3 columns"):
        SemanticLens(2)(acts, emb, torch.rand(2, 5))
    with pytest.raises(ValueError, match="activations must be a non-empty"):
        SemanticLens(2)(acts[0], emb, emb)
    with pytest.raises(ValueError, match="n_positives=30 exceeds the 4 probe images"):
        SemanticLens()(acts, emb, emb)


# --------------------------------------------------------------------------- INVERT


def test_average_ranks_share_ties() -> None:
    assert average_ranks(tensor([[3], [1], [3], [2]])).flatten().tolist() == [3.5, 1.0, 3.5, 2.0]


def test_auroc_matches_sklearn() -> None:
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 4, generator=generator).round(decimals=1)  # with ties
    labels = torch.rand(200, 3, generator=generator) < 0.3
    expected = tensor([[roc_auc_score(labels[:, j], scores[:, k]) for j in range(3)] for k in range(4)])
    assert torch.allclose(auroc(scores, labels).float(), expected, atol=1e-6)


def test_auroc_hand_count() -> None:
    # positives 2, 5 against negatives 0, 1, 2(tie): (1 + 1 + 0.5 + 1 + 1 + 1) / 6
    scores, labels = tensor([[0], [1], [2], [2], [5]]), torch.tensor([[False], [False], [False], [True], [True]])
    assert auroc(scores, labels).item() == pytest.approx(5.5 / 6)


def test_invert_hand_case() -> None:
    # Concept A on images 0, 1; B on image 2; C on images 4-7. The unit ranks 0, 2, 1 first.
    # AUROC(A) = 11/12 (image 1 is below image 2), AUROC(B) = 6/7, AUROC(NOT C) = 13/16, AUROC(A OR B) = 1.
    activations = tensor([[5], [3], [4], [0.2], [1], [0], [0.5], [1.5]])
    concepts = torch.zeros(8, 3, dtype=torch.bool)
    concepts[[0, 1], 0] = concepts[2, 1] = True
    concepts[4:, 2] = True
    single = auroc(activations, concepts)[0].tolist()
    assert single == pytest.approx([11 / 12, 6 / 7, 3 / 16])
    assert auroc(activations, ~concepts[:, 2:])[0].item() == pytest.approx(13 / 16)
    result = Invert(max_length=2, beam_size=3)(activations, concepts, ["A", "B", "C"])
    assert result.formulas == ("A OR B",) and result.auroc.item() == pytest.approx(1.0)
    assert result.length.tolist() == [2] and result.fraction.item() == pytest.approx(3 / 8)
    assert result.holds[0].tolist() == [True, True, True, False, False, False, False, False]
    # Length 1 only: the best literal within the fractions [0, 0.5] is A.
    first = Invert(max_length=1, beam_size=3)(activations, concepts, ["A", "B", "C"])
    assert first.formulas == ("A",) and first.auroc.item() == pytest.approx(11 / 12)


def plain_invert(activations: torch.Tensor, concepts: torch.Tensor, names: list[str], length: int, width: int):
    """INVERT's beam search one unit and one formula at a time, with sets of images (the reference loop)."""
    n = len(concepts)
    literals = [(name, frozenset(concepts[:, j].nonzero().flatten().tolist())) for j, name in enumerate(names)]
    literals += [(f"NOT {name}", frozenset(range(n)) - s) for name, s in literals]
    results = []
    for k in range(activations.shape[1]):

        def score(s: frozenset, k: int = k) -> float:
            if not 0 < len(s) <= n / 2:
                return -math.inf
            return auroc(activations[:, k : k + 1], torch.tensor([[i in s] for i in range(n)]))[0, 0].item()

        def best(candidates: list) -> list:
            unique, seen = [], set()
            for text, s, size in candidates:
                if s not in seen and score(s) > -math.inf:
                    seen.add(s)
                    unique.append((text, s, size))
            return sorted(unique, key=lambda c: -score(c[1]))[:width]

        beam = best([(text, s, 1) for text, s in literals])
        for _ in range(length - 1):
            new = []
            for op, combine in (("AND", frozenset.__and__), ("OR", frozenset.__or__)):
                for text, s, size in beam:
                    left = text if size == 1 else f"({text})"
                    new += [(f"{left} {op} {lit}", combine(s, t), size + 1) for lit, t in literals]
            beam = best(beam + new)
        results.append((beam[0][0], score(beam[0][1])))
    return results


def test_invert_matches_a_plain_beam_search() -> None:
    generator = torch.Generator().manual_seed(1)
    concepts = torch.rand(60, 4, generator=generator) < 0.3
    activations = torch.randn(60, 5, generator=generator) + 2 * concepts[:, :3].float() @ torch.randn(
        3, 5, generator=generator
    )
    names = ["a", "b", "c", "d"]
    result = Invert(max_length=3, beam_size=4)(activations, concepts, names)
    expected = plain_invert(activations, concepts, names, length=3, width=4)
    assert [e[1] for e in expected] == pytest.approx(result.auroc.tolist(), abs=1e-6)
    assert list(result.formulas) == [e[0] for e in expected]


def test_invert_parameters_and_inputs_are_checked() -> None:
    acts, concepts = torch.rand(6, 2), torch.zeros(6, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="max_length must be an integer >= 1"):
        Invert(max_length=0)
    with pytest.raises(ValueError, match=r"min_fraction must be in \[0.0, 0.5\]"):
        Invert(min_fraction=0.6)
    with pytest.raises(ValueError, match="max_fraction must be in"):
        Invert(max_fraction=1.5)
    with pytest.raises(ValueError, match="concepts must be a 2-D bool tensor"):
        Invert()(acts, concepts.float(), ["a", "b"])
    with pytest.raises(ValueError, match="concept_names must hold 2 distinct names"):
        Invert()(acts, concepts, ["a", "a"])
    with pytest.raises(ValueError, match="no concept or negated concept holds"):
        Invert()(acts, concepts, ["a", "b"])  # every concept is empty, every negation covers all images


# --------------------------------------------------------------------------- clarity, polysemanticity


def test_clarity_hand_case() -> None:
    # pairwise cosines of x, y, x: 0, 1, 0 -> 1/3; identical examples -> 1
    examples = tensor([[[1, 0], [0, 1], [1, 0]], [[0, 2], [0, 1], [0, 3]]])
    assert clarity(examples).tolist() == pytest.approx([1 / 3, 1.0])


def test_polysemanticity_hand_case() -> None:
    # unit 0: x, x, y, y -> centres x, y -> 1; unit 1: all x -> 0; unit 2: x, (0.8, 0.6), y, y -> centres
    # (0.9, 0.3) and y -> 1 - 0.3 / sqrt(0.9) = 0.68377.
    # (x, y start as centres; (0.8, 0.6) joins x, then nothing moves.)
    examples = tensor(
        [
            [[1, 0], [1, 0], [0, 1], [0, 1]],
            [[1, 0], [1, 0], [1, 0], [1, 0]],
            [[1, 0], [0.8, 0.6], [0, 1], [0, 1]],
        ]
    )
    assert polysemanticity(examples).tolist() == pytest.approx([1.0, 0.0, 1 - 0.3 / math.sqrt(0.9)], abs=1e-6)


def test_examples_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 2 finite examples"):
        clarity(torch.ones(2, 1, 3))
    with pytest.raises(ValueError, match=r"examples must be a \(units, n, d\)"):
        polysemanticity(torch.ones(2, 3))


# --------------------------------------------------------------------------- faithfulness


def test_simulation_correlation_hand_case() -> None:
    # a = 1, 2, 3 and pred = e . t = 1, 2, 4: r = 3 / sqrt(2 * 42 / 9) = 0.98198; a constant unit gives NaN
    activations = tensor([[1, 7], [2, 7], [3, 7]])
    embeddings = tensor([[1], [2], [4]])
    scs = simulation_correlation(activations, embeddings, tensor([[1], [-2]]))
    assert scs[0].item() == pytest.approx(3 / math.sqrt(2 * 42 / 9), abs=1e-6)
    assert math.isnan(scs[1].item())
    with pytest.raises(ValueError, match="label_embeddings must have 2 rows"):
        simulation_correlation(activations, embeddings, tensor([[1]]))


def test_planted_copy_scores_hand_case() -> None:
    # A0 = 0, 1, 2 and A1 = 1, 3: AUC = (1 + 0.5 + 0 + 3) / 6 = 0.75; MAD = (2 - 1) / sqrt(2/3) = 1.22474
    scores = planted_copy_scores(tensor([[0], [1], [2]]), tensor([[1], [3]]))
    assert scores.auc.item() == pytest.approx(0.75)
    assert scores.mad.item() == pytest.approx(1 / math.sqrt(2 / 3), abs=1e-6)
    with pytest.raises(ValueError, match="must cover the same units"):
        planted_copy_scores(torch.rand(3, 2), torch.rand(3, 1))


# --------------------------------------------------------------------------- vocabulary


def test_shipped_vocabulary() -> None:
    labels = load_vocabulary()
    assert set(CIFAR10_CLASSES) <= set(labels)
    for label in ("aquarium fish", "willow tree", "vehicles 2", "large natural outdoor scenes", "red", "striped"):
        assert label in labels
    assert {"red square patch", "stripes", "blue tint"} <= set(labels)
    raw = [
        line.strip()
        for line in default_vocabulary_path().read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(raw) == len(set(raw)) == len(labels)  # the file itself lists every label once


def test_any_vocabulary_file_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my labels\n  red  \n\nRed\nblue tint\n#comment\nred\n")
    assert load_vocabulary(path) == ("red", "blue tint")
    assert clean_labels(["a", " b ", "A", "", "# c"]) == ("a", "b")


def test_empty_or_missing_vocabulary_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n   \n")
    with pytest.raises(ValueError, match=r"vocabulary='.*empty\.txt' holds no labels"):
        load_vocabulary(empty)
    with pytest.raises(FileNotFoundError, match=r"vocabulary='.*absent\.txt': no such file"):
        load_vocabulary(tmp_path / "absent.txt")
