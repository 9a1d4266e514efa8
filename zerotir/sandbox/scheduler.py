"""The pool's loop-side state: workers and their warm spare, picking a context for a call, sessions and forks.

Every method runs on the sandbox's private loop thread (see pool.py). Failures of the machinery raise
`SandboxError`; the public API turns them into results in one place (`errors.error_result`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import socket
import time
from dataclasses import dataclass

from zerotir.sandbox.cells import run_cell
from zerotir.sandbox.errors import SandboxError
from zerotir.sandbox.ipc import Channel
from zerotir.sandbox.isolation import PythonLayout, stage_config
from zerotir.sandbox.quotas import Quotas
from zerotir.sandbox.workers import UID_SPAN, Context, Kernel, Worker
from zerotir.types import ExecResult

log = logging.getLogger("zerotir.sandbox")


@dataclass
class SessionState:
    kernel: Kernel | None
    lock: asyncio.Lock


class Pool:
    """Loop-side state of a Sandbox."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: int, timeout_s: float, memory_mb: int,
                 max_output_bytes: int, isolation: str, prewarm: int, nproc: int, fsize_mb: int, tmpfs_mb: int,
                 max_concurrency: int | None, start_timeout_s: float, spares: int, quotas: Quotas | None,
                 layout: PythonLayout | None, preimport: tuple[str, ...]):
        self.loop = loop
        self.isolation = isolation
        self.n_workers = workers
        self.timeout_s, self.max_output_bytes, self.memory_mb = timeout_s, max_output_bytes, memory_mb
        self.prewarm = prewarm
        self.start_timeout_s = start_timeout_s
        self.quotas, self.layout = quotas, layout
        self.generations = itertools.count()
        self.spares = spares
        self.spare: Worker | None = None
        # Each worker gets its own random block of uids (one uid per context, reused round-robin within the
        # block), so that pools of several processes on one host practically never share a uid (RLIMIT_NPROC is
        # counted per uid, host-wide).
        self.zcfg = {"isolation": isolation, "memory_mb": memory_mb, "timeout_s": timeout_s, "fsize_mb": fsize_mb,
                     "tmpfs_mb": tmpfs_mb, "nproc": nproc, "uid_span": UID_SPAN, "preimport": list(preimport),
                     "quotas": quotas is not None, **(stage_config(layout) if layout is not None else {})}
        self.workers: list[Worker | None] = [None] * workers
        self.sem = asyncio.Semaphore(max_concurrency or workers)
        self.closing = False
        self.rr = itertools.count()
        self.stats: collections.Counter = collections.Counter()
        self.restarts = 0
        self.last_restart_s = 0.0

    async def start(self) -> None:
        ws = [Worker(self, i) for i in range(self.n_workers)]
        spare = Worker(self, -1) if self.spares else None
        results = await asyncio.gather(*(w.start(serve=True) for w in ws),
                                       *([spare.start(serve=False)] if spare else []), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for w in ws + ([spare] if spare else []):
                w.kill()
            raise errors[0]
        self.workers = list(ws)
        self.spare = spare
        if not all(w.overlay for w in ws):
            log.warning("sandbox: overlayfs unavailable; the interpreter is bind-mounted at neutral paths, but "
                        "/proc/self/mountinfo inside names its host directory")

    # ---- worker lifecycle ----
    def worker_died(self, w: Worker) -> None:
        if self.closing:
            return
        if w is self.spare:
            self.spare = None
            self.loop.create_task(self._new_worker(-1))
            return
        if w.index < 0 or self.workers[w.index] is not w:
            return
        spare, self.spare = self.spare, None
        if spare is not None and spare.alive:  # a warm spare takes over at once; a new spare boots behind it
            spare.index = w.index
            self.workers[w.index] = spare
            spare.serve()
            self.restarts += 1
            self.last_restart_s = 0.0
            log.warning("sandbox worker %d died; a warm spare took its place", w.index)
            self.loop.create_task(self._new_worker(-1))
            return
        log.warning("sandbox worker %d died; starting a replacement", w.index)
        self.loop.create_task(self._new_worker(w.index))

    async def _new_worker(self, index: int) -> None:
        """Start a replacement for slot `index` (-1: the warm spare), retrying a few times."""
        t0 = time.monotonic()
        for attempt in range(5):
            if self.closing or (index < 0 and not self.spares):
                return
            w = Worker(self, index)
            try:
                await w.start(serve=index >= 0)
            except Exception as e:  # noqa: BLE001
                log.error("sandbox worker %s failed to start: %s", "spare" if index < 0 else index, e)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if self.closing:
                w.kill(wait=False)
                return
            if index < 0:
                self.spare = w
            else:
                self.workers[index] = w
                self.restarts += 1
                self.last_restart_s = time.monotonic() - t0
            return

    def _pick(self) -> Worker | None:
        live = [w for w in self.workers if w is not None and w.alive]
        if not live:
            return None
        with_ready = [w for w in live if w.ready]
        if with_ready:
            return max(with_ready, key=lambda w: len(w.ready))
        return live[next(self.rr) % len(live)]

    async def _context(self) -> Context:
        err: SandboxError = SandboxError("sandbox: no sandbox worker available")
        for _ in range(3):
            w = self._pick()
            if w is None:
                await asyncio.sleep(0.05)
                continue
            try:
                return await w.take()
            except SandboxError as e:
                err = e
        raise err

    async def new_kernel(self) -> Kernel:
        ctx = await self._context()
        return Kernel(ctx, ctx.chan)

    # ---- calls ----
    async def run(self, code: str, timeout_s: float | None) -> ExecResult:
        async with self.sem:
            try:
                kern = await self.new_kernel()
            except SandboxError:
                self.stats["sandbox_error"] += 1
                raise
            try:
                return await run_cell(self, kern, code, timeout_s or self.timeout_s, last=True)
            finally:
                kern.ctx.destroy()

    async def session_run(self, sess: SessionState, code: str, timeout_s: float | None) -> ExecResult:
        async with sess.lock:
            note = ""
            if sess.kernel is None or sess.kernel.dead:
                if sess.kernel is not None:
                    self.release(sess.kernel)
                    note = "[sandbox: the session's kernel was lost; started a fresh one, earlier variables are gone]\n"
                sess.kernel = None
                try:
                    sess.kernel = await self.new_kernel()
                except SandboxError:
                    self.stats["sandbox_error"] += 1
                    raise
            async with self.sem:
                r = await run_cell(self, sess.kernel, code, timeout_s or self.timeout_s, last=False)
            if note:
                r.stderr = note + r.stderr
            return r

    async def fork_kernel(self, kern: Kernel | None) -> Kernel:
        """A new kernel process cloned from `kern`'s current state; raises SandboxError when it cannot be made."""
        if kern is None or kern.dead:
            raise SandboxError("sandbox: cannot fork: the session has no live kernel (closed, never run, or lost)")
        async with kern.lock:
            if kern.dead:
                raise SandboxError("sandbox: cannot fork: the session's kernel was lost")
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            cell = next(kern.cells)
            try:
                kern.chan.send({"op": "fork", "cell": cell}, (b.fileno(),))
            except OSError as e:
                a.close()
                raise SandboxError(f"sandbox: fork failed: {e}") from None
            finally:
                b.close()
            chan = Channel(a, self.loop)
            try:
                msg, fds = await asyncio.wait_for(chan.recv(), 5.0)
            except asyncio.TimeoutError:
                msg, fds = None, []
            for fd in fds:
                os.close(fd)
            if not msg or msg.get("op") != "forked":
                chan.close()
                raise SandboxError("sandbox: fork failed: the kernel did not answer")
            kern.ctx.refs += 1
            return Kernel(kern.ctx, chan)

    def release(self, kern: Kernel) -> None:
        """Close a session's kernel; the context dies with its last session."""
        kern.ctx.refs -= 1
        if kern.ctx.refs <= 0:
            kern.ctx.destroy()
            if kern.chan is not kern.ctx.chan:
                kern.chan.close()
            return
        try:  # forks still use the namespace: end only this kernel process
            kern.chan.send({"op": "close"})
        except OSError:
            pass
        kern.chan.close()

    async def health(self) -> dict:
        live = [w for w in self.workers if w is not None and w.alive]
        return {"ok": len(live) == self.n_workers, "workers": self.n_workers, "alive": len(live),
                "ready_contexts": sum(len(w.ready) for w in live), "isolation": self.isolation,
                "quotas": self.quotas.kind if self.quotas is not None else None,
                "restarts": self.restarts, "stats": dict(self.stats)}

    async def close(self) -> None:
        self.closing = True
        for w in self.workers:
            if w is None:
                continue
            while w.ready:
                w.ready.popleft().destroy()
            if w.chan is not None and w.alive:
                try:
                    w.chan.send({"op": "shutdown"})
                except OSError:
                    pass
        # Let zygotes end their contexts themselves (weak modes remove their temp dirs), then make sure.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(
                w is not None and w.proc is not None and w.proc.poll() is None for w in self.workers):
            await asyncio.sleep(0.02)
        for w in self.workers + [self.spare]:
            if w is not None:
                w.alive = False
                w.dead.set()
                w.kill()
        if self.quotas is not None:
            self.quotas.close()
