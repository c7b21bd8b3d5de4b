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
"""

from __future__ import annotations

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


def main() -> None:
    """papermill's command line, with quiet kernels."""
    from papermill.cli import papermill

    use_quiet_kernels_in_papermill()
    papermill(prog_name="papermill")


if __name__ == "__main__":
    main()
