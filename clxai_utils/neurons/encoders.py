"""Image-text spaces that the scorers read embeddings from: open_clip, or a stand-in that is not CLIP.

`OpenClipEncoder` wraps a real `open_clip` model: a model name plus a pretrained tag
(downloaded from the Hugging Face Hub where there is internet), a local weights file
(offline), or `pretrained=None` for an untrained model built from open_clip's own config
(what the tests use; its embeddings mean nothing). Images go through open_clip's own eval
transform (the PIL pipeline returned by `create_model_and_transforms`: bicubic resize of
the short side, centre crop, the model's mean/std), texts through `open_clip.get_tokenizer`,
and every embedding is L2-normalised. Label embeddings use CSP's six templates, averaged
over the normalised template embeddings and not re-normalised.

`ConceptMeanStandIn` is for machines without CLIP weights: image embeddings are normalised
features of a given network, and a label's embedding is the normalised mean embedding of
the images annotated with that concept. It never sees text, and its `name` says so.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clxai_utils.core.progress import progress_bar
from clxai_utils.core.validate import ConfigError, check_positive_int, check_seed
from clxai_utils.data import augment
from clxai_utils.neurons.scorers import check_embeddings

#: CSP's text templates (the authors' code), in their order.
CSP_TEMPLATES: tuple[str, ...] = (
    "{}",
    "{}-like",
    "a {}",
    "an image of a {}",
    "a closeup of a {}",
    "an image of a closeup of {}",
)
#: CLIP-Dissect scores the bare label.
PLAIN_TEMPLATE: tuple[str, ...] = ("{}",)
#: The smallest open_clip architecture with the plain CLIP tokenizer: builds in ~0.5 s on 2 CPU cores.
TINY_MODEL = "ViT-S-32-alt"
#: Model names that open_clip resolves itself rather than from its built-in configs.
_EXTERNAL_PREFIXES = ("hf-hub:", "local-dir:")


def check_model_name(model_name: Any, name: str = "model_name") -> str:
    """An open_clip model name (one of `open_clip.list_models()`, or an `hf-hub:` / `local-dir:` reference).

    `name` is the caller's parameter, named in the error.
    """
    import open_clip

    if isinstance(model_name, str) and (
        model_name in open_clip.list_models() or model_name.startswith(_EXTERNAL_PREFIXES)
    ):
        return model_name
    close = difflib.get_close_matches(str(model_name), open_clip.list_models(), n=5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise ConfigError(
        f"{name}={model_name!r} is not an open_clip model (see open_clip.list_models(), "
        f"e.g. {TINY_MODEL!r}, 'ViT-B-32'){hint}"
    )


def check_pretrained(model_name: str, pretrained: Any, name: str = "pretrained") -> str | None:
    """None, an existing local weights file (or `local-dir:` folder), or a pretrained tag open_clip knows for the model."""
    import open_clip

    if pretrained is None:
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be None, a pretrained tag or a weights file path, got {type(pretrained).__name__}"
        )
    text = os.fspath(pretrained)
    if text.startswith("local-dir:"):
        if not Path(text.removeprefix("local-dir:")).is_dir():
            raise FileNotFoundError(f"{name}={text!r}: no such folder")
        return text
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if text in tags and not Path(text).exists():
        return text
    if Path(text).is_file():
        return text
    if isinstance(pretrained, os.PathLike) or os.sep in text or Path(text).suffix:
        raise FileNotFoundError(f"{name}={text!r}: no weights file at {Path(text).resolve()}")
    known = ", ".join(tags) if tags else "none (pass a local weights file)"
    raise ConfigError(
        f"{name}={text!r} is neither a weights file nor a pretrained tag of {model_name!r}; its tags: {known}"
    )


def as_uint8(images: Tensor) -> Tensor:
    """(N, 3, H, W) uint8 images from uint8 or floats in [0, 1] (rounded), for open_clip's PIL transform."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, 3, H, W) tensor, got {getattr(images, 'shape', images)!r}")
    if images.dtype == torch.uint8:
        return images
    return (augment.to_float_images(images, rgb=True) * 255).round().clamp(0, 255).to(torch.uint8)


def template_embeddings(
    encode_texts: Callable[[list[str]], Tensor], labels: Sequence[str], templates: Sequence[str]
) -> Tensor:
    """(labels, d): mean over templates of the normalised embedding of template(label) (CSP's text side)."""
    labels, templates = list(labels), list(templates)
    if not labels or not templates:
        raise ValueError(
            f"labels and templates must be non-empty, got {len(labels)} labels and {len(templates)} templates"
        )
    prompts = [template.format(label) for template in templates for label in labels]
    embeddings = encode_texts(prompts).view(len(templates), len(labels), -1)
    return embeddings.mean(0)


class OpenClipEncoder:
    """An open_clip model as an image-text space: normalised image and text embeddings, in batches."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        init_seed: int = 0,
        parameter_names: tuple[str, str] = ("model_name", "pretrained"),
    ) -> None:
        """`pretrained=None` builds an untrained model whose random weights come from `init_seed` only.

        `parameter_names` are what the caller calls `model_name` and `pretrained`, for the errors.
        """
        import open_clip

        self.model_name = check_model_name(model_name, parameter_names[0])
        self.pretrained = check_pretrained(self.model_name, pretrained, parameter_names[1])
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # the untrained weights do not consume the caller's RNG
            torch.manual_seed(check_seed(init_seed))
            try:
                model, _, self.preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self.pretrained, device=self.device
                )
            except (OSError, RuntimeError) as error:
                if self.pretrained is None or Path(self.pretrained).is_file():
                    raise
                raise RuntimeError(
                    f"could not fetch {parameter_names[1]}={self.pretrained!r} for {self.model_name!r} (no internet?): "
                    f"download the weights elsewhere and pass the file as pretrained"
                ) from error
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(self.model_name)
        self._label_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Tensor] = {}

    @property
    def name(self) -> str:
        weights = "untrained, random weights" if self.pretrained is None else self.pretrained
        return f"open_clip {self.model_name} ({weights})"

    @torch.no_grad()
    def encode_images(self, images: Tensor, progress: bool = False) -> Tensor:
        """(N, d) normalised embeddings of (N, 3, H, W) images, uint8 or floats in [0, 1]; float32 on the CPU."""
        from torchvision.transforms.functional import to_pil_image

        images = as_uint8(images)
        parts = []
        starts = range(0, len(images), self.batch_size)
        for start in progress_bar(starts, desc=f"{self.model_name} images", unit="batch", disable=not progress):
            batch = torch.stack(
                [self.preprocess(to_pil_image(image)) for image in images[start : start + self.batch_size]]
            )
            parts.append(F.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=1).cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(T, d) normalised embeddings of `texts`, float32 on the CPU."""
        texts = list(texts)
        parts = [
            F.normalize(
                self.model.encode_text(self.tokenizer(texts[s : s + self.batch_size]).to(self.device)).float(), dim=1
            ).cpu()
            for s in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(parts)

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] = CSP_TEMPLATES) -> Tensor:
        """(labels, d) text embeddings: mean over `templates` of the normalised prompt embeddings.

        Computed once per list of labels and templates (10 asks for the vocabulary's in two places);
        a copy is returned, so the cached embeddings cannot be changed by a caller.
        """
        key = (tuple(labels), tuple(templates))
        if key not in self._label_cache:
            self._label_cache[key] = template_embeddings(self.encode_texts, labels, templates)
        return self._label_cache[key].clone()


class ConceptMeanStandIn:
    """A stand-in image-text space, NOT CLIP: labels are concepts, embedded by the images that carry them.

    Image embedding: norm(features(x)) for a given feature network `features` (images -> (N, d)).
    Label embedding of concept c: norm(mean of the image embeddings of the images annotated
    with c). It shows what the scorers do with a space where the label embeddings are
    known; it says nothing about CLIP's text encoder.
    """

    def __init__(self, features: Callable[[Tensor], Tensor], feature_space: str, batch_size: int = 256) -> None:
        if not callable(features):
            raise TypeError(f"features must be a callable images -> (N, d) features, got {type(features).__name__}")
        self.features = features
        self.feature_space = str(feature_space)
        self.batch_size = check_positive_int("batch_size", batch_size)

    @property
    def name(self) -> str:
        return f"stand-in (not CLIP): concept means in {self.feature_space}"

    @torch.no_grad()
    def encode_images(self, images: Tensor, progress: bool = False) -> Tensor:
        """(N, d) normalised features of `images`, in batches; float32 on the CPU."""
        starts = range(0, len(images), self.batch_size)
        parts = [
            F.normalize(self.features(images[s : s + self.batch_size]).float(), dim=1).cpu()
            for s in progress_bar(starts, desc="stand-in images", unit="batch", disable=not progress)
        ]
        return torch.cat(parts)

    @staticmethod
    def label_embeddings(image_embeddings: Tensor, concepts: Tensor) -> Tensor:
        """(C, d): normalised mean of the embeddings (N, d) of the images where each concept (N, C) bool holds."""
        image_embeddings = check_embeddings("image_embeddings", image_embeddings)
        if (
            not isinstance(concepts, Tensor)
            or concepts.dtype != torch.bool
            or concepts.shape[:1] != image_embeddings.shape[:1]
        ):
            raise ValueError(f"concepts must be a bool tensor with one row per image ({len(image_embeddings)})")
        missing = (~concepts.any(0)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"concepts {missing} hold on no image: they have no embedding in the stand-in space")
        members = concepts.to(image_embeddings.dtype)
        return F.normalize(members.T @ image_embeddings, dim=1)


def concatenated_features(features: Mapping[str, Tensor]) -> Tensor:
    """The stand-in image embedding: each network's features L2-normalised, concatenated, normalised again.

    Every network counts equally, so no loss's units are labelled in their own space alone.
    """
    if not features:
        raise ValueError("features must hold at least one network's (N, d) features")
    return F.normalize(torch.cat([F.normalize(f.float(), dim=1) for f in features.values()], dim=1), dim=1)


def clip_encoder(
    clip_model: str | None, clip_weights: str | os.PathLike[str] | None, device: str | torch.device = "cpu"
) -> OpenClipEncoder | None:
    """10's encoder from its parameters: None without `clip_model` (only the offline parts run), else open_clip.

    `clip_weights=None` with a model gives an untrained open_clip model: the real code path,
    labels without meaning (what the smoke tests run). Errors name `clip_model` / `clip_weights`.
    """
    if clip_model is None:
        if clip_weights is not None:
            raise ConfigError(f"clip_weights={os.fspath(clip_weights)!r} was given without clip_model: name its model")
        return None
    return OpenClipEncoder(clip_model, clip_weights, device=device, parameter_names=("clip_model", "clip_weights"))
