"""Progress bars that leave their final state in a saved notebook.

tqdm's notebook widget stores, as the text a saved notebook shows (on GitHub, in nbval,
in any viewer without the widget state), the bar as it was when it was created:
"ce training: 0%| 0/1170". Here a bar in a Jupyter kernel is tqdm's plain text bar shown
through one display output that is updated in place, at most once a second: JupyterLab
shows it live, and papermill, nbclient and JupyterLab all save its last state, the final
line. Outside a kernel (a terminal, a log file) tqdm writes to stderr as usual.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm.std import tqdm

T = TypeVar("T")

#: Redraws at most once a second: every redraw in a kernel is a message on its output channel.
MIN_INTERVAL_S = 1.0


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbclient, nbval)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class DisplayLine:
    """A file-like target for tqdm that keeps only the latest line, shown as one updated display output."""

    encoding = "utf-8"  # tqdm draws Unicode blocks only for a file that says it takes them

    def __init__(self) -> None:
        self.text = ""
        self._handle: Any = None

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line and line != self.text:
            self.text = line
            self._show()
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered: every line is shown as it is written."""

    def _show(self) -> None:
        from IPython.display import display

        bundle = {"text/plain": self.text}
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
) -> tqdm:
    """A tqdm bar for notebooks and terminals alike (see the module docstring)."""
    target = DisplayLine() if in_kernel() else sys.stderr
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        file=target,
        mininterval=MIN_INTERVAL_S,
        ncols=100 if isinstance(target, DisplayLine) else None,
        dynamic_ncols=not isinstance(target, DisplayLine),
    )


def relay_output(stream: IO[bytes]) -> None:
    """Copy a child process's output here until it closes: lines are printed, redraws update one line.

    A child's tqdm bar redraws with carriage returns; relayed as lines it would fill a
    notebook with one line per redraw, so a segment ending in "\\r" goes to one display line
    (in a kernel) or is redrawn in place (in a terminal).
    """
    bar: DisplayLine | None = DisplayLine() if in_kernel() else None
    pending = b""
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        pending += chunk
        *segments, pending = re.split(rb"(?<=[\r\n])", pending)
        for segment in segments:
            text = segment.decode(errors="replace")
            if not text.endswith("\r"):
                print(text, end="", flush=True)
            elif bar is not None:
                bar.write(text)
            else:
                sys.stderr.write(text)
    if pending:
        print(pending.decode(errors="replace"), flush=True)
