"""Architecture facts, the normalised-probe model, and checkpoint round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from clxai_utils.train.models import (
    Backbone,
    ContrastiveModel,
    ExplainableClassifier,
    ModelSpec,
    ProjectionHead,
    build_backbone,
    build_explainable,
    build_training_model,
    cifar_widths,
    explainable_from_contrastive,
)

SMALL = 0.25  # 16/32/64/128 channels


def _capture(module: nn.Module, x: torch.Tensor, forward) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `forward(x)`; return its output and `module`'s output (grad retained when tracked)."""
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        if out.requires_grad:
            out.retain_grad()
        store["act"] = out

    handle = module.register_forward_hook(hook)
    try:
        y = forward(x)
    finally:
        handle.remove()
    return y, store["act"]


# --------------------------------------------------------------------------- CIFAR ResNet-18


@pytest.mark.parametrize("width, dim", [(1.0, 512), (SMALL, 128)])
def test_cifar_layer4_map_is_4x4_and_feature_dim(width, dim):
    backbone = build_backbone("resnet18_cifar", width).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, act = _capture(backbone.target_layer, x, backbone)
    assert backbone.target_layer is backbone.layer4[-1]
    assert act.shape == (2, dim, 4, 4)
    assert backbone.feature_dim == dim
    assert feats.shape == (2, dim)
    torch.testing.assert_close(feats, act.mean(dim=(2, 3)))  # pool = spatial mean of layer4


def test_cifar_stage_channels_and_resolutions():
    assert cifar_widths(1.0) == (64, 128, 256, 512)
    assert cifar_widths(0.25) == (16, 32, 64, 128)
    assert cifar_widths(0.125) == (8, 16, 32, 64)
    assert cifar_widths(1e-3) == (1, 1, 1, 1)
    backbone = build_backbone("resnet18_cifar", 0.125).eval()
    shapes = []
    handles = [
        getattr(backbone, f"layer{i}").register_forward_hook(lambda _m, _i, o: shapes.append(tuple(o.shape)))
        for i in range(1, 5)
    ]
    with torch.no_grad():
        backbone(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert shapes == [(1, 8, 32, 32), (1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]


def test_cifar_stem_is_3x3_stride1_without_maxpool():
    backbone = build_backbone("resnet18_cifar", SMALL)
    assert not any(isinstance(m, nn.MaxPool2d) for m in backbone.modules())
    conv = backbone.stem[0]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (1, 1), None)
    assert [type(m) for m in backbone.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def _hand_count_cifar_resnet18_ce(num_classes: int) -> int:
    """Parameters of CIFAR ResNet-18 + linear head, from the layer shapes."""
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 64, 3) + bn(64)
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for s in (stride, 1):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if s != 1 or cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + 512 * num_classes + num_classes


def test_cifar_resnet18_parameter_count():
    model = build_training_model(ModelSpec("resnet18_cifar", 1.0, 10, "ce"))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _hand_count_cifar_resnet18_ce(10) == 11_173_962


def test_cifar_init_kaiming_fan_out_and_unit_bn():
    backbone = build_backbone("resnet18_cifar", 1.0)
    conv = backbone.layer4[-1].conv2  # 512x512x3x3 weights: the sample std is tight
    expected_std = math.sqrt(2.0 / (512 * 3 * 3))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.01)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=1e-4)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


# --------------------------------------------------------------------------- ResNet-50


def test_resnet50_backbone_7x7_layer4_and_no_fc():
    backbone = build_backbone("resnet50").eval()
    reference = torchvision.models.resnet50(weights=None)
    expected = sum(p.numel() for p in reference.parameters()) - sum(p.numel() for p in reference.fc.parameters())
    assert sum(p.numel() for p in backbone.parameters()) == expected == 23_508_032
    assert any(isinstance(m, nn.MaxPool2d) for m in backbone.stem)
    assert backbone.stem[0].kernel_size == (7, 7) and backbone.stem[0].stride == (2, 2)
    assert all(
        torch.count_nonzero(block.bn3.weight) == 0
        for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        for block in layer
    )
    with torch.no_grad():
        feats, act = _capture(backbone.target_layer, torch.randn(1, 3, 224, 224), backbone)
    assert backbone.feature_dim == 2048
    assert act.shape == (1, 2048, 7, 7)
    assert feats.shape == (1, 2048)


# --------------------------------------------------------------------------- errors


def test_build_backbone_rejects_bad_arguments():
    with pytest.raises(ValueError, match="arch='vgg' is not allowed; choose one of: resnet18_cifar, resnet50"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="width must be 1.0 for arch 'resnet50'"):
        build_backbone("resnet50", 0.5)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="width"):
            build_backbone("resnet18_cifar", bad)
    with pytest.raises(TypeError, match="width"):
        build_backbone("resnet18_cifar", True)


def test_spec_rejects_bad_fields():
    with pytest.raises(ValueError, match="arch"):
        ModelSpec("resnet34", 1.0, 10, "ce")
    with pytest.raises(ValueError, match="loss='simclr' is not allowed; choose one of: ce, supcon, triplet"):
        ModelSpec("resnet18_cifar", 1.0, 10, "simclr")
    with pytest.raises(ValueError, match="num_classes"):
        ModelSpec("resnet18_cifar", 1.0, 0, "ce")
    with pytest.raises(ValueError, match="width"):
        ModelSpec("resnet50", 0.25, 50, "ce")
    with pytest.raises(ValueError, match="keys"):
        ModelSpec.from_dict({"arch": "resnet18_cifar", "width": 1.0, "num_classes": 10})


# --------------------------------------------------------------------------- heads and models


def test_projection_head_unit_norm_and_formula():
    torch.manual_seed(0)
    head = ProjectionHead(32)
    x = torch.randn(5, 32)
    z = head(x)
    lin1, lin2 = head.mlp[0], head.mlp[2]
    assert (lin1.in_features, lin1.out_features, lin2.out_features) == (32, 32, 128)
    raw = torch.clamp(x @ lin1.weight.T + lin1.bias, min=0) @ lin2.weight.T + lin2.bias
    expected = raw / raw.norm(dim=1, keepdim=True)
    assert z.shape == (5, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(z, expected)
    assert ProjectionHead(32, hidden_dim=7, out_dim=3).mlp[0].out_features == 7


def _small_explainable(normalize: bool) -> ExplainableClassifier:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18_cifar", SMALL)
    return ExplainableClassifier(backbone, nn.Linear(backbone.feature_dim, 10), normalize).eval()


def test_explainable_normalised_logits_match_manual_and_differ_from_raw():
    model = _small_explainable(normalize=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = model.backbone(x)
        unit = feats / feats.norm(dim=1, keepdim=True)
        expected = unit @ model.head.weight.T + model.head.bias
        raw_logits = feats @ model.head.weight.T + model.head.bias
        logits = model(x)
        torch.testing.assert_close(model.features(x), unit)
        model.normalize_features = False
        unnormalised = model(x)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(unnormalised, raw_logits)
    assert not torch.allclose(logits, unnormalised, atol=1e-3)
    assert model.num_classes == 10
    assert model.target_layer is model.backbone.layer4[-1]


@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_at_target_layer_matches_closed_form(normalize):
    """d logit_c / d A = g / (u*v) at every position, g = d logit_c / d pooled features.

    With normalisation g = (w_c - (w_c . f_hat) f_hat) / ||f||: the Jacobian the authors'
    CIFAR SCL/TL evaluation dropped.
    """
    model = _small_explainable(normalize).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    logits, act = _capture(model.target_layer, x, model)
    c = 3
    logits[:, c].sum().backward()
    feats = act.detach().mean(dim=(2, 3))
    w = model.head.weight.detach()[c]
    if normalize:
        norm = feats.norm(dim=1, keepdim=True)
        unit = feats / norm
        g = (w - (unit @ w)[:, None] * unit) / norm
    else:
        g = w.expand_as(feats)
    expected = (g / 16.0)[:, :, None, None].expand_as(act)
    torch.testing.assert_close(act.grad, expected)
    assert act.grad.abs().sum() > 0


def test_contrastive_model_outputs_unit_embeddings_and_features():
    torch.manual_seed(0)
    model = ContrastiveModel(build_backbone("resnet18_cifar", SMALL)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        z, feats = model(x), model.features(x)
        torch.testing.assert_close(z, model.projection(model.backbone(x)))
    assert z.shape == (4, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert feats.shape == (4, 128)  # width 0.25: 128-d pooled features
    assert (feats >= 0).all()  # pooled post-ReLU maps


def test_explainable_from_contrastive_round_trip():
    spec = ModelSpec("resnet18_cifar", SMALL, 10, "supcon")
    torch.manual_seed(0)
    contrastive = build_training_model(spec).eval()
    probe = nn.Linear(contrastive.backbone.feature_dim, 10)
    explained = explainable_from_contrastive(contrastive, probe).eval()
    assert explained.backbone is contrastive.backbone and explained.head is probe
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        manual = probe(F.normalize(contrastive.features(x), dim=1))
        logits = explained(x)
    torch.testing.assert_close(logits, manual)
    assert not any(k.startswith("projection.") for k in explained.state_dict())

    torch.manual_seed(1)
    fresh = build_explainable(spec).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), manual)
    fresh.load_state_dict(explained.state_dict(), strict=True)

    torch.manual_seed(2)
    by_prefix = build_explainable(spec).eval()
    backbone_state = {
        k.removeprefix("backbone."): v for k, v in contrastive.state_dict().items() if k.startswith("backbone.")
    }
    by_prefix.backbone.load_state_dict(backbone_state, strict=True)
    by_prefix.head.load_state_dict(probe.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), manual)
        torch.testing.assert_close(by_prefix(x), manual)


def test_explainable_from_contrastive_rejects_mismatched_probe():
    model = ContrastiveModel(build_backbone("resnet18_cifar", SMALL))
    with pytest.raises(ValueError, match="head.in_features"):
        explainable_from_contrastive(model, nn.Linear(64, 10))
    with pytest.raises(TypeError, match="model"):
        explainable_from_contrastive(model.backbone, nn.Linear(128, 10))


@pytest.mark.parametrize(
    "loss, training_type, normalize",
    [
        ("ce", ExplainableClassifier, False),
        ("supcon", ContrastiveModel, True),
        ("triplet", ContrastiveModel, True),
    ],
)
def test_builders_follow_the_loss(loss, training_type, normalize):
    spec = ModelSpec("resnet18_cifar", 0.125, 10, loss)
    training = build_training_model(spec)
    explainable = build_explainable(spec)
    assert type(training) is training_type
    assert isinstance(training.backbone, Backbone)
    assert explainable.normalize_features is normalize is spec.normalize_features
    assert explainable.num_classes == 10 and explainable.head.in_features == 64
    if loss == "ce":
        assert training.normalize_features is False
        explainable.load_state_dict(training.state_dict(), strict=True)


# --------------------------------------------------------------------------- checkpoints


def test_spec_dict_round_trip_and_weights_only_checkpoint(tmp_path):
    spec = ModelSpec("resnet18_cifar", 1, 10, "ce")
    assert spec.width == 1.0 and isinstance(spec.width, float)
    data = spec.to_dict()
    assert data == {"arch": "resnet18_cifar", "width": 1.0, "num_classes": 10, "loss": "ce"}
    assert ModelSpec.from_dict(data) == spec

    small = ModelSpec("resnet18_cifar", SMALL, 10, "triplet")
    torch.manual_seed(0)
    model = build_training_model(small).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"spec": small.to_dict(), "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    restored_spec = ModelSpec.from_dict(ckpt["spec"])
    assert restored_spec == small
    torch.manual_seed(1)
    restored = build_training_model(restored_spec).eval()
    restored.load_state_dict(ckpt["state_dict"], strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


def test_same_seed_same_initial_weights():
    spec = ModelSpec("resnet18_cifar", SMALL, 10, "supcon")
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(build_training_model(spec).state_dict())
    assert states[0].keys() == states[2].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["backbone.stem.0.weight"], states[2]["backbone.stem.0.weight"])
    assert not torch.equal(states[0]["projection.mlp.0.weight"], states[2]["projection.mlp.0.weight"])
