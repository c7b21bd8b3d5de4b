"""Image-text spaces: the real open_clip path on a small untrained model, and the offline stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clxai_utils.core.validate import ConfigError
from clxai_utils.neurons.encoders import (
    CSP_TEMPLATES,
    TINY_MODEL,
    ConceptMeanStandIn,
    OpenClipEncoder,
    clip_encoder,
)

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def encoder() -> OpenClipEncoder:
    return OpenClipEncoder(TINY_MODEL, pretrained=None, batch_size=3)


def cifar_like(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_image_embeddings_are_normalised_batched_and_deterministic(encoder: OpenClipEncoder) -> None:
    x = cifar_like(4)
    embeddings = encoder.encode_images(x)  # batches of 3 and 1
    assert embeddings.shape == (4, encoder.model.visual.output_dim) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(encoder.encode_images(x[2:]), embeddings[2:], atol=1e-5)  # batching changes nothing
    assert torch.allclose(encoder.encode_images(x[:1].float() / 255), embeddings[:1], atol=1e-5)  # floats in [0, 1]
    # the real preprocessing: open_clip's own transform on PIL images, 224 px, the model's mean/std
    pil = encoder.preprocess(Image.fromarray(x[0].permute(1, 2, 0).numpy()))
    assert pil.shape == (3, 224, 224)
    with torch.no_grad():
        direct = F.normalize(encoder.model.encode_image(pil[None]), dim=1)
    assert torch.allclose(direct[0], embeddings[0], atol=1e-5)


def test_an_untrained_model_depends_only_on_its_seed(encoder: OpenClipEncoder) -> None:
    torch.manual_seed(999)  # the caller's RNG state is neither used nor consumed
    state = torch.get_rng_state()
    twin = OpenClipEncoder(TINY_MODEL, pretrained=None)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(twin.encode_texts(["a cat"]), encoder.encode_texts(["a cat"]))
    assert all(torch.equal(a, b) for a, b in zip(twin.model.state_dict().values(), encoder.model.state_dict().values()))
    assert "untrained" in encoder.name


def test_label_embeddings_average_the_six_csp_templates(encoder: OpenClipEncoder) -> None:
    assert CSP_TEMPLATES == (
        "{}",
        "{}-like",
        "a {}",
        "an image of a {}",
        "a closeup of a {}",
        "an image of a closeup of {}",
    )
    prompts = ["red patch", "red patch-like", "a red patch", "an image of a red patch", "a closeup of a red patch"]
    per_prompt = encoder.encode_texts([*prompts, "an image of a closeup of red patch"])  # batches of 3
    assert torch.allclose(per_prompt.norm(dim=1), torch.ones(6), atol=1e-5)
    embedding = encoder.label_embeddings(["red patch"])
    assert torch.allclose(embedding, per_prompt.mean(0, keepdim=True), atol=1e-5)  # mean of unit vectors, as is
    assert torch.allclose(encoder.label_embeddings(["red patch"], ("{}",)), per_prompt[:1], atol=1e-6)


def test_a_local_weights_file_is_loaded_offline(encoder: OpenClipEncoder, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(encoder.model.state_dict(), path)
    loaded = OpenClipEncoder(TINY_MODEL, pretrained=path, init_seed=7)
    assert torch.allclose(loaded.encode_texts(["a dog"]), encoder.encode_texts(["a dog"]), atol=1e-6)
    assert str(path) in loaded.name


def test_images_must_be_an_rgb_batch(encoder: OpenClipEncoder) -> None:
    with pytest.raises(ValueError, match=r"images must be a non-empty \(N, 3, H, W\) tensor"):
        encoder.encode_images(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images must be a non-empty"):
        encoder.encode_images(torch.zeros(2, 1, 32, 32))


def test_bad_model_names_and_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_name='ViT-Q-99' is not an open_clip model"):
        OpenClipEncoder("ViT-Q-99")
    with pytest.raises(FileNotFoundError, match=r"pretrained='.*missing\.pt': no weights file"):
        OpenClipEncoder(TINY_MODEL, pretrained=tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="pretrained='weights/none.bin': no weights file"):
        OpenClipEncoder(TINY_MODEL, pretrained="weights/none.bin")
    with pytest.raises(
        ConfigError, match="pretrained='laion9000' is neither a weights file nor a pretrained tag of 'ViT-B-32'"
    ):
        OpenClipEncoder("ViT-B-32", pretrained="laion9000")


def test_notebook_08s_encoder_parameters_are_named_in_its_errors(tmp_path: Path) -> None:
    assert clip_encoder(None, None) is None
    with pytest.raises(ConfigError, match="clip_model='ViT-Q-99' is not an open_clip model"):
        clip_encoder("ViT-Q-99", None)
    with pytest.raises(FileNotFoundError, match=r"clip_weights='.*missing\.pt': no weights file"):
        clip_encoder(TINY_MODEL, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="clip_weights='w.pt' was given without clip_model"):
        clip_encoder(None, "w.pt")
    assert clip_encoder(TINY_MODEL, None).pretrained is None


def test_label_embeddings_are_encoded_once_and_handed_out_as_copies(encoder: OpenClipEncoder) -> None:
    first = encoder.label_embeddings(["cat", "stripes"])
    first.zero_()
    again = encoder.label_embeddings(["cat", "stripes"])
    assert again.abs().sum() > 0 and len(encoder._label_cache) >= 1
    assert torch.equal(again, encoder.label_embeddings(["cat", "stripes"]))


def test_the_stand_in_space_is_concept_means_and_says_it_is_not_clip() -> None:
    space = ConceptMeanStandIn(lambda x: x.flatten(1).float(), feature_space="raw pixels", batch_size=2)
    assert "not CLIP" in space.name
    x = torch.tensor([[1.0, 0], [0, 3], [2, 0]]).view(3, 2, 1, 1)
    embeddings = space.encode_images(x)
    assert torch.allclose(embeddings, torch.tensor([[1.0, 0], [0, 1], [1, 0]]))
    concepts = torch.tensor([[True, False], [True, True], [False, True]])
    # concept 0: norm(x + y) ; concept 1: norm(y + x) as well; both (0.70711, 0.70711)
    labels = ConceptMeanStandIn.label_embeddings(embeddings, concepts)
    assert torch.allclose(labels, torch.full((2, 2), 0.5**0.5))
    only_first = ConceptMeanStandIn.label_embeddings(embeddings, torch.tensor([[True], [False], [True]]))
    assert torch.allclose(only_first, torch.tensor([[1.0, 0]]))
    with pytest.raises(ValueError, match=r"concepts \[1\] hold on no image"):
        ConceptMeanStandIn.label_embeddings(embeddings, torch.tensor([[True, False]] * 3))
