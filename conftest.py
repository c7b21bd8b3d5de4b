"""pytest configuration shared by the unit tests and nbval."""


def pytest_collectstart(collector):
    """nbval compares stderr too; tqdm bars and warnings go there, so never compare it."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript", "stderr")
