"""environment.yml (conda) asks for the packages pyproject.toml declares, and the same Python; the tests run in float32.

pyproject.toml and its lock (uv.lock) are what `make` installs; environment.yml is the same list for conda,
without exact pins. Every package of pyproject's runtime dependencies and dependency groups must appear in
environment.yml (conda or pip section) and every package there in pyproject, under the same name once
normalised (PEP 503: case, `_` and `.` as `-`), except the entries in CONDA_ONLY. A version constraint
written in environment.yml must be one pyproject.toml writes too.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: environment.yml entries that are not packages of pyproject.toml: the interpreter, the installer, the project.
CONDA_ONLY = {"python", "pip", "-e ."}
#: conda-forge names that differ from the PyPI names pyproject.toml uses: none at present (grad-cam, which
#: imports as pytorch_grad_cam, and torch come from pip under their PyPI names).
CONDA_TO_PYPI: dict[str, str] = {}
SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;#]*)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(spec: str) -> tuple[str, str]:
    """(normalised name, version constraint without spaces) of a requirement or a conda match spec."""
    match = SPEC.match(spec)
    assert match, f"cannot read {spec!r}"
    name = normalise(match.group(1))
    return CONDA_TO_PYPI.get(name, name), match.group(2).replace(" ", "").strip()


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, set[str]]:
    """Name -> constraints, over the runtime dependencies and every dependency group."""
    project = pyproject()
    specs = list(project["project"]["dependencies"])
    for group in project["dependency-groups"].values():
        specs += [spec for spec in group if isinstance(spec, str)]
    found: dict[str, set[str]] = {}
    for spec in specs:
        name, constraint = parse(spec)
        found.setdefault(name, set()).add(constraint)
    return found


def conda_requirements() -> dict[str, str]:
    """Name -> constraint of environment.yml's conda and pip entries, CONDA_ONLY left out."""
    entries: list[str] = []
    for entry in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]:
        entries += entry["pip"] if isinstance(entry, dict) else [entry]
    found = {}
    for entry in entries:
        if entry.strip() in CONDA_ONLY or entry.split("=")[0].strip() in CONDA_ONLY:
            continue
        name, constraint = parse(entry)
        assert name not in found, f"environment.yml lists {name} twice"
        found[name] = constraint
    return found


def test_environment_yml_lists_the_packages_of_pyproject_toml_and_no_others() -> None:
    ours, conda = pyproject_requirements(), conda_requirements()
    assert sorted(set(ours) - set(conda)) == [], "in pyproject.toml, missing from environment.yml"
    assert sorted(set(conda) - set(ours)) == [], "in environment.yml, not in pyproject.toml"


def test_version_constraints_of_environment_yml_are_pyproject_tomls() -> None:
    ours = pyproject_requirements()
    for name, constraint in conda_requirements().items():
        if constraint:
            assert constraint in ours[name], f"environment.yml asks {name}{constraint}, pyproject.toml {ours[name]}"


def test_one_python_version_everywhere() -> None:
    """environment.yml's python=3.11 is the version make installs (uv sync --python) and mypy checks."""
    entries = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda_python = next(e for e in entries if isinstance(e, str) and e.startswith("python="))
    version = conda_python.removeprefix("python=")
    project = pyproject()
    assert project["project"]["requires-python"] == f">={version}"
    assert project["tool"]["mypy"]["python_version"] == version
    assert f"py{version.replace('.', '')}" == project["tool"]["ruff"]["target-version"]
    assert f"--python {version}" in (ROOT / "Makefile").read_text()


def test_the_package_imports_none_of_the_test_only_packages() -> None:
    """quantus, nbval and pytest are in the test group because clxai_utils never imports them."""
    sources = "\n".join(path.read_text() for path in (ROOT / "clxai_utils").rglob("*.py"))
    for module in ("quantus", "nbval", "pytest", "skimage", "pyarrow"):
        assert not re.search(rf"^\s*(import|from)\s+{module}\b", sources, re.MULTILINE), module


def test_every_test_computes_in_float32_and_reads_no_mask_source() -> None:
    """tests/conftest.py sets this for the whole session, whichever tests were collected."""
    import os

    from clxai_utils.core.precision import PRECISION_ENV
    from clxai_utils.data.datasets import MASK_SOURCE_ENV

    assert os.environ[PRECISION_ENV] == "float32"
    assert MASK_SOURCE_ENV not in os.environ
