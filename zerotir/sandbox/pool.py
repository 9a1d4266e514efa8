"""The public API of the local sandbox: `Sandbox` (a pool of warm, isolated workers) and `Session`.

All I/O runs on one private asyncio loop in a background thread; `run` (any thread) and `arun` (any event loop)
hand work to it, so the pool is safe to share between many threads and many asyncio tasks. The roles behind it:
ipc.py (messages and fd passing), isolation.py (layers, bubblewrap, neutral paths), quotas.py (one cgroup per
context), workers.py (zygotes, contexts, kernels), cells.py (one execution), scheduler.py (the loop-side pool).
`SandboxError` from any of them becomes a `sandbox_error` result here, through `errors.error_result` only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
from typing import Any, Sequence

from zerotir.config.schema import SANDBOX_PREIMPORT
from zerotir.sandbox.errors import SandboxError, SandboxUnavailable, error_result
from zerotir.sandbox.isolation import ISOLATION_LEVELS, check_isolation, host_layout
from zerotir.sandbox.protocol import SandboxForkError
from zerotir.sandbox.quotas import Quotas
from zerotir.sandbox.scheduler import Pool, SessionState
from zerotir.sandbox.workers import CONTEXT_PROCS, UID_BLOCKS, UID_MIN, UID_SPAN, Kernel
from zerotir.types import ExecResult

log = logging.getLogger("zerotir.sandbox")

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def check_preimport(names: Sequence[str]) -> tuple[str, ...]:
    """The preimport list as a tuple; a non-list or a name that is not a dotted module name raises ValueError (the
    warm worker skips modules that fail to import, so a typo here would otherwise pass unnoticed as a slow call)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"sandbox preimport must be a list of module names, got {names!r}")
    bad = [n for n in names if not _MODULE_NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"sandbox preimport: {bad[0]!r} is not a module name")
    return tuple(names)


# Re-exported: callers and tests import these from here.
__all__ = ["Sandbox", "Session", "SandboxError", "SandboxUnavailable", "SandboxForkError", "ISOLATION_LEVELS",
           "check_isolation", "CONTEXT_PROCS", "UID_BLOCKS", "UID_MIN", "UID_SPAN"]


class Sandbox:
    """A pool of warm, isolated Python workers. Thread-safe and asyncio-safe; see the package docstring.

    with Sandbox(workers=4, timeout_s=2.0, memory_mb=512, max_output_bytes=65536) as sb:
        sb.run("print(1+1)")                      # ExecResult(status='ok', stdout='2\\n', ...)
        with sb.session() as s: s.run("x = 21"); s.run("print(x * 2)")
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 512,
                 max_output_bytes: int = 16384, isolation: str = "full", *, cpu_cores: float = 1.0,
                 quotas: bool = True, prewarm: int = 2, nproc: int = 64, fsize_mb: int = 64, tmpfs_mb: int = 64,
                 max_concurrency: int | None = None, start_timeout_s: float = 60.0, spares: int = 1,
                 preimport: Sequence[str] = SANDBOX_PREIMPORT):
        """`memory_mb`, `nproc` and `cpu_cores` bound each call's whole process tree (one cgroup per context);
        `quotas=False` turns that off (each process is then limited alone; 'full' logs a warning). In 'rlimits'
        mode quotas are applied where cgroups are writable and skipped otherwise; 'none' never uses them.
        `preimport`: the modules each warm worker imports before forking contexts (`SandboxConfig.preimport`)."""
        check_isolation(isolation)
        preimport = check_preimport(preimport)
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if isolation != "full":
            log.warning("sandbox isolation=%r: the model's code is NOT isolated from this machine's files, network "
                        "and processes (only %s); use isolation='full' for untrusted code", isolation,
                        "rlimits, a cleared environment and a private temp dir" if isolation == "rlimits"
                        else "timeouts and output caps")
        q: Quotas | None = None
        if quotas and isolation != "none":
            try:
                q = Quotas.create(memory_mb, nproc, cpu_cores, weight_tasks=max(workers, max_concurrency or 0))
            except SandboxUnavailable as e:
                if isolation == "full":
                    raise
                log.info("sandbox: no per-call quotas in isolation=%r: %s", isolation, e)
        elif isolation == "full":
            log.warning("sandbox quotas=False: memory, processes and CPU are limited per process, not per call; "
                        "one call can hold up to nproc x memory_mb and several cores")
        self.isolation = isolation
        self.timeout_s = timeout_s
        self._args = dict(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb,
                          max_output_bytes=max_output_bytes, isolation=isolation, prewarm=prewarm, nproc=nproc,
                          fsize_mb=fsize_mb, tmpfs_mb=tmpfs_mb, max_concurrency=max_concurrency,
                          start_timeout_s=start_timeout_s, spares=spares, quotas=q, preimport=preimport,
                          layout=host_layout() if isolation == "full" else None)
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zerotir-sandbox", daemon=True)
        self._thread.start()
        self._closed = False
        self._pool: Pool | None = None
        try:
            self._pool = self._call(self._make_pool())
        except BaseException:
            self._stop_loop()
            if q is not None:
                q.close()
            raise

    async def _make_pool(self) -> Pool:
        pool = Pool(self._loop, **self._args)
        await pool.start()
        return pool

    # ---- plumbing: every coroutine runs on the private loop ----
    def _submit(self, coro) -> concurrent.futures.Future:
        if self._closed:
            coro.close()
            raise RuntimeError("sandbox is closed")
        if os.getpid() != self._pid:  # a forked copy has no loop thread: fail now instead of waiting forever
            coro.close()
            raise RuntimeError("this Sandbox was created before a fork; create one in the child process")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking sandbox call from the sandbox's own loop")
        return self._submit(coro).result()

    async def _acall(self, coro) -> Any:
        return await asyncio.wrap_future(self._submit(coro))

    def _safe(self, fn, *args) -> ExecResult:
        try:
            return self._call(fn(*args))
        except Exception as e:  # noqa: BLE001 - sandboxes always return; SandboxError and anything unexpected
            return error_result(e)

    async def _asafe(self, fn, *args) -> ExecResult:
        try:
            return await self._acall(fn(*args))
        except Exception as e:  # noqa: BLE001
            return error_result(e)

    # ---- stateless calls ----
    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run `code` in a fresh isolated process (nothing carries over between calls)."""
        return self._safe(self._pool.run, code, timeout_s)  # type: ignore[union-attr]

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        return await self._asafe(self._pool.run, code, timeout_s)  # type: ignore[union-attr]

    def run_many(self, codes: list[str], timeout_s: float | None = None) -> list[ExecResult]:
        """Run several snippets concurrently (bounded by the pool), results in input order."""
        async def _all():
            return await asyncio.gather(*(self._pool.run(c, timeout_s) for c in codes),  # type: ignore[union-attr]
                                        return_exceptions=True)
        try:
            results = self._call(_all())
        except Exception as e:  # noqa: BLE001
            results = [e] * len(codes)
        return [r if isinstance(r, ExecResult) else error_result(r) for r in results]

    # ---- sessions ----
    def session(self) -> "Session":
        """A stateful kernel: variables persist across its calls (one per trajectory). Use as a context manager."""
        return Session(self, None)

    def health(self) -> dict:
        return self._call(self._pool.health())  # type: ignore[union-attr]

    def worker_pids(self, include_spare: bool = True) -> list[int]:
        """Host pids of the worker processes (bubblewrap or zygote), for monitoring and tests."""
        ws = list(self._pool.workers) + ([self._pool.spare] if include_spare else [])  # type: ignore[union-attr]
        return [w.proc.pid for w in ws if w is not None and w.proc is not None]

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._pool is not None:
                self._call(self._pool.close())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def _cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout=5)
            except Exception:  # noqa: BLE001
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Sandbox":
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __del__(self) -> None:  # best effort: never leave workers behind
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class Session:
    """A live kernel inside the sandbox. `run`/`arun` keep variables between calls; `fork()` clones it.

    A cell that times out or crashes is rolled back: the kernel continues from the state before that cell.
    Forks of one session share its namespace and uid (they are branches of one trajectory group).
    """

    def __init__(self, sb: Sandbox, kernel: Kernel | None):
        self._sb = sb
        self._state = None
        self._kernel0 = kernel
        self._closed = False

    def _st(self) -> SessionState:
        if self._state is None:
            async def mk():
                return SessionState(self._kernel0, asyncio.Lock())
            self._state = self._sb._call(mk())
        return self._state

    async def _ast(self) -> SessionState:
        if self._state is None:
            async def mk():
                return SessionState(self._kernel0, asyncio.Lock())
            self._state = await self._sb._acall(mk())
        return self._state

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return error_result(SandboxError("sandbox: session is closed"))
        return self._sb._safe(self._sb._pool.session_run, self._st(), code, timeout_s)  # type: ignore

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return error_result(SandboxError("sandbox: session is closed"))
        return await self._sb._asafe(self._sb._pool.session_run, await self._ast(), code, timeout_s)  # type: ignore

    def fork(self) -> "Session":
        """A copy-on-write clone of this session's current state (its own kernel process from now on).

        Raises `SandboxForkError` (from protocol.py) when no clone can be made: the session is closed, has no live
        kernel (never run, or its kernel was lost) or the kernel did not answer. It never hands back a fresh,
        empty session in place of a clone."""
        if self._closed:
            raise SandboxForkError("sandbox: cannot fork a closed session")
        st = self._st()
        pool = self._sb._pool

        async def _fork():
            async with st.lock:  # the clone sees the state after this session's preceding call
                if st.kernel is None:  # never run: its state is empty, and so is a fresh session's
                    return None
                return await pool.fork_kernel(st.kernel)  # type: ignore[union-attr]

        try:
            k = self._sb._call(_fork())
        except Exception as e:  # noqa: BLE001
            raise SandboxForkError(str(e) if isinstance(e, SandboxError) else f"sandbox: fork failed: {e}") from e
        return Session(self._sb, k)

    def _claim_kernel(self) -> "Kernel | None":
        """Mark the session closed (once); return the kernel to release, or None when there is nothing to do."""
        if self._closed:
            return None
        self._closed = True
        st = self._state
        k = st.kernel if st is not None else self._kernel0
        return None if k is None or self._sb._closed else k

    async def _release(self, k: "Kernel") -> None:
        self._sb._pool.release(k)  # type: ignore[union-attr]

    def close(self) -> None:
        k = self._claim_kernel()
        if k is None:
            return
        try:
            self._sb._call(self._release(k))
        except Exception:  # noqa: BLE001
            pass

    async def aclose(self) -> None:
        """`close` for async callers (does not block their loop)."""
        k = self._claim_kernel()
        if k is None:
            return
        try:
            await self._sb._acall(self._release(k))
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
