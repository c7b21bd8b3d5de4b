"""pytest configuration shared by the unit tests and nbval."""

import nbval.kernel

from clxai_utils.tools.kernel import QuietBlockingKernelManager

# nbval builds its kernel manager from this module attribute and has no option for another one.
nbval.kernel.KernelManager = QuietBlockingKernelManager


def pytest_collectstart(collector):
    """nbval compares stderr too; tqdm bars and warnings go there, so never compare it."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript", "stderr")
