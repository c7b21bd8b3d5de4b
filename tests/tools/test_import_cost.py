"""Start-up cost (issue 23, item 6): heavy libraries are imported by the functions that need them.

Each notebook's import cell used to load pytorch-grad-cam (torchvision, torch._dynamo),
seaborn and scipy.stats whether it used them or not; 10_analysis loaded torch for nothing.
Checked in a fresh interpreter, since this test session has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = {
    # 10_analysis's import cell: no torch, no seaborn, no scipy until a test or figure runs
    "report": (
        "from clxai_utils import figures\n"
        "from clxai_utils.analysis import claims, coherence, confound, report, stats, tables\n"
        "from clxai_utils.core.paths import display_path",
        ("torch", "seaborn", "scipy.stats"),
    ),
    # 05, 06 and 07 import the CAM module; Grad-CAM's library loads when maps are computed
    "cams": (
        "from clxai_utils.explain.cams import explain\n"
        "from clxai_utils.explain.store import run_explanations\n"
        "from clxai_utils.evaluate.facets import evaluate_facets",
        ("pytorch_grad_cam", "torchvision", "torch._dynamo", "seaborn"),
    ),
    # 10 reads holm and permutation_test only
    "neurons": ("from clxai_utils.neurons import comparison, planted", ("scipy.stats", "seaborn", "pytorch_grad_cam")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_heavy_libraries_wait_until_used(case: str) -> None:
    code, heavy = CASES[case]
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {list(heavy)!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported at start-up: {done.stdout.strip()}"
