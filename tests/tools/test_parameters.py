"""Notebook parameters (issue 23): every parameters cell parses with papermill, an unknown name stops the call."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from clxai_utils.core.notebooks import NOTEBOOKS
from clxai_utils.core.paths import repo_root
from clxai_utils.tools import kernel

NOTEBOOKS_DIR = repo_root() / "notebooks"
EXPLANATIONS = NOTEBOOKS_DIR / "05_explanations.ipynb"


def assigned_parameters(path: Path) -> list[str]:
    """The names the notebook's cell tagged `parameters` assigns, read by Python's parser (not papermill's)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} must have one cell tagged 'parameters'"
    names = []
    for node in ast.parse("".join(tagged[0]["source"])).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS])
def test_papermill_reads_every_parameter_of_every_notebook(name: str) -> None:
    """10_analysis's `runs_root: str = ""  # ...; "" = ...` was one papermill could not parse (a second '=')."""
    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    assert list(papermill.inspect_notebook(str(path))) == assigned_parameters(path)


def test_unknown_parameter_exits_2_naming_the_allowed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        kernel.main([str(EXPLANATIONS), "unused.ipynb", "-p", "methods", '["gradcam","lime"]'])
    assert stop.value.code == kernel.UNKNOWN_PARAMETER_EXIT == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'methods' for 05_explanations; allowed: profile, dataset, seed, losses, n_gallery" in err
    assert not Path("unused.ipynb").exists()


def test_every_way_of_giving_parameters_is_checked(tmp_path: Path) -> None:
    yaml_file = tmp_path / "params.yaml"
    yaml_file.write_text("from_file: 1\n")
    args = [str(EXPLANATIONS), "out.ipynb", "-p", "seed", "1", "-r", "raw_name", "x", "-y", "{losses: [ce], typo: 2}"]
    args += ["-f", str(yaml_file), "-b", base64.b64encode(b"encoded: 3").decode()]
    problem = kernel.check_parameters(args)
    assert problem is not None
    unknown = problem.split(" for ")[0]
    for name in ("raw_name", "typo", "from_file", "encoded"):
        assert repr(name) in unknown
    assert "'seed'" not in unknown and "'losses'" not in unknown


def test_known_parameters_and_papermills_own_errors_pass_the_check() -> None:
    assert kernel.check_parameters([str(EXPLANATIONS), "out.ipynb", "-p", "seed", "1", "-y", "losses: [ce]"]) is None
    assert kernel.check_parameters(["--help-notebook", str(EXPLANATIONS), "-p", "nope", "1"]) is None  # help only
    assert kernel.check_parameters(["missing.ipynb", "out.ipynb", "-p", "nope", "1"]) is None  # papermill reports it
    assert kernel.check_parameters(["--no-such-option"]) is None


def test_the_module_command_line_exits_2_before_starting_a_kernel(tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "clxai_utils.tools.kernel", str(EXPLANATIONS), str(out), "-p", "methods", "x"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "unknown parameter 'methods' for 05_explanations; allowed:" in done.stderr
    assert not out.exists()
