"""Backbones, heads and the one model type that every later stage explains.

Layout. Both backbones expose the same attributes, `stem`, `layer1`..`layer4` and `pool`,
and return pooled features of size `feature_dim`; `target_layer` is the last block of
`layer4`, the layer Grad-CAM and Eigen-CAM read.

- `resnet18_cifar`: ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), so a
  32x32 image gives a 4x4 `layer4` map. Channel widths 64/128/256/512 are multiplied by
  `width` (rounded, at least 1) for cheap smoke runs.
- `resnet50`: torchvision's ResNet-50 (7x7 stride-2 stem with max-pool, 7x7 `layer4` map at
  224 px) without its fc. Never loads pretrained weights.

Models. `ExplainableClassifier` is backbone + linear head on the pooled features, with the
features L2-normalised first for SupCon/Triplet. It is the model that is both evaluated
and explained, so the Grad-CAM gradients flow through exactly the function the linear
probe was trained on (the authors applied their probe to unnormalised features when
explaining CIFAR SCL/TL models). `ContrastiveModel` is backbone + projection head, used only
for contrastive training; its projection head is discarded afterwards.

Initialisation. Convolutions: Kaiming-normal (fan_out, ReLU); BatchNorm: weight 1, bias 0,
as in the authors' CIFAR ResNet. The ResNet-50 additionally zero-initialises the last BN of
every residual block (torchvision's `zero_init_residual=True`), matching the timm default
`zero_init_last=True` the authors trained with. Linear layers keep PyTorch's default
initialisation (Kaiming-uniform weights, uniform bias); the authors used N(0, 0.01) for
their projection heads. (We tried theirs: on the full quick run it gave lower probe
accuracies, 40% vs 42% for SupCon and 40% vs 48% for the triplet loss, one seed each.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clxai_utils.core.registry import LOSSES
from clxai_utils.core.validate import check_choice, check_positive, check_positive_int

ARCHS: tuple[str, ...] = ("resnet18_cifar", "resnet50")
EMBEDDING_DIM = 128
_CIFAR_WIDTHS = (64, 128, 256, 512)
_CIFAR_STRIDES = (1, 2, 2, 2)
_CIFAR_BLOCKS = (2, 2, 2, 2)


# --------------------------------------------------------------------------- validation


def _check_width(arch: str, width: Any) -> float:
    """Width must be a finite number > 0; only the CIFAR ResNet-18 can be scaled."""
    width = check_positive("width", width)
    if arch != "resnet18_cifar" and width != 1.0:
        raise ValueError(
            f"width must be 1.0 for arch {arch!r} (width scaling exists only for 'resnet18_cifar'), got {width!r}"
        )
    return width


# --------------------------------------------------------------------------- backbones


class Backbone(nn.Module):
    """stem -> layer1..layer4 -> global average pool -> (N, feature_dim) features."""

    def __init__(self, stem: nn.Module, layers: list[nn.Sequential], feature_dim: int) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must hold 4 stages, got {len(layers)}")
        self.stem = stem
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.feature_dim = feature_dim

    @property
    def target_layer(self) -> nn.Module:
        """Last block of layer4: the layer whose activations the CAM methods explain."""
        return self.layer4[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual; 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out-of-place ReLUs: the block output is what CAM hooks capture and differentiate.
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def cifar_widths(width: float) -> tuple[int, ...]:
    """Stage widths 64/128/256/512 scaled by `width`, rounded, at least 1 channel."""
    width = _check_width("resnet18_cifar", width)
    return tuple(max(1, round(base * width)) for base in _CIFAR_WIDTHS)


def resnet18_cifar(width: float = 1.0) -> Backbone:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool): 4x4 layer4 at 32 px."""
    widths = cifar_widths(width)
    stem = nn.Sequential(
        nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    )
    layers, in_channels = [], widths[0]
    for out_channels, stride, n_blocks in zip(widths, _CIFAR_STRIDES, _CIFAR_BLOCKS):
        strides = [stride] + [1] * (n_blocks - 1)
        blocks = []
        for s in strides:
            blocks.append(BasicBlock(in_channels, out_channels, s))
            in_channels = out_channels
        layers.append(nn.Sequential(*blocks))
    backbone = Backbone(stem, layers, feature_dim=widths[-1])
    _init_conv_bn(backbone)
    return backbone


def _init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) convs and unit/zero BN, as in the authors' ResNet-18."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet50() -> Backbone:
    """torchvision ResNet-50 (random init, zero-init last BN per block) without its fc.

    torchvision is imported here, not at the top: importing it loads torch._dynamo (about 6 s on
    a 2-core CPU), which every notebook of a CIFAR-10 run would otherwise pay for nothing.
    """
    import torchvision

    net = torchvision.models.resnet50(weights=None, zero_init_residual=True)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    return Backbone(stem, layers, feature_dim=net.fc.in_features)


def build_backbone(arch: str, width: float = 1.0) -> Backbone:
    """Backbone by name: 'resnet18_cifar' (any width > 0) or 'resnet50' (width 1 only)."""
    arch = check_choice("arch", arch, ARCHS)
    width = _check_width(arch, width)
    return resnet18_cifar(width) if arch == "resnet18_cifar" else resnet50()


# --------------------------------------------------------------------------- heads and models


class ProjectionHead(nn.Module):
    """Linear(d, h) -> ReLU -> Linear(h, out) -> L2 normalisation (SupCon's projection g)."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        in_dim = check_positive_int("in_dim", in_dim)
        hidden_dim = in_dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        out_dim = check_positive_int("out_dim", out_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=1)


class ExplainableClassifier(nn.Module):
    """Backbone + linear head on (optionally L2-normalised) pooled features -> logits.

    CE models use it for training (head trained jointly, `normalize_features=False`).
    SupCon/Triplet models use it with a frozen backbone and a linear probe trained on
    L2-normalised features (`normalize_features=True`), so that evaluation and Grad-CAM
    differentiate the same function the probe was fitted to.
    """

    def __init__(self, backbone: Backbone, head: nn.Linear, normalize_features: bool) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a Backbone, got {type(backbone).__name__}")
        if not isinstance(head, nn.Linear):
            raise TypeError(f"head must be an nn.Linear, got {type(head).__name__}")
        if head.in_features != backbone.feature_dim:
            raise ValueError(
                f"head.in_features must equal backbone.feature_dim={backbone.feature_dim}, got {head.in_features}"
            )
        if not isinstance(normalize_features, bool):
            raise TypeError(f"normalize_features must be a bool, got {normalize_features!r}")
        self.backbone = backbone
        self.head = head
        self.normalize_features = normalize_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def target_layer(self) -> nn.Module:
        return self.backbone.target_layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly the features the head sees (train the probe on these)."""
        feats = self.backbone(x)
        return F.normalize(feats, dim=1) if self.normalize_features else feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ContrastiveModel(nn.Module):
    """Backbone + projection head; forward gives (N, 128) unit-norm embeddings."""

    def __init__(self, backbone: Backbone, out_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a Backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.projection = ProjectionHead(backbone.feature_dim, out_dim=out_dim)

    @property
    def target_layer(self) -> nn.Module:
        return self.backbone.target_layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, unnormalised backbone features (the linear probe's input before normalisation)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(x))


def explainable_from_contrastive(model: nn.Module, probe: nn.Linear) -> ExplainableClassifier:
    """Backbone of `model` + `probe` on normalised features; the projection head is dropped.

    The backbone and probe modules are shared, not copied: no extra memory, and the
    result is a view of the trained weights (deep-copy first if they must diverge).
    """
    if not isinstance(model, ContrastiveModel):
        raise TypeError(f"model must be a ContrastiveModel, got {type(model).__name__}")
    return ExplainableClassifier(model.backbone, probe, normalize_features=True)


# --------------------------------------------------------------------------- checkpoint spec


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model from a checkpoint's state dict."""

    arch: str
    width: float
    num_classes: int
    loss: str

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ARCHS)
        object.__setattr__(self, "width", _check_width(self.arch, self.width))
        check_positive_int("num_classes", self.num_classes)
        check_choice("loss", self.loss, LOSSES)

    @property
    def normalize_features(self) -> bool:
        """Contrastive models are probed (and explained) on L2-normalised features."""
        return self.loss != "ce"

    def to_dict(self) -> dict[str, Any]:
        """Plain str/float/int values, so checkpoints load with `weights_only=True`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        expected = {f.name for f in fields(cls)}
        if set(data) != expected:
            raise ValueError(f"data must have exactly the keys {sorted(expected)}, got {sorted(data)}")
        return cls(**data)


def build_training_model(spec: ModelSpec) -> ExplainableClassifier | ContrastiveModel:
    """The model a training stage optimises: classifier for CE, backbone+projection otherwise."""
    backbone = build_backbone(spec.arch, spec.width)
    if spec.loss == "ce":
        return ExplainableClassifier(
            backbone, nn.Linear(backbone.feature_dim, spec.num_classes), normalize_features=False
        )
    return ContrastiveModel(backbone)


def build_explainable(spec: ModelSpec) -> ExplainableClassifier:
    """Empty classifier with the state-dict layout (`backbone.*`, `head.*`) of an explained model."""
    backbone = build_backbone(spec.arch, spec.width)
    head = nn.Linear(backbone.feature_dim, spec.num_classes)
    return ExplainableClassifier(backbone, head, normalize_features=spec.normalize_features)
