"""The seeding helper and atomic artefact writing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from clxai_utils.core.artifacts import atomic_path, load_torch, read_json, save_torch, write_json
from clxai_utils.core.seeding import seed_everything
from clxai_utils.core.validate import check_seed


def draws(seed: int) -> tuple:
    gen = seed_everything(seed)
    return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


@pytest.mark.parametrize(
    ("bad", "error"), [(-1, ValueError), (1.0, TypeError), ("0", TypeError), (True, TypeError), (None, TypeError)]
)
def test_seed_must_be_a_non_negative_integer(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="seed must be a non-negative integer"):
        check_seed(bad)
    assert check_seed(np.int64(2)) == 2


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed")
    assert read_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_torch_artefacts_load_weights_only(tmp_path: Path) -> None:
    save_torch(tmp_path / "x.pt", {"w": torch.arange(3), "meta": {"loss": "ce"}})
    loaded = load_torch(tmp_path / "x.pt")
    assert torch.equal(loaded["w"], torch.arange(3)) and loaded["meta"] == {"loss": "ce"}


def test_saving_the_same_object_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    """Model digests hash the files: they must not depend on the temporary file's name."""
    obj = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "identity": {"seed": 0}}
    first, second = save_torch(tmp_path / "a" / "model.pt", obj), save_torch(tmp_path / "b" / "model.pt", obj)
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(load_torch(first)["state_dict"]["w"], obj["state_dict"]["w"])
