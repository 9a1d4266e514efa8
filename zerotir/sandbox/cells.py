"""One cell: send code to a kernel, drain its output, enforce the wall clock, and name how it ended.

Status rules: 'done' from the cell -> ok / error (oom for a MemoryError); the cell process ended without reporting ->
its exit status (a signal -> killed, SIGXCPU -> timeout); the wall clock passed -> timeout (SIGKILL, output so far
kept); the context's cgroup recorded an OOM kill during the cell -> oom, whatever else happened (a child killed by
the memory quota may leave its parent to finish 'ok'). The machinery failing raises `SandboxError`, which becomes a
result only in `errors.error_result`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from zerotir.sandbox.errors import SandboxError, error_result
from zerotir.sandbox.ipc import Capture, pipe
from zerotir.sandbox.workers import Kernel
from zerotir.types import ExecResult

MAX_CODE_BYTES = 512 * 1024


class _Ended(Exception):
    """The cell ended without a 'done' (its processes were killed)."""


async def run_cell(pool, kern: Kernel, code: str, timeout_s: float, last: bool) -> ExecResult:
    """Send one cell to a kernel and collect its ExecResult; never raises (infrastructure failures included)."""
    loop = pool.loop
    t0 = time.monotonic()
    if len(code.encode("utf-8", errors="replace")) > MAX_CODE_BYTES:
        return ExecResult(status="error", stderr=f"code is larger than {MAX_CODE_BYTES} bytes; not run", exit_code=1)
    cell = next(kern.cells)
    oom_before = 0 if last else kern.ctx.oom_kills()  # a stateless call's group is fresh
    out_r, out_w = pipe()
    err_r, err_w = pipe()
    out = Capture(out_r, pool.max_output_bytes, loop)
    err = Capture(err_r, pool.max_output_bytes, loop)
    cell_pidfd: int | None = None
    status, exit_code, sig, note = "sandbox_error", None, None, ""
    failure: BaseException | None = None
    deadline = t0 + timeout_s
    try:
        try:
            kern.chan.send({"op": "run", "cell": cell, "code": code, "last": last, "timeout_s": timeout_s},
                           (out_w, err_w))
        except OSError as e:
            kern.dead = True
            raise SandboxError(f"sandbox: kernel unreachable ({e.strerror})") from None
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
                await _settle_worker(kern.ctx.worker)
                if not kern.ctx.worker.alive or kern.ctx.closed:
                    raise SandboxError("sandbox: worker died during the execution")
                status, sig, note = "killed", signal.SIGKILL, "sandbox: the session's processes were killed"
                raise _Ended
            if msg.get("op") == "fatal":  # the context could not set itself up (no cell id: it never ran one)
                kern.dead = True
                raise SandboxError(f"sandbox: context setup failed: {msg.get('error')}")
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
        stop_cell(kern, cell_pidfd, last)
    except _Ended:
        pass
    except Exception as e:  # noqa: BLE001 - SandboxError or an unexpected infrastructure problem: reported
        failure = e
    except BaseException:  # cancelled by the caller: stop the cell, release everything, re-raise
        stop_cell(kern, cell_pidfd, last)
        out.close()
        err.close()
        raise
    finally:
        if cell_pidfd is not None:
            os.close(cell_pidfd)
    stdout, stderr = out.close(), err.close()
    truncated = out.truncated or err.truncated
    if failure is not None:
        pool.stats["sandbox_error"] += 1
        return error_result(failure, t0, stdout, stderr, truncated)
    kills = kern.ctx.oom_kills() - oom_before
    if kills > 0:
        status, note = "oom", (f"sandbox: memory quota of {pool.memory_mb} MB exceeded for this call (the kernel "
                               f"killed {kills} of its processes)")
    if note and status != "ok":
        stderr = (stderr + ("\n" if stderr and not stderr.endswith("\n") else "") + note + "\n")
    pool.stats[status] += 1
    return ExecResult(status=status, stdout=stdout, stderr=stderr, exit_code=exit_code, signal=sig,
                      truncated=truncated, duration_s=time.monotonic() - t0)


async def _settle_worker(w) -> None:
    """After a context vanished: wait briefly for the worker's own death notice, to tell the two apart."""
    if w.alive and w.proc is not None:
        try:
            await asyncio.wait_for(w.dead.wait(), 0.2)
        except asyncio.TimeoutError:
            pass


def stop_cell(kern: Kernel, cell_pidfd: int | None, last: bool) -> None:
    """Stop a cell that must not finish: kill just the cell while its kernel lives on, else end the kernel."""
    if cell_pidfd is not None and not last:
        try:
            signal.pidfd_send_signal(cell_pidfd, signal.SIGKILL)
        except OSError:
            pass
    else:
        kern.dead = True
        kern.ctx.destroy()
