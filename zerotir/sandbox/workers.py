"""Worker supervision: one zygote process per worker (inside bubblewrap in 'full' mode), the warm contexts it hands
over, and the kernels sessions hold inside them. Every method runs on the pool's loop.

A context arrives as (socket to its kernel, pidfd of its init). With quotas on, the pool first makes the context's
cgroup and sends the init open files to join it; the init joins, and only then forks the kernel (see quotas.py).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zerotir.sandbox.errors import SandboxError, SandboxUnavailable
from zerotir.sandbox.ipc import Channel
from zerotir.sandbox.isolation import BOOT, bwrap_command

if TYPE_CHECKING:
    from zerotir.sandbox.quotas import Group
    from zerotir.sandbox.scheduler import Pool

CONTEXT_PROCS = 2  # processes of a warm, unused context: its init and its kernel
UID_MIN, UID_SPAN, UID_BLOCKS = 10_000_000, 65_536, 30_000  # context uids live in [UID_MIN, UID_MIN + 30000 * 65536)
_ZYGOTE_SRC = (Path(__file__).with_name("_zygote.py")).read_text()


def payload_fd(cfg: dict) -> int:
    """A memfd holding the zygote's config (one JSON line) and its source, for `BOOT` to read; close-on-exec, so
    only a child given it in pass_fds inherits it."""
    fd = os.memfd_create("zerotir-zygote")
    data = (json.dumps(cfg) + "\n" + _ZYGOTE_SRC).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Worker:
    """One zygote process and the warm contexts it has handed us."""

    def __init__(self, pool: "Pool", index: int):
        self.pool, self.index = pool, index
        self.generation = next(pool.generations)
        self.uid_base = UID_MIN + secrets.randbelow(UID_BLOCKS) * UID_SPAN
        self.proc: subprocess.Popen | None = None
        self.chan: Channel | None = None
        self.ready: collections.deque = collections.deque()  # warm contexts
        self.waiting: dict[int, asyncio.Future] = {}
        self.requested = 0  # spawns asked for and not yet answered
        self.alive = False
        self.dead = asyncio.Event()
        self.ids = itertools.count(1)
        self.started_at = 0.0
        self.errfile = None
        self.serving = False
        self.overlay = True

    async def start(self, serve: bool = True) -> None:
        pool = self.pool
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = dict(pool.zcfg, ctrl_fd=child_end.fileno(),
                   uid_base=self.uid_base if pool.isolation == "full" else 0)
        src_fd = payload_fd(cfg)
        if pool.isolation == "full":
            cmd = bwrap_command(pool.layout, src_fd)
        else:
            cmd = [sys.executable, "-I", "-B", "-c", BOOT, str(src_fd)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "MALLOC_ARENA_MAX": "2"}
        self.started_at = time.monotonic()
        # stderr goes to an unlinked file, not a pipe nobody drains: it only matters when startup fails.
        self.errfile = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(child_end.fileno(), src_fd), env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.errfile,
                                         start_new_session=True)
        finally:
            os.close(src_fd)
        child_end.close()
        self.chan = Channel(parent_end, pool.loop)
        try:
            msg, _ = await asyncio.wait_for(self.chan.recv(), timeout=pool.start_timeout_s)
        except asyncio.TimeoutError:
            msg = None
        if not msg or msg.get("op") != "ready":
            err = (msg or {}).get("error") or self._stderr_tail()
            self.kill()
            raise SandboxUnavailable(f"sandbox worker failed to start: {err or 'no answer'}")
        probe = msg.get("probe", {})
        if pool.isolation == "full":
            ifaces = probe.get("ifaces")
            if ifaces is None or any(i not in ("lo",) for i in ifaces):
                self.kill()
                raise SandboxUnavailable(f"network namespace not in effect (interfaces: {ifaces})")
            self.overlay = bool(probe.get("overlay"))
        self.alive = True
        pool.loop.create_task(self._read_loop())
        if serve:
            self.serve()

    def serve(self) -> None:
        """Start keeping warm contexts (a spare worker idles until it is promoted)."""
        self.serving = True
        self.refill()

    def _stderr_tail(self) -> str:
        if self.errfile is None:
            return ""
        try:
            if self.proc is not None:
                self.proc.wait(timeout=2)
            self.errfile.seek(0)
            return self.errfile.read().decode(errors="replace")[-2000:].strip()
        except Exception:  # noqa: BLE001
            return ""

    async def _read_loop(self) -> None:
        assert self.chan is not None
        while True:
            msg, fds = await self.chan.recv()
            if msg is None:
                break
            if msg.get("op") != "context":
                for fd in fds:
                    os.close(fd)
                continue
            fut = self.waiting.pop(msg.get("id"), None)
            if len(fds) == 2 and not msg.get("error"):
                ctx = Context(self, socket.socket(fileno=fds[0]), fds[1], msg.get("pid", 0))
                if self.pool.quotas is not None:
                    self._confine(ctx, fut)
                else:
                    self._deliver(ctx, fut)
            else:
                for fd in fds:
                    os.close(fd)
                self._deliver(SandboxError(f"sandbox: {msg.get('error', 'context failed')}"), fut)
        self._died()

    def _confine(self, ctx: "Context", fut: asyncio.Future | None) -> None:
        """Make the context's cgroup and hand its init open `tasks` (v1) / `cgroup.procs` (v2) files: the init
        writes "0" to move itself before it forks the kernel. A process moving itself as a single thread skips
        the kernel's global lock that moving another process takes (it waits for an RCU grace period and stalls
        every fork on the machine meanwhile: fork p50 1 ms -> 20 ms measured); the files were opened by root here,
        which is what the kernel checks."""
        quotas = self.pool.quotas
        fds: list[int] = []
        try:
            ctx.group = quotas.new_group()  # type: ignore[union-attr]
            fds = ctx.group.join_fds()
            ctx.chan.send({"op": "cgroup"}, tuple(fds))
        except OSError as e:
            ctx.destroy()
            self._deliver(SandboxError(f"sandbox: cannot place a context in its cgroup: {e}"), fut)
            return
        finally:
            for fd in fds:
                os.close(fd)
        self._deliver(ctx, fut)

    def _deliver(self, result: "Context | SandboxError", fut: asyncio.Future | None) -> None:
        self.requested -= 1
        if fut is not None and not fut.done():
            fut.set_result(result)
        elif isinstance(result, Context):
            if self.alive and not result.closed:
                self.ready.append(result)
            else:
                result.destroy()

    def _died(self) -> None:
        if not self.alive and self.dead.is_set():
            return
        self.alive = False
        self.dead.set()
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_result(SandboxError("sandbox: sandbox worker died"))
        self.waiting.clear()
        while self.ready:
            self.ready.popleft().destroy()
        self.kill(wait=False)
        self.pool.worker_died(self)

    def kill(self, wait: bool = True) -> None:
        """SIGKILL the worker's process group (bubblewrap tears its namespaces, and every context, down)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if wait:
                try:
                    proc.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    pass
            else:  # on the loop: reap in the background instead of blocking every other call
                threading.Thread(target=proc.wait, daemon=True).start()
        if self.errfile is not None:
            self.errfile.close()
            self.errfile = None
        if self.chan is not None:
            self.chan.close()

    def refill(self) -> None:
        """Keep `prewarm` contexts ready (asked for in the background)."""
        while self.alive and self.serving and len(self.ready) + self.requested < self.pool.prewarm:
            self._request(None)

    def _request(self, fut: asyncio.Future | None) -> None:
        rid = next(self.ids)
        if fut is not None:
            self.waiting[rid] = fut
        self.requested += 1
        try:
            self.chan.send({"op": "spawn", "id": rid})  # type: ignore[union-attr]
        except OSError:
            self.waiting.pop(rid, None)
            self.requested -= 1
            if fut is not None and not fut.done():
                fut.set_result(SandboxError("sandbox: sandbox worker unreachable"))

    async def take(self) -> "Context":
        """A warm context; raises SandboxError."""
        if not self.alive:
            raise SandboxError("sandbox: sandbox worker is not running")
        if self.ready:
            ctx = self.ready.popleft()
            self.refill()
            return ctx
        fut = self.pool.loop.create_future()
        self._request(fut)
        res = await fut
        self.refill()
        if isinstance(res, SandboxError):
            raise res
        return res


class Context:
    """One isolated namespace holding a kernel (its init's pidfd, the socket to the kernel, its cgroup)."""

    def __init__(self, worker: Worker, sock: socket.socket, pidfd: int, pid: int):
        self.worker, self.pid, self.pidfd = worker, pid, pidfd
        self.chan = Channel(sock, worker.pool.loop)
        self.refs = 1  # sessions sharing this namespace (forks)
        self.closed = False
        self.group: Group | None = None

    def oom_kills(self) -> int:
        return self.group.oom_kills() if self.group is not None else 0

    def destroy(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass
        self.chan.close()
        quotas = self.worker.pool.quotas
        if self.group is not None and quotas is not None:
            quotas.release(self.group, self.pidfd, self.worker.pool.loop)  # closes the pidfd when done
        else:
            os.close(self.pidfd)


class Kernel:
    """A session's handle on its kernel process: a channel (own socket) inside a shared context."""

    def __init__(self, ctx: Context, chan: Channel):
        self.ctx, self.chan = ctx, chan
        self.cells = itertools.count(1)
        self.lock = asyncio.Lock()
        self.dead = False
