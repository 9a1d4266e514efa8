"""Shared sandbox pool for the sandbox tests (one pool per session keeps the suite fast) and the leak check."""

import functools
import os
import shutil
import time

import pytest

SECRET = "zerotir-test-secret-8d1f0c"


def full_isolation_available() -> bool:
    return shutil.which("bwrap") is not None and os.geteuid() == 0


needs_full = pytest.mark.skipif(not full_isolation_available(),
                                reason="isolation='full' needs bubblewrap and root (make system-deps)")


@functools.lru_cache(maxsize=1)
def quotas_unavailable() -> str | None:
    """Why per-call quotas (writable cgroups) are missing here, or None. Without them the isolation tests still run,
    with quotas=False; the quota tests skip with this reason."""
    if not full_isolation_available():
        return "isolation='full' needs bubblewrap and root (make system-deps)"
    from zerotir.sandbox.quotas import Quotas

    try:
        Quotas.create(64, 8, 1.0).close()
    except Exception as e:  # noqa: BLE001
        return f"no writable cgroups here: {e}"
    return None


def full_kwargs() -> dict:
    """Sandbox kwargs for isolation='full' on this machine: quotas where cgroups are writable, else quotas=False."""
    return {} if quotas_unavailable() is None else {"quotas": False}


@pytest.fixture(scope="session")
def sb():
    if not full_isolation_available():
        pytest.skip("isolation='full' needs bubblewrap and root")
    from zerotir.sandbox import Sandbox

    os.environ["ZEROTIR_TEST_SECRET"] = SECRET  # must never be visible inside
    box = Sandbox(workers=2, timeout_s=1.0, memory_mb=256, max_output_bytes=4096, **full_kwargs())
    _warm_up(box)
    yield box
    box.close()
    os.environ.pop("ZEROTIR_TEST_SECRET", None)


def _warm_up(box, timeout_s: float = 15.0) -> None:
    """First use starts lazy pieces (the warm spare worker, pipes): let the descriptor count settle before any test
    compares counts, so the first test's leak check measures the test and not the pool's start-up."""
    box.run("pass")
    deadline, last, stable_since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(os.listdir("/proc/self/fd"))
        if n != last:
            last, stable_since = n, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            return
        time.sleep(0.05)


def settled(sb, timeout_s: float = 3.0, min_ready: int = 0) -> dict:
    """Wait until every process under a sandbox uid is a warm, unused context init; return the final counts.

    A warm context holds CONTEXT_PROCS processes (its init and kernel) and two descriptors here (socket, pidfd).
    """
    from tests.support.census import sandbox_uid_processes
    from zerotir.sandbox.pool import CONTEXT_PROCS

    deadline = time.monotonic() + timeout_s
    while True:
        h = sb.health()
        procs = len(sandbox_uid_processes(sb.worker_pids()))
        fds = _fd_targets()
        state = {"ok": h["ok"], "uid_procs": procs, "ready": h["ready_contexts"], "fds": len(fds),
                 "expected_procs": CONTEXT_PROCS * h["ready_contexts"], "fd_targets": fds}
        # A context still being pre-warmed already holds its descriptors but is not ready yet: wait for the pool
        # to be back at `min_ready` warm contexts before counting (under load this takes a while).
        if (h["ok"] and procs == state["expected_procs"] and state["ready"] >= min_ready) \
                or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def _fd_targets() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed between listing and reading
            pass
    return out


@pytest.fixture
def leakcheck(sb):
    """After the test: the pool is healthy, nothing runs under a sandbox uid but warm contexts, no fd grew."""
    before = settled(sb)
    yield
    # Each warm context holds 2 descriptors here; everything else must be back where it was. Like the process count,
    # the descriptor count is polled for up to 10 s (replacements finish asynchronously); a real leak stays.
    def fds_back(st):
        return st["fds"] - 2 * st["ready"] <= before["fds"] - 2 * before["ready"]

    deadline = time.monotonic() + 10.0
    after = settled(sb, timeout_s=10.0, min_ready=before["ready"])
    while not fds_back(after) and time.monotonic() < deadline:
        time.sleep(0.1)
        after = settled(sb, timeout_s=max(0.1, deadline - time.monotonic()), min_ready=before["ready"])
    assert after["ok"], f"sandbox unhealthy after the test: {sb.health()}"
    assert after["uid_procs"] == after["expected_procs"], f"leaked sandbox processes: {after}"
    new = {fd: t for fd, t in after["fd_targets"].items() if before["fd_targets"].get(fd) != t}
    assert after["fds"] - 2 * after["ready"] <= before["fds"] - 2 * before["ready"], \
        f"fd leak: {before['fds']} -> {after['fds']} (ready {before['ready']} -> {after['ready']}); new: {new}"
