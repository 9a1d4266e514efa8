"""The sandbox interface every implementation keeps: the local pool (`Sandbox`) and the HTTP client (`RemoteSandbox`).

Callers (`rollout/tir.py`, `eval/core.py`) are typed with `SandboxLike` and never see which one they hold; one contract
test suite (tests/sandbox/test_contract.py) runs against both, so a behaviour the suite pins down cannot differ.

The contract, beyond the signatures:
  * `run`/`arun`/`run_many` and a session's `run`/`arun` never raise for anything the code does, nor for
    infrastructure failures: the answer is an `ExecResult` whose status says what happened (`sandbox_error` when the
    infrastructure failed, never the code's fault).
  * `run_many` returns results in input order.
  * a session keeps variables between its calls; a cell that times out or crashes is rolled back.
  * `fork()` returns an independent copy-on-write clone of the session's state, or raises `SandboxForkError`
    (a subclass of RuntimeError) when it cannot: it never silently hands back a fresh, empty session.
  * a closed session answers `sandbox_error`; `close`/`aclose` are idempotent.
  * `health()` returns a dict with at least `ok: bool`; it does not raise.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from zerotir.types import ExecResult


class SandboxForkError(RuntimeError):
    """`Session.fork()` could not clone the session (closed, kernel lost, service unreachable)."""


@runtime_checkable
class SessionLike(Protocol):
    """A stateful kernel: variables persist between calls (one per trajectory)."""

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    def fork(self) -> "SessionLike": ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SandboxLike(Protocol):
    """Runs untrusted Python: stateless calls (`run`, `arun`, `run_many`) and stateful `session()`s."""

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    def run_many(self, codes: list[str], timeout_s: float | None = None) -> list[ExecResult]: ...

    def session(self) -> SessionLike: ...

    def health(self) -> dict: ...

    def close(self) -> None: ...
