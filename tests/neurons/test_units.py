"""Units of neuron labelling: the activation pass, its stored artefact, the probe split and unit selection."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from clxai_utils.core.run import Run
from clxai_utils.core.validate import ConfigError
from clxai_utils.data.datasets import SPECS
from clxai_utils.data.prepare import load_prepared, prepare_data
from clxai_utils.data.sources import write_synthetic_imagefolder
from clxai_utils.neurons import units
from clxai_utils.neurons.units import (
    probe_split,
    select_units,
    stored_activations,
    top_positives,
    unit_activations,
)
from clxai_utils.train.models import ContrastiveModel, ExplainableClassifier, ModelSpec, build_backbone

INFO = SPECS["cifar10"].info()


def tiny_classifier(seed: int = 0) -> ExplainableClassifier:
    torch.manual_seed(seed)
    model = ExplainableClassifier(build_backbone("resnet18_cifar", width=0.0625), nn.Linear(32, 10), False)
    for module in model.modules():  # non-trivial eval-mode BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None and module.running_var is not None:
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --------------------------------------------------------------------------- the activation pass


@pytest.mark.parametrize("layer", ["layer4", "layer2"])
def test_activations_equal_the_spatial_mean_of_a_direct_forward(layer: str) -> None:
    model, x = tiny_classifier(), images(40)
    captured = []
    hook = getattr(model.backbone, layer).register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        model(units.augment.normalize(x, INFO.mean, INFO.std))
    hook.remove()
    start = time.perf_counter()
    acts = unit_activations(model, x, INFO, layer, batch_size=16)  # 3 batches, the last one short
    seconds = time.perf_counter() - start
    print(f"activation pass ({layer}, width 1/16 ResNet-18, CPU): {len(x) / seconds:.0f} images/s")
    assert acts.shape == (40, captured[0].shape[1]) and acts.dtype == torch.float32
    assert torch.allclose(acts, captured[0].mean(dim=(2, 3)), atol=1e-5)


def test_contrastive_models_give_the_backbone_units() -> None:
    classifier = tiny_classifier()
    contrastive = ContrastiveModel(classifier.backbone)  # projection head on top of the same backbone
    x = images(8)
    assert torch.equal(unit_activations(contrastive, x, INFO), unit_activations(classifier, x, INFO))
    assert unit_activations(contrastive.backbone, x, INFO).shape == (8, 32)


def test_the_pass_restores_training_mode() -> None:
    model = tiny_classifier().train()
    unit_activations(model, images(4), INFO)
    assert model.backbone.training


def test_a_layer_the_model_lacks_is_refused() -> None:
    with pytest.raises(ConfigError, match="layer='fc' is not allowed; choose one of: layer1, layer2, layer3, layer4"):
        unit_activations(tiny_classifier(), images(2), INFO, "fc")
    with pytest.raises(TypeError, match="model must be a Backbone"):
        unit_activations(nn.Linear(2, 2), images(2), INFO)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        unit_activations(tiny_classifier(), images(2), INFO, batch_size=0)


# --------------------------------------------------------------------------- the stored artefact


def test_stored_activations_are_computed_once(tmp_path: Path) -> None:
    ids, labels, calls = torch.arange(3), torch.tensor([0, 1, 0]), []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.full((3, 2), float(len(calls)))

    meta = {"layer": "layer4", "backbone_digest": "a"}
    first = stored_activations(tmp_path / "acts.pt", meta, ids, labels, compute)
    again = stored_activations(tmp_path / "acts.pt", meta, ids, labels, compute)
    assert len(calls) == 1 and first.seconds is not None and again.seconds is None and again.images_per_s is None
    assert torch.equal(again.activations, first.activations) and torch.equal(again.labels, labels)
    changed = stored_activations(tmp_path / "acts.pt", {**meta, "backbone_digest": "b"}, ids, labels, compute)
    assert len(calls) == 2 and changed.activations[0, 0].item() == 2.0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_run_activations_store_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLXAI_OUTPUTS", str(tmp_path / "out"))
    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "datadir"))
    run = Run("cifar10", "smoke", 0)
    prepare_data(run, str(write_synthetic_imagefolder(tmp_path / "tree", per_class=(16, 8))))
    model = tiny_classifier()
    spec = ModelSpec("resnet18_cifar", 0.0625, 10, "ce")
    monkeypatch.setattr(units, "load_trained", lambda out_dir: (model, spec, {"profile": "smoke"}))
    first = units.run_activations(run, "ce", progress=False)
    test = load_prepared(run)[0].test
    assert run.neuron_activations_path("ce", "layer4").is_file()
    assert torch.equal(first.image_ids, test.ids) and torch.equal(first.labels, test.labels)
    assert torch.allclose(first.activations, unit_activations(model, test.images, INFO))
    assert first.meta["profile"] == "smoke" and first.layer == "layer4" and first.images_per_s is not None
    assert units.run_activations(run, "ce", progress=False).seconds is None  # reloaded
    with torch.no_grad():
        next(model.backbone.layer4.parameters()).mul_(2.0)  # other weights: computed again
    assert units.run_activations(run, "ce", progress=False).seconds is not None
    with pytest.raises(ConfigError, match="layer='layer5' is not allowed"):
        units.run_activations(run, "ce", "layer5")
    monkeypatch.setattr(units, "load_trained", lambda out_dir: (model, spec, {"profile": "quick"}))
    with pytest.raises(ValueError, match="trained with profile='quick', not 'smoke'"):
        units.run_activations(run, "ce")


def test_activation_path_names_the_loss_and_layer(tmp_path: Path) -> None:
    run = Run("cifar10", "smoke", 0, root=tmp_path)
    assert run.neuron_activations_path("supcon", "layer3") == tmp_path / "neurons" / "supcon" / "activations_layer3.pt"
    with pytest.raises(ValueError, match="layer must be a module name"):
        run.neuron_activations_path("ce", "../x")


# --------------------------------------------------------------------------- probe split and selection


def test_probe_split_is_70_10_20_and_fixed() -> None:
    split = probe_split(1000)
    assert (len(split.select), len(split.spare), len(split.held_out)) == (700, 100, 200)
    everything = torch.cat([split.select, split.spare, split.held_out])
    assert torch.equal(everything.sort().values, torch.arange(1000))
    torch.manual_seed(123)  # the global RNG plays no part
    again = probe_split(1000)
    assert torch.equal(again.select, split.select) and torch.equal(again.held_out, split.held_out)
    assert not torch.equal(probe_split(1000, seed=1).select, split.select)
    with pytest.raises(ValueError, match="n_images=3 is too small"):
        probe_split(3)


def test_select_units_hand_case() -> None:
    # 4 images. Unit 0 fires on 1 image (dropped with min_firing=2); top-2 means: unit 1 (5+4)/2 = 4.5,
    # unit 2 (3+3)/2 = 3, unit 3 (2+1)/2 = 1.5.
    activations = torch.tensor([[9.0, 5, 3, 2], [0, 4, 3, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert select_units(activations, n_units=2, top_count=2, min_firing=2).tolist() == [1, 2]
    assert select_units(activations, n_units=200, top_count=2, min_firing=2).tolist() == [1, 2, 3]  # a small layer
    assert select_units(activations, n_units=200, top_count=2, min_firing=1).tolist() == [0, 1, 2, 3]
    assert select_units(activations, top_count=1, min_firing=1, firing_threshold=2.5).tolist() == [0, 1, 2]


def test_select_units_parameters_are_checked() -> None:
    activations = torch.rand(10, 3)
    with pytest.raises(ValueError, match="top_count=100 exceeds the 10 probe images: pass top_count <= 10"):
        select_units(activations)
    with pytest.raises(ValueError, match="min_firing=11 exceeds the 10 probe images"):
        select_units(activations, top_count=5, min_firing=11)
    with pytest.raises(ValueError, match="n_units must be an integer >= 1"):
        select_units(activations, n_units=0, top_count=5, min_firing=5)
    with pytest.raises(ValueError, match="no unit exceeds firing_threshold=2.0 on min_firing=5"):
        select_units(activations, top_count=5, min_firing=5, firing_threshold=2.0)
    with pytest.raises(ValueError, match="activations must hold finite"):
        select_units(torch.full((10, 2), float("nan")), top_count=5, min_firing=5)


def test_top_positives_are_in_descending_order() -> None:
    values, indices = top_positives(torch.tensor([[1.0, 4], [3, 2], [2, 3]]), 2)
    assert indices.tolist() == [[1, 2], [0, 2]] and values.tolist() == [[3, 2], [4, 3]]
