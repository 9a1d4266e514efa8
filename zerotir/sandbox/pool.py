"""The in-process sandbox pool: warm zygote workers, stateless calls and stateful sessions (see package docstring).

All I/O runs on one private asyncio loop in a background thread; `run` (any thread) and `arun` (any event loop)
hand work to it, so the pool is safe to share between many threads and many asyncio tasks.

Length: over 400 lines on purpose for now; splitting the sandbox by role (pool, isolation, quotas, service)
is issue 15's sandbox v2, and its hostile table must keep passing through that split.
"""

from __future__ import annotations

import array
import asyncio
import collections
import concurrent.futures
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerotir.types import ExecResult

log = logging.getLogger("zerotir.sandbox")

ISOLATION_LEVELS = ("full", "rlimits", "none")
PREIMPORT = ["numpy", "sympy", "scipy", "mpmath", "sympy.ntheory", "numpy.linalg"]
MAX_CODE_BYTES = 512 * 1024
CONTEXT_PROCS = 2  # processes of a warm, unused context: its init and its kernel
UID_MIN, UID_SPAN, UID_BLOCKS = 10_000_000, 65_536, 30_000  # context uids live in [UID_MIN, UID_MIN + 30000 * 65536)
_ZYGOTE_SRC = (Path(__file__).with_name("_zygote.py")).read_text()
# The worker's whole command line: a name, then a bootstrap that reads the config line and the source from an
# inherited memfd (argv[1]) and closes it. `ps` shows this instead of 600 lines of source, and the sandbox still
# sees no file of the project tree (running _zygote.py by path would need it bound inside).
_BOOT = ('"zerotir sandbox zygote";import os,sys;f=os.fdopen(int(sys.argv[1]),"rb");sys.argv[1:]=[f.readline()'
         '.decode()];c=compile(f.read(),"zerotir/sandbox/_zygote.py","exec");f.close();del f;exec(c)')


def _payload_fd(cfg: dict) -> int:
    """A memfd holding the zygote's config (one JSON line) and its source, for `_BOOT` to read; close-on-exec, so
    only a child given it in pass_fds inherits it."""
    fd = os.memfd_create("zerotir-zygote")
    data = (json.dumps(cfg) + "\n" + _ZYGOTE_SRC).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class SandboxUnavailable(RuntimeError):
    """The requested isolation level cannot be provided here (the message names the missing layer)."""


def _result_error(msg: str, t0: float | None = None) -> ExecResult:
    return ExecResult(status="sandbox_error", stderr=msg, duration_s=(time.monotonic() - t0) if t0 else 0.0)


# ------------------------------------------------------------------------------------------------ channel


class _Channel:
    """A non-blocking SOCK_SEQPACKET socket on the loop: one JSON message per packet, fds via SCM_RIGHTS."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self.sock, self.loop = sock, loop
        sock.setblocking(False)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.eof = False
        self.eof_event = asyncio.Event()
        loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while not self.eof:
            fds = array.array("i")
            try:
                data, anc, _f, _a = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * fds.itemsize))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, anc = b"", []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            if not data:
                for fd in fds:
                    os.close(fd)
                self._set_eof()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                msg = {"op": "garbage"}
            self.queue.put_nowait((msg, list(fds)))

    def _set_eof(self) -> None:
        if not self.eof:
            self.eof = True
            try:
                self.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self.eof_event.set()
            self.queue.put_nowait((None, []))

    def send(self, obj: dict, fds: tuple[int, ...] = ()) -> None:
        data = json.dumps(obj).encode()
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.send(data)

    async def recv(self) -> tuple[dict | None, list[int]]:
        return await self.queue.get()

    def close(self) -> None:
        self._set_eof()
        while not self.queue.empty():
            _m, fds = self.queue.get_nowait()
            for fd in fds:
                os.close(fd)
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------ worker


_FRESH_MOUNTS = ("/tmp", "/dev", "/proc")


def _under_fresh_mount(path: str) -> bool:
    return any(path == m or path.startswith(m + "/") for m in _FRESH_MOUNTS)


def _bwrap_command(python: str, args: list[str]) -> list[str]:
    """bubblewrap: read-only system, no network, own pid/ipc/uts namespaces, no host secrets in the environment."""
    prefix, base = Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    for d in ("/usr", "/etc"):
        cmd += ["--ro-bind", d, d]
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        p = Path(link)
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(link), link]
        elif p.is_dir():
            cmd += ["--ro-bind", link, link]
    # The interpreter and its packages only (not the project tree around a venv, not /root around pyenv).
    # A prefix under a path the sandbox mounts afresh (/tmp, /dev, /proc — e.g. a checkout in /tmp) would be
    # hidden by that mount, so it is bound at a stable path under /opt instead and the interpreter run from there.
    made: set[str] = set()
    for i, d in enumerate(sorted({str(prefix), str(base)})):
        if d.startswith("/usr/"):
            continue
        target = f"/opt/zerotir-python/{i}" if _under_fresh_mount(d) else d
        # Parents are created world-traversable (bwrap's default is 0700, which would hide the interpreter from
        # the unprivileged uid); they hold nothing but the path to the bound directory.
        for anc in reversed(Path(target).parents[:-1]):
            if str(anc) not in made:
                made.add(str(anc))
                cmd += ["--perms", "0755", "--dir", str(anc)]
        cmd += ["--ro-bind", d, target]
        if target != d and python.startswith(d + "/"):
            python = target + python[len(d):]
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers"):
        if os.path.exists(secret):
            cmd += ["--ro-bind", "/dev/null", secret]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/dev/shm", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "HOME", "/tmp", "--setenv", "MALLOC_ARENA_MAX", "2"]
    for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_KILL"):
        cmd += ["--cap-add", cap]
    return cmd + ["--", python, *args]


def check_isolation(isolation: str) -> None:
    """Raise SandboxUnavailable naming the first missing layer of `isolation`."""
    if isolation not in ISOLATION_LEVELS:
        raise SandboxUnavailable(f"unknown isolation level {isolation!r}; choose one of {ISOLATION_LEVELS}")
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("the sandbox needs Linux (fork server, pidfd); use another machine")
    if isolation != "full":
        return
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("isolation='full' needs bubblewrap: install it (`apt-get install bubblewrap` or "
                                 "`make system-deps`), or choose isolation='rlimits' (weaker)")
    if os.geteuid() != 0:
        raise SandboxUnavailable("isolation='full' needs root (to give each execution its own unprivileged uid and "
                                 "namespaces); run as root or choose isolation='rlimits' (weaker)")
    try:
        import pyseccomp  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise SandboxUnavailable(f"isolation='full' needs pyseccomp (and libseccomp): {e}; `pip install "
                                 "pyseccomp` or choose isolation='rlimits'") from None


class _Worker:
    """One zygote process (inside bubblewrap in 'full' mode) and the warm contexts it has handed us."""

    def __init__(self, pool: "_Pool", index: int):
        self.pool, self.index = pool, index
        self.generation = next(pool.generations)
        self.uid_base = UID_MIN + secrets.randbelow(UID_BLOCKS) * UID_SPAN
        self.proc: subprocess.Popen | None = None
        self.chan: _Channel | None = None
        self.ready: collections.deque = collections.deque()  # warm contexts (_Context)
        self.waiting: dict[int, asyncio.Future] = {}
        self.requested = 0  # spawns asked for and not yet answered
        self.alive = False
        self.dead = asyncio.Event()
        self.ids = itertools.count(1)
        self.started_at = 0.0
        self.errfile = None
        self.serving = False

    async def start(self, serve: bool = True) -> None:
        pool = self.pool
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = dict(pool.zcfg, ctrl_fd=child_end.fileno(),
                   uid_base=self.uid_base if pool.isolation == "full" else 0)
        python = sys.executable
        src_fd = _payload_fd(cfg)
        args = ["-I", "-B", "-c", _BOOT, str(src_fd)]
        cmd = _bwrap_command(python, args) if pool.isolation == "full" else [python, *args]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": pool.tmp_root or "/tmp",
               "MALLOC_ARENA_MAX": "2"}
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
        self.chan = _Channel(parent_end, pool.loop)
        try:
            msg, _ = await asyncio.wait_for(self.chan.recv(), timeout=pool.start_timeout_s)
        except asyncio.TimeoutError:
            msg = None
        if not msg or msg.get("op") != "ready":
            err = (msg or {}).get("error") or self._stderr_tail()
            self.kill()
            raise SandboxUnavailable(f"sandbox worker failed to start: {err or 'no answer'}")
        if pool.isolation == "full":
            probe = msg.get("probe", {})
            ifaces = probe.get("ifaces")
            if ifaces is None or any(i not in ("lo",) for i in ifaces):
                self.kill()
                raise SandboxUnavailable(f"network namespace not in effect (interfaces: {ifaces})")
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
            self.requested -= 1
            fut = self.waiting.pop(msg.get("id"), None)
            ctx = None
            if len(fds) == 2 and not msg.get("error"):
                ctx = _Context(self, socket.socket(fileno=fds[0]), fds[1], msg.get("pid", 0))
            else:
                for fd in fds:
                    os.close(fd)
            if fut is not None and not fut.done():
                fut.set_result(ctx if ctx is not None else msg.get("error", "context failed"))
            elif ctx is not None:
                self.ready.append(ctx)
        self._died()

    def _died(self) -> None:
        if not self.alive and self.dead.is_set():
            return
        self.alive = False
        self.dead.set()
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_result("sandbox worker died")
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
                fut.set_result("sandbox worker unreachable")

    async def take(self) -> "_Context | str":
        """A warm context, or an error string."""
        if not self.alive:
            return "sandbox worker is not running"
        if self.ready:
            ctx = self.ready.popleft()
            self.refill()
            return ctx
        fut = self.pool.loop.create_future()
        self._request(fut)
        res = await fut
        self.refill()
        return res

    @property
    def load(self) -> int:
        return -len(self.ready)


# ------------------------------------------------------------------------------------------------ contexts


class _Context:
    """One isolated namespace holding a kernel (its init's pidfd and the socket to the kernel)."""

    def __init__(self, worker: _Worker, sock: socket.socket, pidfd: int, pid: int):
        self.worker, self.pid, self.pidfd = worker, pid, pidfd
        self.chan = _Channel(sock, worker.pool.loop)
        self.refs = 1  # sessions sharing this namespace (forks)
        self.closed = False
        self.hello = False

    def destroy(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.close(self.pidfd)
        self.chan.close()


class _Kernel:
    """A session's handle on its kernel process: a channel (own socket) inside a shared context."""

    def __init__(self, ctx: _Context, chan: _Channel):
        self.ctx, self.chan = ctx, chan
        self.cells = itertools.count(1)
        self.lock = asyncio.Lock()
        self.dead = False


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(w, True)
    return r, w


class _Capture:
    """Drain one pipe on the loop, keeping the first `cap` bytes."""

    def __init__(self, fd: int, cap: int, loop: asyncio.AbstractEventLoop):
        self.fd, self.cap, self.loop = fd, cap, loop
        self.buf = bytearray()
        self.truncated = False
        self.eof = False
        loop.add_reader(fd, self.drain)

    def drain(self) -> None:
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                self.loop.remove_reader(self.fd)
                return
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            if len(chunk) > max(room, 0):
                self.truncated = True

    def close(self) -> str:
        self.drain()
        if not self.eof:
            self.loop.remove_reader(self.fd)
        os.close(self.fd)
        return bytes(self.buf).decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------------ pool


class _Pool:
    """Loop-side state of a Sandbox. Every method runs on the sandbox's loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: int, timeout_s: float, memory_mb: int,
                 max_output_bytes: int, isolation: str, prewarm: int, nproc: int, fsize_mb: int, tmpfs_mb: int,
                 max_concurrency: int | None, start_timeout_s: float, spares: int):
        self.loop = loop
        self.isolation = isolation
        self.n_workers = workers
        self.timeout_s, self.max_output_bytes = timeout_s, max_output_bytes
        self.prewarm = prewarm
        self.start_timeout_s = start_timeout_s
        # Each worker gets its own random block of uids (one uid per context, reused round-robin within the
        # block), so that pools of several processes on one host practically never share a uid (RLIMIT_NPROC is
        # counted per uid, host-wide).
        self.uid_span = UID_SPAN
        self.generations = itertools.count()
        self.spares = spares
        self.spare: _Worker | None = None
        self.tmp_root = ""
        self.zcfg = {"isolation": isolation, "memory_mb": memory_mb, "timeout_s": timeout_s, "fsize_mb": fsize_mb,
                     "tmpfs_mb": tmpfs_mb, "nproc": nproc, "uid_span": self.uid_span, "preimport": PREIMPORT}
        self.workers: list[_Worker | None] = [None] * workers
        self.sem = asyncio.Semaphore(max_concurrency or workers)
        self.closing = False
        self.rr = itertools.count()
        self.stats: collections.Counter = collections.Counter()
        self.restarts = 0
        self.last_restart_s = 0.0

    async def start(self) -> None:
        ws = [_Worker(self, i) for i in range(self.n_workers)]
        spare = _Worker(self, -1) if self.spares else None
        results = await asyncio.gather(*(w.start(serve=True) for w in ws),
                                       *([spare.start(serve=False)] if spare else []), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for w in ws + ([spare] if spare else []):
                w.kill()
            raise errors[0]
        self.workers = list(ws)
        self.spare = spare

    def worker_died(self, w: _Worker) -> None:
        if self.closing:
            return
        if w is self.spare:
            self.spare = None
            self.loop.create_task(self._new_spare())
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
            self.loop.create_task(self._new_spare())
            return
        log.warning("sandbox worker %d died; starting a replacement", w.index)
        self.loop.create_task(self._replace(w.index))

    async def _new_spare(self) -> None:
        for attempt in range(5):
            if self.closing or not self.spares:
                return
            w = _Worker(self, -1)
            try:
                await w.start(serve=False)
            except Exception as e:  # noqa: BLE001
                log.error("sandbox spare worker failed to start: %s", e)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if self.closing:
                w.kill(wait=False)
                return
            self.spare = w
            return

    async def _replace(self, index: int) -> None:
        t0 = time.monotonic()
        for attempt in range(5):
            if self.closing:
                return
            w = _Worker(self, index)
            try:
                await w.start(serve=True)
            except Exception as e:  # noqa: BLE001
                log.error("sandbox worker %d restart failed: %s", index, e)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if self.closing:
                w.kill(wait=False)
                return
            self.workers[index] = w
            self.restarts += 1
            self.last_restart_s = time.monotonic() - t0
            return

    def _pick(self) -> _Worker | None:
        live = [w for w in self.workers if w is not None and w.alive]
        if not live:
            return None
        with_ready = [w for w in live if w.ready]
        if with_ready:
            return max(with_ready, key=lambda w: len(w.ready))
        return live[next(self.rr) % len(live)]

    async def _context(self) -> _Context | str:
        for _ in range(3):
            w = self._pick()
            if w is None:
                await asyncio.sleep(0.05)
                continue
            ctx = await w.take()
            if isinstance(ctx, _Context):
                return ctx
        return ctx if isinstance(ctx, str) else "no sandbox worker available"  # type: ignore[possibly-undefined]

    # ---- one cell ----
    async def run_cell(self, kern: _Kernel, code: str, timeout_s: float, last: bool) -> ExecResult:
        """Send one cell to a kernel and collect its ExecResult; never raises."""
        loop = self.loop
        t0 = time.monotonic()
        if len(code.encode("utf-8", errors="replace")) > MAX_CODE_BYTES:
            return ExecResult(status="error", stderr=f"code is larger than {MAX_CODE_BYTES} bytes; not run",
                              exit_code=1)
        cell = next(kern.cells)
        out_r, out_w = _pipe()
        err_r, err_w = _pipe()
        out = _Capture(out_r, self.max_output_bytes, loop)
        err = _Capture(err_r, self.max_output_bytes, loop)
        cell_pidfd: int | None = None
        status, exit_code, sig, note = "sandbox_error", None, None, ""
        deadline = t0 + timeout_s
        try:
            try:
                kern.chan.send({"op": "run", "cell": cell, "code": code, "last": last, "timeout_s": timeout_s},
                               (out_w, err_w))
            except OSError as e:
                kern.dead = True
                note = f"sandbox: kernel unreachable ({e.strerror})"
                raise _Done from None
            finally:
                os.close(out_w)
                os.close(err_w)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                msg, fds = await asyncio.wait_for(kern.chan.recv(), remaining)
                if msg is None:  # the kernel's socket closed: its context died under it
                    kern.dead = True
                    await self._settle_worker(kern.ctx.worker)
                    if not kern.ctx.worker.alive or kern.ctx.closed:
                        note = "sandbox: worker died during the execution"
                    else:
                        status, sig, note = "killed", signal.SIGKILL, "sandbox: the session's processes were killed"
                    raise _Done
                if msg.get("op") == "fatal":  # the context could not set itself up (no cell id: it never ran one)
                    kern.dead = True
                    note = f"sandbox: context setup failed: {msg.get('error')}"
                    raise _Done
                if msg.get("op") == "kernel_exit" and last:
                    pass  # a stateless call's kernel ended without reporting (crash, os._exit): handled below
                elif msg.get("cell") != cell:  # a late message of an earlier, timed-out cell (or a retired kernel)
                    for fd in fds:
                        os.close(fd)
                    continue
                op = msg.get("op")
                if op == "started":
                    if fds:
                        cell_pidfd = fds[0]
                        for fd in fds[1:]:
                            os.close(fd)
                    continue
                for fd in fds:
                    os.close(fd)
                if op == "done":
                    exit_code = int(msg.get("exit_code", 0))
                    status = "oom" if msg.get("oom") else ("ok" if exit_code == 0 else "error")
                    break
                if op == "exit" or (op == "kernel_exit" and last):
                    st = int(msg.get("status", 0))
                    if os.WIFSIGNALED(st):
                        sig = os.WTERMSIG(st)
                        status = "timeout" if sig == signal.SIGXCPU else "killed"
                        if sig == signal.SIGXCPU:
                            note = "sandbox: CPU time limit exceeded"
                    else:
                        exit_code = os.WEXITSTATUS(st)
                        status = "ok" if exit_code == 0 else "error"
                    break
        except asyncio.TimeoutError:
            status, sig = "timeout", signal.SIGKILL
            note = f"sandbox: timed out after {timeout_s:g} s"
            _stop_cell(kern, cell_pidfd, last)
        except _Done:
            pass
        except Exception as e:  # noqa: BLE001 - infrastructure problem: report, never raise
            status, note = "sandbox_error", f"sandbox: {type(e).__name__}: {e}"
        except BaseException:  # cancelled by the caller: stop the cell, release everything, re-raise
            _stop_cell(kern, cell_pidfd, last)
            out.close()
            err.close()
            raise
        finally:
            if cell_pidfd is not None:
                os.close(cell_pidfd)
        stdout, stderr = out.close(), err.close()
        if note and status != "ok":
            stderr = (stderr + ("\n" if stderr and not stderr.endswith("\n") else "") + note + "\n")
        self.stats[status] += 1
        return ExecResult(status=status, stdout=stdout, stderr=stderr, exit_code=exit_code, signal=sig,
                          truncated=out.truncated or err.truncated, duration_s=time.monotonic() - t0)

    async def _settle_worker(self, w: _Worker) -> None:
        """After a context vanished: wait briefly for the worker's own death notice, to tell the two apart."""
        if w.alive and w.proc is not None:
            try:
                await asyncio.wait_for(w.dead.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    async def new_kernel(self) -> _Kernel | str:
        ctx = await self._context()
        if isinstance(ctx, str):
            return ctx
        return _Kernel(ctx, ctx.chan)

    async def run(self, code: str, timeout_s: float | None) -> ExecResult:
        t0 = time.monotonic()
        async with self.sem:
            kern = await self.new_kernel()
            if isinstance(kern, str):
                self.stats["sandbox_error"] += 1
                return _result_error(f"sandbox: {kern}", t0)
            try:
                return await self.run_cell(kern, code, timeout_s or self.timeout_s, last=True)
            finally:
                kern.ctx.destroy()

    async def session_run(self, sess: "_SessionState", code: str, timeout_s: float | None) -> ExecResult:
        async with sess.lock:
            note = ""
            if sess.kernel is None or sess.kernel.dead:
                if sess.kernel is not None:
                    self.release(sess.kernel)
                    note = "[sandbox: the session's kernel was lost; started a fresh one, earlier variables are gone]\n"
                sess.kernel = None
                kern = await self.new_kernel()
                if isinstance(kern, str):
                    self.stats["sandbox_error"] += 1
                    return _result_error(f"sandbox: {kern}")
                sess.kernel = kern
            async with self.sem:
                r = await self.run_cell(sess.kernel, code, timeout_s or self.timeout_s, last=False)
            if note:
                r.stderr = note + r.stderr
            return r

    async def fork_kernel(self, kern: _Kernel) -> _Kernel | str:
        async with kern.lock:
            if kern.dead:
                return "session is not alive"
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            cell = next(kern.cells)
            try:
                kern.chan.send({"op": "fork", "cell": cell}, (b.fileno(),))
            except OSError as e:
                a.close()
                return f"fork failed: {e}"
            finally:
                b.close()
            chan = _Channel(a, self.loop)
            try:
                msg, fds = await asyncio.wait_for(chan.recv(), 5.0)
            except asyncio.TimeoutError:
                msg, fds = None, []
            for fd in fds:
                os.close(fd)
            if not msg or msg.get("op") != "forked":
                chan.close()
                return "fork failed: the kernel did not answer"
            kern.ctx.refs += 1
            return _Kernel(kern.ctx, chan)

    def release(self, kern: _Kernel) -> None:
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


def _stop_cell(kern: "_Kernel", cell_pidfd: int | None, last: bool) -> None:
    """Stop a cell that must not finish: kill just the cell while its kernel lives on, else end the kernel."""
    if cell_pidfd is not None and not last:
        try:
            signal.pidfd_send_signal(cell_pidfd, signal.SIGKILL)
        except OSError:
            pass
    else:
        kern.dead = True
        kern.ctx.destroy()


class _Done(Exception):
    pass


@dataclass
class _SessionState:
    kernel: _Kernel | None
    lock: asyncio.Lock


# ------------------------------------------------------------------------------------------------ public API


class Sandbox:
    """A pool of warm, isolated Python workers. Thread-safe and asyncio-safe; see the package docstring.

    with Sandbox(workers=4, timeout_s=2.0, memory_mb=512, max_output_bytes=65536) as sb:
        sb.run("print(1+1)")                      # ExecResult(status='ok', stdout='2\\n', ...)
        with sb.session() as s: s.run("x = 21"); s.run("print(x * 2)")
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, memory_mb: int = 512,
                 max_output_bytes: int = 16384, isolation: str = "full", *, prewarm: int = 2, nproc: int = 64,
                 fsize_mb: int = 64, tmpfs_mb: int = 64, max_concurrency: int | None = None,
                 start_timeout_s: float = 60.0, spares: int = 1):
        check_isolation(isolation)
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if isolation != "full":
            log.warning("sandbox isolation=%r: the model's code is NOT isolated from this machine's files, network "
                        "and processes (only %s); use isolation='full' for untrusted code", isolation,
                        "rlimits, a cleared environment and a private temp dir" if isolation == "rlimits"
                        else "timeouts and output caps")
        self.isolation = isolation
        self.timeout_s = timeout_s
        self._args = dict(workers=workers, timeout_s=timeout_s, memory_mb=memory_mb,
                          max_output_bytes=max_output_bytes, isolation=isolation, prewarm=prewarm, nproc=nproc,
                          fsize_mb=fsize_mb, tmpfs_mb=tmpfs_mb, max_concurrency=max_concurrency,
                          start_timeout_s=start_timeout_s, spares=spares)
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="zerotir-sandbox", daemon=True)
        self._thread.start()
        self._closed = False
        self._pool: _Pool | None = None
        try:
            self._pool = self._call(self._make_pool())
        except BaseException:
            self._stop_loop()
            raise

    async def _make_pool(self) -> _Pool:
        pool = _Pool(self._loop, **self._args)
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
        except Exception as e:  # noqa: BLE001 - sandboxes always return
            return _result_error(f"sandbox: {type(e).__name__}: {e}")

    async def _asafe(self, fn, *args) -> ExecResult:
        try:
            return await self._acall(fn(*args))
        except Exception as e:  # noqa: BLE001
            return _result_error(f"sandbox: {type(e).__name__}: {e}")

    # ---- stateless calls ----
    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run `code` in a fresh isolated process (nothing carries over between calls)."""
        return self._safe(self._pool.run, code, timeout_s)  # type: ignore[union-attr]

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        return await self._asafe(self._pool.run, code, timeout_s)  # type: ignore[union-attr]

    def run_many(self, codes: list[str], timeout_s: float | None = None) -> list[ExecResult]:
        """Run several snippets concurrently (bounded by the pool), results in input order."""
        async def _all():
            return await asyncio.gather(*(self._pool.run(c, timeout_s) for c in codes))  # type: ignore[union-attr]
        try:
            return self._call(_all())
        except Exception as e:  # noqa: BLE001
            return [_result_error(f"sandbox: {type(e).__name__}: {e}") for _ in codes]

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

    def __init__(self, sb: Sandbox, kernel: _Kernel | None):
        self._sb = sb
        self._state = None
        self._kernel0 = kernel
        self._closed = False

    def _st(self) -> _SessionState:
        if self._state is None:
            async def mk():
                return _SessionState(self._kernel0, asyncio.Lock())
            self._state = self._sb._call(mk())
        return self._state

    async def _ast(self) -> _SessionState:
        if self._state is None:
            async def mk():
                return _SessionState(self._kernel0, asyncio.Lock())
            self._state = await self._sb._acall(mk())
        return self._state

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return _result_error("sandbox: session is closed")
        return self._sb._safe(self._sb._pool.session_run, self._st(), code, timeout_s)  # type: ignore

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        if self._closed:
            return _result_error("sandbox: session is closed")
        return await self._sb._asafe(self._sb._pool.session_run, await self._ast(), code, timeout_s)  # type: ignore

    def fork(self) -> "Session":
        """A copy-on-write clone of this session's current state (its own kernel process from now on)."""
        st = self._st()
        pool = self._sb._pool

        async def _fork():
            async with st.lock:  # the clone sees the state after this session's preceding call
                if st.kernel is None or st.kernel.dead:
                    return None
                return await pool.fork_kernel(st.kernel)  # type: ignore[union-attr]

        try:
            k = self._sb._call(_fork())
        except Exception:  # noqa: BLE001
            k = None
        return Session(self._sb, k if isinstance(k, _Kernel) else None)

    def _claim_kernel(self) -> "_Kernel | None":
        """Mark the session closed (once); return the kernel to release, or None when there is nothing to do."""
        if self._closed:
            return None
        self._closed = True
        st = self._state
        k = st.kernel if st is not None else self._kernel0
        return None if k is None or self._sb._closed else k

    async def _release(self, k: "_Kernel") -> None:
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
