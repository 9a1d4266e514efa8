"""The sandbox's two exception types and the one place an infrastructure failure becomes a result.

`SandboxUnavailable` is raised at construction (an isolation layer or quota controller is missing). `SandboxError`
is raised inside the pool when its own machinery fails (no worker, a context could not be set up, a kernel became
unreachable); it never escapes a `run`: `error_result` turns it into `status='sandbox_error'`, and nothing else in
the package builds such a result.
"""

from __future__ import annotations

import time

from zerotir.types import ExecResult


class SandboxUnavailable(RuntimeError):
    """The requested isolation level cannot be provided here (the message names the missing layer)."""


class SandboxError(RuntimeError):
    """The sandbox infrastructure failed (never the code's fault); reported as status='sandbox_error'."""


def error_result(err: BaseException | str, t0: float | None = None, stdout: str = "", stderr: str = "",
                 truncated: bool = False) -> ExecResult:
    """The result of a call the infrastructure could not complete; partial output, if any, is kept."""
    msg = err if isinstance(err, str) else (str(err) if isinstance(err, SandboxError)
                                            else f"{type(err).__name__}: {err}")
    if not msg.startswith("sandbox"):
        msg = f"sandbox: {msg}"
    sep = "\n" if stderr and not stderr.endswith("\n") else ""
    return ExecResult(status="sandbox_error", stdout=stdout, stderr=stderr + sep + msg + "\n",
                      truncated=truncated, duration_s=(time.monotonic() - t0) if t0 else 0.0)
