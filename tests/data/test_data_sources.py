"""Where data sources are read from, and what an offline machine without one is told (issue 23)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torchvision.datasets.cifar

from clxai_utils.data import sources
from clxai_utils.data.datasets import MASK_SOURCE_ENV, resolve_mask_source
from clxai_utils.data.sources import SOURCE_ENV, DataError, load_torchvision_cifar10, resolve_source


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root (CLXAI_ROOT) with data/ and notebooks/, the cwd in notebooks/ as in JupyterLab."""
    root = tmp_path / "repo"
    (root / "data" / "mine").mkdir(parents=True)
    (root / "notebooks").mkdir()
    monkeypatch.setenv("CLXAI_ROOT", str(root))
    monkeypatch.chdir(root / "notebooks")
    return root


def test_a_relative_data_source_is_read_from_the_repository_root(repo: Path) -> None:
    assert resolve_source("data/mine") == str((repo / "data" / "mine").resolve())
    assert resolve_source(str(repo / "data" / "mine")) == str((repo / "data" / "mine").resolve())


def test_a_relative_mask_source_is_read_from_the_repository_root(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_mask_source("data/mine") == str((repo / "data" / "mine").resolve())
    monkeypatch.setenv(MASK_SOURCE_ENV, "data/mine")
    assert resolve_mask_source("auto") == str((repo / "data" / "mine").resolve())


def test_a_missing_relative_path_says_where_it_was_looked_for(repo: Path) -> None:
    (repo / "notebooks" / "here").mkdir()  # exists from the kernel's cwd only
    with pytest.raises(DataError, match=r"read from the repository root: looked for .*repo/here"):
        resolve_source("here")
    with pytest.raises(DataError, match=r"mask_source='here' does not exist \(a relative path is read from the repo"):
        resolve_mask_source("here")


@pytest.mark.parametrize("failure", [urllib.error.URLError("[Errno -2] Name or service not known"), OSError("proxy")])
def test_an_offline_download_ends_in_one_clear_error(
    failure: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data source and no network: one error that says how to give the data, not urllib's traceback."""

    def offline(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setenv("CLXAI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    assert resolve_source("auto") == "torchvision"
    with pytest.raises(DataError) as caught:
        load_torchvision_cifar10()
    message = str(caught.value)
    assert "the official CIFAR-10 download failed" in message and type(failure).__name__ in message
    assert "data_source" in message and SOURCE_ENV in message and ".tar.gz" in message and "folder" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "no chained download traceback"
    assert sources.download_failed_message(failure).startswith("the official CIFAR-10 download failed")
