"""Kernels that start and stop without noise, for papermill, nbclient and nbval.

Two lines that every notebook execution used to print look like warnings but are not:

* "Kernel is running over TCP without encryption" is logged by ipykernel when its
  connection has no CurveZMQ key. jupyter_client provisions one only if the kernel
  manager's `transport_encryption` is "auto" (and the kernelspec declares curve support,
  as ipykernel's does) or "required"; its default is "disabled". These managers ask for "auto".
* "KeyboardInterrupt caught in kernel." is logged by ipykernel when a SIGINT reaches it
  inside a request handler. `shutdown_kernel` always sends SIGINT before its shutdown
  request, and papermill's last kernel_info request is often still being answered then.
  These managers skip that one interrupt (a kernel that is still busy is stopped by the
  shutdown request, then SIGTERM, then SIGKILL, as before); interrupts at any other time
  are unchanged.

Run as a module, this is papermill's own command line with these kernels:

    python -m clxai_utils.tools.kernel in.ipynb out.ipynb -p seed 1

and one check papermill leaves out: a parameter the notebook's `parameters` cell does not
assign (a typo, a name of another notebook) stops the call with exit status 2 and the
allowed names, where papermill itself only warns "Passed unknown parameter" and runs the
notebook with its defaults.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager, KernelManager


class _Quiet:
    """CurveZMQ where the kernel supports it, and no SIGINT at shutdown (mixed into both managers)."""

    shutting_down: bool

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transport_encryption", "auto")
        super().__init__(**kwargs)

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()  # type: ignore[misc]  # the manager's, next in the MRO


class QuietKernelManager(_Quiet, AsyncKernelManager):
    """The async manager nbclient and papermill use."""


class QuietBlockingKernelManager(_Quiet, KernelManager):
    """The blocking manager nbval starts its kernels with."""


def quiet_kernel_manager() -> type[QuietKernelManager]:
    """The kernel manager class for nbclient's and papermill's `kernel_manager_class`."""
    return QuietKernelManager


def use_quiet_kernels_in_papermill() -> None:
    """Make papermill's default (nbclient) engine start its kernels with `QuietKernelManager`."""
    from papermill.engines import NBClientEngine, papermill_engines

    class QuietEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            kwargs.setdefault("kernel_manager_class", QuietKernelManager)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    for name in (None, "nbclient"):
        papermill_engines.register(name, QuietEngine)


#: Exit status of a call naming a parameter the notebook does not take (click's for usage errors).
UNKNOWN_PARAMETER_EXIT = 2
#: Parameters papermill injects itself (--inject-paths), never assigned in a parameters cell.
_INJECTED = ("PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH")


def notebook_parameters(notebook: str | Path) -> list[str]:
    """The names the notebook's `parameters` cell assigns, as papermill reads them (in cell order)."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))


def unknown_parameters_message(notebook: str | Path, given: Iterable[str]) -> str | None:
    """None if every name in `given` is a parameter of `notebook`, else the error naming the first unknown one."""
    allowed = notebook_parameters(notebook)
    unknown = [name for name in given if name not in allowed and name not in _INJECTED]
    if not unknown:
        return None
    names = ", ".join(repr(name) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"unknown parameter{plural} {names} for {Path(notebook).stem}; "
        f"allowed: {', '.join(allowed) if allowed else '(none: the notebook has no parameters cell)'}"
    )


def given_parameter_names(options: Mapping[str, Any]) -> list[str]:
    """The parameter names of papermill's parsed options (-p, -r, -y, -f, -b), read as papermill reads them."""
    import yaml
    from papermill.iorw import read_yaml_file

    names: dict[str, None] = {}
    texts = [base64.b64decode(text) for text in options.get("parameters_base64") or ()]
    texts += list(options.get("parameters_yaml") or ())
    for loaded in [yaml.safe_load(text) for text in texts] + [
        read_yaml_file(f) for f in options.get("parameters_file") or ()
    ]:
        names.update(dict.fromkeys(map(str, loaded or {})))
    for name, _ in [*(options.get("parameters") or ()), *(options.get("parameters_raw") or ())]:
        names[str(name)] = None
    return list(names)


def check_parameters(args: Sequence[str]) -> str | None:
    """The unknown-parameter error of papermill's command line `args`, or None (also where papermill will
    report a problem of its own: bad options, no local input notebook, --help-notebook)."""
    import click
    from papermill.cli import papermill

    try:
        ctx = papermill.make_context("papermill", list(args), resilient_parsing=True)
        options = ctx.params
        notebook = options.get("notebook_path")
        if options.get("help_notebook") or not notebook or not Path(notebook).is_file():
            return None
        given = given_parameter_names(options)
    except (click.exceptions.Exit, click.ClickException, ValueError, OSError):
        return None  # papermill's own parsing reports these below
    return unknown_parameters_message(notebook, given)


def main(argv: Sequence[str] | None = None) -> None:
    """papermill's command line, with quiet kernels; an unknown parameter exits with status 2 before any kernel starts."""
    from papermill.cli import papermill

    args = list(sys.argv[1:] if argv is None else argv)
    if problem := check_parameters(args):
        print(f"Error: {problem}", file=sys.stderr)
        raise SystemExit(UNKNOWN_PARAMETER_EXIT)
    use_quiet_kernels_in_papermill()
    papermill.main(args=args, prog_name="papermill")


if __name__ == "__main__":
    main()
