"""05's progress lines name what they explain (issue 23): "ce gradcam test", not 18 lines of "gradcam"."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from clxai_utils.explain import store


class Seen(Exception):
    """Stops compute_explanations once its progress bar is made."""


def test_the_progress_bar_is_labelled_with_loss_method_and_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    labels: list[Any] = []

    def progress_bar(iterable: Any, desc: Any = None, **kwargs: Any) -> Any:
        labels.append(desc)
        raise Seen

    monkeypatch.setattr(store, "progress_bar", progress_bar)
    batch = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), torch.arange(2))
    with pytest.raises(Seen):
        store.compute_explanations(nn.Identity(), batch, "eigencam", batch_size=2, meta={"loss": "ce", "kind": "masks"})
    with pytest.raises(Seen):
        store.compute_explanations(nn.Identity(), batch, "gradcam", batch_size=2)
    assert labels == ["ce eigencam masks", "gradcam"]
